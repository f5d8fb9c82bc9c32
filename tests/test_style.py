"""The exported library reads well: no unused imports or names (pyflakes), every module opens with a whole sentence."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "hyperformer"
MODULES = sorted(p for p in LIBRARY.glob("*.py") if p.name not in ("__init__.py", "_modidx.py"))


def test_the_library_is_pyflakes_clean():
    pytest.importorskip("pyflakes")
    done = subprocess.run([sys.executable, "-m", "pyflakes", *map(str, MODULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("module", MODULES, ids=[p.stem for p in MODULES])
def test_module_docstring_is_a_whole_sentence(module):
    doc = ast.get_docstring(ast.parse(module.read_text()))
    assert doc and doc.rstrip().endswith("."), f"{module.name}: {doc!r} (the notebook's '> ' description must be one line)"


def test_every_module_holds_one_job_in_at_most_450_lines():
    long = {p.name: n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_the_library_holds_no_test_hooks_or_machine_layouts():
    found = [f"{p.name}: {s}" for p in MODULES for s in ("HYPERFORMER_FAULT", "../shared") if s in p.read_text()]
    assert not found, found


def test_method_names_are_literals_only_in_the_registry_and_the_papers_tables():
    import re
    from hyperformer.methods import method_names
    pattern = re.compile("[\"'](" + "|".join(re.escape(m) for m in method_names()) + ")[\"']")
    # "hyperformer" is also the package's name (resources.files, prog=, the launcher, the cache folder): not a method there
    package = re.compile(r"(files\(|prog=|launcher = |/ )\"hyperformer\"")
    found = {p.name: hits for p in MODULES if p.stem not in ("methods", "paper")
             if (hits := [l.strip() for l in p.read_text().splitlines() if pattern.search(l) and not package.search(l)])}
    assert not found, found

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

"""`make docs`: every notebook renders to static HTML, linked from one index page."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_render_every_notebook_with_an_index(tmp_path):
    out = tmp_path / "docs"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    notebooks = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb"))
    index = (out / "index.html").read_text()
    linked = re.findall(r'href="([^"]+)\.html"', index)
    assert sorted(linked) == notebooks
    for name in notebooks:
        page = (out / f"{name}.html").read_text()
        assert "<html" in page and len(page) > 10_000, name
    assert not list(tmp_path.glob(".docs-*")), "the staging folder must be renamed into place"

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
    sys.path.insert(0, str(ROOT / "tools"))
    from build_docs import page_name
    pages = sorted(page_name(p) for p in (ROOT / "nbs").glob("*.ipynb"))
    index = (out / "index.html").read_text()
    linked = re.findall(r'href="([^"]+\.html)"', index)
    assert sorted(linked) == pages
    for name in pages:
        page = (out / name).read_text()
        assert "<html" in page and len(page) > 10_000, name
    assert not list(tmp_path.glob(".docs-*")), "the staging folder must be renamed into place"

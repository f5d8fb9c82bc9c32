"""Render every notebook in `nbs/` to static HTML with an index page (Quarto cannot be installed offline; nbconvert can).

Usage: python tools/build_docs.py [OUT_DIR]   (default: _docs beside the repository; `make docs`)

Notebooks are rendered as they are stored: the library notebooks keep their outputs, so the pages show the tables,
shapes and plots the prose describes; experiment notebooks are stored without outputs and render as code and prose
(their executed copies live in results/). Files are written to a temporary folder that replaces OUT_DIR at the end, so
an interrupted build leaves the previous docs intact.
"""
from __future__ import annotations

import html, json, shutil, sys, tempfile
from pathlib import Path

from nbconvert import HTMLExporter
import nbformat

ROOT = Path(__file__).resolve().parent.parent


def notebook_title(nb) -> tuple[str, str]:
    "(title, one-line summary) from the first markdown cell: its `# heading` and its `> description` line."
    for cell in nb.cells:
        if cell.cell_type != "markdown": continue
        lines = cell.source.splitlines()
        title = next((l.lstrip("# ").strip() for l in lines if l.startswith("# ")), "")
        summary = " ".join(l.lstrip("> ").strip() for l in lines if l.startswith(">"))
        if title: return title, summary
    return "", ""


def page_name(notebook:Path) -> str:
    "The HTML page of a notebook; `index.ipynb` (the tour) must not take the site index's name."
    return "index_notebook.html" if notebook.stem == "index" else f"{notebook.stem}.html"


def build(out_dir:Path, nbs_dir:Path=ROOT / "nbs") -> list[Path]:
    "Render every `nbs_dir/*.ipynb` to `out_dir/<name>.html` plus `out_dir/index.html`; returns the written pages."
    nbs_dir = Path(nbs_dir)
    notebooks = sorted(nbs_dir.glob("*.ipynb"))
    if not notebooks: raise SystemExit(f"no notebooks in {nbs_dir}")
    exporter = HTMLExporter(template_name="lab")
    out_dir = Path(out_dir).resolve()
    staging = Path(tempfile.mkdtemp(prefix=".docs-", dir=out_dir.parent if out_dir.parent.exists() else None))
    rows, pages = [], []
    try:
        for path in notebooks:
            try:
                nb = nbformat.read(path, as_version=4)
                title, summary = notebook_title(nb)
                body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or path.stem}})
            except Exception as e:  # malformed JSON, an invalid notebook, a cell nbconvert cannot render
                raise SystemExit(f"make docs: {path} cannot be rendered ({type(e).__name__}: {str(e)[:300]}); fix that "
                                 "notebook (open it in JupyterLab, or check its JSON) and run make docs again") from None
            page = staging / page_name(path)
            page.write_text(body, encoding="utf-8"); pages.append(out_dir / page.name)
            has_output = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
            rows.append(f'<tr><td><a href="{html.escape(page.name)}">{html.escape(path.name)}</a></td>'
                        f"<td>{html.escape(title)}</td><td>{html.escape(summary)}</td><td>{'yes' if has_output else ''}</td></tr>")
        index = ("<!doctype html><html><head><meta charset='utf-8'><title>hyperformer notebooks</title>"
                 "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}td{padding:.3em .8em;vertical-align:top}"
                 "tr:nth-child(even){background:#f4f4f4}</style></head><body>"
                 "<h1>hyperformer: the notebooks</h1><p>Library notebooks (00-10) define and test the package; <code>exp_*</code> "
                 "notebooks run the paper's experiments with papermill.</p>"
                 "<table><tr><th>notebook</th><th>title</th><th>what it holds</th><th>outputs</th></tr>"
                 + "".join(rows) + "</table></body></html>")
        (staging / "index.html").write_text(index, encoding="utf-8"); pages.append(out_dir / "index.html")
        if out_dir.exists(): shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True); raise
    return pages


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_docs"
    written = build(out)
    print(f"{len(written) - 1} notebooks rendered; open {out / 'index.html'}")

"""Execute library notebooks in place so they keep their outputs (the tables, shapes and plots the prose describes).

Usage: python tools/execute_notebooks.py [NOTEBOOK ...]   (default: the library notebooks 00-12, 03a-style ones included, and index.ipynb; `make outputs`)

Cells tagged slow/gpu/notest or `eval: false` are skipped, as nbdev's test runner does. Only what a reader needs is kept: stdout, results and
figures; stderr (progress bars, warnings) is dropped and a text output is cut to its first 4,000 characters. Each
notebook is written atomically after it ran without error; run `nbdev_clean` afterwards (`make outputs` does).
"""
from __future__ import annotations

import os, sys, tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SKIP_FLAGS = ("slow", "gpu", "notest")
MAX_TEXT = 4000


def library_notebooks() -> list[Path]:
    "The notebooks that define the library (numbered) and the tour; experiment notebooks keep no output (papermill fills copies)."
    nbs = ROOT / "nbs"
    return sorted(p for p in nbs.glob("[0-9][0-9]*_*.ipynb")) + [nbs / "index.ipynb"]


def _skipped(cell) -> bool:
    "Cells nbdev's test runner skips: tagged slow/gpu/notest, or `#| eval: false` (e.g. the `__main__` guard)."
    first = [line.strip().replace("#|", "#| ").replace("#|  ", "#| ") for line in cell.source.lstrip().splitlines()[:3]]
    return any(line in [f"#| {flag}" for flag in SKIP_FLAGS] + ["#| eval: false"] for line in first)


def _trim(outputs: list) -> list:
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr": continue
        if out.get("output_type") == "stream" and len(out.get("text", "")) > MAX_TEXT:
            out["text"] = out["text"][:MAX_TEXT] + "\n...\n"
        kept.append(out)
    return kept


def execute(path: Path, timeout: int = 900) -> None:
    "Run `path` top to bottom (skipped cells left without output) and store its trimmed outputs."
    nb = nbformat.read(path, as_version=4)
    skipped = [c for c in nb.cells if c.cell_type == "code" and _skipped(c)]
    originals = {id(c): c.source for c in skipped}
    for c in skipped: c.source = "# (not run here: " + c.source.splitlines()[0].strip() + ")"
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for c in nb.cells:
        if c.cell_type != "code": continue
        if id(c) in originals: c.source, c.outputs = originals[id(c)], []
        else: c.outputs = _trim(c.outputs)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    targets = [Path(p).resolve() for p in sys.argv[1:]] or library_notebooks()
    for p in targets:
        print(f"executing {p.name}", flush=True)
        execute(p)

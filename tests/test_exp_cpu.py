"""The CPU reproduction notebook end to end, as a user runs it, with a few steps on two small tasks (the CI variant)."""
import json
import os
from pathlib import Path

import pytest

from hyperformer.model import minilm_path

from shared_data import shared_data_dir
from test_experiments import run_notebook

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _minilm_installed() -> bool:
    try: return minilm_path() is not None
    except Exception: return False


def real_data_available() -> bool:
    "Whether ../shared/data and the pretrained MiniLM wheel are both there."
    return shared_data_dir() is not None and _minilm_installed()


def needs_real(test):
    "Skip `test` without ../shared/data or the MiniLM wheel, and mark it `needs_data` (`pytest -m 'not needs_data'`)."
    skip = pytest.mark.skipif(not real_data_available(), reason="needs ../shared/data and the MiniLM wheel (make install)")
    return pytest.mark.needs_data(skip(test))


SHORT = dict(tasks="rte,mnli", methods="finetune,adapters,hyperformer++", seeds="0", max_steps=4, eval_steps=2,
             max_eval_samples=16, fewshot_tasks="cb", k_grid="4", fewshot_steps=2, lowres_sizes="32",
             lowres_methods="hyperformer++")


@needs_real
def test_cpu_reproduction_notebook_renders_every_artefact(tmp_path):
    results = tmp_path / "res"
    run_notebook("exp_cpu", tmp_path, **SHORT, runs_root=str(tmp_path / "runs"), results=str(results))
    summary = json.loads((results / "summary.json").read_text())
    assert summary["trained_runs"] == 1 + 2 + 1 + 2 + 1  # finetune, adapters per task, hyperformer++, few-shot x2, low-resource
    assert summary["model"] == "minilm" and summary["max_steps"] == 4
    assert {c["target"] for c in summary["claims"]} >= {"every method beats the majority baseline on every task",
                                                       "hyperformer++ within 1.0 point(s) of finetune's average"}
    names = {p.name for p in results.iterdir()}
    assert {"glue_scores.csv", "glue_scores.md", "glue_methods.csv", "fewshot.csv", "fewshot.png", "lowres.csv",
            "lowres.png", "claims.md", "summary.json"} <= names, names
    methods = (results / "glue_methods.csv").read_text()
    assert "adapters" in methods and "hyperformer++" in methods
    scores = (results / "glue_scores.csv").read_text()
    assert "majority" in scores

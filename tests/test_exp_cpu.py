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


SHORT = dict(tasks="sst2,mnli", methods="finetune,hyperformer++", lr_grid="finetune:1e-4,hyperformer++:1e-3/1e-4", search_steps=4,
             max_steps=4, eval_steps=2, validation_rows=16, test_rows=16, seeds="0", fewshot_tasks="cb", fewshot_methods="hyperformer++",
             k_grid="4", fewshot_steps=2, fewshot_validation_rows=16, fewshot_test_rows=16, lowres_sizes="32", lowres_methods="hyperformer++",
             lowres_steps=4, lowres_test_rows=16, executor="serial")


@needs_real
def test_cpu_reproduction_notebook_renders_every_artefact(tmp_path):
    results = tmp_path / "res"
    run_notebook("exp_cpu", tmp_path, **SHORT, runs_root=str(tmp_path / "runs"), results=str(results))
    summary = json.loads((results / "summary.json").read_text())
    # three search runs; the main runs and HyperFormer++'s sensitivity run (its other rate) have search runs' settings, so
    # they are reused; one few-shot, one low-resource
    assert summary["trained_runs"] == 3 + 1 + 1 and summary["runs"] == 3 + 2 + 1 + 1 + 1
    assert summary["model"] == "minilm" and summary["max_steps"] == 4 and summary["test_rows"] == {"sst2": 16, "mnli": 16}
    hyper = summary["methods"]["hyperformer++"]
    assert set(hyper["lr_search"]) == {"0.001", "0.0001"} and set(hyper["test"]["0"]) == {"sst2", "mnli"}
    best = max(hyper["lr_search"].items(), key=lambda kv: (kv[1], -float(kv[0])))  # the search's rule: best validation, ties the smaller rate
    assert hyper["learning_rate"] == float(best[0])
    other = 1e-4 if hyper["learning_rate"] == 1e-3 else 1e-3
    assert summary["sensitivity"]["second_best_rates"] == {"hyperformer++": other}
    assert isinstance(hyper["converged"], bool) and set(hyper["converged_per_seed"]) == {"0"}
    claims = {c["claim"]: c["verdict"] for c in summary["claims"]}
    assert any(c.startswith("multi-task hyperformer++ matches finetune") for c in claims), claims
    assert any(c.startswith("few-shot:") for c in claims) is False  # few-shot claim needs both methods; only hyperformer++ ran
    assert set(claims.values()) <= {"met", "missed", "within noise", "missed (more parameters)"}
    names = {p.name for p in results.iterdir()}
    assert {"search.csv", "search.png", "glue_scores.csv", "glue_scores.md", "glue_methods.csv", "paired.csv", "convergence.csv",
            "curves.png", "curves_runs.png", "curves_sensitivity.png", "sensitivity.csv", "fewshot.csv", "fewshot.png", "lowres.csv", "lowres.png", "claims.md", "summary.json"} <= names, names
    scores = (results / "glue_scores.csv").read_text()
    assert "majority" in scores and " ± " in scores

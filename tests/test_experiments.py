"""Experiment notebooks under papermill, as a user runs them: parameters, artefacts, reuse of finished runs.

exp_table1 and exp_table2 execute here and nowhere else in `make test` (test_notebooks.py leaves them out): exp_table2
once on one task (plus a paper-profile run that stops at its first training), exp_table1 once, then a second time that
must reuse every run of the first."""
import json
import os
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_notebook(name, tmp_path, **parameters):
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(NBS / f"{name}.ipynb"), str(out), parameters=parameters, cwd=str(ROOT),
                               kernel_name="python3", progress_bar=False)
    return json.loads(out.read_text())


def test_table2_runs_one_task_over_its_k_grid(tmp_path):
    run_notebook("exp_table2", tmp_path, task="paws", methods="hyperformer++", runs_root=str(tmp_path / "runs"),
                 results=str(tmp_path / "res"))
    runs = json.loads((tmp_path / "res" / "runs.json").read_text())
    assert {(r["task"], r["k"]) for r in runs} == {("paws", 4), ("paws", 16)}
    assert (tmp_path / "res" / "table2.csv").is_file()


def test_table2_accepts_the_paper_profile(tmp_path):
    # Offline there is no t5-base and no hub: the run must fail with the offline hint, which shows the paper settings
    # (pretrained t5-base, hub data) were taken up.
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run_notebook("exp_table2", tmp_path, task="paws", profile="paper", runs_root=str(tmp_path / "runs"), results=str(tmp_path / "res"))
    assert "--data-dir" in str(err.value) and "t5-base" in str(err.value)


def test_a_second_run_reuses_finished_runs(tmp_path):
    params = dict(methods="hyperformer++", regimes="multi-task", runs_root=str(tmp_path / "runs"), results=str(tmp_path / "res"))
    run_notebook("exp_table1", tmp_path, **params)
    first = json.loads((tmp_path / "res" / "runs.json").read_text())
    assert first["trained_runs"] == 1
    run_notebook("exp_table1", tmp_path, **params)
    second = json.loads((tmp_path / "res" / "runs.json").read_text())
    assert second["trained_runs"] == 0 and all(r["reused"] for r in second["runs"])
    assert {p.name for p in (tmp_path / "res").iterdir()} >= {"table1_scores.csv", "table1_params.csv", "runs.json"}

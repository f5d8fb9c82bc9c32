"""A run's identity is its config plus the code that computed it: a finished run made by other code is retrained."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hyperformer
from hyperformer.experiments import run_experiment
from hyperformer.train import RunError, code_identity, make_config, train

KNOBS = dict(tasks="rte", max_steps=2, eval_steps=2, max_eval_samples=8, method="hyperformer++")


def test_a_run_made_by_other_code_is_retrained_refused_or_reused_on_request(tmp_path, capsys):
    first = run_experiment(tmp_path, **KNOBS)
    assert first["reused"] is False
    saved = json.loads((Path(first["output_dir"]) / "config.json").read_text())
    assert saved["code"] == code_identity() and len(code_identity()["fingerprint"]) == 16
    assert run_experiment(tmp_path, **KNOBS)["reused"] is True
    saved["code"] = {"version": "0.0.9", "fingerprint": "0123456789abcdef"}  # as if an older library had made it
    (Path(first["output_dir"]) / "config.json").write_text(json.dumps(saved))
    config = make_config("smoke", **{**KNOBS, "tasks": ("rte",)}, output_dir=first["output_dir"])
    with pytest.raises(RunError, match="made by other code .*0123456789abcdef.*--overwrite.*--reuse-stale"):
        train(config, progress=False)
    assert train(config, progress=False, reuse_stale=True)["reused"] is True
    capsys.readouterr()
    again = run_experiment(tmp_path, **KNOBS)
    assert again["reused"] is False and "[stale]" in capsys.readouterr().out
    assert json.loads((Path(first["output_dir"]) / "config.json").read_text())["code"] == code_identity()


def _run_with(package_root:Path, runs:Path) -> bool:
    "Train-or-reuse the KNOBS run with the library found under `package_root`; whether it was reused."
    script = ("import json, hyperformer; from hyperformer.experiments import run_experiment; "
              f"assert hyperformer.__file__.startswith({str(package_root)!r}), hyperformer.__file__; "
              f"print(json.dumps(run_experiment({str(runs)!r}, **{KNOBS!r})['reused']))")
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=runs.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_changed_library_function_retrains_the_runs_that_depend_on_it(tmp_path):
    package = Path(hyperformer.__file__).parent
    copy = tmp_path / "lib"
    shutil.copytree(package, copy / "hyperformer", ignore=shutil.ignore_patterns("__pycache__"))
    runs = tmp_path / "runs"
    assert _run_with(copy, runs) is False  # trained
    report = copy / "hyperformer" / "report.py"  # tables only: the run does not depend on it
    report.write_text(report.read_text() + "\n\ndef _another_table_helper(): return None\n")
    assert _run_with(copy, runs) is True
    layers = copy / "hyperformer" / "layers.py"  # the adapter layer does
    source = layers.read_text()
    assert "def " in source
    layers.write_text(source.replace("def ", "def _unused_helper(): return 0\n\ndef ", 1))
    assert _run_with(copy, runs) is False  # retrained with the changed code
    assert _run_with(copy, runs) is True

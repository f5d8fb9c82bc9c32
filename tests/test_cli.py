"""The `hyperformer` console script, run as a user would (a separate process), and its `params` subcommand through the
same entry point in this process (no training, no threads: only the start-up of a new interpreter would differ)."""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hyperformer.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SCRIPT = Path(sys.executable).with_name("hyperformer")


def run_cli(*args):
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=ENV, timeout=120)


def run_main(*args):
    "`hyperformer ARGS` through the console script's entry point (`hyperformer.cli.main`) in this process: exit status and output."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main(list(args))
        except SystemExit as e: code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.parametrize("model,method,added,per_task", [
    ("t5-base", "hyperformer++", 5_163_440, 0.29),
    ("t5-small", "adapters-shared", 3_271_680, 0.68),
    ("google-t5/t5-small", "adapters", 430_464, 0.74),
])
def test_params_json_is_one_object(model, method, added, per_task):
    done = run_main("params", "--model", model, "--method", method, "--n-tasks", "8", "--reduction-factor", "32", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["added"] == added and round(result["trained_per_task_percent"], 2) == per_task
    assert set(result) >= {"base", "added", "trainable", "total_multiple", "trained_per_task_percent", "formula"}


def test_params_bad_reduction_factor_is_a_clear_error():
    done = run_main("params", "--model", "t5-base", "--reduction-factor", "5")
    assert done.returncode == 2
    assert "reduction_factor=5 does not divide d_model=768" in done.stderr


def test_unknown_method_is_rejected_by_the_parser():
    done = run_main("params", "--method", "lora")
    assert done.returncode == 2 and "invalid choice: 'lora'" in done.stderr


def test_version_and_documented_help():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("hyperformer ")
    done = run_cli("train", "--profile", "reference", "--help")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "--split-protocol {paper,reference}" in text and "[reference default: 'reference']" in text
    assert "--threads THREADS" in text and "--report-to REPORT_TO" in text


def test_report_to_tensorboard_writes_readable_curves(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "run"
    done = run_cli("train", "--profile", "smoke", "--tasks", "rte,mrpc", "--max-steps", "4", "--eval-steps", "2",
                   "--max-eval-samples", "8", "--no-progress", "--threads", "1", "--report-to", "tensorboard", "--output-dir", str(run))
    assert done.returncode == 0, done.stderr
    events = list((run / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 1, list(run.iterdir())
    acc = EventAccumulator(str(events[0])); acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/avg_flat", "eval/rte_accuracy"} <= tags, tags
    assert [e.step for e in acc.Scalars("eval/avg_flat")] == [2, 4]
    logged = [json.loads(line)["avg_flat"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [round(e.value, 4) for e in acc.Scalars("eval/avg_flat")] == [round(v, 4) for v in logged]


def test_report_to_unknown_integration_is_a_clear_error(tmp_path):
    done = run_cli("train", "--profile", "smoke", "--max-steps", "2", "--report-to", "tensorbord", "--output-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "--report-to tensorbord is not an integration" in done.stderr


def test_params_counts_encoder_heads_from_num_labels():
    glue = run_main("params", "--model", "minilm", "--method", "hyperformer++", "--num-labels", "2,2,2,2,1,3,2,2", "--json")
    three = run_main("params", "--model", "minilm", "--method", "hyperformer++", "--num-labels", "3", "--json")
    assert glue.returncode == 0 and three.returncode == 0, glue.stderr + three.stderr
    glue, three = json.loads(glue.stdout), json.loads(three.stdout)
    assert glue["heads"] == 8 * (384 * 384 + 384) + 16 * 385  # per head: dense 384x384, then 385 per output (GLUE: 16 in all)
    assert three["heads"] - glue["heads"] == (24 - 16) * 385
    bad = run_main("params", "--model", "minilm", "--num-labels", "2,x")
    assert bad.returncode == 2 and "'2,x' is not a positive integer" in bad.stderr
    short = run_main("params", "--model", "minilm", "--num-labels", "2,3")
    assert short.returncode == 2 and "num_labels has 2 entries for n_tasks=8" in short.stderr

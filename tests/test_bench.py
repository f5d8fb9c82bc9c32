"""`hyperformer.bench` on the tiny config: the JSON a user gets, and clear errors for bad input."""
import argparse
import contextlib
import io
import json

import pytest

from hyperformer.bench import BenchConfig, GENERATION_VARIANTS, add_bench_parser, run_benchmark

TINY = ["--model", "t5-tiny", "--steps", "2", "--warmup", "1", "--rounds", "2", "--batch-size", "4",
        "--source-length", "16", "--target-length", "4", "--generate-repeats", "2", "--threads", "1"]


def parser():
    p = argparse.ArgumentParser(prog="hyperformer")
    add_bench_parser(p.add_subparsers(dest="command", required=True))
    return p


def run_cli(*argv):
    args = parser().parse_args(["bench", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = args.run(args)
    return code, out.getvalue()


def test_bench_json_shape():
    goals = ["train_time/hyperformer++=0.8", "train_memory/hyperformer++=0.7", "generate/static-adapter=1.15",
             "mixed_task/hyperformer++=1.15", "mixed_task/adapters-shared=1.15"]
    code, printed = run_cli(*TINY, "--methods", "finetune,adapters,adapters-shared,hyperformer,hyperformer++", "--json",
                            *[a for g in goals for a in ("--target", g)])
    assert code == 0
    result = json.loads(printed)  # one JSON object
    assert set(result) == {"config", "environment", "training", "mixed_task", "generation", "targets"}
    assert result["environment"]["threads"] == 1 and result["environment"]["device"] == "cpu"
    assert list(result["training"]) == ["finetune", "adapters", "adapters-shared", "hyperformer", "hyperformer++"]
    for method, r in result["training"].items():
        assert r["step_seconds"] > 0 and len(r["round_medians"]) == 2
        assert r["peak_bytes"] == r["state_bytes"] + r["step_peak_bytes"] and r["step_peak_bytes"] > 0
        assert r["time_ratio"] > 0 and r["memory_ratio"] > 0
    base = result["training"]["finetune"]
    for method, r in result["training"].items():  # every ratio is re-derivable from the measured values it divides
        assert r["time_ratio"] == pytest.approx(r["step_seconds"] / base["step_seconds"], rel=1e-12), method
        assert r["memory_ratio"] == pytest.approx(r["peak_bytes"] / base["peak_bytes"], rel=1e-12), method
    trained = {m: r["trainable_parameters"] for m, r in result["training"].items()}
    assert trained["hyperformer++"] < trained["finetune"]
    assert result["mixed_task"]["hyperformer++"]["ratio"] > 0
    assert set(result["generation"]) == set(GENERATION_VARIANTS)
    for variant, g in result["generation"].items():
        assert g["ratio"] == pytest.approx(g["seconds"] / result["generation"]["stock"]["seconds"], rel=1e-12), variant
    mixed = result["mixed_task"]["hyperformer++"]
    assert mixed["ratio"] == pytest.approx(mixed["mixed_task_seconds"] / mixed["single_task_seconds"], rel=1e-12)
    assert [t["name"] for t in result["targets"]] == [g.split("=")[0] for g in goals]  # every target named, in order
    for target in result["targets"][:4]:  # "met" is the comparison it claims
        assert isinstance(target["met"], bool) and target["met"] == (target["ratio"] <= target["limit"]), target
    assert result["targets"][4] == {"name": "mixed_task/adapters-shared", "ratio": None, "limit": 1.15, "met": None}  # not timed


def test_bench_without_finetune_has_no_ratios():
    result = run_benchmark(BenchConfig(model="t5-tiny", methods=("hyperformer++",), mixed=(), steps=1, warmup=0, rounds=1,
                                       batch_size=2, source_length=8, target_length=2, generate=False, memory=False, threads=1))
    assert result["training"]["hyperformer++"]["time_ratio"] is None and result["targets"] == []


def test_table_output():
    code, printed = run_cli(*TINY, "--methods", "finetune,hyperformer++", "--mixed=", "--no-generate")
    assert code == 0 and "x finetune" in printed and "hyperformer++" in printed


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "0 must be >= 1"),
    (["--methods", "finetune,lora"], "unknown method(s) lora"),
    (["--target", "speed/hyperformer++=1.1"], "KIND one of train_time"),
    (["--target", "generate/stock=fast"], "'fast' is not a number"),
])
def test_bad_arguments_are_usage_errors(argv, message):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        parser().parse_args(["bench", *argv])
    assert exit_.value.code == 2 and message in err.getvalue()


@pytest.mark.parametrize("kwargs,message", [
    (dict(methods=("lora",)), "method='lora' is not supported"),
    (dict(steps=-1), "steps=-1 must be a positive integer"),
    (dict(mixed=("finetune",)), "multi-task adapter method"),
    (dict(model="t5-huge"), "unknown architecture"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BenchConfig(**kwargs)

"""Sweeps through executors: worker processes and submitit give the serial scores, failures are named, a killed sweep
trains nothing twice, two sweeps never train one run at once, and tokenised data is cached per content."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperformer.data import tokenized_cache_stats
from hyperformer.executors import SweepError
from hyperformer.experiments import sweep
from hyperformer.train import latest_checkpoint, read_jsonl

os.environ.setdefault("OMP_NUM_THREADS", "1")
QUICK = dict(tasks="rte,cola", max_steps=8, eval_steps=4, max_eval_samples=16)
PLAN = [({"method": m}, {"method": m}) for m in ("adapters-shared", "hyperformer++")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    "Each test its own tokenised-data cache (worker processes inherit it through the environment)."
    monkeypatch.setenv("HYPERFORMER_CACHE", str(tmp_path / "tokenized"))


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    "(runs root, scores, runs) of the plan swept in this process."
    root = tmp_path_factory.mktemp("serial") / "runs"
    scores, runs = sweep(root, "smoke", PLAN, (42,), **QUICK)
    return root, scores, runs


def scores_of(frame):
    return sorted(map(tuple, frame[["method", "task", "metric", "value"]].values.tolist()))


def test_local_workers_give_the_scores_of_serial(serial, tmp_path):
    _, scores, runs = serial
    local_scores, local_runs = sweep(tmp_path / "runs", "smoke", PLAN, (42,), executor="local:2", **QUICK)
    assert scores_of(local_scores) == scores_of(scores)
    assert [r["reused"] for r in local_runs] == [False, False] and [r["best_step"] for r in local_runs] == [r["best_step"] for r in runs]
    for r in local_runs:  # each worker wrote its run's output to the run's log
        log = Path(r["output_dir"]).parent / "logs" / Path(r["output_dir"]).name / "run.log"
        assert "[test] best step" in log.read_text()


def test_submitit_local_runs_and_collects_results(serial, tmp_path):
    _, scores, _ = serial
    sub_scores, sub_runs = sweep(tmp_path / "runs", "smoke", PLAN[:1], (42,), executor="submitit-local", **QUICK)
    assert scores_of(sub_scores) == scores_of(scores[scores["method"] == "adapters-shared"])
    logs = list((tmp_path / "runs" / "logs" / Path(sub_runs[0]["output_dir"]).name).glob("*_log.out"))
    assert logs and "[test] best step" in logs[0].read_text()


def test_a_failing_run_is_named_while_the_others_finish(serial, capsys):
    root, _, _ = serial
    plan = PLAN[:1] + [({"method": "broken"}, {"method": "adapters-shared", "reduction_factor": 7})]  # 64 % 7 != 0
    with pytest.raises(SweepError) as err:
        sweep(root, "smoke", plan, (42,), executor="local:2", **QUICK)
    [failure] = err.value.failures
    assert failure.job.name.startswith("adapters-shared_rte-cola_r7_seed42_") and failure.job.name in str(err.value)
    assert "1 of 2 runs failed" in str(err.value) and str(failure.log) in str(err.value)
    assert "Traceback" in failure.log.read_text()  # the worker's log holds the whole story
    assert f"[failed] {failure.job.name}" in capsys.readouterr().out  # printed when it failed, not only at the end
    with pytest.raises(SweepError) as err:  # a variant whose config is refused is named by its labels
        sweep(root, "smoke", [({"method": "nope"}, {"method": "nope"})], (42,), **QUICK)
    assert "method=nope seed=42: ValueError: method='nope' is not supported" in str(err.value)


SWEEP = """
import sys
from hyperformer.experiments import runs_summary, sweep
plan = [({"method": m}, {"method": m}) for m in ("adapters-shared", "hyperformer++")]
scores, runs = sweep(sys.argv[1], "smoke", plan, (42,), executor=sys.argv[2], tasks="rte,cola", max_steps=int(sys.argv[3]),
                     eval_steps=5, max_eval_samples=16)
print("SUMMARY", runs_summary(runs))
"""


def start_sweep(root, executor="serial", steps=20):
    return subprocess.Popen([sys.executable, "-c", SWEEP, str(root), executor, str(steps)], env={**ENV, **os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def eval_steps(run:Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run / "metrics.jsonl")]


def test_a_killed_sweep_trains_nothing_twice(tmp_path):
    root = tmp_path / "runs"
    proc = start_sweep(root)
    deadline, runs = time.time() + 300, []
    while time.time() < deadline and proc.poll() is None:  # kill it once the first run is done and the second checkpointed
        runs = sorted(p.parent for p in root.glob("*/config.json"))
        done = [r for r in runs if (r / "result.json").is_file()]
        if len(runs) == 2 and len(done) == 1 and latest_checkpoint(next(r for r in runs if r not in done)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    finished = next(r for r in runs if (r / "result.json").is_file())
    stamp = (finished / "result.json").stat().st_mtime_ns
    again = start_sweep(root)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert "SUMMARY 2 runs: 1 trained, 1 reused" in out and "[resume] continuing from" in out, out
    assert (finished / "result.json").stat().st_mtime_ns == stamp  # the finished run was not trained again
    for run in runs: assert eval_steps(run) == [5, 10, 15, 20], (run, eval_steps(run))  # each evaluation once


def test_two_sweeps_at_once_never_train_a_run_twice(tmp_path):
    root = tmp_path / "runs"
    first, second = start_sweep(root, steps=10), start_sweep(root, steps=10)
    outs = [p.communicate(timeout=400)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    trained = [int(o.split("SUMMARY 2 runs: ")[1].split(" trained")[0]) for o in outs]
    assert sum(trained) == 2, outs  # every run trained by exactly one of them; the other waited or reused it
    for run in (p.parent for p in root.glob("*/result.json")): assert eval_steps(run) == [5, 10]


def write_rte(folder:Path, edit:str="") -> Path:
    "RTE in the GLUE layout (train.tsv, dev.tsv) from the shipped sample; `edit` is appended to every dev sentence."
    from hyperformer.data import load_sample
    names = ("entailment", "not_entailment")
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = load_sample("rte", split)
        lines = ["index\tsentence1\tsentence2\tlabel"]
        lines += [f"{i}\t{r['sentence1']}{edit if split == 'validation' else ''}\t{r['sentence2']}\t{names[r['label']]}"
                  for i, r in enumerate(rows)]
        (folder / "RTE").mkdir(parents=True, exist_ok=True)
        (folder / "RTE" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_tokenised_data_is_cached_per_content(tmp_path):
    quick = dict(tasks="rte", max_steps=2, eval_steps=2, max_eval_samples=8, data_dir=str(write_rte(tmp_path / "data")))
    before = dict(tokenized_cache_stats)
    delta = lambda key: tokenized_cache_stats[key] - before.get(key, 0)
    sweep(tmp_path / "runs", "smoke", PLAN, (42,), **quick)  # two runs, one tokenisation of each split
    assert (delta("misses"), delta("hits")) == (3, 3)
    write_rte(tmp_path / "data", edit=" (edited)")  # a data file changed: its splits are tokenised again
    sweep(tmp_path / "runs", "smoke", PLAN, (43,), data_seed=42, **quick)
    assert delta("misses") == 3 + 2 and delta("hits") == 3 + 1 + 3  # validation and test changed, train did not

"""Faults around a run directory: --overwrite safety, one process per run dir, complete checkpoints, SIGKILL at
several moments then resume (compared with an uninterrupted run: metrics.jsonl, best/, test_metrics.json), Ctrl-C, an
OOM-like kill before the first checkpoint, file modes. CPU, offline, t5-tiny on the shipped samples."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperformer.cli import main
from hyperformer.config import atomic_write, atomic_write_text
from hyperformer.model import ADAPTER_WEIGHTS_NAME
from helpers import FAULT_ARGS, FAULT_CLI, copy_unfinished, evals, fault_config as config, fault_env, same_outcome
from hyperformer.train import (CHECKPOINT_MANIFEST, RUN_LOCK, RUN_MARKER, RunError, RunLock, _restore_best_dir,
                               read_jsonl, train, write_checkpoint_manifest, write_run_marker)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
CLI = [str(Path(sys.executable).with_name("hyperformer"))]
@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    "The uninterrupted run every fault is compared with."
    run = tmp_path_factory.mktemp("whole") / "run"
    result = train(config(run), progress=False)
    assert 4 < result["best_step"] < 16, f"premise: the best is neither the first nor the final step ({evals(run)})"
    return run


# --- item 3: --overwrite ---------------------------------------------------------------------------------------------

def test_overwrite_refuses_folders_that_are_not_one_run_of_this_package(tmp_path, monkeypatch):
    thesis = tmp_path / "thesis"
    (thesis / "notes").mkdir(parents=True); (thesis / "notes" / "thesis.tex").write_text("three years")
    with pytest.raises(RunError, match=r"refuses to delete .*thesis: it is not a hyperformer run \(no .hyperformer-run marker"):
        train(config(thesis), overwrite=True, progress=False)
    assert (thesis / "notes" / "thesis.tex").read_text() == "three years"
    model_dir = tmp_path / "t5"; model_dir.mkdir(); (model_dir / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(RunError, match=r"holds a different run \(it is not a run directory\)"):
        train(config(model_dir), progress=False)
    with pytest.raises(RunError, match="it is not a hyperformer run"):
        train(config(model_dir), overwrite=True, progress=False)
    assert (model_dir / "config.json").is_file()
    runs = tmp_path / "runs"
    for name in ("a", "b"): (runs / name).mkdir(parents=True); write_run_marker(runs / name)
    with pytest.raises(RunError, match=r"it holds other runs \(a, b\)"):
        train(config(runs), overwrite=True, progress=False)
    assert (runs / "a" / RUN_MARKER).is_file() and (runs / "b" / RUN_MARKER).is_file()
    cwd, home = tmp_path / "work" / "here", tmp_path / "home"
    cwd.mkdir(parents=True); home.mkdir(); (cwd / "data.csv").write_text("x"); (home / ".bashrc").write_text("x")
    monkeypatch.chdir(cwd); monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RunError, match=r"output_dir='' names no folder"):
        train(config(tmp_path).replace(output_dir=""), overwrite=True, progress=False)
    for folder in (".", "..", str(home), "/"):
        with pytest.raises(RunError, match="it is the root, home or current folder or one above them"):
            train(config(folder), overwrite=True, progress=False)
    assert (cwd / "data.csv").is_file() and (home / ".bashrc").is_file()
    with pytest.raises(RunError, match="--resume continues the run in .* and --overwrite deletes it; pass only one of them"):
        train(config(tmp_path / "r"), resume=True, overwrite=True, progress=False)


def test_overwrite_replaces_a_run_only_once_the_new_one_is_built_and_keeps_foreign_files(tmp_path, whole):
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    (run / "notes.txt").write_text("mine")
    result = (run / "result.json").read_text()
    broken = config(run, model="no-such-org/no-such-t5", pretrained=True, tokenizer="byt5")  # valid config, fails to build
    with pytest.raises(RunError, match="no-such-org/no-such-t5"):
        train(broken, overwrite=True, progress=False)
    assert (run / "result.json").read_text() == result and (run / "best" / ADAPTER_WEIGHTS_NAME).is_file()
    assert not (run / RUN_LOCK).exists()
    new = train(config(run, seed=7, max_steps=4), overwrite=True, progress=False)
    assert new["steps"] == 4 and not new["reused"]
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 7
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [4]
    assert (run / "notes.txt").read_text() == "mine" and (run / RUN_MARKER).is_file()


# --- item 5: complete checkpoints, resume --------------------------------------------------------------------------

def _truncate(name):
    return lambda d: os.truncate(d / name, (d / name).stat().st_size // 2)


def _nan_weights(d):
    "NaN weights under a manifest that matches them: what a run that diverged just before its save leaves."
    from safetensors.torch import save_file
    weights = load_file(str(d / ADAPTER_WEIGHTS_NAME)); next(iter(weights.values())).fill_(float("nan"))
    save_file(weights, str(d / ADAPTER_WEIGHTS_NAME)); write_checkpoint_manifest(d)


@pytest.mark.parametrize("damage,reason", [
    (lambda d: (d / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    (lambda d: (d / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    (lambda d: (d / "rng_state.pth").unlink(), "rng_state.pth is missing"),
    (_truncate(ADAPTER_WEIGHTS_NAME), f"{ADAPTER_WEIGHTS_NAME} has .* bytes, its manifest says .* \\(truncated"),
    (_truncate("optimizer.pt"), "optimizer.pt has .* bytes, its manifest says .* \\(truncated"),
    (lambda d: (d / CHECKPOINT_MANIFEST).unlink(), "it has no checkpoint_manifest.json .*its save did not finish"),
    (_nan_weights, f"{ADAPTER_WEIGHTS_NAME} holds NaN or inf in "),
], ids=["no-optimizer", "no-scheduler", "no-rng", "truncated-weights", "truncated-optimizer", "no-manifest", "nan-weights"])
def test_resume_skips_a_damaged_newest_checkpoint_and_matches_the_uninterrupted_run(tmp_path, whole, capsys, damage, reason):
    run = copy_unfinished(whole, tmp_path / "run")
    damage(run / "checkpoints" / "checkpoint-16")
    capsys.readouterr()
    train(config(run), resume=True, progress=False)
    out = capsys.readouterr().out
    assert re.search(f"\\[resume\\] skipping checkpoint-16: {reason}", out), out
    assert "[resume] continuing from " in out and "checkpoint-12" in out
    same_outcome(run, whole)


def test_resume_refuses_when_no_checkpoint_is_usable_and_keeps_the_best_it_cannot_rebuild(tmp_path, whole):
    run = copy_unfinished(whole, tmp_path / "run")
    for step in (12, 16): (run / "checkpoints" / f"checkpoint-{step}" / "optimizer.pt").unlink()
    with pytest.raises(RunError, match=r"has no usable checkpoint \(checkpoint-16: optimizer.pt is missing; checkpoint-12: "
                                       r"optimizer.pt is missing\)\. To train this run again from step 0 pass --overwrite"):
        train(config(run), resume=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()  # nothing changed
    # best/ gone and the best step's checkpoint long pruned: refused, not forgotten
    shutil.rmtree(run / "best")
    with pytest.raises(RunError, match=r"the best evaluation so far \(step 4, avg_flat 31.00\) has no adapter: .*best is missing "
                                       r"and no checkpoint of step 4 is left"):
        _restore_best_dir(run, {"step": 4, "avg_flat": 31.0}, done=12)


def test_resume_restores_a_missing_best_from_an_interrupted_swap_or_its_checkpoint(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "run")
    record = {**json.loads((run / "best" / "best.json").read_text()), "step": 12}
    shutil.rmtree(run / "best")  # lost; checkpoint-12 holds the adapter of the best step
    _restore_best_dir(run, record, done=12)
    assert f"rebuilt {run / 'best'} (step 12) from {run / 'checkpoints' / 'checkpoint-12'}" in capsys.readouterr().out
    assert json.loads((run / "best" / "best.json").read_text()) == record
    assert (run / "best" / ADAPTER_WEIGHTS_NAME).read_bytes() == (run / "checkpoints" / "checkpoint-12" / ADAPTER_WEIGHTS_NAME).read_bytes()
    (run / "best").rename(run / ".best.old")  # killed between the two renames of a best/ swap
    _restore_best_dir(run, record, done=16)
    assert "from an interrupted swap" in capsys.readouterr().out and json.loads((run / "best" / "best.json").read_text()) == record


# --- items 4, 5, 6: SIGKILL at several moments, OOM before the first checkpoint, stale locks, file modes ---------------

KILLS = ["config", "evaluate:8", "save:12", "step:14"]  # OOM-like, after an eval, mid-save, mid-way


def test_sigkill_at_several_moments_then_resume_matches_the_uninterrupted_run(tmp_path, whole, capsys):
    procs = {}
    for kill in KILLS:  # all at once: they overlap their start-up
        run = tmp_path / kill.replace(":", "-")
        procs[kill] = (run, subprocess.Popen(FAULT_CLI + FAULT_ARGS + ["--output-dir", str(run)], env=fault_env(ENV, kill),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0o027)))
    for kill, (run, proc) in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (kill, proc.returncode, err.decode()[-2000:])
        assert not (run / "result.json").exists() and (run / RUN_LOCK).is_file()  # the dead process's lock is left behind
        assert (run / "config.json").stat().st_mode & 0o777 == 0o640  # the umask, not mkstemp's 0600
    for kill, (run, proc) in procs.items():
        capsys.readouterr()
        # killed right after config.json (an OOM kill while loading): nothing to lose, so a plain re-run starts it again
        train(config(run), resume=kill != "config", progress=False)
        out = capsys.readouterr().out
        assert f"taking over the lock of process {proc.pid}" in out, (kill, out)
        if kill == "config": assert "[restart]" in out
        if kill == "save:12": assert "[resume] skipping checkpoint-12: it has no checkpoint_manifest.json" in out, out
        same_outcome(run, whole)
        assert not (run / RUN_LOCK).exists()


def test_ctrl_c_exits_130_with_the_resume_command_and_a_second_process_is_refused(tmp_path, whole):
    run = tmp_path / "run"
    # Ctrl-C at its default in the run: a test process started in the background (`cmd &`, some CI runners) ignores SIGINT,
    # an ignored signal stays ignored across exec, and Python (like any Unix program) then leaves it ignored.
    reset_sigint = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", reset_sigint] + CLI + FAULT_ARGS + ["--output-dir", str(run)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # exec keeps the pid the lock names
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not read_jsonl(run / "metrics.jsonl"): time.sleep(0.02)
    # Freeze the run where it stands (one evaluation logged), so it cannot finish while this process tries its --resume;
    # the Ctrl-C is pending until it is let go.
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    with pytest.raises(RunError, match=f"is in use by process {proc.pid} on "):  # a --resume beside the live run
        train(config(run), resume=True, progress=False)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out[-1000:], err[-3000:])
    assert "Traceback" not in err and "hyperformer train: interrupted. Continue the run with:" in err, err[-3000:]
    command = err.strip().splitlines()[-1].strip()
    assert command == f"hyperformer train --config {shlex.quote(str(run / 'config.json'))} --resume --no-progress"
    assert not (run / RUN_LOCK).exists()
    assert main(shlex.split(command)[1:]) == 0
    same_outcome(run, whole)


def test_run_files_follow_the_umask(tmp_path):
    from safetensors.torch import save_file
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write(tmp_path / "w.safetensors", lambda tmp: save_file({"x": torch.zeros(1)}, tmp))
        with RunLock(tmp_path / "run"): mode = os.stat(tmp_path / "run" / RUN_LOCK).st_mode & 0o777
    finally: os.umask(old)
    assert [(tmp_path / n).stat().st_mode & 0o777 for n in ("a.json", "w.safetensors")] == [0o644, 0o644] and mode == 0o644

"""A run directory after the faults of the second trust pass: the final phase resumed without training further, checkpoints
of other runs passed over, a moved run or one without config.json resumed where it is, a torn best/ rebuilt, the lock
never writing through a link, a full disk named with the resume command, train_loss over a resumed run, bounded threads,
and notebook parameters / docs errors that name the bad value. CPU, offline, t5-tiny on the shipped samples."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import copy_unfinished, fault_config as config, same_outcome
from hyperformer.cli import main
from hyperformer.model import ADAPTER_WEIGHTS_NAME, HyperFormerModel
from hyperformer.train import (CHECKPOINT_MANIFEST, RUN_LOCK, TRAIN_LOSS_FILE, RunError, RunLock, _checkpoints, make_config,
                               prune_checkpoints, read_jsonl, run_identity, train, write_checkpoint_manifest, write_json,
                               write_run_marker)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    "The uninterrupted run every case is compared with."
    run = tmp_path_factory.mktemp("whole") / "run"
    train(config(run), progress=False)
    return run


def steps_on_disk(run):
    return sorted(int(p.name.split("-")[-1]) for p in _checkpoints(run))


# --- the final phase ------------------------------------------------------------------------------------------------

def test_resume_after_the_last_checkpoint_scores_test_and_never_trains_past_max_steps(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "run")
    result = train(config(run), resume=True, progress=False)
    out = capsys.readouterr().out
    assert "checkpoint-16 is the last step (max_steps 16): nothing left to train" in out, out
    assert steps_on_disk(run) == steps_on_disk(whole) and max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 16
    same_outcome(run, whole)
    whole_result = json.loads((whole / "result.json").read_text())
    assert result["test"] == whole_result["test"] and result["best_step"] == whole_result["best_step"]
    assert result["train_loss"] == pytest.approx(whole_result["train_loss"], rel=1e-6)


def test_resume_with_the_final_evaluation_missing_evaluates_the_last_checkpoint(tmp_path, whole):
    run = copy_unfinished(whole, tmp_path / "run")
    kept = [r for r in read_jsonl(run / "metrics.jsonl") if r["step"] < 16]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    train(config(run), resume=True, progress=False)
    same_outcome(run, whole)


def test_train_loss_spans_the_whole_run_after_a_resume(tmp_path, whole):
    expected = json.loads((whole / "result.json").read_text())["train_loss"]
    run = copy_unfinished(whole, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "checkpoint-16")  # resumed from step 12: steps 13-16 trained again
    assert train(config(run), resume=True, progress=False)["train_loss"] == pytest.approx(expected, rel=1e-5)
    older = copy_unfinished(whole, tmp_path / "older")  # a checkpoint written before the loss record: rebuilt from the logged losses
    shutil.rmtree(older / "checkpoints" / "checkpoint-16")
    (older / "checkpoints" / "checkpoint-12" / TRAIN_LOSS_FILE).unlink()
    write_checkpoint_manifest(older / "checkpoints" / "checkpoint-12", 1, run_identity(config(older)))
    assert train(config(older), resume=True, progress=False)["train_loss"] == pytest.approx(expected, rel=1e-4)


# --- whose checkpoint -------------------------------------------------------------------------------------------------

def test_a_checkpoint_of_another_run_is_passed_over_and_kept(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "run")
    newest = run / "checkpoints" / "checkpoint-16"
    manifest = json.loads((newest / CHECKPOINT_MANIFEST).read_text())
    manifest["run"] = run_identity(config(run, learning_rate=5e-4, max_steps=60))  # copied in from another run
    (newest / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    train(config(run), resume=True, progress=False)
    out = capsys.readouterr().out
    assert "[resume] skipping checkpoint-16: it belongs to another run" in out and "continuing from" in out and "checkpoint-12" in out
    assert "checkpoint-16 belongs to another run: moved to checkpoint-16.other-run" in out
    assert json.loads((run / "checkpoints" / "checkpoint-16.other-run" / CHECKPOINT_MANIFEST).read_text()) == manifest
    same_outcome(run, whole)


def test_the_best_steps_checkpoint_survives_pruning(tmp_path):
    run = tmp_path / "run"
    identity = {"config": "abc", "code": "x"}
    for step in (4, 8, 12, 16):
        folder = run / "checkpoints" / f"checkpoint-{step}"; folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        write_checkpoint_manifest(folder, 1, identity)
    foreign = run / "checkpoints" / "checkpoint-2"; foreign.mkdir()
    write_checkpoint_manifest(foreign, 1, {"config": "other", "code": "x"})
    prune_checkpoints(run, run / "checkpoints" / "checkpoint-16", best_step=4, run=identity)
    assert steps_on_disk(run) == [2, 4, 12, 16]  # newest two, the best step's, and another run's (not ours to delete)


def test_a_torn_best_is_rebuilt_from_its_checkpoint(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "run")
    os.truncate(run / "best" / ADAPTER_WEIGHTS_NAME, 64)
    capsys.readouterr()
    train(config(run), resume=True, progress=False)
    out = capsys.readouterr().out
    assert f"[resume] {run / 'best'} is torn ({ADAPTER_WEIGHTS_NAME} does not load" in out and "rebuilt" in out, out
    same_outcome(run, whole)


# --- a run somewhere else, a run without its config ----------------------------------------------------------------

def test_a_moved_run_resumes_and_is_reused_where_it_is(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "moved", keep_place=True)  # config.json still names the old folder
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.json"), "--resume", "--no-progress"]) == 0  # the command Ctrl-C prints
    assert f"[moved] {run} was made in {whole}" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["config"]["output_dir"] == str(run)
    same_outcome(run, whole)
    finished = tmp_path / "finished"; shutil.copytree(whole, finished)
    assert train(config(finished), progress=False)["reused"] is True


def test_a_run_without_config_json_is_resumed_not_overwritten(tmp_path, whole, capsys):
    run = copy_unfinished(whole, tmp_path / "run")
    (run / "config.json").unlink()
    with pytest.raises(RunError, match="whose config.json is missing; its checkpoints belong to these settings: pass --resume") as e:
        train(config(run), progress=False)
    assert "--overwrite" not in str(e.value)
    with pytest.raises(RunError, match="checkpoints do not confirm these settings") as e:
        train(config(run, learning_rate=5e-4), resume=True, progress=False)
    assert "--overwrite would delete its checkpoints" in str(e.value)
    train(config(run), resume=True, progress=False)
    assert json.loads((run / "config.json").read_text())["config"] == config(run).to_dict()
    same_outcome(run, whole)


def test_a_run_killed_before_its_first_checkpoint_is_replaced_by_other_settings_with_a_message(tmp_path, capsys):
    run = tmp_path / "run"
    big = config(run, batch_size=100_000)  # what an OOM kill leaves: marker, config.json and the dead process's lock
    write_run_marker(run)
    write_json(run / "config.json", {"config": big.to_dict(), "hyperformer_version": "x"})
    (run / RUN_LOCK).write_text(json.dumps({"pid": 999999999, "host": "gone", "since": "then"}))
    capsys.readouterr()
    train(config(run, max_steps=4, eval_steps=4), progress=False)
    out = capsys.readouterr().out
    assert "[replace]" in out and "stopped before its first checkpoint or evaluation (killed, e.g. for lack of memory" in out
    assert "taking over the lock of process 999999999" in out
    assert (run / "result.json").is_file() and not (run / RUN_LOCK).exists()


def test_train_refuses_a_model_folder_without_tokenizer_files_before_making_a_run(tmp_path):
    from hyperformer.model import ModelFolderError, build_base_model
    folder = tmp_path / "bert"
    build_base_model("bert-tiny").save_pretrained(folder)  # weights and config.json, no tokenizer
    with pytest.raises(ModelFolderError, match=f"no tokenizer files in {folder}"):
        train(make_config("smoke", model=str(folder), tasks="rte", max_steps=2, output_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()


# --- the lock -----------------------------------------------------------------------------------------------------------

def test_the_lock_never_writes_through_a_link_or_into_a_file_it_did_not_create(tmp_path):
    victim = tmp_path / "thesis.tex"; victim.write_text("my thesis")
    for name, make in [("symlink", lambda p: p.symlink_to(victim)), ("hardlink", lambda p: os.link(victim, p)),
                       ("fifo", lambda p: os.mkfifo(p)), ("foreign", lambda p: p.write_text("not a lock"))]:
        run = tmp_path / name; run.mkdir()
        make(run / RUN_LOCK)
        with pytest.raises(RunError, match=f"{run / RUN_LOCK} (is a symbolic link|is a file with 2 hard links|is not a regular "
                                           "file|holds something that is not a hyperformer lock)"):
            RunLock(run).acquire()
        assert victim.read_text() == "my thesis"
        if name == "foreign": assert (run / RUN_LOCK).read_text() == "not a lock"


# --- a full disk -------------------------------------------------------------------------------------------------------

def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_path_and_the_resume_command_and_leaves_no_temporary_folders(tmp_path, whole, monkeypatch):
    run = tmp_path / "run"
    real_save = HyperFormerModel.save_adapter
    def save(self, folder, *a, **kw):  # the disk fills while the best adapter of step 8 is written
        if ".best.tmp" in str(folder) and len(read_jsonl(run / "metrics.jsonl")) >= 2: _full_disk()
        return real_save(self, folder, *a, **kw)
    monkeypatch.setattr(HyperFormerModel, "save_adapter", save)
    with pytest.raises(RunError) as e:
        train(config(run), progress=False)
    message = str(e.value)
    assert f"the disk holding {run} is full: writing {run / '.best.tmp-'}" in message and "No space left on device" in message
    assert f"hyperformer train --config {run / 'config.json'} --resume" in message
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(HyperFormerModel, "save_adapter", real_save)
    train(config(run), resume=True, progress=False)
    same_outcome(run, whole)


def test_a_full_disk_during_a_checkpoint_removes_the_half_written_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = torch.save
    def save(obj, f, *a, **kw):
        if "checkpoint-8" in str(f): _full_disk()
        return real(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunError, match=f"writing {run / 'checkpoints' / 'checkpoint-8'} failed"):
        train(config(run, max_steps=8), progress=False)
    assert steps_on_disk(run) == [4]


# --- bounds and parameters -------------------------------------------------------------------------------------------

def test_threads_beyond_the_usable_cores_are_refused_before_anything_starts(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    code = main(["train", "--threads", "10000", "--output-dir", str(tmp_path / "run"), "--max-steps", "2"])
    assert code == 2 and f"--threads 10000: this process can use {cores} cores; give at most {cores}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bad_notebook_parameter_is_named_with_its_choices_under_papermill(tmp_path):
    root = Path(__file__).parent.parent
    proc = subprocess.run([str(Path(sys.executable).with_name("papermill")), str(root / "nbs" / "exp_table2.ipynb"),
                           str(tmp_path / "out.ipynb"), "-p", "profile", "foo", "-p", "results", str(tmp_path / "results"),
                           "--cwd", str(root / "nbs")], capture_output=True, text=True, timeout=300)
    shown = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "profile='foo' is not supported; choose one of: smoke" in shown and "KeyError" not in shown, shown[-2000:]


@pytest.mark.parametrize("parameter, choices", [("methods", "hyperformer++"), ("fewshot_methods", "finetune"), ("profile", "cpu")])
def test_a_bad_exp_cpu_parameter_is_named_with_its_choices(tmp_path, parameter, choices):
    from test_bad_inputs import run_setup  # the notebook's parameters and setup cells, as papermill runs them
    with pytest.raises(ValueError, match=f"{parameter}='foo' is not supported; choose one of: .*{re.escape(choices)}"):
        run_setup("exp_cpu", tmp_path, **{parameter: "foo"})


def test_docs_name_a_malformed_notebook(tmp_path):
    root = Path(__file__).parent.parent
    nbs = tmp_path / "nbs"; nbs.mkdir()
    shutil.copy(root / "nbs" / "index.ipynb", nbs / "index.ipynb")
    (nbs / "broken.ipynb").write_text('{"cells": [')
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root / 'tools')!r}); import build_docs; "
                           f"build_docs.build({str(tmp_path / 'docs')!r}, {str(nbs)!r})"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and f"{nbs / 'broken.ipynb'} cannot be rendered" in proc.stderr, proc.stderr[-2000:]

"""Training engine acceptance: every method on the smoke profile, eval reproduction, SIGKILL + resume, optimizer set,
unsampled tasks, few-shot transfer, and clear errors. CPU, offline, shipped samples."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperformer.model import ADAPTER_WEIGHTS_NAME
from hyperformer.train import RunError, build_model, build_tokenizer, evaluate_run, latest_checkpoint, make_config, read_jsonl, train
from hyperformer.data import Seq2SeqCollator

from helpers import ENV, QUICK, cli, kill_after_evaluations, smoke_trainer as _trainer, unsampled_task_moves


@pytest.mark.parametrize("method", ["finetune", "adapters", "adapters-shared", "hyperformer", "hyperformer++"])
def test_every_method_trains_selects_tests_and_writes_its_run_dir(tmp_path, method):
    overrides = dict(QUICK, tasks="rte") if method == "adapters" else QUICK
    config = make_config("smoke", method=method, output_dir=str(tmp_path / method), **overrides)
    result = train(config, progress=False)
    run = tmp_path / method
    log = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in log] == [10, 20]
    assert result["best_step"] == max(log, key=lambda r: r["avg_flat"])["step"]  # first of the maxima on ties
    for name in ("config.json", "test_metrics.json", "result.json", f"best/{ADAPTER_WEIGHTS_NAME}", "best/best.json"):
        assert (run / name).is_file(), name
    assert {p.name for p in (run / "predictions").iterdir()} >= {f"test_{t}.jsonl" for t in config.eval_tasks}
    saved = load_file(str(run / "best" / ADAPTER_WEIGHTS_NAME))
    if method != "finetune":  # adapter-only checkpoint: no frozen backbone weights
        assert all(k.startswith("adapters.") or "layer_norm" in k for k in saved)
    assert evaluate_run(run)["test"] == result["test"]


def test_cli_smoke_run_loss_goes_down_and_cli_eval_reproduces_test_metrics(tmp_path):
    # how long it takes is the benchmark's business (hyperformer bench), not a wall-clock assertion on a shared machine
    done = cli("train", "--profile", "smoke", "--method", "hyperformer++", "--output-dir", str(tmp_path / "pp"), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((latest_checkpoint(tmp_path / "pp") / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    evaluated = cli("eval", str(tmp_path / "pp"), "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    logged = json.loads((tmp_path / "pp" / "test_metrics.json").read_text())
    scores = json.loads(evaluated.stdout.strip().splitlines()[-1])["test"]
    assert scores["tasks"] == logged["tasks"] and scores["avg_flat"] == logged["avg_flat"]


def _final_trainable(run):
    return load_file(str(Path(run) / "checkpoints" / "checkpoint-60" / ADAPTER_WEIGHTS_NAME))


def test_sigkill_after_second_evaluation_then_resume_matches_uninterrupted(tmp_path):
    args = ["train", "--profile", "smoke", "--method", "hyperformer++", "--tasks", "rte,cola,mrpc", "--max-steps", "60",
            "--eval-steps", "15", "--max-eval-samples", "16", "--no-progress"]
    whole = cli(*args, "--output-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    kill_after_evaluations(args, run)
    assert not (run / "result.json").exists()
    refused = cli(*args, "--output-dir", str(run))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = cli(*args, "--output-dir", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _final_trainable(tmp_path / "whole"), _final_trainable(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [15, 30, 45, 60]
    assert json.loads((run / "result.json").read_text())["test"] == json.loads((tmp_path / "whole" / "result.json").read_text())["test"]
    # not only the final weights: every evaluation, the selected best/ and the test scores (more kill moments
    # and damaged checkpoints in test_faults_rundir.py)
    evals = lambda r: [{k: v for k, v in e.items() if k != "seconds"} for e in read_jsonl(r / "metrics.jsonl")]
    assert evals(run) == evals(tmp_path / "whole")
    a, b = (load_file(str(r / "best" / ADAPTER_WEIGHTS_NAME)) for r in (run, tmp_path / "whole"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "test_metrics.json").read_text()) == json.loads((tmp_path / "whole" / "test_metrics.json").read_text())




@pytest.mark.parametrize("method", ["adapters-shared", "hyperformer++"])
def test_optimizer_holds_only_trainable_parameters_and_unsampled_tasks_do_not_move(tmp_path, method):
    config = make_config("smoke", method=method, output_dir=str(tmp_path / "run"), **QUICK)
    trainer, data, tok = _trainer(config)
    model = trainer.model
    trainer.create_optimizer()
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(in_optimizer) < len(list(model.parameters()))
    collate = Seq2SeqCollator(tok)
    for step, task in enumerate(["rte", "cola", "rte", "rte"]):  # cola is sampled once, then not
        batch = collate([data[task]["train"][i] for i in range(8)])
        model.train()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        if step >= 2: before = {n: p.detach().clone() for n, p in model.named_parameters() if ".cola" in n}
        trainer.optimizer.step(); trainer.optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            after = dict(model.named_parameters())
            assert before and all(torch.equal(before[n], after[n]) for n in before), "an unsampled task moved"


def test_stale_momentum_compat_moves_unsampled_tasks(tmp_path):
    config = make_config("smoke", method="hyperformer++", output_dir=str(tmp_path / "run"), stale_momentum=True, **QUICK)
    assert unsampled_task_moves(*_trainer(config)), "with the compat flag the unsampled task should move"


@pytest.fixture(scope="module")
def glue_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("glue") / "run"
    train(make_config("smoke", method="hyperformer++", tasks="mnli,rte", max_steps=10, eval_steps=10, max_eval_samples=16,
                      output_dir=str(run)), progress=False)
    return run


@pytest.mark.parametrize("mode", ["paper", "task-only"])
def test_few_shot_copies_the_similar_task_and_keeps_glue_predictions(tmp_path, glue_run, mode):
    source_weights = (glue_run / "best" / ADAPTER_WEIGHTS_NAME).read_bytes()
    before = evaluate_run(glue_run, "mnli,rte", "validation")
    few = make_config("smoke", method="hyperformer++", tasks="cb", n_train=16, max_steps=10, eval_steps=10, max_eval_samples=16,
                      init_from=str(glue_run), fewshot_train=mode, output_dir=str(tmp_path / "cb"))
    model = build_model(few, build_tokenizer(few))  # loads the GLUE run and copies mnli's embedding for cb
    emb = model.adapters.task_embeddings.embeddings
    assert torch.equal(emb["cb"], emb["mnli"]) and not torch.equal(emb["cb"], emb["rte"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if mode == "task-only": assert trainable == {"adapters.task_embeddings.embeddings.cb"}
    else: assert "adapters.encoder.generator.weight" in trainable
    result = train(few, progress=False)
    assert result["test"]["tasks"].keys() == {"cb"}
    assert json.loads((tmp_path / "cb" / "config.json").read_text())["fewshot_copies"] == {"cb": "mnli"}
    assert (glue_run / "best" / ADAPTER_WEIGHTS_NAME).read_bytes() == source_weights  # the GLUE run is untouched
    assert evaluate_run(glue_run, "mnli,rte", "validation") == before
    if mode == "task-only":  # the few-shot model itself still predicts the GLUE tasks exactly as before
        assert evaluate_run(tmp_path / "cb", "mnli,rte", "validation") == before


def test_few_shot_needs_the_similar_task_in_the_source_run(tmp_path, glue_run):
    few = make_config("smoke", method="hyperformer++", tasks="boolq", init_from=str(glue_run), output_dir=str(tmp_path / "b"))
    with pytest.raises(RunError, match=r"no task to initialise \['boolq'\] from \(needs \['qnli'\]"):
        build_model(few, build_tokenizer(few))


def run_main(*args):
    import contextlib, io
    from hyperformer.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): code = main(list(args))
    return code, err.getvalue()


def test_clear_errors(tmp_path):
    for args, message in [(["--tasks", "rte,wnli"], "wnli"),
                          (["--max-steps", "0"], "max_steps=0 must be a positive integer"),
                          (["--batch-size", "0"], "batch_size=0 must be a positive integer")]:
        code, err = run_main("train", *args, "--output-dir", str(tmp_path / "x"))
        assert code == 2 and message in err, (args, err[-500:])
    import contextlib, io
    from hyperformer.cli import main
    for bad in (["--profile", "fast"], ["--method", "lora"]):  # choices are the parser's: exit 2 before any work
        err = io.StringIO()
        with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(err): main(["train", *bad])
        assert stopped.value.code == 2 and "invalid choice" in err.getvalue(), err.getvalue()


def test_output_dir_with_a_different_run_is_refused_unless_overwrite(tmp_path):
    config = make_config("smoke", output_dir=str(tmp_path / "run"), **dict(QUICK, max_steps=10))
    train(config, progress=False)
    with pytest.raises(RunError, match="holds a different run"):
        train(config.replace(seed=7), progress=False)
    (tmp_path / "other").mkdir(); (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds a different run"):
        train(config.replace(output_dir=str(tmp_path / "other")), progress=False)
    assert train(config.replace(seed=7), overwrite=True, progress=False)["steps"] == 10


def test_hub_unreachable_points_at_local_paths(tmp_path):
    code, err = run_main("train", "--profile", "paper", "--tasks", "rte", "--output-dir", str(tmp_path / "p"))
    assert code == 2 and "--data-dir" in err and "--model /path/to/t5" in err, err[-1000:]


class PoisonAfter(__import__("transformers").TrainerCallback):
    "Makes a trainable weight NaN after `step` steps, as a diverging run would."
    def __init__(self, step): self.step = step
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad(): next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = make_config("smoke", method="hyperformer++", output_dir=str(tmp_path / "nan"), **dict(QUICK, eval_steps=5))
    with pytest.raises(RunError, match=r"the loss became nan at step 13; training stopped. Last good checkpoint: .*checkpoint-10"):
        train(config, progress=False, callbacks=[PoisonAfter(12)])
    assert latest_checkpoint(tmp_path / "nan").name == "checkpoint-10" and not (tmp_path / "nan" / "result.json").exists()
    assert (tmp_path / "nan" / "best" / ADAPTER_WEIGHTS_NAME).is_file()


def test_ddp_on_cpu_with_two_processes(tmp_path):
    """torchrun with 2 CPU processes (gloo): whole single-task batches dealt to ranks, evaluation split and gathered,
    one metrics line per evaluation, and a single-process eval of the best checkpoint reproduces the logged test scores."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    run = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "hyperformer.cli", "train", "--profile", "smoke",
                           "--tasks", "rte,cola,mrpc", "--max-steps", "20", "--eval-steps", "10", "--max-eval-samples", "24",
                           "--output-dir", str(run), "--no-progress"], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"best_step"') == 1  # the summary comes from rank 0 only
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [10, 20]
    # rank 0 held the run's lock for the job (released at the end); the checkpoint is complete for 2 processes
    assert (run / ".hyperformer-run").is_file() and not (run / ".hyperformer-lock").exists()
    manifest = json.loads((latest_checkpoint(run) / "checkpoint_manifest.json").read_text())
    assert manifest["world_size"] == 2 and {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest["files"])
    logged = json.loads((run / "test_metrics.json").read_text())
    assert evaluate_run(run)["test"]["tasks"] == logged["tasks"]


def test_the_process_group_a_run_opens_is_closed_before_the_interpreter_exits(tmp_path):
    """Under torchrun's environment the Trainer's arguments open a gloo group; a group left open at exit can abort the rank
    (SIGABRT, 'terminate called without an active exception') after the run is done. A hook registered before the package
    is imported runs after the package's own exit hooks, so it sees whether they closed the group."""
    script = """
import atexit, torch.distributed as dist
atexit.register(lambda: print("open at exit:", dist.is_initialized(), flush=True))
from hyperformer.train import _training_arguments, make_config
_training_arguments(make_config("smoke", model="bert-tiny", tasks="rte", output_dir=%r), progress=False)
print("open after the arguments:", dist.is_initialized(), flush=True)
""" % str(tmp_path / "run")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]
    env = dict(ENV, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["open after the arguments: True", "open at exit: False"]

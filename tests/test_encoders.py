"""Encoder backbones end to end on tiny random BERT / RoBERTa (ByT5 tokenizer, shipped samples, CPU, offline): every
method trains with task heads and reproduces its test metrics, mixed-task batches, SIGKILL + resume bit-identical,
few-shot head copies, a local model folder, torchrun DDP, and the CLI's parameter report."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperformer.model import ADAPTER_WEIGHTS_NAME, build_base_model
from hyperformer.train import build_model, build_tokenizer, evaluate_run, make_config, read_jsonl, read_run_config, train

from helpers import ENV, QUICK, cli, kill_after_evaluations


@pytest.mark.parametrize("arch,method,sampling", [
    ("bert-tiny", "finetune", "task"), ("bert-tiny", "adapters", "task"), ("bert-tiny", "adapters-shared", "mixed"),
    ("bert-tiny", "hyperformer", "task"), ("bert-tiny", "hyperformer++", "mixed"), ("roberta-tiny", "hyperformer++", "task"),
    ("bert-tiny", "hyperformer-shared-layers", "task")])
def test_every_method_trains_heads_selects_and_reproduces(tmp_path, arch, method, sampling):
    overrides = dict(QUICK, tasks="rte") if method == "adapters" else QUICK
    config = make_config("smoke", model=arch, method=method, sampling=sampling, output_dir=str(tmp_path / "run"), **overrides)
    result = train(config, progress=False)
    run = tmp_path / "run"
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [10, 20]
    saved = load_file(str(run / "best" / ADAPTER_WEIGHTS_NAME))
    assert {k.split(".")[2] for k in saved if k.startswith("heads.")} == set(config.tasks)  # every task's head is saved
    if method != "finetune":  # adapters, heads and the encoder's own LayerNorms only
        assert all(k.startswith(("adapters.", "heads.")) or "LayerNorm" in k for k in saved)
    assert json.loads((run / "best" / "adapter_config.json").read_text())["base_model"]["model_type"] == arch.split("-")[0]
    lines = (run / "predictions" / "test_rte.jsonl").read_text().splitlines()
    assert {json.loads(l)["prediction"] for l in lines} <= {"0", "1"}
    if "stsb" in config.tasks: assert set(result["test"]["tasks"]["stsb"]) == {"pearson", "spearmanr"}
    assert evaluate_run(run)["test"] == result["test"]


def _checkpoint(run, step):
    return load_file(str(Path(run) / "checkpoints" / f"checkpoint-{step}" / ADAPTER_WEIGHTS_NAME))


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    args = ["train", "--profile", "smoke", "--model", "bert-tiny", "--method", "hyperformer++", "--tasks", "rte,cola,stsb",
            "--max-steps", "40", "--eval-steps", "10", "--max-eval-samples", "16", "--no-progress"]
    whole = cli(*args, "--output-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    kill_after_evaluations(args, run)
    resumed = cli(*args, "--output-dir", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _checkpoint(tmp_path / "whole", 40), _checkpoint(run, 40)
    assert a.keys() == b.keys() and any(k.startswith("heads.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    scores = lambda r: [{k: v for k, v in line.items() if k != "seconds"} for line in read_jsonl(Path(r) / "metrics.jsonl")]
    assert scores(run) == scores(tmp_path / "whole")  # every evaluation, redone ones included
    assert json.loads((run / "result.json").read_text())["test"] == json.loads((tmp_path / "whole" / "result.json").read_text())["test"]


@pytest.fixture(scope="module")
def mnli_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("glue") / "run"
    train(make_config("smoke", model="bert-tiny", method="hyperformer++", tasks="mnli,rte", max_steps=10, eval_steps=10,
                      max_eval_samples=16, output_dir=str(run)), progress=False)
    return run


@pytest.mark.parametrize("mode", ["paper", "task-only"])
def test_few_shot_copies_the_head_where_the_labels_match(tmp_path, mnli_run, mode):
    source = load_file(str(mnli_run / "best" / ADAPTER_WEIGHTS_NAME))
    few = make_config("smoke", model="bert-tiny", method="hyperformer++", tasks="cb,scitail", n_train=16, max_steps=10,
                      eval_steps=10, max_eval_samples=16, init_from=str(mnli_run), fewshot_train=mode, output_dir=str(tmp_path / "few"))
    model = build_model(few, build_tokenizer(few))
    heads = dict(model.named_parameters())
    # CB's labels (entailment, contradiction, neutral) are MNLI's (entailment, neutral, contradiction) reordered
    assert torch.equal(heads["heads.tasks.cb.out.weight"], source["heads.tasks.mnli.out.weight"][[0, 2, 1]])
    assert torch.equal(heads["heads.tasks.cb.dense.weight"], source["heads.tasks.mnli.dense.weight"])
    # SciTail has two labels against MNLI's three: a fresh head; its adapters' task embedding is still MNLI's
    assert heads["heads.tasks.scitail.out.weight"].shape[0] == 2
    assert not torch.equal(heads["heads.tasks.scitail.dense.weight"], source["heads.tasks.mnli.dense.weight"])
    emb = model.adapters.task_embeddings.embeddings
    assert torch.equal(emb["scitail"], emb["mnli"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if mode == "task-only":
        assert {n.split(".")[2] if n.startswith("heads.") else n.split(".")[-1] for n in trainable} == {"cb", "scitail"}
    result = train(few, progress=False)
    assert result["test"]["tasks"].keys() == {"cb", "scitail"}


def test_a_local_model_folder_of_a_supported_family(tmp_path):
    folder = tmp_path / "my-roberta"
    build_base_model("roberta-tiny", seed=5).save_pretrained(folder)
    config = make_config("smoke", model=str(folder), pretrained=True, tokenizer="byt5", tasks="rte", max_steps=10, eval_steps=10,
                         max_eval_samples=16, output_dir=str(tmp_path / "run"))
    result = train(config, progress=False)
    assert result["steps"] == 10
    meta = json.loads((tmp_path / "run" / "best" / "adapter_config.json").read_text())
    assert meta["base_model"]["name_or_path"] == str(folder) and meta["task_heads"] == {"rte": 2}


def test_model_minilm_under_the_default_profile_is_the_pretrained_model(tmp_path):
    "`hyperformer train --model minilm` (default profile: smoke) trains the packaged weights read by their own tokenizer."
    run = tmp_path / "run"
    done = cli("train", "--model", "minilm", "--method", "hyperformer++", "--tasks", "sst2,mrpc,rte", "--max-steps", "2",
               "--eval-steps", "2", "--max-eval-samples", "8", "--threads", "1", "--no-progress", "--output-dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    saved = read_run_config(run)
    assert (saved.model, saved.pretrained, saved.tokenizer) == ("minilm", True, None)
    assert type(build_tokenizer(saved)).__name__.startswith("Bert")  # not the smoke profile's ByT5 bytes


def test_ddp_on_cpu_with_two_processes(tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    run = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "hyperformer.cli", "train", "--profile", "smoke",
                           "--model", "bert-tiny", "--tasks", "rte,cola,stsb", "--max-steps", "20", "--eval-steps", "10",
                           "--max-eval-samples", "24", "--output-dir", str(run), "--no-progress"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [10, 20]
    logged = json.loads((run / "test_metrics.json").read_text())
    assert evaluate_run(run)["test"]["tasks"] == logged["tasks"]


def test_cli_params_reports_heads_for_encoders():
    done = cli("params", "--model", "minilm", "--method", "hyperformer++", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    count = json.loads(done.stdout.strip().splitlines()[-1])
    assert count["base"] == 22_713_216 and count["heads"] == 8 * (384 * 384 + 384 + 2 * 384 + 2)
    assert count["trained_per_task_percent_without_heads"] < count["trained_per_task_percent"]

"""What several test files share: the console script run as typed, a run killed mid-training, a Trainer built like `train`'s."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from hyperformer.data import Seq2SeqCollator
from hyperformer.model import ADAPTER_WEIGHTS_NAME
from hyperformer.train import (HyperFormerTrainer, _training_arguments, build_datasets, build_model, build_tokenizer,
                               latest_checkpoint, make_config, read_jsonl)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
CLI = [str(Path(sys.executable).with_name("hyperformer"))]
QUICK = dict(tasks="rte,cola,stsb", max_steps=20, eval_steps=10, max_eval_samples=24)


# 16 steps, evaluated and checkpointed every 4: validation avg_flat 0, 0, 61.5, 61.5, so the best is step 12 (the tie at
# 16 keeps the earlier step) and best/ differs from the final weights
FAULT = dict(method="hyperformer++", tasks="rte,mrpc", max_steps=16, eval_steps=4, max_eval_samples=16)
FAULT_ARGS = ["train", "--profile", "smoke", "--method", "hyperformer++", "--tasks", "rte,mrpc", "--max-steps", "16",
              "--eval-steps", "4", "--max-eval-samples", "16", "--no-progress"]


# The console script with tests/fault_plugin.py loaded first: HYPERFORMER_FAULT=phase[:step] (`fault_env`) SIGKILLs it then
FAULT_CLI = [sys.executable, "-c", "import sys, fault_plugin; from hyperformer.cli import main; sys.exit(main())"]


def fault_env(env:dict, fault:str) -> dict:
    "`env` for a `FAULT_CLI` process killed at `fault` (phase[:step], see fault_plugin.py)."
    tests = str(Path(__file__).resolve().parent)
    return {**env, "HYPERFORMER_FAULT": fault, "PYTHONPATH": os.pathsep.join(p for p in (tests, env.get("PYTHONPATH")) if p)}


def fault_config(run, **changes):
    "The config of the FAULT run in `run`, with `changes`."
    return make_config("smoke", **{**FAULT, **changes}, output_dir=str(run))


def evals(run):
    "The evaluation records of metrics.jsonl without their timing."
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(Path(run) / "metrics.jsonl")]


def same_outcome(run, whole):
    "metrics.jsonl, best/ (tensors and record), test_metrics.json and the final weights equal the uninterrupted run's."
    run, whole = Path(run), Path(whole)
    assert evals(run) == evals(whole)
    assert json.loads((run / "test_metrics.json").read_text()) == json.loads((whole / "test_metrics.json").read_text())
    best = [{k: v for k, v in json.loads((r / "best" / "best.json").read_text()).items() if k != "seconds"} for r in (run, whole)]
    assert best[0] == best[1]
    for folder in ("best", "checkpoints/checkpoint-16"):
        a, b = load_file(str(run / folder / ADAPTER_WEIGHTS_NAME)), load_file(str(whole / folder / ADAPTER_WEIGHTS_NAME))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder


def copy_unfinished(whole, dest, keep_place:bool=False):
    """A copy of the finished run as it was just before its test evaluation (the last checkpoint written); `keep_place`: its
    config.json still names the folder it was copied from (a moved run)."""
    shutil.copytree(whole, dest)
    if not keep_place:
        saved = json.loads((dest / "config.json").read_text()); saved["config"]["output_dir"] = str(dest)
        (dest / "config.json").write_text(json.dumps(saved))
    for name in ("result.json", "test_metrics.json"): (dest / name).unlink()
    return dest


def cli(*args, timeout=300):
    "`hyperformer ARGS` in a separate process, as a user types it."
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=ENV, timeout=timeout)


def kill_after_evaluations(args:list, run:Path, evaluations:int=2) -> None:
    "Start `hyperformer ARGS --output-dir RUN` and SIGKILL it once it has logged `evaluations` and saved a checkpoint."
    proc = subprocess.Popen(CLI + list(args) + ["--output-dir", str(run)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(read_jsonl(run / "metrics.jsonl")) >= evaluations and latest_checkpoint(run) is not None: break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL); proc.wait()


def smoke_trainer(config):
    "(trainer, data, tokenizer) built the way `train` builds them, for tests that drive the Trainer directly."
    from datasets import concatenate_datasets
    tok = build_tokenizer(config)
    model = build_model(config, tok)
    data = build_datasets(config, tok)
    sets = [data[t]["train"] for t in config.tasks]
    return HyperFormerTrainer(model=model, args=_training_arguments(config, False), train_dataset=concatenate_datasets(sets),
                              eval_dataset={t: data[t]["validation"] for t in config.eval_tasks}, data_collator=Seq2SeqCollator(tok),
                              experiment=config, tokenizer=tok, eval_sets=data, train_sizes=[len(s) for s in sets]), data, tok


def unsampled_task_moves(trainer, data, tok, unsampled:str="cola", sampled:str="rte") -> bool:
    "Step on `unsampled`'s batch, then on `sampled`'s: does `unsampled`'s task embedding move in the second step?"
    import torch
    model, collate = trainer.model, Seq2SeqCollator(tok)
    trainer.create_optimizer()
    embedding = model.adapters.task_embeddings.embeddings[unsampled]
    for task in [unsampled, sampled]:
        batch = collate([data[task]["train"][i] for i in range(8)])
        model.train(); model.zero_grad(set_to_none=True)
        trainer.compute_loss(model, dict(batch)).backward()
        trainer._zero_fill_unused_grads(model)
        before = embedding.detach().clone()
        trainer.optimizer.step()
    return not torch.equal(before, embedding.detach())

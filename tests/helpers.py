"""What several test files share: the console script run as typed, a run killed mid-training, a Trainer built like `train`'s."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hyperformer.data import Seq2SeqCollator
from hyperformer.train import (HyperFormerTrainer, _training_arguments, build_datasets, build_model, build_tokenizer,
                               latest_checkpoint, read_jsonl)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
CLI = [str(Path(sys.executable).with_name("hyperformer"))]
QUICK = dict(tasks="rte,cola,stsb", max_steps=20, eval_steps=10, max_eval_samples=24)


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

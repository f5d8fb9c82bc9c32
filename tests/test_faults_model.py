"""Faults on the model side (issue 9): adapter weights always from the current parameters, conditioning scoped to one call
of the wrapper, refused checkpoints (non-finite, corrupt, other base weights). CPU, offline, tiny models."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from hyperformer.config import AdapterConfig
from hyperformer.model import HyperFormerModel, build_base_model
from hyperformer.train import make_config, read_jsonl, train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TASKS = ("rte", "cola", "mnli")


def tiny(method="hyperformer++", seed=0, **kw):
    base = build_base_model("t5-tiny", seed=seed).eval()
    torch.manual_seed(seed)
    return HyperFormerModel(base, AdapterConfig(method=method, tasks=TASKS, **kw)).eval()


def a_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(input_ids=torch.randint(2, 384, (4, 9), generator=g), attention_mask=torch.ones(4, 9, dtype=torch.long),
                labels=torch.randint(2, 384, (4, 3), generator=g))


# --- item 1: evaluation always uses the current parameters -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fused", "foreach"])
@pytest.mark.parametrize("method", ["hyperformer++", "hyperformer", "adapters-shared"])
def test_eval_forward_after_an_optimizer_step_equals_a_fresh_model(method, kind):
    batch, ids = a_batch(), torch.tensor([0, 2, 2, 1])
    m = tiny(method)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, **{kind: True})
    with torch.no_grad(): before = m(**batch, task_ids=ids).logits  # an eval-mode call before the step
    m.train(); m(**batch, task_ids=ids).loss.backward(); opt.step(); m.eval()
    fresh = tiny(method, seed=7); fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        after, expected = m(**batch, task_ids=ids).logits, fresh.eval()(**batch, task_ids=ids).logits
        gen = m.generate(batch["input_ids"], task_ids=ids, max_new_tokens=4, do_sample=False)
        test_gen = fresh.generate(batch["input_ids"], task_ids=ids, max_new_tokens=4, do_sample=False)
    assert not torch.allclose(before, after)
    assert torch.equal(after, expected), (after - expected).abs().max()
    assert torch.equal(gen, test_gen)


def test_generate_builds_the_adapter_weights_once_per_call_not_per_step():
    m, batch, calls = tiny(), a_batch(), []
    m.adapters.register_forward_hook(lambda mod, args, out: calls.append(1))
    with torch.no_grad():
        for _ in range(2): m.generate(batch["input_ids"], task_ids=torch.tensor([0, 1, 1, 2]), max_new_tokens=6, min_new_tokens=6)
    assert len(calls) == 2  # one per generate() call, none per decoding step, none cached across calls


class KeepEveryCheckpoint(TrainerCallback):
    "Copies each checkpoint as it is saved (the run keeps only the newest) and records the Trainer's optimizer."
    def __init__(self, keep:Path): self.keep, self.optimizer = keep, None
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs): self.optimizer = optimizer
    def on_save(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        shutil.copytree(Path(args.output_dir) / name, self.keep / name)


def test_every_logged_validation_score_equals_a_fresh_process_rescore_of_that_checkpoint(tmp_path):
    run, keep = tmp_path / "run", tmp_path / "kept"
    config = make_config("smoke", method="hyperformer++", tasks="rte,stsb", max_steps=30, eval_steps=10,
                         max_eval_samples=24, output_dir=str(run))
    keeper = KeepEveryCheckpoint(keep)
    train(config, progress=False, callbacks=[keeper])
    opt = getattr(keeper.optimizer, "optimizer", keeper.optimizer)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults.get("fused"), opt  # the Trainer's default: fused AdamW
    log = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in log] == [10, 20, 30]
    script = ("import json, sys\nfrom hyperformer.train import evaluate_run\n"
              "scores = {c: evaluate_run(sys.argv[1], splits='validation', checkpoint=c)['validation'] for c in sys.argv[2:]}\n"
              "print('RESCORED ' + json.dumps(scores))")
    ckpts = [str(keep / f"checkpoint-{r['step']}") for r in log]
    out = subprocess.run([sys.executable, "-c", script, str(run), *ckpts], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rescored = json.loads(out.stdout.split("RESCORED ", 1)[1])
    for r, ck in zip(log, ckpts):
        s = rescored[ck]
        assert (s["tasks"], s["avg_flat"], s["avg_macro"]) == (r["tasks"], r["avg_flat"], r["avg_macro"]), (r["step"], r, s)


# --- item 2: conditioning lives exactly as long as one call of the wrapper ---------------------------------------------

def test_a_stray_base_call_after_forward_or_generate_is_refused():
    m, batch = tiny(), a_batch()
    with torch.no_grad():
        m(**batch, task_ids=torch.tensor([0, 1]).repeat_interleave(2))
        with pytest.raises(RuntimeError, match=r"call the HyperFormerModel wrapper with task_ids="):
            m.base(**batch)  # on main: runs silently with the previous call's tasks
        m.generate(batch["input_ids"], task_ids=torch.tensor([0, 1, 2, 0]), max_new_tokens=3)
        with pytest.raises(RuntimeError, match=r"not model\.base\(\.\.\.\)"):
            m.base(**batch)
    assert m._conditioning is None


def test_generate_with_mixed_task_ids_matches_each_task_alone():
    m, batch, ids = tiny(), a_batch(), torch.tensor([2, 0, 2, 1])
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with torch.no_grad():
        mixed = m.generate(batch["input_ids"], task_ids=ids, **kw)
        for t in ids.unique():
            rows = ids == t
            assert torch.equal(mixed[rows], m.generate(batch["input_ids"][rows], task_ids=ids[rows], **kw))


@pytest.mark.parametrize("call", ["forward", "generate"])
def test_an_exception_inside_the_call_clears_the_conditioning(call):
    m, batch, seen = tiny(), a_batch(), []
    def explode(mod, args, out):
        seen.append(m._conditioning)
        raise KeyError("boom")
    m.base.encoder.register_forward_hook(explode)
    with pytest.raises(KeyError, match="boom"):
        if call == "forward": m(**batch, task_ids=torch.tensor([0, 1, 1, 0]))
        else: m.generate(batch["input_ids"], task_ids=torch.tensor([0, 1, 1, 0]), max_new_tokens=2)
    assert seen and seen[0] is not None  # it was active inside the call
    assert m._conditioning is None


def _grads(m, batch, ids):
    m.train(); m.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    loss = m(**batch, task_ids=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["hyperformer++", "hyperformer", "adapters-shared"])
def test_activation_checkpointing_recomputes_with_the_forward_conditioning(method):
    batch, ids = a_batch(), torch.tensor([0, 2, 1, 2])
    plain_loss, plain = _grads(tiny(method), batch, ids)
    m = tiny(method)
    m.activation_checkpointing_enable(activation_checkpointing_kwargs=None, every_n_layers=1, offload=False)  # as the Trainer calls it
    assert all(b.gradient_checkpointing for b in m.base.encoder.block)
    loss, grads = _grads(m, batch, ids)
    assert abs(loss - plain_loss) < 1e-5 and set(grads) == set(plain)
    for n in plain: torch.testing.assert_close(grads[n], plain[n], atol=1e-5, rtol=1e-4)
    assert m._conditioning is None


def test_activation_checkpointing_that_cannot_restore_the_conditioning_is_refused():
    m, batch = tiny(), a_batch()
    with pytest.raises(ValueError, match="use_reentrant=True"):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    getattr(m.base, "activation_checkpointing_enable", m.base.gradient_checkpointing_enable)()  # bypasses the wrapper
    m.train()
    loss = m(**batch, task_ids=torch.tensor([0, 1, 1, 2])).loss
    with pytest.raises(RuntimeError, match="enable it on the wrapper"):
        loss.backward()

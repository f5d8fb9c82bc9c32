"""Faults on the model side: adapter weights always from the current parameters, conditioning scoped to one call
of the wrapper, refused checkpoints (non-finite, corrupt, other base weights). CPU, offline, tiny models."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from hyperformer.config import AdapterConfig
from safetensors.torch import load_file, save_file

from hyperformer.model import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CheckpointError, HyperFormerModel, build_base_model,
                               check_finite_state, read_adapter_meta, read_safetensors_checked)
from hyperformer.train import evaluate_run, make_config, read_jsonl, train

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


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    "A smoke run with the Trainer's own default optimizer, three evaluations, every evaluated checkpoint kept."
    root = tmp_path_factory.mktemp("smoke")
    run, keep = root / "run", root / "kept"
    config = make_config("smoke", method="hyperformer++", tasks="rte,stsb", max_steps=30, eval_steps=10,
                         max_eval_samples=24, output_dir=str(run))
    keeper = KeepEveryCheckpoint(keep)
    train(config, progress=False, callbacks=[keeper])
    return run, keep, keeper


def test_every_logged_validation_score_equals_a_fresh_process_rescore_of_that_checkpoint(smoke_run):
    run, keep, keeper = smoke_run
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
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["step"] == max(log, key=lambda r: r["avg_flat"])["step"]  # best/ chosen on the true scores


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


def test_the_trainers_activation_checkpointing_goes_through_the_wrapper(tmp_path):
    from transformers import Trainer, TrainingArguments
    m, g = tiny(), torch.Generator().manual_seed(0)
    rows = [dict(input_ids=torch.randint(2, 384, (9,), generator=g), attention_mask=torch.ones(9, dtype=torch.long),
                 labels=torch.randint(2, 384, (3,), generator=g), task_ids=torch.tensor(i % 3)) for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, activation_checkpointing=True,
                             report_to=[], use_cpu=True, save_strategy="no", remove_unused_columns=False, disable_tqdm=True)
    out = Trainer(model=m, args=args, train_dataset=rows).train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    ckpt = m.base.encoder.block[0]._gradient_checkpointing_func
    assert m.base.encoder.block[0].gradient_checkpointing and ckpt.keywords["context_fn"] == m._checkpoint_contexts


def test_activation_checkpointing_that_cannot_restore_the_conditioning_is_refused():
    m, batch = tiny(), a_batch()
    with pytest.raises(ValueError, match="use_reentrant=True"):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    getattr(m.base, "activation_checkpointing_enable", m.base.gradient_checkpointing_enable)()  # bypasses the wrapper
    m.train()
    loss = m(**batch, task_ids=torch.tensor([0, 1, 1, 2])).loss
    with pytest.raises(RuntimeError, match="enable it on the wrapper"):
        loss.backward()


# --- item 6 (model side): damaged checkpoints and other base weights are refused --------------------------------------

def perturbed(method="hyperformer++", seed=3):
    m = tiny(method, seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad: p.add_(0.05 * torch.randn_like(p))
    return m


def saved_adapter(tmp_path, method="hyperformer++", seed=3) -> Path:
    d = tmp_path / f"{method}-{seed}"
    perturbed(method, seed).save_adapter(d)
    return d


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_an_adapter_with_non_finite_weights_is_refused_naming_file_and_tensor(tmp_path, value):
    d = saved_adapter(tmp_path)
    weights = d / ADAPTER_WEIGHTS_NAME
    state = load_file(str(weights))
    name = sorted(state)[-1]
    state[name].view(-1)[:3] = value
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} holds non-finite weights (NaN or inf) in 1 tensor(s): {name} (3 of")):
        tiny(seed=3).load_adapter(d)  # on main: loaded silently, every score 0
    with pytest.raises(CheckpointError, match="non-finite"):
        HyperFormerModel.from_pretrained(d, build_base_model("t5-tiny", seed=3))


@pytest.mark.parametrize("damage", ["random", "truncated", "empty", "header-only"])
def test_an_unreadable_safetensors_file_is_refused_naming_the_file(tmp_path, damage):
    d = saved_adapter(tmp_path)
    weights = d / ADAPTER_WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes({"random": os.urandom(len(data)), "truncated": data[:len(data) - 100], "empty": b"",
                         "header-only": data[:8 + int.from_bytes(data[:8], "little")]}[damage])
    with pytest.raises(CheckpointError, match=re.escape(str(weights)) + r" is not a readable safetensors file \(.*\): it is truncated or damaged"):
        tiny(seed=3).load_adapter(d)  # on main: a traceback from safetensors that names no file


def test_the_checks_are_reusable_functions(tmp_path):
    ok = {"a": torch.ones(3), "ids": torch.arange(3)}
    assert check_finite_state(ok, "somewhere") is ok
    with pytest.raises(CheckpointError, match=r"x\.safetensors holds non-finite.*: b \(1 of 2 values\)"):
        check_finite_state({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}, "x.safetensors")
    path = tmp_path / "w.safetensors"
    save_file(ok, str(path))
    assert torch.equal(read_safetensors_checked(path)["a"], ok["a"])
    with pytest.raises(FileNotFoundError, match="missing"): read_safetensors_checked(tmp_path / "nope.safetensors")


def test_a_damaged_adapter_config_is_refused_naming_the_file(tmp_path):
    d = saved_adapter(tmp_path)
    (d / ADAPTER_CONFIG_NAME).write_text("{truncated")
    with pytest.raises(CheckpointError, match=re.escape(f"{d / ADAPTER_CONFIG_NAME} is not valid JSON")): read_adapter_meta(d)
    (d / ADAPTER_CONFIG_NAME).write_text(json.dumps({"format": "hyperformer-adapter", "adapter_config": {}}))
    with pytest.raises(CheckpointError, match=r"lacks \['base_model'\]"): read_adapter_meta(d)


def test_an_adapter_onto_other_base_weights_of_the_same_shape_is_refused_unless_allowed(tmp_path):
    d = saved_adapter(tmp_path, seed=3)
    assert read_adapter_meta(d)["base_model"]["weights_fingerprint"]["tensors"] > 0
    HyperFormerModel.from_pretrained(d, build_base_model("t5-tiny", seed=3))  # its own base: fine
    other = build_base_model("t5-tiny", seed=4)
    with pytest.raises(CheckpointError, match=r"trained on other base weights.*allow_other_base=True"):
        HyperFormerModel.from_pretrained(d, other)  # on main: accepted (same shapes)
    with pytest.raises(CheckpointError, match="trained on other base weights"):
        tiny(seed=4).load_adapter(d)
    nudged = tiny(seed=3)
    with torch.no_grad(): nudged.base.encoder.block[1].layer[1].DenseReluDense.wo.weight.mul_(1.001)  # one tensor differs
    with pytest.raises(CheckpointError, match="trained on other base weights"): nudged.load_adapter(d)
    with pytest.warns(UserWarning, match="other base weights"):
        m = HyperFormerModel.from_pretrained(d, build_base_model("t5-tiny", seed=4), allow_other_base=True)
    state = load_file(str(d / ADAPTER_WEIGHTS_NAME))
    assert all(torch.equal(p, state[n]) for n, p in m._trainable_state().items())  # loaded as asked


def test_a_finetune_checkpoint_holds_every_weight_so_any_base_of_its_shape_gives_the_same_model(tmp_path):
    d = saved_adapter(tmp_path, "finetune")
    assert read_adapter_meta(d)["base_model"]["weights_fingerprint"]["tensors"] == 0
    batch, ids = a_batch(), torch.tensor([0, 1, 2, 0])
    a = HyperFormerModel.from_pretrained(d, build_base_model("t5-tiny", seed=4)).eval()
    b = HyperFormerModel.from_pretrained(d, build_base_model("t5-tiny", seed=5)).eval()
    with torch.no_grad(): assert torch.equal(a(**batch, task_ids=ids).logits, b(**batch, task_ids=ids).logits)


def test_an_adapter_saved_without_a_fingerprint_loads_with_a_warning(tmp_path):
    d = saved_adapter(tmp_path)
    meta = json.loads((d / ADAPTER_CONFIG_NAME).read_text())
    del meta["base_model"]["weights_fingerprint"]; meta["format_version"] = 1
    (d / ADAPTER_CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="records no fingerprint of its base model's weights"):
        tiny(seed=4).load_adapter(d)


def test_evaluating_a_run_checkpoint_with_nan_weights_is_refused(smoke_run, tmp_path):
    run, keep, _ = smoke_run
    bad = tmp_path / "checkpoint-nan"
    shutil.copytree(keep / "checkpoint-10", bad)
    state = load_file(str(bad / ADAPTER_WEIGHTS_NAME))
    for t in state.values(): t.fill_(float("nan"))
    save_file(state, str(bad / ADAPTER_WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=re.escape(f"{bad / ADAPTER_WEIGHTS_NAME} holds non-finite weights")):
        evaluate_run(run, splits="validation", checkpoint=bad)  # on main: scores 0.00, exit 0

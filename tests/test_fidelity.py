"""Fidelity to the released code (transformers 3.5.1): the released default HyperFormer (`hyperformer-shared-layers`),
the decoder cross-attention position bias, transformers 3.5.1's AdamW and the evaluation decode length, each switched on
by the `reference` profile and off elsewhere. CPU, offline, tiny models and shipped samples."""
import contextlib
import io
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from hyperformer.cli import build_parser, config_from_args, main
from hyperformer.data import generation_length
from hyperformer.model import (ADAPTER_WEIGHTS_NAME, CROSS_ATTENTION_BIAS_KEY, build_base_model, parameter_report)
from hyperformer.train import (Transformers351AdamW, build_datasets, build_model, build_tokenizer, evaluate_run, latest_checkpoint,
                               make_config, train)

QUICK = dict(tasks="rte,cola,stsb", max_steps=20, eval_steps=10, max_eval_samples=24)
# the reference profile on the smoke machinery: tiny random T5, byte tokenizer, shipped samples
REFERENCE_TINY = dict(model="t5-tiny", pretrained=False, tokenizer="byt5", data_source="sample", batch_size=8, eval_batch_size=64,
                      learning_rate=1e-3, warmup_steps=2, max_target_length=16, **QUICK)


from helpers import smoke_trainer as _trainer, unsampled_task_moves


# 1. the released default HyperFormer

@pytest.mark.parametrize("model, added, trainable", [("t5-base", 10_241_760, 10_289_376), ("t5-small", 4_714_432, 4_730_816)])
def test_shared_layers_parameter_count_is_exact_and_in_the_cli(model, added, trainable):
    count = parameter_report(model, "hyperformer-shared-layers", 8)
    assert (count.added, count.trainable) == (added, trainable)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): code = main(["params", "--model", model, "--method", "hyperformer-shared-layers", "--json"])
    assert code == 0 and json.loads(out.getvalue())["trainable"] == trainable


def test_shared_layers_trains_selects_and_reloads(tmp_path):
    config = make_config("smoke", method="hyperformer-shared-layers", output_dir=str(tmp_path / "run"), **QUICK)
    result = train(config, progress=False)
    saved = load_file(str(tmp_path / "run" / "best" / ADAPTER_WEIGHTS_NAME))
    assert "adapters.encoder.layer_embeddings.weight" in saved and all(k.startswith("adapters.") or "layer_norm" in k for k in saved)
    assert saved["adapters.encoder.generator.weight"].shape[0] == 2  # one generator set per position kind
    assert evaluate_run(tmp_path / "run")["test"] == result["test"]


def test_shared_layers_ablation_runs_through_the_experiment_config(tmp_path):
    config = make_config("smoke", method="hyperformer-shared-layers", ablation="no-hypernet-layer-norm", output_dir=str(tmp_path / "x"))
    model = build_model(config, build_tokenizer(config))
    assert isinstance(model.adapters.encoder.norm, torch.nn.Identity) and not model.adapter_config.hypernet_layer_norm


# 2. the decoder cross-attention position bias

def _logits(model, seed=0):
    torch.manual_seed(seed)
    batch = dict(input_ids=torch.randint(3, 250, (2, 30)), attention_mask=torch.ones(2, 30, dtype=torch.long),
                 decoder_input_ids=torch.randint(3, 250, (2, 18)))
    with torch.no_grad(): return model.eval()(**batch, task_ids=torch.tensor([0, 1])).logits


def test_cross_attention_bias_switch(tmp_path):
    off = make_config("smoke", tasks="rte,cola", output_dir=str(tmp_path / "a"))
    on = off.replace(cross_attention_bias=True)
    tok = build_tokenizer(off)
    plain, biased = build_model(off, tok), build_model(on, tok)
    assert not hasattr(plain.base.decoder.block[0].layer[1].EncDecAttention, "relative_attention_bias")
    table = biased.base.decoder.block[0].layer[1].EncDecAttention.relative_attention_bias.weight
    assert table.shape == (32, 4) and not table.requires_grad  # frozen backbone weight for an adapter method
    stock = build_base_model("t5-tiny", seed=off.seed)
    assert all(torch.equal(a, b) for a, b in zip(plain.base.state_dict().values(), stock.state_dict().values()))
    torch.manual_seed(0)
    assert not torch.allclose(_logits(plain), _logits(biased), atol=1e-3)  # switched on, the bias moves the logits
    with torch.no_grad(): table.zero_()
    assert torch.equal(_logits(plain), _logits(biased))  # a zero table is the stock model, bit for bit


def test_cross_attention_bias_is_read_from_the_checkpoint(tmp_path):
    folder = tmp_path / "t5"
    build_base_model("t5-tiny", seed=1).save_pretrained(folder)
    weights = load_file(str(folder / "model.safetensors"))
    stored = torch.randn(32, 4)
    save_file({**weights, CROSS_ATTENTION_BIAS_KEY: stored}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = make_config("reference", **{**REFERENCE_TINY, "pretrained": True, "model": str(folder), "tasks": "rte"}, output_dir=str(tmp_path / "r"))
    model = build_model(config, build_tokenizer(config))
    assert torch.equal(model.base.decoder.block[0].layer[1].EncDecAttention.relative_attention_bias.weight.detach(), stored)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="holds no decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"):
        model = build_model(config, build_tokenizer(config))
    assert not model.base.decoder.block[0].layer[1].EncDecAttention.relative_attention_bias.weight.any()


# 3. transformers 3.5.1's AdamW

def test_reference_profile_uses_351_adamw_and_smoke_torch_adamw(tmp_path):
    ref, _, _ = _trainer(make_config("reference", **REFERENCE_TINY, output_dir=str(tmp_path / "r")))
    smoke, _, _ = _trainer(make_config("smoke", **QUICK, output_dir=str(tmp_path / "s")))
    assert isinstance(ref.create_optimizer(), Transformers351AdamW)
    assert ref.optimizer.defaults["eps"] == 1e-8 and ref.optimizer.defaults["betas"] == (0.9, 0.999)
    in_optimizer = {id(p) for g in ref.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in ref.model.parameters() if p.requires_grad}
    assert type(smoke.create_optimizer()).__name__ == "AdamW" and not isinstance(smoke.optimizer, Transformers351AdamW)


def test_stale_momentum_still_moves_unsampled_tasks_with_351_adamw(tmp_path):
    config = make_config("reference", **REFERENCE_TINY, method="hyperformer++", output_dir=str(tmp_path / "run"))
    assert config.stale_momentum and config.optimizer == "adamw-3.5.1"
    assert unsampled_task_moves(*_trainer(config)), "with stale momentum the unsampled task moves"


class Crash(RuntimeError): pass

class CrashAt(TrainerCallback):
    def __init__(self, step): self.step = step
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step: raise Crash(f"crash at step {self.step}")


def test_resume_with_351_adamw_matches_uninterrupted(tmp_path):
    config = make_config("smoke", optimizer="adamw-3.5.1", stale_momentum=True, output_dir=str(tmp_path / "whole"), **QUICK)
    whole = train(config, progress=False)
    crashed = config.replace(output_dir=str(tmp_path / "crashed"))
    with pytest.raises(Crash): train(crashed, progress=False, callbacks=[CrashAt(15)])
    assert latest_checkpoint(tmp_path / "crashed").name == "checkpoint-10"
    assert (tmp_path / "crashed" / "checkpoints" / "checkpoint-10" / "optimizer.pt").is_file()
    resumed = train(crashed, resume=True, progress=False)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "checkpoint-20" / ADAPTER_WEIGHTS_NAME))
    b = load_file(str(tmp_path / "crashed" / "checkpoints" / "checkpoint-20" / ADAPTER_WEIGHTS_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]


# 4. the evaluation decode length, and all four together in the reference profile

def test_reference_run_end_to_end_with_every_switch(tmp_path):
    config = make_config("reference", **REFERENCE_TINY, method="hyperformer-shared-layers", output_dir=str(tmp_path / "ref"))
    assert (config.optimizer, config.cross_attention_bias, config.decode_length) == ("adamw-3.5.1", True, "without-eos")
    tok = build_tokenizer(config)
    model = build_model(config, tok)
    asked = []
    original = model.generate
    model.generate = lambda **kw: asked.append(kw["max_new_tokens"]) or original(**kw)
    from hyperformer.train import evaluate_tasks
    data = build_datasets(config, tok, ("stsb",), ("validation",))
    evaluate_tasks(model, tok, {"stsb": data["stsb"]["validation"]}, config.split_protocol, 64, config.decode_length)
    assert set(asked) == {generation_length("stsb", tok, "reference") - 1}
    result = train(config, progress=False)
    lines = (tmp_path / "ref" / "predictions" / "test_rte.jsonl").read_text().splitlines()
    assert lines and all(len(tok(json.loads(l)["prediction"], add_special_tokens=False)["input_ids"]) <= 1 for l in lines)
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["config"]["decode_length"] == "without-eos"
    assert evaluate_run(tmp_path / "ref")["test"] == result["test"]


def test_cli_flags_for_the_compat_switches():
    args = build_parser().parse_args(["train", "--profile", "paper", "--optimizer", "adamw-3.5.1", "--cross-attention-bias",
                                      "--decode-length", "without-eos", "--method", "hyperformer-shared-layers"])
    config = config_from_args(args)
    assert (config.optimizer, config.cross_attention_bias, config.decode_length, config.method) == (
        "adamw-3.5.1", True, "without-eos", "hyperformer-shared-layers")
    args = build_parser().parse_args(["train", "--profile", "reference", "--no-cross-attention-bias"])
    assert config_from_args(args).cross_attention_bias is False

"""One config path from the command line to the layers: every AdapterConfig knob is a `hyperformer train` flag, recorded in
config.json, read back by `evaluate_run`, and checked once (by AdapterConfig), with the ablation's switches refusing a
contradicting knob. CPU, offline, t5-tiny on the shipped samples."""
import json

import pytest

from hyperformer.cli import main
from hyperformer.config import AdapterConfig
from hyperformer.train import build_model, build_tokenizer, make_config, read_run_config


def test_adapter_knobs_travel_from_the_cli_to_the_model_and_back(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--method", "hyperformer++", "--tasks", "rte", "--activation", "relu", "--hypernet-input-dim", "32",
                 "--task-embedding-dim", "32", "--projector-hidden-dim", "16", "--init-std", "0.02", "--no-hypernet-layer-norm",
                 "--max-steps", "2", "--eval-steps", "2", "--max-eval-samples", "8", "--output-dir", str(run), "--no-progress"])
    assert code == 0, capsys.readouterr().err[-2000:]
    saved = json.loads((run / "config.json").read_text())["config"]
    assert {k: saved[k] for k in ("activation", "hypernet_input_dim", "task_embedding_dim", "projector_hidden_dim", "init_std",
                                  "hypernet_layer_norm")} == dict(activation="relu", hypernet_input_dim=32, task_embedding_dim=32,
                                                                 projector_hidden_dim=16, init_std=0.02, hypernet_layer_norm=False)
    config = read_run_config(run)
    model = build_model(config, build_tokenizer(config))
    built = model.adapter_config
    assert (built.activation, built.hypernet_input_dim, built.projector_hidden_dim, built.hypernet_layer_norm) == ("relu", 32, 16, False)


def test_every_adapter_knob_is_a_flag_and_bad_values_are_named_once(capsys):
    from hyperformer.cli import build_parser
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    import dataclasses
    assert {f.name for f in dataclasses.fields(AdapterConfig)} - {"tasks"} <= flags
    assert main(["train", "--activation", "swishy", "--max-steps", "1"]) == 2
    assert "activation='swishy' is not supported; choose one of:" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ablation='frozen-t5-layer-norms' sets train_t5_layer_norms=False, but train_t5_layer_norms=True"):
        make_config("smoke", ablation="frozen-t5-layer-norms", train_t5_layer_norms=True)

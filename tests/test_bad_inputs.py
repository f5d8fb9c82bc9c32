"""Bad values and bad inputs: each is refused with a clear error naming the file (and line) or the flag, the
bad value and the fix, or is made to work. CLI cases run `hyperformer.cli.main` in-process; a few run the console
script as a user types it. Bad files are written into `tmp_path`."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperformer.cli import main
from hyperformer.config import AdapterConfig
from hyperformer.data import read_local
from hyperformer.model import ADAPTER_CONFIG_NAME, HyperFormerModel, build_base_model, parameter_report, read_adapter_meta
from hyperformer.train import check_precision, make_config, read_run_config

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SCRIPT = Path(sys.executable).with_name("hyperformer")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli(*args) -> tuple[int, str]:
    "Exit status and stderr of `hyperformer ARGS` run in-process (argparse errors exit through SystemExit)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: code = main([str(a) for a in args])
        except SystemExit as e: code = e.code
    return code, err.getvalue()


def train_cli(tmp_path, *args) -> tuple[int, str]:
    return cli("train", "--profile", "smoke", "--tasks", "rte", "--max-steps", "2", "--eval-steps", "1",
               "--output-dir", tmp_path / "run", "--no-progress", *args)


def typed(*args) -> subprocess.CompletedProcess:
    "The console script as a user types it."
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120, cwd=ROOT)


# ---- values that passed silently -------------------------------------------------------------------------------------

STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


@pytest.mark.parametrize("score", ["17.5", "nan"])
def test_stsb_score_out_of_range_names_file_and_line(tmp_path, score):
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "train.tsv").write_text(STSB_HEAD + "0\tg\tf\ty\t0\ts\ts\ta\tb\t3.2\n"
                                                  f"1\tg\tf\ty\t1\ts\ts\ta\tb\t{score}\n")
    with pytest.raises(ValueError, match=rf"STS-B{os.sep}train.tsv, line 3: .*STS-B score '{score}' is outside 0 to 5"):
        read_local("stsb", "train", tmp_path)


def test_class_label_outside_the_label_set_names_file_and_line(tmp_path):
    (tmp_path / "CB").mkdir()
    row = {"premise": "P.", "hypothesis": "H.", "idx": 0, "label": "entailment"}
    (tmp_path / "CB" / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "label": 1.5}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl, line 2: .*label 1.5 is not a class id of cb"):
        read_local("cb", "train", tmp_path)


def test_null_premise_is_refused_not_read_as_the_text_None(tmp_path):
    (tmp_path / "CB").mkdir()
    row = {"premise": "P.", "hypothesis": "H.", "idx": 0, "label": "entailment"}
    (tmp_path / "CB" / "train.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "premise": None}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl, line 2: .*premise is null"):
        read_local("cb", "train", tmp_path)


def test_max_target_length_shorter_than_a_label_is_refused(tmp_path):
    code, err = train_cli(tmp_path, "--max-target-length", "1")
    assert code == 2
    assert "max_target_length=1 is shorter than the longest label of rte (2 tokens" in err
    assert "--max-target-length 2 or more" in err


def test_empty_targets_are_detected_not_scored_100():
    from hyperformer.metrics import compute_task_metrics
    with pytest.raises(ValueError, match=r"rte: 3 of 3 references are not label strings .*raise max_target_length"):
        compute_task_metrics("rte", ["", "", ""], ["", "", ""])


def test_data_dir_under_the_smoke_profile_reads_that_folder(tmp_path):
    assert make_config("smoke", data_dir=str(tmp_path)).data_source == "local"
    code, err = train_cli(tmp_path, "--data-dir", tmp_path / "glue")  # an empty folder: its missing file is named
    assert code == 2 and str(tmp_path / "glue" / "RTE" / "train.tsv") in err
    code, err = train_cli(tmp_path, "--data-dir", tmp_path / "glue", "--data-source", "sample")
    assert code == 2 and "would be ignored" in err and "--data-source local" in err


@pytest.mark.parametrize("norm", ["0", "-1", "nan"])
def test_max_grad_norm_must_be_positive(tmp_path, norm):
    code, err = train_cli(tmp_path, "--max-grad-norm", norm)
    assert code == 2 and f"max_grad_norm={float(norm)!r} must be a number > 0" in err
    assert "--max-grad-norm inf" in err  # how to turn clipping off


def test_max_grad_norm_inf_means_no_clipping():
    assert math.isinf(make_config(max_grad_norm=float("inf")).max_grad_norm)


@pytest.mark.parametrize("value", ["inf", "nan", "0"])
def test_temperature_must_be_finite_and_positive(tmp_path, value):
    code, err = train_cli(tmp_path, "--temperature", value)
    assert code == 2 and f"temperature={float(value)!r} must be a finite number > 0" in err


def test_ablation_with_finetune_is_refused(tmp_path):
    code, err = train_cli(tmp_path, "--method", "finetune", "--ablation", "no-task-projector")
    assert code == 2 and "method='finetune' has no adapters" in err and "--method hyperformer" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on a CPU-only machine")
def test_fp16_on_cpu_is_refused(tmp_path):
    code, err = train_cli(tmp_path, "--precision", "fp16")
    assert code == 2 and "precision='fp16' needs a CUDA GPU" in err and "--precision fp32" in err


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="precision='bf16' is not supported by this GPU"):
        check_precision("bf16", cuda=True)
    check_precision("bf16", cuda=False)  # torch trains bf16 on a CPU


# ---- messages that lacked the file or the flag ----------------------------------------------------------------------

RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"


def test_non_utf8_tsv_names_file_line_and_fix(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_bytes(RTE_HEAD.encode() + b"0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 3: is not utf-8 text \(byte 0xe9 at column 6\); re-save the file as UTF-8"):
        read_local("rte", "train", tmp_path)


def test_a_line_over_128_kb_is_read(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(RTE_HEAD + f"0\t{'x' * 300_000}\tb\tentailment\n")
    assert len(read_local("rte", "train", tmp_path)[0]["sentence1"]) == 300_000


def test_header_only_tsv_names_the_file(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(RTE_HEAD)
    with pytest.raises(ValueError, match=r"RTE.train.tsv holds no data rows"):
        read_local("rte", "train", tmp_path)


@pytest.mark.parametrize("text,message", [
    ('["rte", "cola"]', "expected a JSON object of ExperimentConfig fields, got list"),
    ('"rte"', "expected a JSON object of ExperimentConfig fields, got str"),
    ('{"learning_rate": "1e-3"}', "learning_rate='1e-3' must be a number, not str (write the number without quotes)"),
    ('{"pretrained": "no"}', "pretrained='no' must be true or false, not str"),
    ('{"max_steps": 10.5}', "max_steps=10.5 must be an integer, not float"),
])
def test_config_file_of_the_wrong_shape_or_types(tmp_path, text, message):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    code, err = cli("train", "--config", path, "--output-dir", tmp_path / "run")
    assert code == 2 and f"--config {path}" in err and message in err, err


def test_run_config_json_with_wrong_types_names_the_file(tmp_path):
    run = tmp_path / "run"; run.mkdir()
    cfg = make_config("smoke", tasks="rte", output_dir=str(run)).to_dict()
    (run / "config.json").write_text(json.dumps({"config": {**cfg, "pretrained": "no"}}))
    with pytest.raises(ValueError, match=r"config.json: pretrained='no' must be true or false"):
        read_run_config(run)


@pytest.fixture
def saved_adapter(tmp_path):
    model = HyperFormerModel(build_base_model("t5-tiny"), AdapterConfig(method="hyperformer++", tasks=("rte", "cola")))
    return model.save_adapter(tmp_path / "adapter")


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("base_model"), "lacks ['base_model']"),
    (lambda m: m["adapter_config"].pop("method"), "lacks ['adapter_config.method']"),
    (lambda m: m["adapter_config"].update(reduction_factor="16"), "adapter_config: reduction_factor='16' must be an integer"),
])
def test_adapter_config_json_missing_a_key(saved_adapter, edit, message):
    path = saved_adapter / ADAPTER_CONFIG_NAME
    meta = json.loads(path.read_text()); edit(meta); path.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as err:
        read_adapter_meta(saved_adapter)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("drop", ["seed", "config"])
def test_run_config_json_missing_a_key(tmp_path, drop):
    run = tmp_path / "run"; run.mkdir()
    cfg = make_config("smoke", tasks="rte", output_dir=str(run)).to_dict()
    saved = {"config": {k: v for k, v in cfg.items() if k != drop}} if drop != "config" else {"model_tasks": ["rte"]}
    (run / "config.json").write_text(json.dumps(saved))
    code, err = cli("eval", run)
    assert code == 2 and str(run / "config.json") in err and (f"lacks ['{drop}']" if drop != "config" else "lacks the key 'config'") in err, err


def test_eval_tasks_the_run_lacks(tmp_path):
    run = tmp_path / "run"; run.mkdir()
    cfg = make_config("smoke", tasks="rte,mrpc", output_dir=str(run))
    (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    code, err = cli("eval", run, "--tasks", "rte,cola")
    assert code == 2 and "--tasks cola: the run in" in err and "its tasks are rte,mrpc" in err, err


@pytest.mark.parametrize("flag,value", [("--seed", 2**32), ("--seed", -1), ("--data-seed", 10**20), ("--sampler-seed", 2**64)])
def test_seed_overflow(tmp_path, flag, value):
    code, err = train_cli(tmp_path, flag, value)
    assert code == 2 and f"{flag[2:].replace('-', '_')}={value} must be an integer from 0 to 4294967295" in err, err


def test_max_eval_samples_zero(tmp_path):
    code, err = train_cli(tmp_path, "--max-eval-samples", "0")
    assert code == 2 and "max_eval_samples=0 must be a positive integer" in err


# ---- resources ------------------------------------------------------------------------------------------------------

def test_params_with_a_huge_task_count_is_refused_at_once():
    code, err = cli("params", "--n-tasks", "100000000")
    assert code == 2 and "--n-tasks: 100000000 is above the limit of 10,000" in err
    with pytest.raises(ValueError, match="n_tasks=100,000,000 is above the limit of 10,000"):
        parameter_report("t5-base", "hyperformer++", n_tasks=100_000_000)


# ---- as typed, in a separate process ---------------------------------------------------------------------------------

def test_typed_train_with_bad_values():
    done = typed("train", "--max-grad-norm", "0", "--output-dir", "/nonexistent/never-created")
    assert done.returncode == 2 and "hyperformer train: error: max_grad_norm=0.0 must be a number > 0" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_typed_params_with_a_huge_task_count():
    done = typed("params", "--n-tasks", "100000000")
    assert done.returncode == 2 and "above the limit of 10,000" in done.stderr


# ---- experiment notebook parameters ---------------------------------------------------------------------------------

def run_setup(name, tmp_path, **params):
    "Run a notebook's parameters cell, the given overrides (as papermill injects them) and its setup cell."
    cells = [c for c in json.loads((NBS / f"{name}.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    ns = {}
    exec("".join(cells[0]["source"]), ns)
    ns.update(results=str(tmp_path / "res"), **params)
    exec("".join(cells[1]["source"]), ns)
    return ns


@pytest.mark.parametrize("name,params,message", [
    ("exp_table2", dict(k_grid=0), "parameter k_grid=0 must be an integer >= 1"),
    ("exp_table2", dict(k_grid="4,0"), "parameter k_grid='4,0'"),
    ("exp_figure2", dict(k_grid=0), "parameter k_grid=0 must be an integer >= 1"),
    ("exp_table2", dict(fewshot_steps=0), "parameter fewshot_steps=0 must be an integer >= 1"),
    ("exp_figure3", dict(fewshot_steps=0), "parameter fewshot_steps=0 must be an integer >= 1"),
    ("exp_table2", dict(k_grid=4.5), "parameter k_grid=4.5 must be an integer"),
    ("exp_table2", dict(k_grid="4.5"), "parameter k_grid='4.5' must be an integer"),
    ("exp_table2", dict(task="boolq", k_grid="16,100"), "k=100 is above the 64 training rows of boolq"),
    ("exp_figure3", dict(k=500), "k=500 is above the"),
    ("exp_table2", dict(task="rte"), "task='rte' is not supported; choose one of: scitail"),
    ("exp_table1", dict(size="large"), "size='large' is not supported; choose one of: small, base"),
    ("exp_table3", dict(size="xl"), "size='xl' is not supported"),
    ("exp_table5_6", dict(steps=0), "parameter steps=0 must be an integer >= 1"),
])
def test_notebook_parameters_are_checked(tmp_path, name, params, message):
    with pytest.raises(ValueError) as err:
        run_setup(name, tmp_path, **params)
    assert message in str(err.value), str(err.value)


def test_notebook_parameters_keep_their_defaults(tmp_path):
    ns = run_setup("exp_table2", tmp_path, task="cb", k_grid="4,16")
    assert ns["k_grid"] == (4, 16) and ns["tasks"] == ("cb",) and ns["fewshot_steps"] is None
    assert ns["k_tasks"] == {("cb", 4): 4, ("cb", 16): 16}

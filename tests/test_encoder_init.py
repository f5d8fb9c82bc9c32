"""Encoders learn with the package's defaults: the adapter init of an encoder backbone is the identity at step 0
(`zero-scale`) under every profile, so `hyperformer train --model minilm --method adapters --tasks sst2`, typed as the
README gives it, leaves the majority class. Slow (about 1.5 CPU-minutes): `pytest -m slow tests/test_encoder_init.py`."""
import json

import pytest

from hyperformer.train import read_jsonl

from helpers import cli
from shared_data import shared_data_dir
from test_exp_cpu import needs_real


@pytest.mark.slow
@needs_real
def test_default_adapters_on_minilm_leave_the_majority_class_within_200_steps(tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "--model", "minilm", "--method", "adapters", "--tasks", "sst2", "--data-dir", str(shared_data_dir()),
               "--max-steps", "200", "--eval-steps", "100", "--max-eval-samples", "500", "--output-dir", str(run),
               "--no-progress", "--threads", "1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["config"]["init"] == "zero-scale"
    predictions = [json.loads(line)["prediction"] for line in (run / "predictions" / "validation_sst2.jsonl").read_text().splitlines()]
    top_share = max(predictions.count(p) for p in set(predictions)) / len(predictions)
    best = max(r["tasks"]["sst2"]["accuracy"] for r in read_jsonl(run / "metrics.jsonl"))
    assert top_share < 0.75 and best > 70.0, (top_share, best)  # SST-2 validation: majority class 50.9 %

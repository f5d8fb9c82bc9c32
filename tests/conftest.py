"""Tests never reach the network, and never read or write the repository's own runs/ and results/ folders."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if "HYPERFORMER_RUNS" not in os.environ:  # one temporary runs root per test session (results/ lands beside it)
    _session_dir = tempfile.mkdtemp(prefix="hyperformer-tests-")
    os.environ["HYPERFORMER_RUNS"] = os.path.join(_session_dir, "runs")
    atexit.register(shutil.rmtree, _session_dir, True)

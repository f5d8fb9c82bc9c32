"""Tests never reach the network, and never read or write the repository's own runs/ and results/ folders."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The real task data, for what reads only the variable: notebooks a test executes and the deprecated
# `hyperformer.data.shared_data_dir` (the library guesses no folder; tests/shared_data.py knows this layout).
from shared_data import shared_data_dir  # noqa: E402
if shared_data_dir() is not None: os.environ.setdefault("HYPERFORMER_SHARED_DATA", str(shared_data_dir()))

# One temporary runs root per test process (results/ lands beside it). Under pytest-xdist each worker inherits the
# controller's environment, so a root this file made is replaced by the worker's own: two workers running notebooks of
# the same experiment must not train into, lock or reuse each other's run directories.
if "HYPERFORMER_RUNS" not in os.environ or os.environ.get("HYPERFORMER_TEST_RUNS_OWNER") not in (None, str(os.getpid())):
    _session_dir = tempfile.mkdtemp(prefix="hyperformer-tests-")
    os.environ["HYPERFORMER_RUNS"] = os.path.join(_session_dir, "runs")
    os.environ["HYPERFORMER_TEST_RUNS_OWNER"] = str(os.getpid())
    atexit.register(shutil.rmtree, _session_dir, True)

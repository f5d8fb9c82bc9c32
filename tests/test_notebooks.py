"""Run every notebook's cells (nbdev's test runner) inside pytest, so CI reads pytest's closing line."""
import pytest
from nbdev.config import get_config
from nbdev.doclinks import nbglob
import nbdev.test as nbdev_test  # a module import: `from nbdev.test import test_nb` would be collected as a test

CONFIG = get_config()
SKIP_FLAGS = CONFIG.get("tst_flags", "").split()
NOTEBOOKS = sorted(nbglob(CONFIG.nbs_path, as_path=True))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs(notebook):
    ok, _ = nbdev_test.test_nb(notebook, skip_flags=SKIP_FLAGS, basepath=CONFIG.config_path)
    assert ok, f"{notebook.name} failed under nbdev's test runner (its error is printed above)"

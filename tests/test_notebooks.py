"""Every notebook runs top to bottom under nbdev's test runner (inside pytest, so CI reads pytest's closing line), except
the experiment notebooks a papermill test executes with its parameters and checks in more detail: each `exp_*`
notebook executes once per `make test`."""
from pathlib import Path

import pytest
from nbdev.config import get_config
from nbdev.doclinks import nbglob
import nbdev.test as nbdev_test  # a module import: `from nbdev.test import test_nb` would be collected as a test

from test_exp_cpu import real_data_available

CONFIG = get_config()
SKIP_FLAGS = CONFIG.get("tst_flags", "").split()
# notebook -> the papermill test that executes it instead (exp_cpu's only where its data is there; elsewhere nbdev runs
# its parameters and setup cells, the rest being `#| slow`)
PAPERMILL_TESTS = {"exp_table1.ipynb": "test_experiments.py::test_a_second_run_reuses_finished_runs",
                   "exp_table2.ipynb": "test_experiments.py::test_table2_runs_one_task_over_its_k_grid"}
if real_data_available(): PAPERMILL_TESTS["exp_cpu.ipynb"] = "test_exp_cpu.py::test_cpu_reproduction_notebook_renders_every_artefact"
NOTEBOOKS = [nb for nb in sorted(nbglob(CONFIG.nbs_path, as_path=True)) if nb.name not in PAPERMILL_TESTS]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs(notebook):
    ok, _ = nbdev_test.test_nb(notebook, skip_flags=SKIP_FLAGS, basepath=CONFIG.config_path)
    assert ok, f"{notebook.name} failed under nbdev's test runner (its error is printed above)"


def test_papermill_tests_exist():
    "Each notebook left out above is executed by a papermill test of that name."
    for notebook, test in PAPERMILL_TESTS.items():
        path, name = test.split("::")
        assert (Path(CONFIG.nbs_path) / notebook).is_file(), notebook
        assert f"def {name}(" in (Path(__file__).parent / path).read_text(), test

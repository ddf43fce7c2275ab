# One-command set-up, tests and demo.
#   make setup   create .venv, install everything (CPU build of torch + spconv by default) and
#                compile the numba kernels once, one process per core (their machine code is cached for every
#                later run)
#   make test    setup + the test suite
#   make lint    setup + the linters of requirements-lint.txt, as CI runs them before the tests: ruff
#                (ruff.toml), hadolint on the Dockerfiles (.hadolint.yaml), the workflows against GitHub's
#                workflow schema (vendored in check-jsonschema) and shellcheck on their shell steps and .ci/run
#   make demo    setup + the main job on the embedded synthetic dataset (TASK=segmentation: the
#                Cylinder3D teacher and 0.5x student on embedded SemanticKITTI)
# GPU machines: `make setup CUDA=1` installs spconv-cu118 instead of the CPU spconv build;
# TORCH_SPEC chooses the torch requirement (default: torch==2.13.0).

PYTHON     ?= python3
VENV       ?= .venv
CUDA       ?= 0
TORCH_SPEC ?= torch==2.13.0
ifeq ($(CUDA),1)
SPCONV_SPEC ?= spconv-cu118
else
SPCONV_SPEC ?= spconv
endif
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(CUDA)
LINT_STAMP := $(VENV)/.installed-lint
TASK       ?= detection
DEMO_DIR   ?= $(if $(filter segmentation,$(TASK)),output/demo_segmentation,output/demo)

.PHONY: setup test lint demo clean

setup: $(STAMP)

$(STAMP): setup.py requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)" "$(SPCONV_SPEC)" -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	$(PY) -m pcdet.utils.numba_warmup
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q --durations=15 tests

$(LINT_STAMP): requirements-lint.txt $(STAMP)
	$(PY) -m pip install -r requirements-lint.txt
	touch $(LINT_STAMP)

lint: setup $(LINT_STAMP)
	$(PY) -m ruff check pcdet benchmark tools tests .ci
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) .ci/shellcheck_workflows.py
	$(VENV)/bin/shellcheck .ci/run

demo: setup
ifeq ($(TASK),segmentation)
	$(PY) -m benchmark.demo_segmentation --out $(DEMO_DIR)
else ifeq ($(TASK),detection)
	$(PY) -m benchmark.demo --out $(DEMO_DIR)
else
	$(error TASK=$(TASK): use detection (default) or segmentation)
endif

clean:
	rm -rf $(VENV) build *.egg-info

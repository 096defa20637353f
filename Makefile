# scoring-lab: `make` lists the targets. Every recipe is one call into uv, the lab's CLIs or
# ansible-playbook; the logic lives in those, not here.
.DEFAULT_GOAL := help
SHELL := bash
# No built-in rules: nothing here compiles, and they would send `make experiment-` looking for
# `experiment-.o`.
MAKEFLAGS += --no-builtin-rules

INVENTORY ?= inventories/single-host
# Empty: each experiment runs its config's default_profile; PROFILE=quick (say) overrides it.
PROFILE ?=
PROFILE_ARG = $(if $(PROFILE),--profile $(PROFILE))
# Committed runs an experiment re-records (folder names): the results index marks them superseded.
SUPERSEDES ?=
SUPERSEDES_ARG = $(foreach run,$(SUPERSEDES),--supersedes $(run))
RESULTS_DIR ?= results
CASES ?= 10000
SEED ?= 1
FUZZ_OUT ?= build/fuzz
VENV := .venv
BIN := $(VENV)/bin
# The BentoML model server's own venv, from services/bentoml_model/uv.lock (README: "BentoML model server").
BENTOML_VENV := .venv-bentoml
# The venv's interpreter: a Python 3.12 when the machine has one (nix develop, pyenv), else
# python3 (3.11 is supported too). Each candidate is run, not just looked up: pyenv's shims
# exist for versions that are not active. Override with BASE_PYTHON=/path/to/python.
BASE_PYTHON ?= $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 python3; do \
	$$p -c '' >/dev/null 2>&1 && { command -v $$p; break; }; done)
UV ?= $(shell command -v uv 2>/dev/null || echo "$(BASE_PYTHON) -m uv")
export UV_PYTHON_DOWNLOADS := never

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_%-]+:.*## / {sub("%", "N", $$1); printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: INVENTORY=$(INVENTORY) PROFILE=$(or $(PROFILE),<each experiment's default_profile>) RESULTS_DIR=$(RESULTS_DIR)"

.PHONY: setup
setup: ## Create .venv exactly from uv.lock, and .venv-bentoml from its own lock (idempotent)
	@$(UV) --version >/dev/null 2>&1 || $(BASE_PYTHON) -m pip install --quiet --user 'uv>=0.7'
	UV="$(UV)" sh nix/uv-sync --python "$(BASE_PYTHON)"
	UV="$(UV)" UV_PROJECT_ENVIRONMENT="$(CURDIR)/$(BENTOML_VENV)" sh nix/uv-sync --python "$(BASE_PYTHON)" --project services/bentoml_model

.PHONY: test
test: setup ## Run the whole test suite (real Redis, servers, Ansible deploys, Locust runs)
	$(BIN)/python -m pytest

.PHONY: test-fast
test-fast: setup ## The fast tests, for the edit-test loop (-m "not slow": no deploys, served stacks or Locust runs)
	$(BIN)/python -m pytest -m "not slow"

.PHONY: fuzz
fuzz: setup ## Fuzz both architectures' real servers (CASES per role, default 10000; FUZZ_OUT=build/fuzz)
	$(BIN)/python -m tests.fuzz --cases $(CASES) --seed $(SEED) --out $(FUZZ_OUT)

.PHONY: lint
lint: setup ## ruff on the Python code, ansible-lint (production profile) on the playbooks
	$(BIN)/ruff check services hardware experiments tests
	cd ansible && ../$(BIN)/ansible-lint --profile production

.PHONY: deploy
deploy: setup ## Deploy the whole lab with Ansible (INVENTORY=... for separate hosts)
	cd ansible && ../$(BIN)/ansible-playbook -i $(INVENTORY) deploy.yml

.PHONY: list
list: setup ## List the experiments, their profiles (default marked) and planned load times
	$(BIN)/python -m experiments list

# Experiment N is the package experiments/expN_<name>/. It runs on the deployed lab, but
# experiment 1 redeploys the lab itself (profiling on, then off), so it needs only the venv. A
# number with no package stops here, before any deploy.
EXPERIMENT_NUMBERS := $(sort $(foreach d,$(wildcard experiments/exp*_*/),$(firstword $(subst _, ,$(patsubst experiments/exp%,%,$(d))))))
EXPERIMENT_NEEDS_1 := setup
.SECONDEXPANSION:
experiment-%: $$(if $$(filter $$*,$$(EXPERIMENT_NUMBERS)),$$(or $$(EXPERIMENT_NEEDS_$$*),deploy),$$(error no experiment-$$*, the experiments are $$(EXPERIMENT_NUMBERS))) ## Run experiment N (`make list`): deploy, verify, measure, report
	$(BIN)/python -m experiments run $* --results-dir $(RESULTS_DIR) --inventory $(INVENTORY) $(PROFILE_ARG) $(SUPERSEDES_ARG)

.PHONY: report
report: ## Rebuild report.md and plots of a run folder from its raw data (RUN=results/<run>)
	$(BIN)/python -m experiments report $(RUN)

.PHONY: report-all
report-all: ## Rebuild every run folder's report, plots and manifest headline, then the index (RESULTS_DIR)
	$(BIN)/python -m experiments report --all $(RESULTS_DIR)

.PHONY: compare
compare: ## Compare two run folders figure by figure (A=results/<run> B=results/<run>; ARGS=--across-protocols)
	$(BIN)/python -m experiments compare $(A) $(B) $(ARGS)

.PHONY: teardown
teardown: setup ## Stop and remove everything the deploy started
	cd ansible && ../$(BIN)/ansible-playbook -i $(INVENTORY) teardown.yml

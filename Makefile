# The two commands the README names: `make repro` runs the pipeline, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Optional, best effort: the C YAML parser (dvc reads params.yaml and dvc.lock ~25 times a repro, 5x faster).
SPEEDUPS := ruamel.yaml.clib==0.2.15
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: repro test test-fast lint venv sample schema lock benchmark clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@$(BIN)/python -m pip install -q --retries 1 --timeout 20 $(SPEEDUPS) 2>/dev/null || echo "note: $(SPEEDUPS) not installed; dvc parses YAML in pure Python (about 1 s slower a repro)"
	@touch $(STAMP)

## repro: run the whole sizing pipeline (dvc repro) on params.yaml
repro: $(STAMP)
	$(BIN)/dvc repro

# Test files run in parallel, one worker per core (pytest-xdist; a file's tests stay together, so a module's
# pipeline run is shared by its tests). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto

## test: lint, then the test suite (unit, reader conformance, end-to-end dvc repro)
test: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## test-fast: the unit and reader tests, no end-to-end runs (pytest -m "not e2e"; under 90 s)
test-fast: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/python -m pytest -m "not e2e" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks

## sample: regenerate the shipped sample traffic log, the SYNTHETIC benchmark sweeps and production window (fixed seeds, byte-identical)
sample: $(STAMP)
	$(BIN)/python -m pipeline.sample
	$(BIN)/python -m pipeline.sample_sweep
	$(BIN)/python -m pipeline.sample_production

## schema: regenerate params.schema.json (editor completion for params.yaml) from the models in pipeline/params.py
schema: $(STAMP)
	$(BIN)/python -m pipeline.params --schema

## lock: re-resolve requirements.in into requirements.lock
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q -r requirements.in
	( echo "# Exact pins resolved from requirements.in by 'make lock' (Python 3.11). Do not edit by hand."; \
	  .lockenv/bin/python -m pip list --format=freeze | grep -v '^pip==' | sort -f ) > requirements.lock
	rm -rf .lockenv

## benchmark: print speed and memory figures (not a test)
benchmark: $(STAMP)
	$(BIN)/python benchmarks/profile_scale.py
	$(BIN)/python benchmarks/pipeline_time.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

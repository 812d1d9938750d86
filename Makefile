# One task runner; CI calls `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv-test
BIN := $(VENV)/bin

.PHONY: demo test venv lint check-tests bench

demo:  ## install Keel with the example extras and run the quick start
	$(PYTHON) -m venv .venv
	.venv/bin/pip install -q -e '.[examples]'
	.venv/bin/python examples/quickstart.py

venv:  ## a fresh virtualenv with the dev dependencies (rebuilt every time)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	# torch from pip, before uv: pip takes this machine's local CPU wheel of 2.13.0 (about 50 s);
	# uv would download a 3 GB CUDA build. The pytorch flavor's tests need it under CI=true.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'

lint:
	$(BIN)/ruff check keel tests examples benchmarks
	$(BIN)/ruff format --check keel tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

check-tests:  ## pytest; exit 5 (no tests collected) is not a failure
	$(BIN)/python -m pytest -n 2 --durations=15; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests collected"; status=0; fi; exit $$status

test: venv lint check-tests  ## what CI runs: fresh venv, lint, the whole suite

bench:  ## benchmarks against MLflow (by hand; writes figures for docs/benchmarks.md)
	$(BIN)/python benchmarks/tracking_vs_mlflow.py

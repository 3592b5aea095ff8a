# Two commands on a fresh machine: `make run` serves the archive, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint typecheck openapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## Serve the archive on http://127.0.0.1:8000 with the embedded default (data in ./data).
run: $(VENV)/.runtime
	@echo "Every DICOMweb call needs a bearer token. In another shell, get one with:"
	@echo "  $(BIN)/filmless token --hospital LOCAL --role reader --role uploader"
	@echo "and send it as 'Authorization: Bearer <token>' (see the README)."
	$(BIN)/filmless serve

## The whole suite, against a throwaway PostgreSQL and SeaweedFS that the fixtures start.
test: $(VENV)/.test
	$(BIN)/pytest

## The suite without the large-instance streaming tests.
test-fast: $(VENV)/.test
	$(BIN)/pytest -m "not slow"

lint: $(VENV)/.test
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy app

## Regenerate openapi/openapi.json from the application.
openapi: $(VENV)/.runtime
	$(BIN)/filmless openapi --output openapi/openapi.json

## Benchmark Filmless, side by side with Orthanc when ORTHANC_URL is set (see bench/README.md).
## Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--studies 20 --scale 100000".
bench: $(VENV)/.test
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

# Two commands on a fresh machine: `make run` serves the archive, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint typecheck openapi openapi-check bench clean

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

## Faults injected into real processes: kill -9 during ingest, object store and database
## outages, a full disk, slow clients, fuzzing, a soak (a few minutes; needs root for tmpfs).
.PHONY: test-reliability
test-reliability: $(VENV)/.test
	FILMLESS_RELIABILITY=1 $(BIN)/pytest tests/reliability -p no:randomly -s -ra --durations=0

lint: $(VENV)/.test openapi-check
	$(BIN)/ruff check app tests bench harness
	$(BIN)/ruff format --check app tests bench harness
	$(BIN)/mypy app
	$(BIN)/lint-imports

## Regenerate openapi/openapi.json from the application; fails (after writing it) when the
## checked-in document was stale, so that a forgotten regeneration cannot pass unnoticed.
openapi: $(VENV)/.runtime
	@$(BIN)/filmless openapi > openapi/openapi.json.new
	@if cmp -s openapi/openapi.json.new openapi/openapi.json; then \
		rm openapi/openapi.json.new; echo "openapi/openapi.json is current"; \
	else \
		mv openapi/openapi.json.new openapi/openapi.json; \
		echo "openapi/openapi.json was stale and is now regenerated: commit it"; exit 1; \
	fi

## Fail when openapi/openapi.json is not what the application generates (part of lint).
openapi-check: $(VENV)/.runtime
	@$(BIN)/filmless openapi | cmp -s - openapi/openapi.json || \
		{ echo "openapi/openapi.json is stale: run make openapi"; exit 1; }

## Benchmark Filmless, side by side with Orthanc when ORTHANC_URL is set (see bench/README.md).
## Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--studies 20 --scale 100000".
bench: $(VENV)/.test
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## End to end: the OHIF viewer (npm @ohif/app, prebuilt) in headless Chromium, on its own
## origin, against a live archive. Needs Node.js, npm and Chromium (/usr/bin/chromium:
## apt-get install -y chromium); installs the rest into tests/e2e with npm.
E2E := tests/e2e
.PHONY: test-e2e
test-e2e: $(VENV)/.test $(E2E)/node_modules/.package-lock.json $(E2E)/viewer/VERSION
	FILMLESS_E2E=1 $(BIN)/pytest $(E2E)

$(E2E)/node_modules/.package-lock.json: $(E2E)/package.json $(E2E)/package-lock.json
	@command -v npm >/dev/null || { echo "make test-e2e needs Node.js and npm"; exit 1; }
	cd $(E2E) && npm ci --no-audit --no-fund

$(E2E)/viewer/VERSION: $(E2E)/package.json $(E2E)/fetch-viewer.mjs
	cd $(E2E) && node fetch-viewer.mjs

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

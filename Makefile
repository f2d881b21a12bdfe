# RecoLab: `make run` (pipeline + service on embedded defaults) and `make test` are the README's two commands.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export BENTOML_DO_NOT_TRACK ?= true
export MLFLOW_ENABLE_TELEMETRY ?= false
export GX_ANALYTICS_ENABLED ?= false

.PHONY: setup run test test-fast lint format typecheck bench clean deploy stack stack-stop stack-status

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel (see README for CUDA)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/recolab pipeline
	@echo
	@echo "== RecoLab is starting on http://127.0.0.1:3000 (Ctrl-C stops it). In another shell, try:"
	@echo "curl -s -X POST http://127.0.0.1:3000/recommend -H 'Content-Type: application/json' \\"
	@echo "     -H \"Authorization: Bearer $$($(BIN)/recolab token 1 --role admin 2>/dev/null)\" -d '{\"user_id\": 1, \"n\": 5}'"
	@echo "Then look at: http://127.0.0.1:3000/ (API docs), data/reports/ (validation reports; GX Data Docs when a batch fails),"
	@echo "  .venv/bin/mlflow ui --backend-store-uri sqlite:///data/mlflow.db (runs and models)."
	@echo
	$(BIN)/recolab serve

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy recolab flows serving

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy recolab flows serving

# Serve every flow as a Prefect deployment (needs PREFECT_API_URL: a server, e.g. `make stack`).
deploy: $(STAMP)
	$(BIN)/recolab deploy

# The whole platform on localhost: PostgreSQL, Redis, MLflow + UI, Prefect + UI, the served
# deployments and the BentoML service; pid files and logs under data/stack/.
stack: $(STAMP)
	scripts/stack.sh start

stack-stop:
	scripts/stack.sh stop

stack-status:
	scripts/stack.sh status

bench: $(STAMP)
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

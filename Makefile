# fjord — developer entry points. `make test` is the README's test command and what CI runs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-lab lint demo demo-down bench clean

setup:
	@./scripts/setup

lint: setup
	@$(VENV)/bin/ruff check src tests bench
	@$(VENV)/bin/mypy --no-error-summary

test-unit: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# Lab tests build simulated servers in namespaces: root only.
test-lab: setup
	$(PY) -m pytest -q tests/lab $(PYTEST_ARGS)

test:
	@./scripts/test $(PYTEST_ARGS)

demo: setup
	@./scripts/demo

demo-down: setup
	@$(VENV)/bin/fjord lab down --name demo

bench: setup
	@$(PY) bench/run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

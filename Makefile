# Two commands matter: `make run` (serve on the embedded default) and `make test`.
# Both set up everything from the lock file; uv is bootstrapped with pip when missing.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
PYTEST_ARGS ?=

.PHONY: run test check lint format typecheck setup bench chaos clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

.venv/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet
	@touch $@

setup: .venv/.synced

run: setup
	$(UV) run --frozen postroom serve

test: setup
	$(UV) run --frozen pytest $(PYTEST_ARGS)

check: setup lint typecheck
	$(UV) run --frozen pytest tests/unit tests/contract -q

lint: setup
	$(UV) run --frozen ruff format --check src tests
	$(UV) run --frozen ruff check src tests
	$(UV) run --frozen lint-imports

format: setup
	$(UV) run --frozen ruff format src tests
	$(UV) run --frozen ruff check --fix src tests

typecheck: setup
	$(UV) run --frozen mypy

chaos: setup
	$(UV) run --frozen pytest tests/integration/test_chaos.py -m long -s

bench: setup
	$(UV) run --frozen postroom bench transactional

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache

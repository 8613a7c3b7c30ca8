# The two set-up commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime

.PHONY: venv runtime test lint install-check demo bench lock clean

# Everything: the runtime, the dev tools and the peers' clients the tests use.
venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP) $(RUNTIME_STAMP)

# Only what running mlserve needs, at the lock's versions (`make demo`).
runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e .
	touch $(RUNTIME_STAMP)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/deptry --no-ansi src

# Two pytest processes: tritonclient.grpc and kserve cannot be imported by one (tests/conftest.py).
test: lint install-check
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q tests/integration/serving/test_grpc.py

# pip install . (pyproject.toml alone, no lock) into a fresh venv, then use the installed command.
install-check:
	PYTHON=$(PYTHON) bash scripts/check_install.sh

demo: runtime
	bash scripts/demo.sh

bench: venv
	bash bench/run.sh

# Re-pin every dependency after changing pyproject.toml.
lock: venv
	$(BIN)/pip install --quiet -e '.[dev,postgres,reports]'
	$(BIN)/pip freeze --exclude-editable | grep -v '^mlserve' > requirements.lock

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache

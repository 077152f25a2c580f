# tapline — the two commands a newcomer needs are `make demo` and `make test`.
# Every target builds .venv from the exact-pinned lock file (requirements.lock) when it is missing
# or older than the lock, so nothing has to be installed by hand first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: venv demo test check fmt lock proto clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tapline needs Python 3.11 or newer (found %s)" % sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tapline demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip-compile -q --extra dev --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links -o requirements.lock pyproject.toml

# Regenerate the Sparkplug B protobuf module (committed, so users need no protoc).
proto: $(STAMP)
	cd src/tapline/sparkplug && PATH="$(CURDIR)/$(BIN):$$PATH" python -m grpc_tools.protoc -I. \
	  --python_out=. --mypy_out=. sparkplug_b.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Every target creates and uses a local .venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FUZZ_SECONDS ?= 60
BENCH_ARGS ?=

.PHONY: demo test unit lint interop bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fuzz,bench,postgres]' || $(PY) -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dofpy_services.demo

# The newcomer's test command: lint, types, the test suite with coverage gates.
test: $(STAMP) lint unit

unit: $(STAMP)
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest
	$(PY) -m coverage report --include='dofpy/wire/*' --fail-under=95
	$(PY) -m coverage report --fail-under=85

lint: $(STAMP)
	$(PY) -m ruff check dofpy dofpy_services tests fuzz interop benchmarks
	$(PY) -m ruff format --check dofpy dofpy_services tests fuzz interop benchmarks
	$(PY) -m mypy

interop: $(STAMP)
	$(PY) -m interop.tshark_check
	$(PY) -m interop.secure_check
	$(PY) -m interop.cose_check

bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

fuzz: $(STAMP)
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage* out

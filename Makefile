# Every target creates and uses a local .venv; nothing is installed globally.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FUZZ_SECONDS ?= 60
BENCH_ARGS ?=
# The suite's worker processes (pytest-xdist): one a core on these two-core machines.
TEST_WORKERS ?= 2

.PHONY: demo demo-transfer test unit lint examples wheel-check interop bench fuzz soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fuzz,bench,postgres]' || $(PY) -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

# The main job: the whole reprogramming process on 1,000 simulated devices
# (python -m dofpy_services.fleet.demo --help for sizes and faults).
demo: $(STAMP)
	$(PY) -m dofpy_services.fleet.demo

# The block transfer alone: 20 requestors through a caching relay.
demo-transfer: $(STAMP)
	$(PY) -m dofpy_services.demo

# The newcomer's test command: lint, types, the test suite with coverage gates.
test: $(STAMP) lint unit

unit: $(STAMP)
	$(PY) -m coverage erase
	$(PY) -m pytest -n $(TEST_WORKERS) --cov --cov-report=
	$(PY) -m coverage report --include='dofpy/wire/*' --fail-under=95
	$(PY) -m coverage report --fail-under=85

lint: $(STAMP)
	$(PY) -m ruff check dofpy dofpy_services tests fuzz interop benchmarks examples
	$(PY) -m ruff format --check dofpy dofpy_services tests fuzz interop benchmarks examples
	$(PY) -m mypy

# The secure examples end to end: a domain, the Authenticator, provider,
# requestor, block transfer (also part of the test suite: tests/test_examples.py).
examples: $(STAMP)
	$(PY) examples/run_all.py

# A fresh install of the built wheel into a clean venv runs the examples.
wheel-check: $(STAMP)
	PYTHON=$(PY) tools/wheel_check.sh

# Wireshark's DOF dissector (tshark) on: the transfer demo's own traffic (make demo-transfer,
# every party, every conversation decrypted), then a clear exchange of every
# OAP operation and a secure one with TRP in the clear.
interop: $(STAMP)
	$(PY) -m interop.demo_check
	$(PY) -m interop.tshark_check
	$(PY) -m interop.secure_check
	$(PY) -m interop.cose_check
	$(PY) -m interop.cose_key_record_check

bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

fuzz: $(STAMP)
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

# The long runs: the bootloader's power cuts at random points over 1,000
# seeded runs (100 in `make test`), the whole agent's update with its own
# state files cut too (every torn point and 1,000 seeded runs; 20 in `make
# test`), then a campaign on a simulated fleet under 20% loss and power cuts
# with the Update, Version, Image and relay daemons killed (SIGKILL) and
# restarted at random moments: it checks every device against its records and
# prints what it survived. SOAK_SECONDS bounds the campaign (the whole target
# takes about 10 minutes).
SOAK_SECONDS ?= 360
SOAK_DEVICES ?= 90
soak: $(STAMP)
	DOFPY_SOAK=1 $(PY) -m pytest -q tests/device/test_power_cuts.py tests/device/test_agent_power_cuts.py
	$(PY) -m dofpy_services.fleet.demo --devices $(SOAK_DEVICES) --loss 0.2 --power-cuts 0.1 \
		--offline 0 --kill-every 15 --silence-timeout 90 --duration $(SOAK_SECONDS) \
		--report out/soak-report.html

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage* out

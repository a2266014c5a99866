# opcore: `make run` starts it on its embedded defaults, `make test` runs the whole suite.
# Both create .venv and install opcore (editable) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck check bench bench-quick reliability clean golden-record golden-check

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "opcore needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/opcore run

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check bot agents jobs store connectors config tests bench
	$(BIN)/ruff format --check bot agents jobs store connectors config tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

# Every benchmark in bench/, one table; results in bench/results/ (summary.json, summary.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run

# The same at bounded sizes (a smoke run); results in bench/results/quick/.
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# Load, faults, bad input and security at full size (CI runs them bounded, in `make test`);
# the figures (inputs tried, p99, ...) are printed and written to bench/results/reliability.json.
reliability: $(STAMP)
	OPCORE_RELIABILITY_SCALE=full OPCORE_RELIABILITY_REPORT=bench/results/reliability.json \
		$(BIN)/python -m pytest tests/reliability tests/test_reliability.py tests/store/test_replay_property.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Re-record the golden runs: FLOW=name for one flow, OFFLINE=1 for the offline templates.
golden-record: $(STAMP)
	$(BIN)/python -m tests.golden record $(if $(FLOW),--flow $(FLOW)) $(if $(OFFLINE),--offline)

golden-check: $(STAMP)
	$(BIN)/python -m tests.golden check

# purchase-guard. `make run` and `make test` work from a fresh clone: they build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
DATA ?= $(abspath ../shared/data)
export PURCHASE_GUARD_DATA_DIR ?= $(DATA)

.PHONY: venv run test unit integration lint typecheck protos protos-check eval bench replay trust clean

venv: $(STAMP)

# torch is pinned in pyproject (CPU build from local disk). resemblyzer is installed without
# its dependencies: we only need the GE2E weights file it carries, not librosa or webrtcvad.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/pip install --no-deps resemblyzer==0.1.4
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/purchase-guard serve

test: $(STAMP)
	$(PY) scripts/gen_protos.py --check
	$(BIN)/ruff check src tests scripts deploy
	$(BIN)/mypy
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

eval: $(STAMP)
	$(BIN)/purchase-guard eval speakers --data $(DATA) --out reports/eval

replay: $(STAMP)
	$(BIN)/purchase-guard replay tests/scenarios --data $(DATA) --report reports/replay --junit reports/replay/junit.xml

trust: $(STAMP)
	$(PY) -m pytest -q tests/privacy tests/trust

bench: $(STAMP)
	$(PY) scripts/bench_evaluate.py --out reports/bench
	$(PY) scripts/bench_load.py --out reports/bench

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache

# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fmt bench clean install

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf out/demo
	$(BIN)/romirecon run --project fixtures/demo --out out/demo; rc=$$?; \
	  echo "romirecon run exited $$rc (0 pass, 1 SLA breached: see out/demo/sla_report.md)"; \
	  test $$rc -le 1

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

lint: $(STAMP)
	$(BIN)/ruff check romirecon tests benchmarks
	$(BIN)/ruff format --check romirecon tests benchmarks

fmt: $(STAMP)
	$(BIN)/ruff format romirecon tests benchmarks
	$(BIN)/ruff check --fix romirecon tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# kiln: `make run` sets everything up and opens kiln on a working copy of the bundled sample dataset
# (build/sample-dataset, made from examples/dataset the first time, so the repository's copy stays as shipped);
# `make test` sets everything up and runs the whole test suite. kiln itself is .venv/bin/kiln.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kiln-installed
SAMPLE := build/sample-dataset

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of torch for this set-up; on a GPU server install your CUDA/ROCm torch first.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	@test -d $(SAMPLE) || { mkdir -p build && cp -R examples/dataset $(SAMPLE) && rm -rf $(SAMPLE)/.kiln; }
	$(BIN)/kiln $(SAMPLE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

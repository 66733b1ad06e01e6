# Two entry points on a fresh machine: `make run` (train the default model on
# Fashion-MNIST) and `make test` (lint + the test suite). Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build pinned here; an unpinned torch would pull the CUDA wheels.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,export,tensorboard]'
	touch $(STAMP)

# Debian ships the four original Fashion-MNIST files; skipped where apt is absent.
data:
	@if [ ! -d $(FMNIST) ] && [ -z "$$RESLAB_DATA" ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist \
	  || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) \
	  || echo "note: could not install dataset-fashion-mnist; reslab will say how to get the data"; \
	fi

run: $(STAMP) data
	$(BIN)/reslab train

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Two workers (pytest-xdist): most tests are short CLI runs and subprocesses that leave the
# second core idle; each test still runs whole in one worker.
test: $(STAMP) data lint
	$(BIN)/pytest -n 2

bench: $(STAMP) data
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

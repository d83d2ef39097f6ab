# Two commands (README Quick start):
#   make demo   install into .venv, then run the main job on the embedded tiny model
#   make test   install into .venv, then run the test suite
# torch==2.13.0 is pinned first because an unpinned torch pulls a multi-GB CUDA build;
# pyproject keeps the wide range (torch>=2.4) for users who already have a torch.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= runtime,serve,fleet,train,export,bench,dev,ros2

.PHONY: install demo test test-slow openpi-venv clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: install
	$(BIN)/python -m pipeline --out demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# openpi-client (numpy<2, dm-tree) in a venv of its own for the interop test (tests/serve/test_openpi_client.py
# creates it too, the first time it runs)
openpi-venv:
	$(PY) -m venv .venv-openpi
	.venv-openpi/bin/python -m pip install -q openpi-client==0.1.2 'typing-extensions>=4'
	printf 'openpi-client==0.1.2 typing-extensions>=4' > .venv-openpi/.installed

clean:
	rm -rf demo runs build *.egg-info

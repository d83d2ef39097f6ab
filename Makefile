# Two commands (README Quick start):
#   make demo   install into .venv, then run the main job on the embedded tiny model
#   make test   install into .venv, then run the test suite
# torch==2.13.0 is pinned first because an unpinned torch pulls a multi-GB CUDA build;
# pyproject keeps the wide range (torch>=2.4) for users who already have a torch.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= runtime,serve,fleet,train,export,bench,dev,ros2,rerun,datasets

# The published TensorRT bindings (10.3, 11.4) and pycuda 2026.1 source the fake GPU is checked against
# (tests/fakes/test_conformance.py): ~4 MB, downloaded once from PyPI into a git-ignored cache.
REF := .cache/reference-packages

.PHONY: install demo test test-soak test-slow test-realsize test-gpu-install openpi-venv lerobot-venv test-lerobot clean reference-packages

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: install
	$(BIN)/python -m pipeline --out demo

reference-packages: $(REF)/.complete

$(REF)/.complete: tests/fakes/reference_packages.py $(VENV)/.installed
	$(BIN)/python -m tests.fakes.reference_packages
	touch $@

test: install $(REF)/.complete
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# the real Kosmos-2 size exported with the CLI's defaults (~15 min, up to 16 GB of memory, ~7 GB of disk);
# CI runs it after the suite (.ci/run)
test-realsize: install
	$(BIN)/python -m pytest -q -m realsize

# the install sequence `jetson/gpu_check.sh --dry-run` prints, run for real in a fresh venv (stand-ins only for
# tensorrt-cu12-libs and pycuda, which need NVIDIA's own index or the CUDA toolkit): 2.3 min on an idle machine,
# ~2 GB of temp disk; CI runs it after the suite (.ci/run)
test-gpu-install: install
	$(BIN)/python -m pytest -q -m slow tests/jetson/test_gpu_check_install.py

# issue 21's two-minute soak (the real loop, serial driver and C controller, faults every 5 s; ~2.5 min); the
# suite runs the 40 s compressed schedule, CI runs this after it (.ci/run)
test-soak: install
	$(BIN)/python -m pytest -q -m slow tests/benchmarks/test_soak.py::test_soak_two_minutes

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# openpi-client (numpy<2, dm-tree) in a venv of its own for the interop test (tests/serve/test_openpi_client.py
# creates it too, the first time it runs)
openpi-venv:
	$(PY) -m venv .venv-openpi
	.venv-openpi/bin/python -m pip install -q openpi-client==0.1.2 'typing-extensions>=4'
	printf 'openpi-client==0.1.2 typing-extensions>=4' > .venv-openpi/.installed

# the real lerobot 0.4.4 (the last for Python 3.10/3.11; it pins torch<2.11) in a venv of its own for the LeRobot
# interop test (tests/train/test_lerobot_interop.py creates it too): pip resolves torch 2.10 with its CUDA libraries,
# ~8 GB and ~7.5 min once on 2 cores
lerobot-venv:
	$(PY) -m venv .venv-lerobot
	.venv-lerobot/bin/python -m pip install -q lerobot==0.4.4
	printf 'lerobot==0.4.4' > .venv-lerobot/.installed

# our LeRobot export/import against the real LeRobotDataset (~1 min with the venv made; slow-marked)
test-lerobot: install
	$(BIN)/python -m pytest -q -m slow tests/train/test_lerobot_interop.py

clean:
	rm -rf demo runs build *.egg-info

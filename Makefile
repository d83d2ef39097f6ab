# Two commands (README Quick start):
#   make demo   install into .venv, then run the main job on the embedded tiny model
#   make test   install into .venv, then run the test suite
# torch is installed first, pinned to the release CI tests (TORCH_VERSION), in its CPU build (~200 MB) from
# PyTorch's CPU index: the default registry's torch is the CUDA build on x86-64 Linux (cuda-toolkit, cuDNN, NCCL:
# several GB). Where that index cannot be reached, the default registry's torch is installed instead and the
# install says so. pyproject keeps a floor (torch>=2.6) for users who already have a torch.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= runtime,serve,fleet,train,export,bench,dev,ros2,rerun,datasets
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# The published TensorRT bindings (10.3, 11.4) and pycuda 2026.1 source the fake GPU is checked against
# (tests/fakes/test_conformance.py): ~4 MB, downloaded once from PyPI into a git-ignored cache.
REF := .cache/reference-packages

.PHONY: install demo test test-soak test-property test-slow-ci test-slow test-realsize test-gpu-install openpi-venv lerobot-venv test-lerobot clean \
	reference-packages

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || { \
	  echo "make install: torch $(TORCH_VERSION), the CPU build, from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install -q --retries 2 torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX) || { \
	    echo "make install: $(TORCH_CPU_INDEX) cannot be reached: torch $(TORCH_VERSION) from the default registry" \
	         "instead (on x86-64 Linux its CUDA build: several GB)"; \
	    $(BIN)/python -m pip install -q torch==$(TORCH_VERSION); }; }
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

# the real Kosmos-2 size exported with the CLI's defaults, its fp16 build inputs checked (time, memory and disk
# measured: docs/performance.md, "The real-size test"); CI runs it after the suite (.ci/run)
test-realsize: install
	$(BIN)/python -m pytest -q -m realsize

# the install sequence `jetson/gpu_check.sh --dry-run` prints, run for real in a fresh venv (stand-ins only for
# tensorrt-cu12-libs and pycuda, which need NVIDIA's own index or the CUDA toolkit): 2.3 min on an idle machine,
# ~2 GB of temp disk; CI runs it after the suite (.ci/run)
test-gpu-install: install
	$(BIN)/python -m pytest -q -m slow tests/jetson/test_gpu_check_install.py

# the soak's slow run (the real loop, serial driver and C controller, ten fault kinds every 5 s; ~3 min); the
# suite runs the 50 s compressed schedule, CI runs this after it (.ci/run)
test-soak: install
	$(BIN)/python -m pytest -q -m slow tests/benchmarks/test_soak.py::test_soak_two_minutes

# issue 29's stateful property test at CI's size: 2,000 random event sequences against the real drive loop
# (~10 min on 2 cores); the suite runs a dozen (tests/runtime/control/test_motion_property.py)
test-property: install
	MVLA_PROPERTY_EXAMPLES=2000 $(BIN)/python -m pytest -q -s -m slow \
		tests/runtime/control/test_motion_property.py::test_the_robot_moves_only_when_it_should_ci

# every slow-marked test but those with a target of their own above and the real-size ones (hours of CPU, tens of
# GB): the trained-policy evaluations, the compressed soak, the serving stress tests, the Ray fleet, the
# interop tests (~15 min on 2 cores; CI runs it after the suite, .ci/run)
SLOW_ELSEWHERE := test_soak_two_minutes or test_the_robot_moves_only_when_it_should_ci or \
	test_the_printed_install_sequence or test_demo_full_size or test_kosmos2_random_weights_has_the_real_size or \
	test_one_real_size_training_step_on_the_cpu or test_lerobot_interop
test-slow-ci: install
	$(BIN)/python -m pytest -q -m "slow and not realsize" -k "not ($(SLOW_ELSEWHERE))"

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

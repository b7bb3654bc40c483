# The two commands of the README. Both set up everything on a fresh machine (Debian/Ubuntu, Python >= 3.10).
#   make demo   train, convert, evaluate and run the whole pipeline on a synthetic face set (no data needed)
#   make test   install test dependencies and run the default test tier plus the CI benchmark gate
VENV ?= .venv
SHARED ?= $(abspath ../shared)
export EDGEFACE_SHARED ?= $(SHARED)
# ImageNet weights: Keras downloads them; on machines without internet, ../shared/weights serves them.
export EDGEFACE_WEIGHTS_DIR ?= $(if $(wildcard $(SHARED)/weights),$(SHARED)/weights,)

.PHONY: demo test test-arm64 test-homeassistant test-all setup setup-dev bench clean

setup:
	.ci/setup.sh train

setup-dev:
	.ci/setup.sh dev

demo: setup
	$(VENV)/bin/edgeface demo --out runs/demo $(DEMO_ARGS)

test: setup-dev
	.ci/test.sh

# The Pi's platform under emulation (root; ~6 min with an empty cache, ~3 min cached): docs/arm64.md
test-arm64: setup-dev
	$(VENV)/bin/pytest -m arm64 tests/arm64

# A real Home Assistant core reads the daemon's MQTT discovery (tests/test_homeassistant.py). Its venv is built
# once under ~/.cache/edgeface (about 5 min, from PyPI); without it the tests skip, saying why.
test-homeassistant: setup-dev
	.ci/homeassistant.sh >/dev/null || echo "Home Assistant's venv could not be built: its tests will skip" >&2
	$(VENV)/bin/pytest -m homeassistant tests/test_homeassistant.py

# Everything, slow tiers included (real training on ../shared, the arm64 emulated root).
test-all: setup-dev
	$(VENV)/bin/pytest -m "" tests benchmarks

clean:
	rm -rf runs .pytest_cache .benchmarks

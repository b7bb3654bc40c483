# The two commands of the README. Both set up everything on a fresh machine (Debian/Ubuntu, Python >= 3.10).
#   make demo   train, convert, evaluate and run the whole pipeline on a synthetic face set (no data needed)
#   make test   install test dependencies, lint and type-check, run the default test tier and the CI benchmark gate
# For maintainers: make bench (the benchmark suite, figures to results/), make results (the pages from them).
VENV ?= .venv
SHARED ?= $(abspath ../shared)
export EDGEFACE_SHARED ?= $(SHARED)
# ImageNet weights: Keras downloads them; on machines without internet, ../shared/weights serves them.
export EDGEFACE_WEIGHTS_DIR ?= $(if $(wildcard $(SHARED)/weights),$(SHARED)/weights,)

.PHONY: demo lint test test-arm64 test-homeassistant test-all results setup setup-dev bench clean

setup:
	.ci/setup.sh train

setup-dev:
	.ci/setup.sh dev

demo: setup
	$(VENV)/bin/edgeface demo --out runs/demo $(DEMO_ARGS)

# ruff and mypy over edgeface/ and convert/ (settings in pyproject.toml); about 10 s, first in `make test`
lint: setup-dev
	.ci/lint.sh

test: lint
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

# The benchmark suite on this machine (docs/benchmarks.md): latency, the daemon, the web page's cost,
# training speed; each writes its figures to results/, then the pages are written again from them. Needs
# ../shared (the daemon's videos, ImageNet weights); about 20 minutes on 2 cores. The slow tier (MobileNetV2-224
# in the daemon, the 10-minute soak) and the celeba-299 figures: docs/results.md gives their commands.
bench: setup-dev
	$(VENV)/bin/pytest benchmarks -m "not slow" -s
	$(MAKE) results

# docs/results.md and the README's results table, written again from results/*.json (docs/results.md)
results:
	$(VENV)/bin/python benchmarks/render_results.py

clean:
	rm -rf runs .pytest_cache .benchmarks

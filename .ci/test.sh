#!/usr/bin/env bash
# The default test tier, then the CI benchmark gate. Called by `make test` (after .ci/setup.sh dev).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mkdir -p artifacts
"$VENV/bin/pytest" -m "not slow and not arm64 and not homeassistant" tests
# The speed gate: int8 must beat float32, measured side by side in this run (small MobileNetV2 tier).
"$VENV/bin/pytest" benchmarks/bench_latency.py -q --benchmark-json=artifacts/benchmarks.json
"$VENV/bin/python" benchmarks/check_speedup.py artifacts/benchmarks.json

#!/usr/bin/env bash
# The default test tier, then the CI benchmark gate. Called by `make test` (after .ci/setup.sh dev).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mkdir -p artifacts
"$VENV/bin/pytest" -m "not slow and not arm64" tests

#!/bin/sh
# Deploy a bundle to Raspberry Pis from the workstation: the same as `edgeface deploy` (this only finds it).
#   firmware_scripts/deploy.sh pi@kitchen.local pi@hall.local --bundle bundles/home-int8.edgeface --config pi.toml
#   firmware_scripts/deploy.sh --help
# Uses $EDGEFACE if set, else `edgeface` on PATH, else the repository's .venv.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${EDGEFACE:-}" ]; then
    edgeface=$EDGEFACE
elif command -v edgeface >/dev/null 2>&1; then
    edgeface=edgeface
elif [ -x "$here/../.venv/bin/edgeface" ]; then
    edgeface=$here/../.venv/bin/edgeface
else
    echo "error: edgeface is not installed here: pip install edgeface (or set EDGEFACE=/path/to/edgeface)" >&2
    exit 2
fi
exec "$edgeface" deploy "$@"

#!/usr/bin/env bash
# Build the Home Assistant core that tests/test_homeassistant.py runs against edgeface's MQTT messages, in a venv
# of its own outside the repository (it pins its own dependencies: paho-mqtt 1.6.1 among them). Built once,
# then reused: a venv is complete when it holds the marker file written last. Prints the venv's path.
#   EDGEFACE_HA_VENV   where (default: ~/.cache/edgeface/homeassistant-<version>)
#   HA_PYTHON          the interpreter (default: python3.11 or python3.12, the versions this release supports)
set -euo pipefail
HA_VERSION=2024.3.3
VENV=${EDGEFACE_HA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeface/homeassistant-$HA_VERSION}
if [ -f "$VENV/.complete" ]; then
  echo "$VENV"
  exit 0
fi
PY=${HA_PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
      PY=$candidate
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "homeassistant.sh: Home Assistant $HA_VERSION needs Python 3.11 or 3.12; none found" >&2
  exit 1
fi
echo "homeassistant.sh: building Home Assistant $HA_VERSION in $VENV ($("$PY" --version))" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "homeassistant==$HA_VERSION"
# Home Assistant installs an integration's requirements when it first sets it up; here they are installed now
# (the test runs it with --skip-pip): those of the integrations it always sets up, of MQTT and all its entity
# platforms (it sets them all up; its camera imports stream), read from their manifests, pinned by Home
# Assistant's own constraints. josepy 2 dropped what this release's acme (for the cloud integration) imports.
requirements=$("$VENV/bin/python" - <<'EOF'
import json
from pathlib import Path

import homeassistant
from homeassistant.bootstrap import CORE_INTEGRATIONS, DEFAULT_INTEGRATIONS
from homeassistant.components.mqtt.const import PLATFORMS

components = Path(homeassistant.__file__).parent / "components"
todo = {*DEFAULT_INTEGRATIONS, *CORE_INTEGRATIONS, "mqtt", "api", "stream", *map(str, PLATFORMS)}
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    manifest = components / domain / "manifest.json"
    if domain in seen or not manifest.is_file():
        continue
    seen.add(domain)
    data = json.loads(manifest.read_text())
    requirements.update(data.get("requirements", []))
    todo.update(data.get("dependencies", []), data.get("after_dependencies", []))
print("\n".join(sorted(requirements)))
EOF
)
constraints=$("$VENV/bin/python" -c 'import homeassistant, pathlib; print(pathlib.Path(homeassistant.__file__).parent / "package_constraints.txt")')
# shellcheck disable=SC2086  # one requirement per word
"${pip[@]}" install -c "$constraints" "josepy<2" $requirements
"$VENV/bin/python" -c 'import homeassistant.components.mqtt, hass_nabucasa, paho.mqtt.client'
touch "$VENV/.complete"
echo "$VENV"

#!/usr/bin/env bash
# Set up this checkout on a fresh machine: Debian packages the tests need (as root, or with sudo), a venv,
# and the Python packages. Safe to run again: it installs only what is missing.
#   .ci/setup.sh train   workstation: runtime + TensorFlow (what `make demo` needs)
#   .ci/setup.sh dev     train + test tools + the Debian services the tests start (what `make test` needs)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-dev}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# mosquitto (+ openssl for its TLS certificates): MQTT sink and fault tests; openssh-server/-client + rsync:
# deploy tests; systemd: `systemd-analyze verify` of the unit; shellcheck: lint of firmware_scripts; curl:
# deploy health checks; python3-venv: the install.sh test makes a venv from /usr/bin/python3 as the Pi would;
# chromium + chromium-driver: the web page's browser tests (Debian's builds: browsers downloaded at run time do
# not work offline).
DEV_DEBS=(mosquitto openssh-server openssh-client rsync curl shellcheck systemd python3-venv openssl chromium
          chromium-driver)

install_debs() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo=(sudo); else
      echo "setup: not root and no sudo: cannot install ${missing[*]}; tests that need them will skip" >&2
      return 0
    fi
  fi
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -q
  # Services must not start at install time (containers have no init); tests start their own instances.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if [ "$mode" = dev ] && command -v apt-get >/dev/null; then
  install_debs "${DEV_DEBS[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
extras=train
[ "$mode" = dev ] && extras=train,dev
echo "setup: installing edgeface[$extras] into $VENV" >&2
"${pip[@]}" install -e ".[$extras]"

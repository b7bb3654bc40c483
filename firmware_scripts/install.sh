#!/bin/bash
# Install the edgeface runtime on a Raspberry Pi as a systemd service (Raspberry Pi OS / Debian Bookworm or
# newer, Python 3.10+). Run it on the Pi, as root:
#
#   sudo firmware_scripts/install.sh --deploy-user pi                    # from this source tree
#   sudo ./install.sh --from edgeface-0.1.0-py3-none-any.whl --sha256 HEX --deploy-user pi
#
# What it does: Debian packages; a venv at /opt/edgeface/venv made with --system-site-packages (so picamera2
# from the OS is visible) holding the edgeface runtime alone (no TensorFlow): edgeface's wheel (built here from
# the source tree, or the one given, its sha256 checked) and its dependencies pinned with hashes in
# requirements-pi.txt, installed with pip's --require-hashes; the service user `edgeface` in group `video`;
# /opt/edgeface/releases (bundles and configs, written by `edgeface deploy`) and /var/lib/edgeface (state);
# the credential helper and the deploy user's sudo rule; the unit edgeface.service, enabled. It is
# idempotent: a second run changes nothing. A step that cannot run here (no running systemd in a chroot, no
# user database under --root) is skipped with a line that says so.
#
# Root never runs what the deploy user can write: /opt/edgeface and its venv are root's, and the deploy user
# may write only /opt/edgeface/releases (its releases and the releases/current link). Every Python this
# script runs is isolated (-I: not the current folder, not PYTHON* variables) and it works from /. It runs
# only from a folder that root alone can write (with --root, root or the user running it): the credential
# helper it installs and the requirement hashes it trusts come from there. A wheel given with --sha256 and a
# wheelhouse may lie anywhere: they are copied to a folder of root's, and checked there, before use.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --from SRC          edgeface to install: a wheel (.whl) or a source folder, whose wheel is built here
                      (default: the source tree this script is in)
  --sha256 HEX        the wheel's expected sha256 (sha256sum dist/*.whl where it was built): checked
  --deploy-user USER  the account `edgeface deploy` logs in as: owns /opt/edgeface/releases and may restart
                      the service and store its credentials with sudo (default: $SUDO_USER through sudo)
  --root DIR          install under DIR instead of / (an image being built, tests); skips what needs the
                      target's user database or a running systemd. Also $EDGEFACE_ROOT.
  --wheelhouse DIR    install Python packages from DIR only, no index (a Pi without internet); their
                      hashes are checked all the same
  --python PATH       interpreter for the venv (default: /usr/bin/python3, the one picamera2 is built for)
  --no-apt            do not install Debian packages (they are already there, or apt is unreachable)
  --no-systemd        install the unit file but do not enable or start it
  -h, --help          this help
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 2; }
step() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
skip() { printf '    skipped: %s\n' "$*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)  # symbolic links resolved: what is checked is used
root=${EDGEFACE_ROOT:-/}
from=""
sha256=""
deploy_user=${SUDO_USER:-}
wheelhouse=""
python=/usr/bin/python3
use_apt=1
use_systemd=1
while [ $# -gt 0 ]; do
    case $1 in
        --from) from=${2:?--from needs a value}; shift ;;
        --sha256) sha256=${2:?--sha256 needs a value}; shift ;;
        --deploy-user) deploy_user=${2?--deploy-user needs a value}; shift ;;
        --root) root=${2:?--root needs a value}; shift ;;
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a value}; shift ;;
        --python) python=${2:?--python needs a value}; shift ;;
        --no-apt) use_apt=0 ;;
        --no-systemd) use_systemd=0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
[ "$deploy_user" = root ] && deploy_user=""  # root can write everywhere already

# --- what may be trusted -------------------------------------------------------------------------------------
# A path is trusted when it, and every folder above it, belongs to root (or to the user running this, who
# must be root unless --root is given) and nobody else may write it. A folder above may be writable by all
# when it is sticky (/tmp): others cannot then rename or replace what is in it.
self_uid=$(id -u)
untrusted() {  # PATH: why PATH is not trusted, or nothing
    local path=$1 uid mode owner first=1
    path=$(realpath -e -- "$path" 2>/dev/null) || { echo "it does not exist"; return; }
    while :; do
        read -r uid mode owner < <(stat -c '%u %a %U' -- "$path")
        if [ "$uid" != 0 ] && [ "$uid" != "$self_uid" ]; then
            echo "$path belongs to $owner"; return
        fi
        if (( 8#$mode & 8#022 )) && { [ "$first" = 1 ] || ! (( 8#$mode & 8#1000 )); }; then
            echo "$path may be written by others than its owner (mode $mode)"; return
        fi
        [ "$path" = / ] && return
        path=$(dirname -- "$path")
        first=0
    done
}
require_trusted() {  # PATH WHAT
    local why
    why=$(untrusted "$1")
    [ -z "$why" ] || die "$2 $1 is not root's alone ($why): root runs only what root alone can write. Copy it to a folder of root's first (sudo cp -RT FOLDER /root/FOLDER) and run install.sh from there (docs/pi.md, step 3)"
}
require_trusted_tree() {  # FOLDER WHAT PARTS...: the folder and every file and folder of PARTS in it
    local folder=$1 what=$2 found
    shift 2
    require_trusted "$folder" "$what"
    found=$(cd "$folder" && for part in "$@"; do [ ! -e "$part" ] || find "$part" \( -type l -o -perm /022 \
        -o \( ! -uid 0 ! -uid "$self_uid" \) \) -print -quit; done | head -n 1)
    [ -z "$found" ] || die "$what $folder holds $found, which is a link or not root's alone: root runs only what root alone can write. Copy the folder to one of root's first (sudo cp -RT FOLDER /root/FOLDER) and run install.sh from there (docs/pi.md, step 3)"
}

# --- where things go ----------------------------------------------------------------------------------------
[ -d "$root" ] || die "--root $root: no such folder"
root=$(cd "$root" && pwd)
r=${root%/}                        # prefix for every path below ("" when installing into /)
app=$r/opt/edgeface
venv=$app/venv
state=$r/var/lib/edgeface
unit_src=$here/edgeface.service
unit_dst=$r/etc/systemd/system/edgeface.service
sudoers=$r/etc/sudoers.d/edgeface
helper_src=$here/edgeface-credential
helper=/usr/local/sbin/edgeface-credential
credentials=$r/etc/edgeface/credentials
on_target=0                        # installing into the running system (not into a folder)
[ -z "$r" ] && on_target=1
for file in "$unit_src" "$helper_src" "$here/requirements-pi.txt" "$here/requirements-build.txt"; do
    [ -f "$file" ] || die "$file is missing: run install.sh from its firmware_scripts folder"
done
require_trusted_tree "$here" "the installer's folder" "$(basename -- "${BASH_SOURCE[0]}")" edgeface.service \
    edgeface-credential requirements-pi.txt requirements-pi-numpy1.txt requirements-build.txt
if [ "$on_target" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0 ...), or pass --root DIR to install into a folder"
fi
if [ -z "$from" ]; then
    if ! grep -qs '^name = "edgeface"' "$here/../pyproject.toml"; then
        die "not in edgeface's source tree: pass --from WHEEL (built with pip wheel --no-deps on the workstation)"
    fi
    from=$(cd "$here/.." && pwd -P)
fi
tree_parts=(pyproject.toml README.md LICENSE edgeface convert)  # what building the wheel reads
if [ -d "$from" ]; then
    [ -f "$from/pyproject.toml" ] || die "--from $from: not a Python source tree (no pyproject.toml)"
    from=$(cd "$from" && pwd -P)
    require_trusted_tree "$from" "--from" "${tree_parts[@]}"  # its build code runs as root
elif [ -f "$from" ]; then
    case $from in
        *.whl) from=$(cd "$(dirname "$from")" && pwd -P)/$(basename "$from") ;;
        *) die "--from $from: expected a wheel (.whl) or a source folder" ;;
    esac
    # Without --sha256 nothing vouches for the wheel but where it lies; with it, its copy is checked.
    [ -n "$sha256" ] || require_trusted "$from" "--from"
else
    die "--from $from: no such file or folder (edgeface is installed from a wheel or a source tree, never by name)"
fi
[ -z "$sha256" ] || [ -f "$from" ] || die "--sha256 checks a wheel: --from $from is a folder"
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "--wheelhouse $wheelhouse: no such folder"
    wheelhouse=$(cd "$wheelhouse" && pwd -P)
fi
[ -x "$python" ] || python=$(command -v python3) || die "no python3 found (apt-get install python3)"
require_trusted "$python" "--python"
# Root's own working folder: what may lie elsewhere (a wheel checked by its hash, a wheelhouse whose wheels
# pip checks by theirs) is copied here first and used from here, so that nobody can swap it after the check.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -f "$from" ]; then
    mkdir "$tmp/wheel"
    cp -- "$from" "$tmp/wheel/"
    wheel_given=$from
    from=$tmp/wheel/$(basename -- "$from")
    if [ -n "$sha256" ] && [ "$(sha256sum "$from" | cut -d' ' -f1)" != "${sha256,,}" ]; then
        die "--from $wheel_given: its sha256 is $(sha256sum "$from" | cut -d' ' -f1), not $sha256 (a different or damaged wheel)"
    fi
fi
if [ -n "$wheelhouse" ]; then
    mkdir "$tmp/wheelhouse"
    find "$wheelhouse" -maxdepth 1 -type f -name '*.whl' -exec cp -- {} "$tmp/wheelhouse/" \;
    wheelhouse=$tmp/wheelhouse
fi
# From here on no relative path is used: work from /, so no Python run below imports from the caller's folder.
cd /
if [ -d /run/systemd/system ] && [ "$on_target" = 1 ]; then systemd_running=1; else systemd_running=0; fi

# --- Debian packages -----------------------------------------------------------------------------------------
# python3-venv: the venv (ensurepip); rsync: how `edgeface deploy` copies releases; curl: its health check;
# python3-picamera2 (Raspberry Pi OS only): the Pi camera, without the GUI preview packages it recommends.
step "Debian packages"
debs=(python3-venv rsync curl ca-certificates sudo)
if [ "$use_apt" = 0 ]; then
    skip "--no-apt given; needed: ${debs[*]} (and python3-picamera2 on Raspberry Pi OS)"
elif [ "$on_target" = 0 ]; then
    skip "--root $root: apt installs into the running system only; needed: ${debs[*]}"
else
    command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS / Debian"
    missing=()
    for deb in "${debs[@]}"; do
        dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
    done
    camera=python3-picamera2
    if dpkg-query -W -f='${Status}' "$camera" 2>/dev/null | grep -q "install ok installed"; then
        camera=""
    elif ! apt-cache policy "$camera" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -qv '(none)'; then
        info "$camera is not in this system's apt sources (not Raspberry Pi OS): USB cameras only"
        camera=""
    fi
    if [ ${#missing[@]} -eq 0 ] && [ -z "$camera" ]; then
        info "all installed"
    else
        [ ${#missing[@]} -eq 0 ] || { apt-get update -q; DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"; }
        [ -z "$camera" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$camera"
    fi
fi

# --- the service user ----------------------------------------------------------------------------------------
step "service user edgeface (group video)"
if [ "$on_target" = 0 ]; then
    skip "--root $root: users are created on the running system (run install.sh there, or inside a chroot)"
else
    if ! getent group video >/dev/null; then
        groupadd --system video
        info "created group video"
    fi
    if id edgeface >/dev/null 2>&1; then
        info "user edgeface exists"
    else
        useradd --system --user-group --home-dir /var/lib/edgeface --no-create-home \
            --shell /usr/sbin/nologin --comment "edgeface camera daemon" edgeface
        info "created user edgeface"
    fi
    if id -nG edgeface | tr ' ' '\n' | grep -qx video; then
        info "edgeface is in group video"
    else
        usermod -aG video edgeface
        info "added edgeface to group video"
    fi
    if [ -n "$deploy_user" ] && ! id "$deploy_user" >/dev/null 2>&1; then
        die "--deploy-user $deploy_user: no such user on this system"
    fi
fi

# --- directories ---------------------------------------------------------------------------------------------
# ensure_dir PATH MODE OWNER: create or fix, saying only what changed.
ensure_dir() {
    local path=$1 mode=$2 owner=$3
    if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then
        die "$path exists and is not a folder: move it away and run again"
    fi
    if [ ! -d "$path" ]; then
        mkdir -p "$path"
        info "created $path"
    fi
    if [ "$on_target" = 1 ] && [ "$(stat -c %U:%G "$path")" != "$owner" ]; then
        chown "$owner" "$path"
        info "owner $owner on $path"
    fi
    if [ "$(stat -c %a "$path")" != "${mode#0}" ]; then
        chmod "$mode" "$path"
        info "mode $mode on $path"
    fi
}
step "directories"
# /opt/edgeface and the venv are root's; releases/ is the deploy user's, setgid with the service's group, so
# what deploy writes there (configs 0640: they may hold a password) is the service's to read and nobody else's.
ensure_dir "$app" 0755 root:root
ensure_dir "$app/releases" 2750 "${deploy_user:-root}:edgeface"
ensure_dir "$state" 0700 edgeface:edgeface
ensure_dir "$r/etc/edgeface" 0755 root:root
ensure_dir "$credentials" 0700 root:root
[ "$on_target" = 1 ] || skip "--root $root: ownership (needs the target's user database); left to root"
# current -> releases/current, root's and fixed; deploy switches releases/current. An older install had the
# deploy user's current -> releases/<id> here: its release becomes releases/current.
if [ "$(readlink "$app/current" 2>/dev/null)" != releases/current ]; then
    if [ -L "$app/current" ] && [ ! -e "$app/releases/current" ] && [ ! -L "$app/releases/current" ]; then
        ln -sfnT "$(basename "$(readlink "$app/current")")" "$app/releases/current"
        [ "$on_target" = 0 ] || chown -h "${deploy_user:-root}:edgeface" "$app/releases/current"
        info "moved the current release link to $app/releases/current"
    fi
    rm -rf "$app/current"
    ln -sfnT releases/current "$app/current"
    info "created $app/current -> releases/current"
fi
info "releases: $app/releases (current -> releases/current -> <id>), state: $state"

# --- the venv and the runtime ----------------------------------------------------------------------------------
step "Python runtime in $venv"
"$python" -I -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$python is Python $("$python" -I -V 2>&1 | cut -d' ' -f2); edgeface needs 3.10 or newer"
# A venv that anyone but root could have written (an older install let the deploy user own /opt/edgeface) is
# not run: it is made again.
if [ -e "$venv" ] && [ "$on_target" = 1 ] && [ -n "$(find "$venv" ! -user root -print -quit)" ]; then
    rm -rf "$venv"
    info "removed $venv: it held files not owned by root"
fi
if [ -x "$venv/bin/python" ]; then
    grep -q '^include-system-site-packages = true' "$venv/pyvenv.cfg" \
        || die "$venv exists without --system-site-packages (picamera2 would be invisible): remove it and run again"
    info "venv exists ($("$venv/bin/python" -I -V 2>&1))"
else
    "$python" -I -m venv --system-site-packages "$venv" \
        || die "could not create the venv: install python3-venv (apt-get install python3-venv)"
    info "created venv ($("$venv/bin/python" -I -V 2>&1), --system-site-packages)"
fi

# picamera2 from apt uses compiled modules (simplejpeg) built against the OS's numpy: keep its major version
# in the venv, or importing picamera2 fails with "numpy.dtype size changed".
requirements=$here/requirements-pi.txt
system_numpy=$("$python" -I -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
if [ "${system_numpy%%.*}" = 1 ]; then
    requirements=$here/requirements-pi-numpy1.txt
    info "the OS has numpy $system_numpy: keeping numpy 1.x in the venv ($(basename "$requirements"))"
fi
pip_source=()
[ -z "$wheelhouse" ] || pip_source=(--no-index --find-links "$wheelhouse")
# Hashes for everything, wheels only: no package's build code runs as root.
pip_install=(-m pip --disable-pip-version-check --no-input -q install --require-hashes --only-binary :all:
             "${pip_source[@]}")

# What is being installed, as one fingerprint: a second run with the same input skips pip entirely.
if [ -f "$from" ]; then
    source_id="file $(basename "$from") $(sha256sum "$from" | cut -d' ' -f1)"
else
    parts=()
    for part in "${tree_parts[@]}"; do [ ! -e "$from/$part" ] || parts+=("$part"); done
    source_id="tree $from $(cd "$from" && find "${parts[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
        -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
fi
stamp=$venv/.edgeface-install
wanted=$(printf '%s\nrequirements %s\nwheelhouse %s\n' "$source_id" "$(sha256sum <"$requirements" | cut -d' ' -f1)" \
    "${wheelhouse:+given}")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x "$venv/bin/edgeface" ]; then
    info "edgeface already installed from ${wheel_given:-$from}"
else
    wheel=$from
    if [ -d "$from" ]; then
        # A copy of the tree (building writes into it), built in a throwaway venv whose setuptools and wheel
        # come pinned with hashes (requirements-build.txt), without build isolation (which would fetch them
        # unpinned).
        info "building edgeface's wheel from $from"
        mkdir "$tmp/src" "$tmp/dist"
        for part in "${tree_parts[@]}"; do [ ! -e "$from/$part" ] || cp -R "$from/$part" "$tmp/src/"; done
        "$python" -I -m venv "$tmp/build"
        "$tmp/build/bin/python" -I "${pip_install[@]}" -r "$here/requirements-build.txt"
        "$tmp/build/bin/python" -I -m pip --disable-pip-version-check --no-input -q wheel --no-deps \
            --no-build-isolation -w "$tmp/dist" "$tmp/src"
        wheel=$(find "$tmp/dist" -name 'edgeface-*.whl' -print -quit)
        [ -n "$wheel" ] || die "building the wheel from $from made no edgeface-*.whl"
    fi
    wheel_sha=$(sha256sum "$wheel" | cut -d' ' -f1)
    # The wheel by its hash, its dependencies from the pinned file: pip refuses anything else.
    printf -- '-r %s\n%s --hash=sha256:%s\n' "$requirements" "$wheel" "$wheel_sha" >"$tmp/requirements.txt"
    info "installing $(basename "$wheel") (sha256 $wheel_sha) and $(basename "$requirements")"
    info "(the runtime only: numpy, OpenCV, LiteRT; no TensorFlow)"
    "$venv/bin/python" -I "${pip_install[@]}" -r "$tmp/requirements.txt"
    if "$venv/bin/python" -I -c 'import tensorflow' 2>/dev/null; then
        info "warning: TensorFlow is importable in the venv (from the system site-packages?); edgeface does not use it"
    fi
    printf '%s' "$wanted" >"$stamp"
    info "installed $("$venv/bin/python" -I -m edgeface --help >/dev/null && "$venv/bin/python" -I -c \
        'import importlib.metadata as m; print("edgeface", m.version("edgeface"))')"
fi

# --- the credential helper -------------------------------------------------------------------------------------
step "credential helper $helper"
if cmp -s "$helper_src" "$r$helper"; then
    info "$r$helper is up to date"
else
    mkdir -p "$(dirname "$r$helper")"
    install -m 0755 "$helper_src" "$r$helper"
    info "installed $r$helper (stores deploy's secrets in $credentials)"
fi

# --- sudo rule for deploys -------------------------------------------------------------------------------------
step "restart and credential permission for the deploy user"
if [ -z "$deploy_user" ]; then
    skip "no --deploy-user: deploys must log in as root, or pass --restart-cmd"
else
    rule="$deploy_user ALL=(root) NOPASSWD: /usr/bin/systemctl restart edgeface, /usr/bin/systemctl restart edgeface.service"
    rule+=", $helper http-token, $helper mqtt-password"
    content=$(printf '# Written by edgeface install.sh: edgeface deploy restarts the service and stores its credentials as %s.\n%s\n' \
        "$deploy_user" "$rule")
    if [ -f "$sudoers" ] && [ "$(cat "$sudoers")" = "$content" ]; then
        info "$sudoers is up to date"
    elif ! command -v visudo >/dev/null; then
        skip "visudo not found (is sudo installed?): not writing $sudoers"
    else
        mkdir -p "$(dirname "$sudoers")"
        printf '%s\n' "$content" >"$sudoers.tmp"
        chmod 0440 "$sudoers.tmp"
        visudo -cqf "$sudoers.tmp" || { rm -f "$sudoers.tmp"; die "the sudo rule for $deploy_user does not validate"; }
        mv "$sudoers.tmp" "$sudoers"
        info "wrote $sudoers"
    fi
fi

# --- the unit --------------------------------------------------------------------------------------------------
step "systemd unit"
unit_changed=0
if cmp -s "$unit_src" "$unit_dst"; then
    info "$unit_dst is up to date"
else
    mkdir -p "$(dirname "$unit_dst")"
    install -m 0644 "$unit_src" "$unit_dst"
    unit_changed=1
    info "installed $unit_dst"
fi
if [ "$use_systemd" = 0 ]; then
    skip "--no-systemd: enable it yourself with systemctl enable --now edgeface"
elif ! command -v systemctl >/dev/null; then
    skip "systemctl not found: enable edgeface.service with your init system"
else
    # Enabling is a symlink in /etc: it works offline (chroot, --root) as well as on a booted system.
    sysctl_root=()
    [ "$on_target" = 1 ] || sysctl_root=(--root="$root")
    if [ "$(systemctl "${sysctl_root[@]}" is-enabled edgeface.service 2>/dev/null)" = enabled ]; then
        info "edgeface.service is enabled"
    else
        systemctl "${sysctl_root[@]}" enable edgeface.service 2>&1 | sed 's/^/    /'
        info "enabled edgeface.service"
    fi
    if [ "$systemd_running" = 0 ]; then
        skip "systemd is not running here (chroot, container or --root): the service starts at boot"
    else
        [ "$unit_changed" = 0 ] || systemctl daemon-reload
        if [ ! -e "$app/current/edgeface.toml" ]; then
            info "not started: no release yet (from the workstation: edgeface deploy $(hostname) --bundle ...)"
        elif [ "$unit_changed" = 1 ]; then
            systemctl restart edgeface.service
            info "restarted edgeface.service (the unit changed)"
        elif systemctl is-active --quiet edgeface.service; then
            info "edgeface.service is running"
        else
            systemctl start edgeface.service
            info "started edgeface.service"
        fi
    fi
fi

step "done"
info "logs: journalctl -u edgeface -f    health: curl http://127.0.0.1:8321/healthz"

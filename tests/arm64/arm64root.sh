#!/usr/bin/env bash
# An emulated Raspberry Pi OS-like root: arm64 Debian Bookworm made by debootstrap, run by qemu-user-static.
#
#   arm64root.sh prepare                    set up the host (qemu-user-static, debootstrap, binfmt_misc),
#                                           build the base root once (cached), check that pip inside it
#                                           reaches its index; prints the base root's path as the last line
#   arm64root.sh run WORK [-b HOST:GUEST]... -- CMD [ARG]...
#                                           run CMD inside a throwaway copy of the base root kept in WORK
#                                           (an overlay on the cached root; WORK/root when overlays are not
#                                           available); WORK keeps its changes between calls, the base stays
#                                           clean. -b bind-mounts a host folder inside the root.
#   arm64root.sh shell WORK [-b HOST:GUEST]...
#                                           an interactive shell in the same place
#   arm64root.sh clean WORK                 unmount anything left under WORK, then delete WORK
#
# Needs root (debootstrap, mount, chroot) on a Debian-like host with apt. Environment:
#   EDGEFACE_ARM64_CACHE   where the base root and pip's cache live (default /var/cache/edgeface-arm64)
#   EDGEFACE_ARM64_MIRROR  the Debian mirror (default: the first Debian mirror in the host's apt sources)
#   EDGEFACE_ARM64_CPU     the CPU qemu emulates (default cortex-a72, a Raspberry Pi 4's)
#
# Inside, /proc/cpuinfo is a Raspberry Pi 4's: qemu-user 7.2 (Debian Bookworm's) passes the host's x86
# /proc/cpuinfo through, and LiteRT >= 2.2 crashes while parsing it (segmentation fault when an interpreter is
# created; seen with ai-edge-litert 2.2.0 and 2.3.0, not 2.1.6).
#
# Everything mounted by a call is unmounted when that call ends, also when it fails or is interrupted.
# See docs/arm64.md.
set -euo pipefail

SUITE=bookworm
ARCH=arm64
VARIANT=minbase
# What Raspberry Pi OS Lite has and the runtime's install relies on: Python with venv and pip, CA
# certificates, systemd (install.sh enables its unit offline with systemctl) and sudo (the deploy rule).
INCLUDE=python3,python3-venv,python3-pip,ca-certificates,systemd,sudo
ROOT_FORMAT=1  # bump when the base root must be rebuilt for a reason the values above don't show
CACHE=${EDGEFACE_ARM64_CACHE:-/var/cache/edgeface-arm64}
CPU=${EDGEFACE_ARM64_CPU:-cortex-a72}
QEMU=/usr/bin/qemu-aarch64-static
BINFMT_DIR=/proc/sys/fs/binfmt_misc
# The environment inside the root: nothing from the host leaks in (the host's PIP_* settings point at
# folders that do not exist there).
GUEST_ENV=(HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}"
           PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
           PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
           PIP_PROGRESS_BAR=off QEMU_CPU="$CPU")

log() { printf '[arm64root] %s\n' "$*" >&2; }
die() { printf '[arm64root] error: %s\n' "$*" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, mount and chroot)"

key() {
    printf '%s|%s|%s|%s|%s' "$SUITE" "$ARCH" "$VARIANT" "$INCLUDE" "$ROOT_FORMAT" | sha256sum | cut -c1-12
}
BASE="$CACHE/roots/$SUITE-$ARCH-$(key)"

# --- the host ----------------------------------------------------------------------------------------------

host_packages() {
    local missing=()
    [[ -x $QEMU ]] || missing+=(qemu-user-static)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        log "installing on the host: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >/dev/null
    fi
}

# Register qemu for aarch64 ELF files with flags F (the kernel opens the interpreter now, so the root needs no
# copy of it) and C (credentials from the program, not from qemu: without it sudo inside the root fails with
# "effective uid is not 0"). The magic and mask come from the qemu-user-static package's own binfmt.d file.
binfmt() {
    if [[ ! -e $BINFMT_DIR/register ]]; then
        log "mounting binfmt_misc on $BINFMT_DIR"
        mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
    fi
    local entry=$BINFMT_DIR/qemu-aarch64
    if [[ -e $entry ]]; then
        if grep -qx enabled "$entry" && grep -q '^flags:.*C' "$entry" && grep -q '^flags:.*F' "$entry"; then
            return 0
        fi
        log "replacing the aarch64 binfmt entry (disabled, or without flags F and C)"
        echo -1 >"$entry"
    fi
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -r $conf ]] || die "$conf not found: is qemu-user-static installed?"
    local line
    line=$(grep -m1 '^:qemu-aarch64:' "$conf") || die "no qemu-aarch64 line in $conf"
    # :name:type:offset:magic:mask:interpreter:flags
    line=$(awk -F: -v OFS=: -v qemu="$QEMU" '{ $7 = qemu; $8 = "FC"; print }' <<<"$line")
    log "registering aarch64 with binfmt_misc ($QEMU, flags F and C)"
    printf '%s' "$line" >"$BINFMT_DIR/register"
}

# The Debian mirror from the host's own apt sources: deb822 files first, then one-line sources.
# deb822: the first URI of a "Types: deb" stanza whose suites are not security updates.
# shellcheck disable=SC2016  # awk's own $fields
DEB822_AWK='
function flush() {
    if (!found && uris != "" && types ~ /(^| )deb( |$)/ && suites !~ /security/) { print uris; found = 1 }
}
/^[[:space:]]*$/ { flush(); uris = suites = types = ""; next }
/^URIs:/ { uris = $2 }
/^Suites:/ { suites = $0 }
/^Types:/ { types = $0 }
END { flush() }'
# One-line: "deb [options] URI SUITE COMPONENTS...", the URI being the first word with a scheme.
# shellcheck disable=SC2016
LIST_AWK='
$1 == "deb" {
    for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { if ($(i + 1) !~ /security/) print $i; break }
}'
host_mirror() {
    if [[ -n ${EDGEFACE_ARM64_MIRROR:-} ]]; then
        echo "$EDGEFACE_ARM64_MIRROR"
        return
    fi
    local file uri
    shopt -s nullglob
    for file in /etc/apt/sources.list.d/*.sources; do
        uri=$(awk "$DEB822_AWK" "$file" | grep -m1 -i debian || true)
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $file ]] || continue
        uri=$(awk "$LIST_AWK" "$file" | grep -m1 -i debian || true)
        [[ -n $uri ]] && { echo "$uri"; return; }
    done
    die "no Debian mirror found in the host's apt sources: set EDGEFACE_ARM64_MIRROR"
}

# --- mounts ------------------------------------------------------------------------------------------------

MOUNTED=()  # innermost last; unmounted in reverse order on exit

cleanup() {
    local status=$? i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -R "${MOUNTED[i]}" 2>/dev/null || umount -R -l "${MOUNTED[i]}" 2>/dev/null \
            || log "could not unmount ${MOUNTED[i]}"
    done
    MOUNTED=()
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mnt() {  # mnt TARGET MOUNT-ARGS...
    local target=$1
    shift
    mount "$@" "$target"
    MOUNTED+=("$target")
}

# Unmount everything mounted under DIR (left by a killed run), deepest first.
unmount_under() {
    local dir
    dir=$(realpath -m "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r \
    | while read -r m; do
        log "unmounting leftover $m"
        umount -R -l "$m" 2>/dev/null || true
    done
}

# Delete DIR without ever crossing into a mounted file system (a leftover bind of /dev would be the host's).
remove_tree() {
    [[ -e $1 ]] || return 0
    unmount_under "$1"
    rm -rf --one-file-system "$1"
}

# What a Raspberry Pi 4's kernel shows in /proc/cpuinfo (Cortex-A72), one entry per CPU the host has.
pi_cpuinfo() {
    local file=$CACHE/cpuinfo-pi4 count i
    count=$(getconf _NPROCESSORS_CONF)
    mkdir -p "$CACHE"
    {
        for ((i = 0; i < count; i++)); do
            printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
            printf 'CPU revision\t: 3\n\n'
        done
        printf 'Revision\t: c03111\nSerial\t\t: 1000000000000000\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
    } >"$file.$$"
    mv "$file.$$" "$file"
    echo "$file"
}

# /proc (with a Pi's cpuinfo), /sys, /dev (with /dev/pts and /dev/shm), pip's cache, the host's DNS settings,
# CA bundle and host name.
enter_mounts() {
    local root=$1
    mnt "$root/proc" -t proc proc
    mnt "$root/proc/cpuinfo" --bind "$(pi_cpuinfo)"
    mnt "$root/sys" -t sysfs -o ro sysfs
    mnt "$root/dev" --rbind /dev
    mount --make-rslave "$root/dev"
    mkdir -p "$CACHE/pip" "$root/root/.cache/pip"
    mnt "$root/root/.cache/pip" --bind "$CACHE/pip"
    # Copied, not bound: the root owns its /etc, as a Pi would.
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    local bundle=/etc/ssl/certs/ca-certificates.crt
    [[ -r $bundle ]] && cp -L "$bundle" "$root$bundle"
    # The chroot shares the host's host name; sudo complains when it does not resolve.
    local name
    name=$(uname -n)
    grep -qw -- "$name" "$root/etc/hosts" 2>/dev/null || printf '127.0.1.1\t%s\n' "$name" >>"$root/etc/hosts"
    return 0
}

in_root() {  # in_root ROOT CMD...
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i "${GUEST_ENV[@]}" "$@"
}

# --- the base root -----------------------------------------------------------------------------------------

build_base() {
    if [[ -f $BASE/.edgeface-arm64-ready ]]; then
        log "cached base root: $BASE"
        return
    fi
    mkdir -p "$CACHE/roots"
    exec 9>"$CACHE/roots/.lock"
    flock 9
    [[ -f $BASE/.edgeface-arm64-ready ]] && return
    local mirror tmp start
    mirror=$(host_mirror)
    tmp="$BASE.building"
    remove_tree "$tmp"
    log "debootstrap $SUITE/$ARCH ($VARIANT, + $INCLUDE) from $mirror: 6 to 18 minutes"
    start=$SECONDS
    if ! debootstrap --arch="$ARCH" --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$tmp" "$mirror" \
            >"$CACHE/roots/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/roots/debootstrap.log" >&2
        # A failed debootstrap can leave its own mounts inside the half-built root.
        unmount_under "$tmp"
        die "debootstrap failed (log: $CACHE/roots/debootstrap.log)"
    fi
    unmount_under "$tmp"
    # Like a fresh Pi: Debian's own sources from the same mirror, no pip configuration of the host.
    printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$tmp/etc/apt/sources.list"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb
    date -u +%FT%TZ >"$tmp/.edgeface-arm64-ready"
    echo "debootstrap_seconds=$((SECONDS - start))" >>"$tmp/.edgeface-arm64-ready"
    mv "$tmp" "$BASE"
    # Roots built from other inputs (an older version of this script) are of no further use.
    for old in "$CACHE/roots/$SUITE-$ARCH-"*; do
        [[ $old == "$BASE" || ! -d $old ]] || { log "removing the outdated root $old"; remove_tree "$old"; }
    done
    log "built $BASE in $((SECONDS - start)) s"
}

check_base() {
    local arch
    arch=$(chroot "$BASE" /usr/bin/uname -m) || die "cannot run an arm64 program in $BASE (binfmt_misc?)"
    [[ $arch == aarch64 ]] || die "the root reports machine $arch, not aarch64"
    enter_mounts "$BASE"
    # pip must reach its index from inside: its own default index, the root's /etc, no host settings.
    if ! in_root "$BASE" python3 -m pip download --quiet --no-deps --dest /tmp/pip-check pip >/dev/null; then
        die "pip inside the root cannot reach its package index (DNS: /etc/resolv.conf, CA bundle?)"
    fi
    in_root "$BASE" rm -rf /tmp/pip-check
    log "pip inside the root reaches its package index"
}

# --- a working copy ----------------------------------------------------------------------------------------

# Mount (or make) WORK/root on top of the base root; sets ROOT.
work_root() {
    local work=$1
    [[ -f $BASE/.edgeface-arm64-ready ]] || die "no base root at $BASE: run '$0 prepare' first"
    ROOT=$work/root
    mkdir -p "$ROOT"
    [[ -f $work/.copy ]] && return
    mkdir -p "$work/upper" "$work/overlay-work"
    local layers="lowerdir=$BASE,upperdir=$work/upper,workdir=$work/overlay-work"
    if mount -t overlay overlay -o "$layers" "$ROOT" 2>/dev/null; then
        MOUNTED+=("$ROOT")
    else
        log "overlayfs not available: copying the base root to $ROOT"
        cp -a "$BASE/." "$ROOT/"
        touch "$work/.copy"
    fi
}

parse_binds() {  # sets BINDS and REST from "[-b HOST:GUEST]... [-- CMD...]"
    BINDS=()
    REST=()
    while (($#)); do
        case $1 in
            -b) BINDS+=("$2"); shift 2 ;;
            --) shift; REST=("$@"); return ;;
            *) die "unexpected argument $1 (use -- before the command)" ;;
        esac
    done
}

enter() {  # enter WORK BINDS... -- CMD...
    local work=$1 root bind host guest
    shift
    parse_binds "$@"
    work_root "$work"
    root=$ROOT
    enter_mounts "$root"
    for bind in "${BINDS[@]}"; do
        host=${bind%%:*}
        guest=${bind#*:}
        [[ -d $host ]] || die "bind source $host is not a folder"
        mkdir -p "$root$guest"
        mnt "$root$guest" --bind "$host"
    done
    in_root "$root" "${REST[@]}"
}

command=${1:-}
shift || true
case $command in
    prepare)
        start=$SECONDS
        host_packages
        binfmt
        build_base
        check_base
        log "ready in $((SECONDS - start)) s"
        echo "$BASE"
        ;;
    run)
        (($#)) || die "usage: $0 run WORK [-b HOST:GUEST]... -- CMD..."
        binfmt
        enter "$@"
        ;;
    shell)
        (($#)) || die "usage: $0 shell WORK [-b HOST:GUEST]..."
        binfmt
        enter "$@" -- /bin/bash -l
        ;;
    clean)
        (($# == 1)) || die "usage: $0 clean WORK"
        remove_tree "$1"
        ;;
    *)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        [[ -z $command || $command == -h || $command == --help ]] || exit 2
        ;;
esac

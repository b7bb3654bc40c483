#!/bin/sh
# What `edgeface deploy` (edgeface/deploy/remote.py) runs on each host, as the deploy user, sent over ssh as
#   sh -c SCRIPT edgeface-deploy COMMAND ROOT ARGS...
# POSIX sh and coreutils only (the Pi's /bin/sh is dash). A failure prints one line on stderr and exits 3
# (exit 255 is ssh's own). Nothing here runs as root: the restart and credential commands it is given are run
# as they are (by default through `sudo -n`, allowed by the rule install.sh writes).
#
# Layout (made by firmware_scripts/install.sh): ROOT/opt/edgeface is root's; the deploy user writes only
# releases/ (setgid, group edgeface, so the service reads what it writes there, nobody else does):
#   releases/<id>/       a release: model.edgeface, edgeface.toml, health-url, model-sha256, SHA256SUMS
#   releases/current     -> <id>, switched atomically (a new link renamed over the old one)
#   current              -> releases/current (root's, fixed): the path the unit reads
set -eu
fail() { echo "$*" >&2; exit 3; }
cmd=$1 root=$2
shift 2
base="${root%/}/opt/edgeface"
releases="$base/releases"

current_id() {
    link=$(readlink "$releases/current" 2>/dev/null) || return 0
    basename "$link"
}

set_current() {
    [ -d "$releases/$1" ] || fail "release $1 is missing from $releases"
    touch "$releases/$1"  # the newest mtime: prune keeps the releases used last
    ln -sfn "$1" "$releases/.current.tmp"
    mv -T "$releases/.current.tmp" "$releases/current"
}

# Without curl: the same request from Python (always on Raspberry Pi OS). The token, if any, comes on stdin
# (never in argv, which every local user can read) and is sent only when the first answer is 401.
PY_GET='
import json, sys, urllib.error, urllib.request
url, expect, token = sys.argv[1], sys.argv[2], sys.stdin.read().strip()
def get(headers):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=3).read().decode()
try:
    try:
        body = get({})
    except urllib.error.HTTPError as e:
        if e.code != 401 or not token:
            raise
        body = get({"Authorization": "Bearer " + token})
    if expect and expect not in body:
        sys.exit(f"the daemon serves another model (expected model_sha256 {expect})")
except urllib.error.HTTPError as e:
    try:
        reason = json.loads(e.read()).get("reason", "")
    except Exception:
        reason = ""
    sys.exit(f"HTTP {e.code}" + (f" ({reason})" if reason else ""))
except Exception as e:
    sys.exit(str(e))
'

# fetch URL [TOKEN]: the body, then the HTTP status on a line of its own (000 when nothing answered).
fetch() {
    if [ -n "${2:-}" ]; then
        printf 'Authorization: Bearer %s\n' "$2" | curl -sS --max-time 3 -H @- -w '\n%{http_code}' "$1" 2>&1
    else
        curl -sS --max-time 3 -w '\n%{http_code}' "$1" 2>&1
    fi
}

case $cmd in
status)
    [ -d "$base" ] || fail "$base does not exist: run firmware_scripts/install.sh on this host first"
    if [ ! -d "$releases" ] || [ ! -w "$releases" ]; then
        fail "$releases is not writable by $(id -un): run install.sh with --deploy-user $(id -un)"
    fi
    echo "current=$(current_id)"
    # The wanted release, if already here and intact (an earlier deploy, or the one running now).
    if (cd "$releases/$1" && sha256sum --status -c SHA256SUMS) 2>/dev/null; then
        echo "stored=yes"
    else
        echo "stored=no"
    fi
    ;;
prepare)
    rm -rf "$releases/.incoming-$1"
    mkdir "$releases/.incoming-$1"
    ;;
activate)
    id=$1 incoming="$releases/.incoming-$1"
    (cd "$incoming" && sha256sum --quiet -c SHA256SUMS >&2) || fail "the copied files do not match their checksums"
    # Readable by the service through the group (the config may hold a password), by nobody else.
    chmod 0750 "$incoming"
    chmod 0640 "$incoming"/*
    rm -rf "${releases:?}/$id"
    mv -T "$incoming" "$releases/$id"
    set_current "$id"
    ;;
switch)
    set_current "$1"
    ;;
unset)
    rm -f "$releases/current"
    ;;
remove)
    [ "$(current_id)" != "$1" ] || fail "refusing to remove the current release $1"
    rm -rf "${releases:?}/$1"
    ;;
restart)
    EDGEFACE_ROOT=$root EDGEFACE_RELEASE=$(current_id)
    export EDGEFACE_ROOT EDGEFACE_RELEASE
    # Its output goes to stderr, so a failure's last line is the reason the deploy reports.
    sh -c "$1" </dev/null >&2 || { status=$?; echo "exit status $status" >&2; exit 3; }
    ;;
credential)
    # The secret arrives on stdin and goes to the command's stdin; it prints "changed" or "unchanged".
    EDGEFACE_ROOT=$root
    export EDGEFACE_ROOT
    # shellcheck disable=SC2016  # $1 is expanded by the inner shell
    sh -c "$1"' "$0"' "$2" || fail "could not store the credential $2 (the command exited $?)"
    ;;
health)
    timeout=$1 url=$2 check=${3:-} use_token=${4:-0}
    token=""
    [ "$use_token" = 0 ] || IFS= read -r token || true
    if [ -z "$check" ] && [ "$url" = "-" ]; then
        # The release's own config says where its /healthz is (a rollback's may differ from the new one's).
        url=$(cat "$releases/current/health-url" 2>/dev/null) || url=""
        [ -n "$url" ] || fail "the config of release $(current_id) turns the HTTP server off: pass --health-cmd"
    fi
    # The daemon must be serving this release's model, not an old process that never restarted.
    expect=$(cat "$releases/current/model-sha256" 2>/dev/null) || expect=""
    deadline=$(( $(date +%s) + timeout ))
    while :; do
        if [ -n "$check" ]; then
            out=$(sh -c "$check" </dev/null 2>&1) && exit 0
        elif command -v curl >/dev/null 2>&1; then
            resp=$(fetch "$url") || true
            code=$(printf '%s\n' "$resp" | tail -n 1)
            if [ "$code" = 401 ] && [ -n "$token" ]; then
                resp=$(fetch "$url" "$token") || true
                code=$(printf '%s\n' "$resp" | tail -n 1)
            fi
            case $code in
            2??) if [ -z "$expect" ] || printf '%s\n' "$resp" | grep -q "$expect"; then exit 0; fi
                 out="HTTP $code but the daemon serves another model (expected model_sha256 $expect)" ;;
            000) out=$(printf '%s\n' "$resp" | head -n 1) ;;
            *) reason=$(printf '%s\n' "$resp" | sed -n 's/.*"reason": *"\([^"]*\)".*/\1/p' | head -n 1)
               out="HTTP $code${reason:+ ($reason)}" ;;
            esac
        else
            out=$(printf '%s' "$token" | python3 -I -c "$PY_GET" "$url" "$expect" 2>&1) && exit 0
        fi
        [ "$(date +%s)" -lt "$deadline" ] || fail "no healthy answer within ${timeout}s: $(echo "$out" | tr '\n' ' ')"
        sleep 1
    done
    ;;
prune)
    keep=$1 cur=$(current_id)
    # Newest first; release ids are hex, so ls output is safe to read line by line.
    # shellcheck disable=SC2010,SC2012
    ls -1t "$releases" | grep -vx current | tail -n +$((keep + 1)) | while read -r dir; do
        [ "$dir" = "$cur" ] || rm -rf "${releases:?}/$dir"
    done
    ;;
*)
    fail "unknown command $cmd"
    ;;
esac

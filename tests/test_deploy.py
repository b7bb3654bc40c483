"""``edgeface deploy``: the local checks, then real deploys over a real sshd to a temporary root.

The "Pi" is this machine: Debian's ``/usr/sbin/sshd`` started by the test on 127.0.0.1 with a throwaway host
key and client key, and ``--prefix`` pointing at a temporary folder. The restart command stands in for
``systemctl restart edgeface``: it stops the previous daemon and starts the real ``edgeface run`` on the
deployed config (a real int8 bundle, a looping image folder), then waits for it to listen or die, as
``Type=notify`` would; the health check is a real HTTP request to the daemon's /healthz.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from helpers.daemon import http_get
from helpers.ports import free_port
from helpers.sshd import SshServer, running_sshd, why_no_sshd
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.deploy import (BUNDLE_NAME, CONFIG_NAME, DeployOptions, Host, deploy, parse_host,
                             prepare_release)
from edgeface.core.errors import BundleError, ConfigError

REPO = Path(__file__).resolve().parents[1]


# --- local checks: no ssh needed ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("pi.local", Host("pi.local")),
    ("pi@kitchen.local:2222", Host("kitchen.local", "pi", 2222)),
    ("10.0.0.7:22", Host("10.0.0.7", None, 22)),
    ("pi@[fe80::1%eth0]:2200", Host("fe80::1%eth0", "pi", 2200)),
])
def test_parse_host(text: str, expected: Host) -> None:
    assert parse_host(text) == expected
    assert parse_host(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "-oProxyCommand=x", "pi@", "host:99999", "a b"])
def test_parse_host_rejects_bad_names(text: str) -> None:
    with pytest.raises(ConfigError, match="host"):
        parse_host(text)


def _config(tmp_path: Path, text: str, name: str = "pi.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_release_sets_the_bundle_line_and_keeps_the_rest(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = tiny_bundles["int8"]
    text = f'# kitchen Pi\nbundle = "{bundle}"  # the workstation copy\nsource = 0\n\n[http]\nport = 8400\n'
    release = prepare_release(config=_config(tmp_path, text))  # the bundle comes from the config
    assert release.bundle == bundle
    assert release.config_text == '# kitchen Pi\nbundle = "model.edgeface"\nsource = 0\n\n[http]\nport = 8400\n'
    assert release.health_url == "http://127.0.0.1:8400/healthz"
    assert len(release.id) == 12
    # Content-addressed: the same inputs give the same id, any change a new one.
    assert prepare_release(bundle, _config(tmp_path, text.replace(f'"{bundle}"', '"elsewhere.edgeface"'),
                                           "b.toml")).id == release.id
    assert prepare_release(bundle, _config(tmp_path, text.replace("8400", "8401"), "c.toml")).id != release.id
    assert prepare_release(tiny_bundles["float32"], _config(tmp_path, text, "d.toml")).id != release.id


def test_release_without_config_runs_camera_0(tiny_bundles: dict[str, Path]) -> None:
    release = prepare_release(tiny_bundles["int8"])
    assert release.config_text == 'bundle = "model.edgeface"\nsource = 0\n'
    assert release.health_url == "http://127.0.0.1:8321/healthz"


def test_release_refuses_bad_input_before_copying(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.edgeface"
    broken.write_bytes(tiny_bundles["int8"].read_bytes()[:-100])
    with pytest.raises(BundleError, match="broken.edgeface"):
        prepare_release(broken)
    with pytest.raises(ConfigError, match=r"bad\.toml.*unknown key 'sauce'"):
        prepare_release(tiny_bundles["int8"], _config(tmp_path, "sauce = 0\n", "bad.toml"))
    with pytest.raises(ConfigError, match=r"nobundle\.toml: names no bundle"):
        prepare_release(config=_config(tmp_path, "source = 0\n", "nobundle.toml"))
    with pytest.raises(ConfigError, match="port = 0"):
        prepare_release(tiny_bundles["int8"], _config(tmp_path, "source = 0\n[http]\nport = 0\n", "p0.toml"))


def test_deploy_refuses_unsafe_or_unusable_options(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    release = prepare_release(tiny_bundles["int8"])
    with pytest.raises(ConfigError, match="host keys are always checked"):
        deploy(["pi"], release, DeployOptions(ssh_options=("StrictHostKeyChecking=no",)))
    no_http = prepare_release(tiny_bundles["int8"], _config(tmp_path, "source = 0\n[http]\nenabled = false\n"))
    with pytest.raises(ConfigError, match="--health-cmd"):
        deploy(["pi"], no_http, DeployOptions())
    with pytest.raises(ConfigError, match="--prefix"):
        deploy(["pi"], release, DeployOptions(prefix="relative/root"))
    with pytest.raises(ConfigError, match="host pi@kitchen:22 is given twice"):
        deploy(["kitchen:22", "pi@kitchen:22"], release, DeployOptions())


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "pi.local", "--bundle", str(tmp_path / "none.edgeface")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'none.edgeface'}: bundle not found"]


# --- a real sshd -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    reason = why_no_sshd()
    if reason:
        pytest.skip(reason)
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


# --- the "Pi": a temporary root and a daemon started by the restart command -------------------------------

RESTART_SH = r"""#!/bin/sh
# Stands in for `systemctl restart edgeface` (Type=notify): stop the old daemon, start the current release,
# return once it listens, or fail with its last log line when it dies first.
set -u
root=$EDGEFACE_ROOT
pidfile=$root/daemon.pid
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
if [ -f "$pidfile" ]; then
    old=$(cat "$pidfile")
    kill "$old" 2>/dev/null
    while alive "$old"; do sleep 0.1; done
    rm -f "$pidfile"
fi
setsid {python} -m edgeface run --config "$root/opt/edgeface/current/edgeface.toml" \
    </dev/null >>"$root/daemon.log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"
port=$(cat "$root/port")
for _ in $(seq 600); do
    alive "$pid" || { tail -n 1 "$root/daemon.log"; exit 1; }
    code=$(curl -s -o /dev/null -w '%{{http_code}}' "http://127.0.0.1:$port/healthz")
    [ "$code" = 000 ] || exit 0
    sleep 0.1
done
echo "daemon did not listen within 60 s"
exit 1
"""


@dataclass
class Pi:
    root: Path
    port: int
    config: Path
    restart_cmd: str

    @property
    def base(self) -> Path:
        return self.root / "opt" / "edgeface"

    def current(self) -> str:
        return os.readlink(self.base / "releases" / "current")

    def releases(self) -> list[str]:
        return _releases(self.base)

    def daemon_pid(self) -> int | None:
        path = self.root / "daemon.pid"
        return int(path.read_text()) if path.exists() else None

    def healthz(self) -> int:
        return http_get(self.port, "/healthz")[0]

    def log(self) -> str:
        path = self.root / "daemon.log"
        return path.read_text()[-3000:] if path.exists() else "(no daemon log)"

    def stop(self) -> None:
        pid = self.daemon_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return " Z" not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    except (FileNotFoundError, IndexError):
        return False


def _pi_config(path: Path, source: str | Path, port: int) -> Path:
    """The daemon config deployed in these tests: a looping source at 4 fps, /healthz on ``port``."""
    path.write_text(f'source = "{source}"\n\n[capture]\nloop = true\nfps = 4\n\n[http]\nport = {port}\n\n'
                    f'[jsonl]\npath = "{path.parent}/labels.jsonl"\n')
    return path


def _install_layout(root: Path) -> Path:
    """What install.sh makes under ``root``: opt/edgeface (root's), releases/ (the deploy user's, setgid to the
    service's group), current -> releases/current. Returns opt/edgeface."""
    base = root / "opt" / "edgeface"
    (base / "releases").mkdir(parents=True)
    (base / "releases").chmod(0o2750)
    (base / "current").symlink_to("releases/current")
    return base


def _releases(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "releases").iterdir() if p.name != "current")


def _make_pi(root: Path, images: Path) -> Pi:
    port = free_port()
    _install_layout(root)
    (root / "port").write_text(str(port))
    restart = root / "restart.sh"
    restart.write_text(RESTART_SH.replace("{python}", shlex.quote(sys.executable)).replace("{{", "{")
                       .replace("}}", "}"))
    config = _pi_config(root / "pi.toml", images, port)
    return Pi(root=root, port=port, config=config, restart_cmd=f"sh {shlex.quote(str(restart))}")


@pytest.fixture(scope="module")
def pi(sshd: SshServer, synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    device = _make_pi(tmp_path_factory.mktemp("pi"), synthetic_csv.parent / "images")
    yield device
    device.stop()


@pytest.fixture(scope="module")
def first_deploy(sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path]):
    """The first deploy of the int8 bundle, through the CLI; later tests start from it."""
    args = ["deploy", sshd.host, "--bundle", str(tiny_bundles["int8"]), "--config", str(pi.config),
            "--prefix", str(pi.root), "--restart-cmd", pi.restart_cmd, "--health-timeout", "60", *sshd.cli_args()]
    result = CliRunner().invoke(app, args)
    release = prepare_release(tiny_bundles["int8"], pi.config)
    return result, release


@pytest.mark.system
def test_first_deploy(first_deploy, sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path]) -> None:
    result, release = first_deploy
    assert result.exit_code == 0, result.output + pi.log()
    assert result.stdout.splitlines() == [f"{sshd.host}: deployed {release.id}"]
    assert pi.current() == release.id
    current = pi.base / "current"
    assert (current / BUNDLE_NAME).read_bytes() == tiny_bundles["int8"].read_bytes()
    assert (current / CONFIG_NAME).read_text() == release.config_text
    for name in (BUNDLE_NAME, CONFIG_NAME):  # the service reads them through its group; others cannot
        assert (current / name).stat().st_mode & 0o777 == 0o640
    assert (pi.base / "releases" / release.id).stat().st_mode & 0o777 == 0o750
    assert pi.healthz() == 200, pi.log()
    assert pi.releases() == [release.id]  # no staging folder left behind


@pytest.mark.system
def test_identical_deploy_is_a_noop(first_deploy, sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path]) -> None:
    _, release = first_deploy
    pid, listing = pi.daemon_pid(), _listing(pi.root / "opt")
    lines: list[str] = []
    results = deploy([sshd.host], prepare_release(tiny_bundles["int8"], pi.config),
                     sshd.options(pi.root, restart_cmd=pi.restart_cmd),
                     on_result=lambda r: lines.append(r.line()))
    assert lines == [f"{sshd.host}: unchanged ({release.id} is current)"]
    assert results[0].ok
    assert pi.daemon_pid() == pid and _alive(pid), "an unchanged deploy must not restart the service"
    assert _listing(pi.root / "opt") == listing


@pytest.mark.system
def test_failed_deploy_rolls_back(first_deploy, sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path],
                                  tmp_path: Path) -> None:
    from edgeface.core.bundle import load_bundle, write_bundle

    _, good = first_deploy
    # A bundle that is intact (its checksum matches) but whose model LiteRT cannot load: only the Pi finds out.
    bad_bundle = write_bundle(tmp_path / "bad.edgeface", b"TFL3 this is not a model" * 100,
                              load_bundle(tiny_bundles["int8"]).spec, "int8")
    bad = prepare_release(bad_bundle, pi.config)
    result = CliRunner().invoke(app, ["deploy", sshd.host, "--bundle", str(bad_bundle), "--config", str(pi.config),
                                      "--prefix", str(pi.root), "--restart-cmd", pi.restart_cmd, *sshd.cli_args()])
    assert result.exit_code == 1, result.output
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{sshd.host}: rolled back to {good.id}: restart failed: "), line
    assert "exit status 1" in line and "\n" not in line
    assert pi.current() == good.id
    assert pi.releases() == [good.id], "the failed release is removed"
    assert pi.healthz() == 200, pi.log()  # the previous release was restarted and serves again
    assert not (pi.base / "releases" / bad.id).exists()


@pytest.mark.system
def test_health_check_timeout_rolls_back(first_deploy, sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path],
                                         tmp_path: Path) -> None:
    """The new release starts but never becomes healthy (its camera gives no frames): rolled back."""
    _, good = first_deploy
    camera = f"http://127.0.0.1:{free_port()}/video.mjpg"  # a network camera that is switched off
    config = _pi_config(tmp_path / "pi.toml", camera, pi.port)
    (result,) = deploy([sshd.host], prepare_release(tiny_bundles["int8"], config),
                       sshd.options(pi.root, restart_cmd=pi.restart_cmd, health_timeout=3))
    assert result.status == "rolled back" and result.release == good.id, result.line()
    assert result.detail.startswith("health check failed: no healthy answer within 3s: HTTP 503 ("), result.detail
    assert camera in result.detail
    assert pi.current() == good.id
    assert pi.healthz() == 200, pi.log()


@pytest.mark.system
def test_a_daemon_still_serving_the_old_model_fails_the_check(first_deploy, sshd: SshServer, pi: Pi,
                                                              tiny_bundles: dict[str, Path]) -> None:
    """The restart command 'succeeds' but the old daemon keeps running: /healthz names the old model."""
    _, good = first_deploy
    (result,) = deploy([sshd.host], prepare_release(tiny_bundles["float32"], pi.config),
                       sshd.options(pi.root, restart_cmd="true", health_timeout=3))
    assert result.status == "rolled back" and result.release == good.id, result.line()
    assert "the daemon serves another model (expected model_sha256 " in result.detail, result.detail
    assert pi.current() == good.id
    assert pi.healthz() == 200, pi.log()


@pytest.mark.system
def test_unreachable_hosts_do_not_stop_the_others(first_deploy, sshd: SshServer, pi: Pi,
                                                  tiny_bundles: dict[str, Path]) -> None:
    _, release = first_deploy
    closed = f"127.0.0.1:{free_port()}"
    unknown_key = f"localhost:{sshd.port}"  # same server, but known_hosts lists it as [127.0.0.1]:port only
    known = sshd.known_hosts.read_text()
    result = CliRunner().invoke(app, ["deploy", closed, sshd.host, unknown_key, "--bundle", str(tiny_bundles["int8"]),
                                      "--config", str(pi.config), "--prefix", str(pi.root),
                                      "--restart-cmd", pi.restart_cmd, *sshd.cli_args()])
    assert result.exit_code == 1
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in result.stdout.splitlines()}
    assert len(lines) == 3, result.output
    assert lines[closed].startswith("unreachable: ") and "refused" in lines[closed], lines[closed]
    assert lines[sshd.host] == f"unchanged ({release.id} is current)"
    assert lines[unknown_key].startswith("unreachable: host key not in known_hosts"), lines[unknown_key]
    assert sshd.known_hosts.read_text() == known, "a host key must never be added blindly"


@pytest.mark.system
def test_dry_run_changes_nothing(first_deploy, sshd: SshServer, pi: Pi, tiny_bundles: dict[str, Path]) -> None:
    _, release = first_deploy
    pid, listing = pi.daemon_pid(), _listing(pi.root / "opt")
    result = CliRunner().invoke(app, ["deploy", sshd.host, "--dry-run", "--bundle", str(tiny_bundles["float32"]),
                                      "--config", str(pi.config), "--prefix", str(pi.root),
                                      "--restart-cmd", pi.restart_cmd, *sshd.cli_args()])
    assert result.exit_code == 0, result.output
    new = prepare_release(tiny_bundles["float32"], pi.config)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{sshd.host}: would deploy {new.id} (replacing {release.id})"
    assert any(pi.restart_cmd in step for step in lines[1:])
    assert pi.daemon_pid() == pid and _alive(pid)
    assert _listing(pi.root / "opt") == listing


@pytest.mark.system
def test_scp_and_a_health_command(sshd: SshServer, tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """scp instead of rsync; a custom health command; old releases pruned beyond --keep."""
    base = _install_layout(tmp_path)
    marker = tmp_path / "restarted"
    options = sshd.options(tmp_path, copy="scp", keep=2, restart_cmd=f'echo "$EDGEFACE_RELEASE" >> {marker}',
                           health_cmd=f"test -s {marker}")
    ids = []
    for precision in ("float32", "float16", "int8"):
        release = prepare_release(tiny_bundles[precision])
        (result,) = deploy([sshd.host], release, options)
        assert result.line() == f"{sshd.host}: deployed {release.id}" + (f" (replacing {ids[-1]})" if ids else "")
        ids.append(release.id)
        assert (base / "current" / BUNDLE_NAME).read_bytes() == tiny_bundles[precision].read_bytes()
    assert marker.read_text().split() == ids
    releases = base / "releases"
    assert _releases(base) == sorted(ids[1:])
    # Back to the previous one, still on the host: switched to and restarted, not copied again.
    inode = (releases / ids[1]).stat().st_ino
    (result,) = deploy([sshd.host], prepare_release(tiny_bundles["float16"]), options)
    assert result.line() == f"{sshd.host}: deployed {ids[1]} (replacing {ids[2]})"
    assert os.readlink(releases / "current") == ids[1]
    assert (releases / ids[1]).stat().st_ino == inode
    assert marker.read_text().split() == ids + [ids[1]]


@pytest.mark.system
def test_a_failed_first_deploy_leaves_nothing_behind(sshd: SshServer, tiny_bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    base = _install_layout(tmp_path)
    options = sshd.options(tmp_path, restart_cmd='echo "camera on fire"; exit 1', health_cmd="true")
    (result,) = deploy([sshd.host], prepare_release(tiny_bundles["int8"]), options)
    assert result.line() == (f"{sshd.host}: failed: restart failed: camera on fire (exit status 1); "
                             f"there is no previous release to roll back to")
    assert not result.ok
    assert not (base / "releases" / "current").exists() and not (base / "releases" / "current").is_symlink()
    assert list((base / "releases").iterdir()) == []  # so the next deploy of it is not taken as "unchanged"


def _listing(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under ``root``: its link target or its size and mtime (enough to see any change)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = ("->" + os.readlink(path), 0)
        else:
            st = path.stat()
            out[str(path)] = (f"{st.st_size}:{st.st_mtime_ns}", st.st_mode)
    return out


def test_example_pi_config_is_valid(tiny_bundles: dict[str, Path]) -> None:
    release = prepare_release(tiny_bundles["int8"], REPO / "edgeface" / "deploy" / "pi.toml")
    assert release.config_text.startswith("# The daemon config for a Pi")
    assert 'bundle = "model.edgeface"\nsource = "picamera2"' in release.config_text
    assert release.health_url == "http://127.0.0.1:8321/healthz"


# --- credentials ---------------------------------------------------------------------------------------------

def _credential_cmd(root: Path) -> str:
    """The real helper install.sh puts on a Pi (firmware_scripts/edgeface-credential), storing under ``root``."""
    return (f"EDGEFACE_CREDENTIALS_DIR={shlex.quote(str(root / 'etc/edgeface/credentials'))} "
            f"sh {shlex.quote(str(REPO / 'firmware_scripts' / 'edgeface-credential'))}")


@pytest.mark.system
def test_credentials_are_stored_for_systemd_and_the_token_shown_once(sshd: SshServer, tiny_bundles: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    _install_layout(tmp_path)
    marker = tmp_path / "restarted"
    release = prepare_release(tiny_bundles["int8"])
    common = ["deploy", sshd.host, "--bundle", str(tiny_bundles["int8"]), "--prefix", str(tmp_path),
              "--restart-cmd", f"echo restart >> {marker}", "--health-cmd", "true",
              "--credential-cmd", _credential_cmd(tmp_path), *sshd.cli_args()]
    password = tmp_path / "mqtt-password.txt"
    password.write_text("broker secret\n")
    result = CliRunner().invoke(app, [*common, "--verbose", "--http-token", "generate", "--mqtt-password",
                                      str(password)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{sshd.host}: deployed {release.id}"]
    (shown,) = [line for line in result.stderr.splitlines() if "HTTP bearer token" in line]
    token = shown.rsplit(" ", 1)[1]
    assert len(token) >= 40
    assert result.output.count(token) == 1, "the token is shown once, and in no log line"
    assert "broker secret" not in result.output
    credentials = tmp_path / "etc/edgeface/credentials"
    assert (credentials / "http-token").read_text() == token  # what LoadCredential=http-token:... reads
    assert (credentials / "mqtt-password").read_text() == "broker secret"
    assert {p.name: p.stat().st_mode & 0o777 for p in credentials.iterdir()} == {"http-token": 0o600,
                                                                                  "mqtt-password": 0o600}
    # The same release and the same secrets: nothing to do.
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    again = CliRunner().invoke(app, [*common, "--http-token", str(token_file), "--mqtt-password", str(password)])
    assert again.stdout.splitlines() == [f"{sshd.host}: unchanged ({release.id} is current)"], again.output
    assert marker.read_text().split() == ["restart"]
    # A new token, same release: stored, and the service restarted to read it.
    new = CliRunner().invoke(app, [*common, "--http-token", "generate"])
    assert new.stdout.splitlines() == [f"{sshd.host}: deployed {release.id} (new http-token)"], new.output
    assert marker.read_text().split() == ["restart", "restart"]
    assert (credentials / "http-token").read_text() not in (token, "")


@pytest.mark.system
def test_health_check_sends_the_token_only_when_asked(sshd: SshServer, tiny_bundles: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A /healthz that answers 401 without the token: deploy retries with ``Authorization: Bearer``, never
    sends it first, and reports the 401 when it has no token."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = prepare_release(tiny_bundles["int8"])
    token = "test-token-" + "x" * 32
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == f"Bearer {token}"
            body = json.dumps({"model_sha256": release.model_sha256} if ok else {"reason": "token required"})
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        _install_layout(tmp_path / "a")
        options = sshd.options(tmp_path / "a", restart_cmd="true", health_url=url, health_timeout=5,
                               credentials=(("http-token", token),), credential_cmd=_credential_cmd(tmp_path / "a"))
        (result,) = deploy([sshd.host], release, options)
        assert result.ok, result.line()
        assert seen == [None, f"Bearer {token}"]
        _install_layout(tmp_path / "b")
        (result,) = deploy([sshd.host], release, sshd.options(tmp_path / "b", restart_cmd="true", health_url=url,
                                                              health_timeout=2))
        assert not result.ok and "HTTP 401 (token required)" in result.detail, result.line()
        assert set(seen[2:]) == {None}
    finally:
        server.shutdown()
        server.server_close()

"""Deploy a bundle and its daemon config to Raspberry Pis over ssh, with a health check and rollback.

On each host (prepared by ``firmware_scripts/install.sh``) the layout under ``<prefix>/opt/edgeface`` is::

    releases/<id>/model.edgeface   the bundle
    releases/<id>/edgeface.toml    the daemon config (``bundle = "model.edgeface"``), 0640, group edgeface
    releases/<id>/SHA256SUMS       checked after the copy and before declaring a deploy a no-op
    releases/current -> <id>       what the service runs; switched atomically (symlink + rename)
    current -> releases/current    root's fixed link, the path the unit reads; /opt/edgeface and its venv
                                   are root's, releases/ is the only folder the deploy user may write

A release id is derived from the content (bundle + config), so deploying the same thing twice is detected
and changes nothing. The steps per host: read the current release; copy into ``releases/.incoming-<id>``
(rsync or scp); verify checksums; move into place; switch ``current``; restart the service; poll the health
check until it passes or times out. When the restart or the check fails, ``current`` goes back to the
previous release, which is restarted (and checked) again, and the failed release is removed.

Hosts are deployed in parallel, each one reported on one line. Everything runs through the system's
``ssh`` with ``StrictHostKeyChecking=yes``: a host whose key is not in known_hosts is refused, never added.
``firmware_scripts/deploy.sh`` is a thin wrapper around ``edgeface deploy``; this module is the one
implementation.

Why one module of about 600 lines: a deploy is one transaction per host (copy, verify, switch, restart,
check, roll back) whose steps share the ssh session (``_Remote``) and the release; the shell that runs on the
Pi is ``firmware/remote_deploy.sh``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

from edgeface.core.errors import ConfigError, EdgefaceError
from edgeface.daemon.secrets import MAX_SECRET_BYTES

DEFAULT_RESTART = "sudo -n systemctl restart edgeface"
DEFAULT_PORT = 8321
BUNDLE_NAME = "model.edgeface"
CONFIG_NAME = "edgeface.toml"
SUMS_NAME = "SHA256SUMS"
HEALTH_NAME = "health-url"  # where this release's /healthz is (empty: its config turns HTTP off)
MODEL_SHA_NAME = "model-sha256"  # the model /healthz must report, so an old daemon still running can't pass
# The smallest config that runs: the first camera. Deploy --config to choose another source or sinks.
DEFAULT_CONFIG = f'bundle = "{BUNDLE_NAME}"\nsource = 0\n'
COPY_METHODS = ("rsync", "scp")
SSH_EXIT_CONNECT = 255  # ssh's own failures (connection, authentication, host key), as opposed to the command's

CREDENTIAL_NAMES = ("http-token", "mqtt-password")  # systemd credentials the unit loads (LoadCredential=)
DEFAULT_CREDENTIAL_CMD = "sudo -n /usr/local/sbin/edgeface-credential"


def remote_script() -> str:
    """The script run on each host (``edgeface/firmware/remote_deploy.sh``, shipped in the package)."""
    return resources.files("edgeface").joinpath("firmware/remote_deploy.sh").read_text(encoding="utf-8")


# --- hosts and options --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """One ssh destination: ``[user@]name[:port]`` (IPv6 in brackets: ``[::1]:2222``)."""

    name: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"{self.scp_destination}:{self.port}" if self.port else self.scp_destination

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.name}" if self.user else self.name

    @property
    def scp_destination(self) -> str:
        name = f"[{self.name}]" if ":" in self.name else self.name
        return f"{self.user}@{name}" if self.user else name


_HOST_RE = re.compile(r"^(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[0-9a-fA-F:.%\w]+)\]|(?P<name>[^\s:@/\[\]]+))"
                      r"(?::(?P<port>\d+))?$")


def parse_host(text: str) -> Host:
    """``pi@kitchen.local:2222`` -> Host(name="kitchen.local", user="pi", port=2222)."""
    match = _HOST_RE.match(text.strip())
    if not match or text.strip().startswith("-"):
        raise ConfigError(f"host {text!r}: expected [user@]host[:port] (an IPv6 address in brackets)")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"host {text!r}: port {port} is out of range")
    return Host(name=match["v6"] or match["name"], user=match["user"], port=port)


@dataclass(frozen=True)
class DeployOptions:
    """How to reach the hosts and what to run there. The defaults fit a Pi prepared by install.sh."""

    prefix: str = "/"                     # remote root holding opt/edgeface (tests use a temporary folder)
    restart_cmd: str = DEFAULT_RESTART    # run by the remote shell with $EDGEFACE_ROOT and $EDGEFACE_RELEASE set
    health_url: str | None = None         # default: http://127.0.0.1:<[http] port>/healthz, fetched on the host
    health_cmd: str | None = None         # instead of the URL: a remote command that succeeds when healthy
    health_timeout: float = 60.0          # seconds to wait for a healthy answer after a restart
    user: str | None = None               # default login for hosts given without user@
    port: int | None = None               # default ssh port for hosts given without :port
    identity: Path | None = None          # ssh private key
    known_hosts: Path | None = None       # known_hosts file (default: ssh's own)
    ssh_options: tuple[str, ...] = ()     # extra `-o Key=Value` for ssh, rsync and scp
    connect_timeout: int = 10
    copy: str = "rsync"
    keep: int = 3                         # releases kept on the host, the current one included
    dry_run: bool = False
    jobs: int = 8                         # hosts deployed at once
    # (name, secret) pairs stored on each host as systemd credentials (names from CREDENTIAL_NAMES), through
    # credential_cmd with the secret on its stdin; never in a command line, a log or a repr.
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    credential_cmd: str = DEFAULT_CREDENTIAL_CMD

    @property
    def http_token(self) -> str:
        """The token this deploy installs, if any: the health check sends it when /healthz answers 401."""
        return dict(self.credentials).get("http-token", "")

    def check(self) -> None:
        if self.copy not in COPY_METHODS:
            raise ConfigError(f"--copy {self.copy!r}: choose {' or '.join(COPY_METHODS)}")
        if self.copy == "rsync" and not shutil.which("rsync"):
            raise ConfigError("rsync is not installed here: install it (apt-get install rsync) or pass --copy scp")
        if not shutil.which("ssh"):
            raise ConfigError("ssh is not installed here (apt-get install openssh-client)")
        for option in self.ssh_options:
            key = option.split("=", 1)[0].strip().lower()
            if "=" not in option:
                raise ConfigError(f"ssh option {option!r}: expected Key=Value")
            if key in ("stricthostkeychecking", "userknownhostsfile", "globalknownhostsfile"):
                raise ConfigError(f"ssh option {option!r}: host keys are always checked; pass --known-hosts FILE")
        if self.identity is not None and not self.identity.is_file():
            raise ConfigError(f"--identity {self.identity}: no such key file")
        if self.known_hosts is not None and not self.known_hosts.is_file():
            raise ConfigError(f"--known-hosts {self.known_hosts}: no such file")
        if self.keep < 1:
            raise ConfigError(f"--keep {self.keep}: keep at least 1 release (the current one)")
        if self.health_timeout <= 0:
            raise ConfigError(f"--health-timeout {self.health_timeout}: must be more than 0 seconds")
        if not self.prefix.startswith("/"):
            raise ConfigError(f"--prefix {self.prefix!r}: must be an absolute path on the host")
        for name, secret in self.credentials:
            if name not in CREDENTIAL_NAMES:
                raise ConfigError(f"credential {name!r}: choose {' or '.join(CREDENTIAL_NAMES)}")
            if not secret or len(secret.encode()) > MAX_SECRET_BYTES or any(c in secret for c in "\0\r\n"):
                raise ConfigError(f"the {name}: expected one line of 1 to {MAX_SECRET_BYTES} bytes")


def generate_token() -> str:
    """A new HTTP bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


# --- the release ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Release:
    """What goes to every host: a bundle and a config, named by a hash of both."""

    id: str
    bundle: Path
    config_text: str
    health_url: str | None  # None when the config turns the HTTP server off
    bundle_sha256: str = field(repr=False)
    model_sha256: str = field(default="", repr=False)  # the bundle's model checksum, as /healthz reports it

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(self.config_text.encode()).hexdigest()

    def files(self) -> dict[str, bytes]:
        """The small files of the release (the bundle is copied from :attr:`bundle`)."""
        health = (self.health_url or "").encode()
        model = self.model_sha256.encode()
        sums = (f"{self.bundle_sha256}  {BUNDLE_NAME}\n{self.config_sha256}  {CONFIG_NAME}\n"
                f"{hashlib.sha256(health).hexdigest()}  {HEALTH_NAME}\n"
                f"{hashlib.sha256(model).hexdigest()}  {MODEL_SHA_NAME}\n")
        return {CONFIG_NAME: self.config_text.encode(), HEALTH_NAME: health, MODEL_SHA_NAME: model,
                SUMS_NAME: sums.encode()}


_BUNDLE_LINE = re.compile(r"^[ \t]*bundle[ \t]*=.*$", re.MULTILINE)
_TABLE_LINE = re.compile(r"^[ \t]*\[", re.MULTILINE)
_FIRST_KEY = re.compile(r"^[ \t]*[^#\s]", re.MULTILINE)


def _device_config(text: str, origin: str) -> tuple[str, dict]:
    """The config as the device gets it: ``bundle = "model.edgeface"``, everything else byte for byte."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    def parse(source: str) -> dict:
        try:
            return tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML ({exc})") from None

    original = parse(text)
    head_end = m.start() if (m := _TABLE_LINE.search(text)) else len(text)
    head, tail = text[:head_end], text[head_end:]
    line = f'bundle = "{BUNDLE_NAME}"'
    if "bundle" in original:
        head, count = _BUNDLE_LINE.subn(line, head, count=1)
    else:  # before the first key, below the comments that open the file
        first = _FIRST_KEY.search(head)
        at = first.start() if first else len(head)
        before = head[:at] if head[:at].endswith("\n") or at == 0 else head[:at] + "\n"
        head, count = f"{before}{line}\n{head[at:]}", 1
    device_text = head + tail
    device = parse(device_text) if count else {}
    if device.get("bundle") != BUNDLE_NAME or {k: v for k, v in device.items() if k != "bundle"} != {
            k: v for k, v in original.items() if k != "bundle"}:
        raise ConfigError(f"{origin}: cannot set bundle = \"{BUNDLE_NAME}\" for the device: write the bundle "
                          f"key on a line of its own before any [section]")
    return device_text, original


def _health_url(config: dict, origin: str) -> str | None:
    http = config.get("http", {})
    if not isinstance(http, dict) or http.get("enabled", True) is False:
        return None
    port = http.get("port", DEFAULT_PORT)
    if port == 0:
        raise ConfigError(f"{origin}: [http] port = 0 picks a random port, so deploy cannot check /healthz; "
                          f"set a fixed port or pass --health-cmd")
    host = str(http.get("host", "127.0.0.1"))
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/healthz"


def prepare_release(bundle: str | Path | None = None, config: str | Path | None = None) -> Release:
    """Check a bundle and a daemon config here, before anything is copied.

    ``bundle`` defaults to the one the config names (relative to the config's folder); ``config`` defaults to
    :data:`DEFAULT_CONFIG` (camera 0). The config is validated with the daemon's own reader.
    """
    from edgeface.core.bundle import load_bundle, sha256_bytes
    from edgeface.daemon.config import load_config

    origin = str(config) if config is not None else "the default config"
    if config is not None:
        config = Path(config)
        try:
            text = config.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{config}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read ({exc})") from None
    else:
        text = DEFAULT_CONFIG
    device_text, original = _device_config(text, origin)
    if bundle is None:
        named = original.get("bundle")
        if not named or not isinstance(named, str) or config is None:
            raise ConfigError(f"{origin}: names no bundle; pass --bundle PATH")
        bundle = Path(named).expanduser()
        if not bundle.is_absolute():
            bundle = config.resolve().parent / bundle
    bundle = Path(bundle)
    model_sha = load_bundle(bundle).model_sha256  # format, version, checksum: a broken bundle never leaves here
    with tempfile.TemporaryDirectory(prefix="edgeface-deploy-") as tmp:
        Path(tmp, CONFIG_NAME).write_text(device_text, encoding="utf-8")
        Path(tmp, BUNDLE_NAME).symlink_to(bundle.resolve())
        try:
            load_config(Path(tmp, CONFIG_NAME))  # every key and value, as the daemon will read it
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(Path(tmp, CONFIG_NAME)), origin)) from None
    bundle_sha = sha256_bytes(bundle.read_bytes())
    digest = hashlib.sha256()
    for name, sha in ((BUNDLE_NAME, bundle_sha), (CONFIG_NAME, hashlib.sha256(device_text.encode()).hexdigest())):
        digest.update(f"{name}\0{sha}\n".encode())
    return Release(id=digest.hexdigest()[:12], bundle=bundle, config_text=device_text,
                   health_url=_health_url(original, origin), bundle_sha256=bundle_sha, model_sha256=model_sha)


# --- results ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostResult:
    """The outcome for one host; :meth:`line` is what the CLI prints."""

    host: str
    status: str          # deployed, unchanged, rolled back, failed, unreachable, would deploy
    release: str = ""    # the release now current (for rolled back: the one rolled back to)
    detail: str = ""
    steps: tuple[str, ...] = ()  # dry run: what would be done

    @property
    def ok(self) -> bool:
        return self.status in ("deployed", "unchanged", "would deploy")

    def line(self) -> str:
        if self.status in ("deployed", "would deploy"):
            text = f"{self.host}: {self.status} {self.release}"
            return f"{text} ({self.detail})" if self.detail else text
        if self.status == "unchanged":
            return f"{self.host}: unchanged ({self.release} is current)"
        if self.status == "rolled back":
            return f"{self.host}: rolled back to {self.release}: {self.detail}"
        return f"{self.host}: {self.status}: {self.detail}"


class _StepFailed(Exception):
    def __init__(self, reason: str, connection: bool = False):
        super().__init__(reason)
        self.connection = connection


# --- one host ------------------------------------------------------------------------------------------------

class _Remote:
    """ssh/rsync/scp to one host, every call with host keys checked."""

    def __init__(self, host: Host, options: DeployOptions, log: Callable[[str], None]):
        self.host, self.options, self.log = host, options, log
        self.port = host.port or options.port
        self.user = host.user or options.user
        # One connection per host, shared by every step (a handshake with a Pi Zero takes about a second).
        self.control_dir = tempfile.mkdtemp(prefix="edgeface-ssh-")

    def close(self) -> None:
        subprocess.run([*self.ssh_command(), "-O", "exit", "--", self.host.name], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def ssh_options(self) -> list[str]:
        o = self.options
        # First value wins in ssh, so ours come before the user's extras.
        args = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={o.connect_timeout}", "-o", "LogLevel=ERROR",
                # A Pi that drops off the network mid-deploy is noticed within a minute, not never.
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C", "-o", "ControlPersist=120"]
        if o.known_hosts:
            args += ["-o", f"UserKnownHostsFile={o.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if o.identity:
            args += ["-i", str(o.identity), "-o", "IdentitiesOnly=yes"]
        if self.user:
            args += ["-o", f"User={self.user}"]
        for extra in o.ssh_options:
            args += ["-o", extra]
        return args

    def ssh_command(self) -> list[str]:
        return ["ssh", *self.ssh_options(), *(["-p", str(self.port)] if self.port else [])]

    def run(self, step: str, *args: str, timeout: float | None = None, stdin: str | None = None) -> str:
        """Run the remote script's ``step`` (``stdin``: what it reads, e.g. a secret); its stdout on success,
        _StepFailed otherwise."""
        remote = ["sh", "-c", remote_script(), "edgeface-deploy", step, self.options.prefix, *args]
        command = [*self.ssh_command(), "--", self.host.name, shlex.join(remote)]
        return self._call(command, step, timeout, stdin)

    def copy(self, stage: Path, remote_dir: str) -> None:
        files = sorted(str(p) for p in stage.iterdir())
        if self.options.copy == "rsync":
            command = ["rsync", "-rt", "--chmod=F0640", "-e", shlex.join(self.ssh_command()), *files,
                       f"{self.host.scp_destination}:{remote_dir}/"]
        else:
            command = ["scp", "-q", *self.ssh_options(), *(["-P", str(self.port)] if self.port else []), *files,
                       f"{self.host.scp_destination}:{remote_dir}/"]
        self._call(command, "copy", None)

    def _call(self, command: list[str], step: str, timeout: float | None, stdin: str | None = None) -> str:
        self.log(f"{step}: {shlex.join(command[:1] + ['...'] + command[-1:])}" if step else shlex.join(command))
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL if stdin is None else None, input=stdin,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _StepFailed(f"{step} timed out after {timeout:.0f}s") from None
        if done.returncode == 0:
            return done.stdout
        lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
        if done.returncode == SSH_EXIT_CONNECT or (step == "copy" and _looks_like_ssh_failure(lines)):
            raise _StepFailed(_ssh_reason(lines, self.host), connection=True)
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if step == "restart" and len(lines) >= 2 and lines[-1].startswith("exit status"):
            # The restart command's own output, on one line (systemctl says why in two).
            output = " ".join(lines[:-1])
            reason = f"{output[:300]}{'...' if len(output) > 300 else ''} ({lines[-1]})"
        raise _StepFailed(reason)


def _looks_like_ssh_failure(lines: Sequence[str]) -> bool:
    return any("Host key verification failed" in ln or "Connection refused" in ln or "Could not resolve" in ln
               or "Permission denied (" in ln or "connection unexpectedly closed" in ln for ln in lines)


def _ssh_reason(lines: Sequence[str], host: Host) -> str:
    text = " ".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return "host key has CHANGED since it was added to known_hosts (a reinstalled host, or an attack): " \
               "check it, then remove the old key with ssh-keygen -R"
    if "host key is known" in text or "Host key verification failed" in text:
        port = host.port
        return (f"host key not in known_hosts: check the key's fingerprint on the host, then add it "
                f"(ssh-keyscan{f' -p {port}' if port else ''} {host.name} >> ~/.ssh/known_hosts)")
    useful = [ln for ln in lines if not ln.startswith(("rsync error", "rsync:", "lost connection"))]
    return (useful or lines or ["ssh failed"])[-1].removeprefix("ssh: ")


def deploy_host(host: Host, release: Release, options: DeployOptions,
                log: Callable[[str], None] = lambda _: None) -> HostResult:
    """Deploy ``release`` to one host; never raises for a host-side problem, it reports it."""
    remote = _Remote(host, options, log)
    try:
        return _deploy_host(remote, release, options, log)
    finally:
        remote.close()


def _deploy_host(remote: _Remote, release: Release, options: DeployOptions,
                 log: Callable[[str], None]) -> HostResult:
    host = remote.host
    name = str(host)
    try:
        status = _parse_status(remote.run("status", release.id, timeout=options.connect_timeout + 30))
    except _StepFailed as exc:
        return HostResult(name, "unreachable" if exc.connection else "failed", detail=str(exc))
    current = status.get("current", "")
    stored = status.get("stored") == "yes"
    if options.dry_run:
        if current == release.id and stored and not options.credentials:
            return HostResult(name, "unchanged", release=release.id)
        return HostResult(name, "would deploy", release=release.id,
                          detail=f"replacing {current}" if current else "first release",
                          steps=tuple(_plan(host, release, options, current, stored)))
    try:  # before the switch, so a new release starts with them; not rolled back (root's files)
        changed = [cred for cred, secret in options.credentials
                   if remote.run("credential", options.credential_cmd, cred, stdin=secret + "\n").strip()
                   != "unchanged"]
    except _StepFailed as exc:
        return HostResult(name, "unreachable" if exc.connection else "failed", release=current,
                          detail=f"{exc} (nothing was switched)")
    if current == release.id and stored:
        if not changed:
            return HostResult(name, "unchanged", release=release.id)
        try:  # same release, new credentials: the daemon reads them when it starts
            remote.run("restart", options.restart_cmd, timeout=options.health_timeout + 120)
            _check_health(remote, options)
        except _StepFailed as exc:
            return HostResult(name, "failed", release=release.id, detail=f"after storing {', '.join(changed)}: {exc}")
        return HostResult(name, "deployed", release=release.id, detail=f"new {', '.join(changed)}")
    try:
        if stored:  # deployed here before (going back to it): no copy, just switch
            remote.run("switch", release.id)
        else:
            with tempfile.TemporaryDirectory(prefix="edgeface-deploy-") as tmp:
                stage = _stage(release, Path(tmp))
                remote.run("prepare", release.id)
                remote.copy(stage, f"{_base(options)}/releases/.incoming-{release.id}")
            remote.run("activate", release.id)
    except _StepFailed as exc:
        prefix = "lost the connection while copying: " if exc.connection else ""
        return HostResult(name, "failed", release=current, detail=f"{prefix}{exc} (nothing was switched)")
    # From here `current` is the new release: any failure switches back.
    try:
        remote.run("restart", options.restart_cmd, timeout=options.health_timeout + 120)
        try:
            _check_health(remote, options)
        except _StepFailed as exc:
            raise _StepFailed(f"health check failed: {exc}", exc.connection) from None
    except _StepFailed as exc:
        if exc.connection:
            return HostResult(name, "failed", release=release.id,
                              detail=f"lost the connection after switching to {release.id}: {exc}")
        reason = str(exc) if str(exc).startswith("health check") else f"restart failed: {exc}"
        return _roll_back(remote, name, release, current, reason, options)
    try:
        remote.run("prune", str(options.keep))
    except _StepFailed as exc:
        log(f"could not prune old releases: {exc}")
    return HostResult(name, "deployed", release=release.id, detail=f"replacing {current}" if current else "")


def _roll_back(remote: _Remote, name: str, release: Release, previous: str, reason: str,
               options: DeployOptions) -> HostResult:
    try:
        if not previous:
            remote.run("unset")
            remote.run("remove", release.id)
            return HostResult(name, "failed", detail=f"{reason}; there is no previous release to roll back to")
        remote.run("switch", previous)
        remote.run("remove", release.id)
        remote.run("restart", options.restart_cmd, timeout=options.health_timeout + 120)
        _check_health(remote, options)
    except _StepFailed as exc:
        return HostResult(name, "rolled back", release=previous,
                          detail=f"{reason}; and the previous release is unhealthy too: {exc}")
    return HostResult(name, "rolled back", release=previous, detail=reason)


def _check_health(remote: _Remote, options: DeployOptions) -> None:
    # "-": the URL recorded in the release that is current now (the new one, or the one rolled back to).
    token = options.http_token
    remote.run("health", str(int(options.health_timeout)), options.health_url or "-", options.health_cmd or "",
               "1" if token else "0", timeout=options.health_timeout + 60, stdin=token + "\n" if token else None)


def _parse_status(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _base(options: DeployOptions) -> str:
    return f"{options.prefix.rstrip('/')}/opt/edgeface"


def _stage(release: Release, folder: Path) -> Path:
    shutil.copyfile(release.bundle, folder / BUNDLE_NAME)
    for name, data in release.files().items():
        (folder / name).write_bytes(data)
    return folder


def _plan(host: Host, release: Release, options: DeployOptions, current: str, stored: bool) -> list[str]:
    base = _base(options)
    check = options.health_cmd or f"GET {options.health_url or release.health_url}"
    copy = (f"{base}/releases/{release.id} is already on the host: nothing to copy" if stored else
            f"copy {release.bundle} and the config to {host.destination}:{base}/releases/{release.id} "
            f"({options.copy})")
    stores = [f"store the {cred} (systemd credential, through: {options.credential_cmd})"
              for cred, _ in options.credentials]
    return [*stores, copy,
            f"switch {base}/releases/current to {release.id}",
            f"run: {options.restart_cmd}",
            f"check health: {check} (up to {options.health_timeout:g}s)",
            f"on failure: switch back to {current} and restart" if current
            else "on failure: remove the release (there is no previous one)"]


# --- many hosts ------------------------------------------------------------------------------------------

def deploy(hosts: Iterable[str | Host], release: Release, options: DeployOptions = DeployOptions(),
           on_result: Callable[[HostResult], None] = lambda _: None,
           on_log: Callable[[str, str], None] | None = None) -> list[HostResult]:
    """Deploy to every host in parallel; ``on_result`` is called as each one finishes (from worker threads,
    one call at a time). Returns the results in the order of ``hosts``."""
    options.check()
    parsed = [h if isinstance(h, Host) else parse_host(h) for h in hosts]
    if not parsed:
        raise ConfigError("no hosts given")
    seen: set[tuple[str, int | None]] = set()
    for host in parsed:
        key = (host.name, host.port or options.port)
        if key in seen:  # two deploys into one folder at once would trip over each other
            raise ConfigError(f"host {host} is given twice")
        seen.add(key)
    if not (release.health_url or options.health_url or options.health_cmd):
        raise ConfigError("the config turns the HTTP server off, so there is no /healthz to check after a "
                          "restart: enable [http] or pass --health-cmd")
    lock = threading.Lock()

    def one(host: Host) -> HostResult:
        log = (lambda msg: on_log(str(host), msg)) if on_log else (lambda _: None)
        try:
            result = deploy_host(host, release, options, log)
        except (OSError, EdgefaceError) as exc:  # a local problem (disk full, ssh missing) for this host only
            result = HostResult(str(host), "failed", detail=str(exc))
        with lock:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(options.jobs, len(parsed)))) as pool:
        return list(pool.map(one, parsed))

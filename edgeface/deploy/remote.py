"""The deploy itself: on each host one transaction over one ssh session (copy, verify, switch, restart, check,
roll back), driven step by step through ``remote_deploy.sh``, the shell that runs on the host; hosts in
parallel, one result each."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

from edgeface.core.errors import ConfigError, EdgefaceError
from edgeface.deploy.hosts import DeployOptions, Host, parse_host
from edgeface.deploy.release import BUNDLE_NAME, Release

SSH_EXIT_CONNECT = 255  # ssh's own failures (connection, authentication, host key), as opposed to the command's


def remote_script() -> str:
    """The script run on each host (``remote_deploy.sh`` beside this module, shipped in the package)."""
    return resources.files("edgeface.deploy").joinpath("remote_deploy.sh").read_text(encoding="utf-8")


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

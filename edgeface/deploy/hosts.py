"""Where a deploy goes and how: ssh destinations (``[user@]host[:port]``) and the options of a deploy."""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgeface.core.errors import ConfigError
from edgeface.daemon.secrets import MAX_SECRET_BYTES

DEFAULT_RESTART = "sudo -n systemctl restart edgeface"
COPY_METHODS = ("rsync", "scp")
CREDENTIAL_NAMES = ("http-token", "mqtt-password")  # systemd credentials the unit loads (LoadCredential=)
DEFAULT_CREDENTIAL_CMD = "sudo -n /usr/local/sbin/edgeface-credential"


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

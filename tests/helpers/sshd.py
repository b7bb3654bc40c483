"""A real sshd for deploy tests: Debian's ``/usr/sbin/sshd`` on 127.0.0.1, a throwaway host key and client key,
logging in as the current user (so it needs root, for sshd's privilege separation)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .ports import free_port, wait_until_listening

SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshServer:
    port: int
    identity: Path  # the client's private key
    known_hosts: Path  # holds the server's host key: host keys are always checked

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def options(self, prefix: Path, **kw: Any) -> Any:
        """``DeployOptions`` for this server, deploying under ``prefix``."""
        from edgeface.deploy import DeployOptions

        return DeployOptions(prefix=str(prefix), identity=self.identity, known_hosts=self.known_hosts, **kw)

    def cli_args(self) -> list[str]:
        return ["--identity", str(self.identity), "--known-hosts", str(self.known_hosts)]


def why_no_sshd() -> str | None:
    """Why this machine cannot run the test sshd, or None when it can."""
    if not SSHD.is_file():
        return f"{SSHD} not found: install Debian's openssh-server (and rsync) to run the deploy tests"
    if os.geteuid() != 0:
        return "the test sshd logs in as the current user and needs root for its privilege separation"
    return None


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[SshServer]:
    """sshd with its keys and config in ``folder``, listening until the block ends."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
                       check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PidFile {folder / 'sshd.pid'}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if not wait_until_listening(port, 20, alive=lambda: process.poll() is None):
            output = process.stdout.read() if process.poll() is not None and process.stdout else ""
            raise RuntimeError(f"sshd did not listen within 20 s (exit code {process.poll()}): {output}")
        yield SshServer(port=port, identity=folder / "client_key", known_hosts=folder / "known_hosts")
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)

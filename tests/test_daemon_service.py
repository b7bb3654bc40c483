"""systemd's notify protocol (``edgeface.daemon.service``): readiness, watchdog, stopping."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_speaks_the_notify_socket_protocol(tmp_path: Path, abstract: bool) -> None:
    from edgeface.daemon.service import SystemdNotifier

    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"edgeface-test-{os.getpid()}-{threading.get_ident()}"
        server.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        server.bind(address)
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000",
                                    "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval == pytest.approx(0.05)
        notifier.ready("reading camera 0")
        assert server.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=reading camera 0"]
        notifier.watchdog()  # too soon after READY: no ping
        time.sleep(0.06)
        notifier.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        notifier.stopping()
        assert server.recv(4096) == b"STOPPING=1"
        notifier.close()
    finally:
        server.close()


def test_notifier_is_silent_without_systemd_and_ignores_another_pids_watchdog() -> None:
    from edgeface.daemon.service import SystemdNotifier

    assert not SystemdNotifier({}).notify("READY=1")
    other = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval == 0.0
    assert not other.notify("READY=1")  # unreachable socket: no exception

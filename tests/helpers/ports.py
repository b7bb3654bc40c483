"""Ports for the servers tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1 (the kernel's choice; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout: float, alive=lambda: True) -> bool:
    """Whether something accepts connections on ``port`` within ``timeout`` seconds; gives up early when
    ``alive()`` says the server's process is gone."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False

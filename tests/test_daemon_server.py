"""The daemon's HTTP server (``edgeface.daemon.server``) on its own, without a daemon."""

from __future__ import annotations

import socket

import pytest

from edgeface.core.errors import ConfigError


def test_http_server_port_in_use_is_a_config_error() -> None:
    from edgeface.daemon.server import HttpServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            HttpServer("127.0.0.1", port)


def test_http_server_answers_only_once_started() -> None:
    """The daemon starts the server after its other sinks exist, so the first /metrics already lists them."""
    import urllib.request

    from edgeface.daemon.server import HttpServer

    server = HttpServer("127.0.0.1", 0)
    server.route("GET", "/metrics", lambda request: (200, {}, "edgeface_up 1\n"))
    try:
        url = f"http://127.0.0.1:{server.address[1]}/metrics"
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=2) as early:
            early.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            early.settimeout(0.3)
            with pytest.raises(TimeoutError):  # bound and listening, but not answering yet
                early.recv(1)
            server.start()
            early.settimeout(5)
            assert early.recv(64).startswith(b"HTTP/1.1 200")  # the waiting request is answered, not refused
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.read() == b"edgeface_up 1\n"
    finally:
        server.close(2)
    never_started = HttpServer("127.0.0.1", 0)
    never_started.close(2)  # returns at once: there is no serve loop to wait for

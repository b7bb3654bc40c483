"""The daemon's HTTP server (``edgeface.daemon.server``) on its own, without a daemon; malformed requests as
waitress hands them over (WSGI environs), dispatched without a socket."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from edgeface.core.errors import ConfigError
from edgeface.daemon.access import Access
from edgeface.daemon.http import Reply
from edgeface.daemon.server import Router


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
    server.route("GET", "/metrics", lambda request: Reply.text("edgeface_up 1\n"))
    try:
        url = f"http://127.0.0.1:{server.address[1]}/metrics"
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=2) as early:
            early.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
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


def environ(method: str = "GET", path: str = "/labels", query: str = "", body: bytes = b"",
            **headers: str) -> dict[str, Any]:
    """A WSGI environ as waitress makes it."""
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
           "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "HTTP_HOST": "127.0.0.1:8321"}
    for name, value in headers.items():
        env["CONTENT_TYPE" if name == "content_type" else f"HTTP_{name.upper()}"] = value
    return env


def test_malformed_requests_get_a_4xx(daemon_log: pytest.LogCaptureFixture) -> None:
    router = Router(Access())
    router.route("POST", "/form", lambda r: Reply.json({"a": r.field("a"), "n": len(r.form.get("a", []))}))
    router.route("GET", "/query", lambda r: Reply.json({"q": r.arg("q")}))
    router.route("GET", "/to", lambda r: Reply.redirect(r.arg("next")))
    router.route("GET", "/broken", lambda r: 1 / 0)  # type: ignore[arg-type,return-value]
    form = "application/x-www-form-urlencoded"
    assert router.answer(environ("POST", "/form", body=b"a=1&a=2", content_type=form)).body == b'{"a":"1","n":2}'
    cases = {
        "not UTF-8": (environ("POST", "/form", body=b"a=\xe9", content_type=form), 400),
        "not UTF-8 once decoded": (environ("POST", "/form", body=b"a=%e9%ff", content_type=form), 400),
        "too many fields": (environ("POST", "/form", body=b"&".join([b"a=1"] * 300), content_type=form), 400),
        "too large": (environ("POST", "/form", body=b"a=" + b"x" * 70_000, content_type=form), 413),
        "json": (environ("POST", "/form", body=b'{"a": 1}', content_type="application/json"), 415),
        "multipart": (environ("POST", "/form", body=b"--x\r\n", content_type="multipart/form-data; boundary=x"), 415),
        "bad length": ({**environ("POST", "/form"), "CONTENT_LENGTH": "twelve"}, 400),
        "query not UTF-8": (environ("GET", "/query", query="q=%ff"), 400),
        "query too long": (environ("GET", "/query", query="&".join(["q=1"] * 300)), 400),
        "failing handler": (environ("GET", "/broken"), 500),
    }
    for what, (env, status) in cases.items():
        reply = router.answer(env)
        assert reply.status == status, (what, reply.status, reply.body)
        assert b"Traceback" not in reply.body and b"ZeroDivision" not in reply.body
    assert "ZeroDivisionError" in daemon_log.text  # in the log, never in the reply
    assert router.answer(environ("GET", "/query", query="q=%zz%")).body == b'{"q":"%zz%"}'  # kept as it is
    moved = router.answer(environ("GET", "/to", query="next=/ui/%0d%0aSet-Cookie:%20x=1"))
    assert moved.headers["Location"] == "/ui/%0D%0ASet-Cookie:%20x=1"  # no header can be split
    assert router.answer(environ("GET", "/to", query="next=/caf%C3%A9")).headers["Location"] == "/caf%C3%A9"

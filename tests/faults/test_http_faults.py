"""HTTP under attack: idle half-sent connections by the thousand, a bearer token, credentials in a source URL."""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path

import pytest

from helpers.daemon import DaemonProcess, cpu_seconds, http_get

IDLE = 1000


def _raw_get(port: int, path: str, token: str | None = None, timeout: float = 1.0) -> tuple[int, dict[str, str]]:
    """One GET on a fresh connection: (status, headers with lower-case names)."""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:]))
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize("daemon_limit", [None, (64, 64)], ids=["default-limit", "open-files-64"])
def test_a_thousand_idle_connections_do_not_starve_healthz(fault_bundle: Path, fault_video: Path,
                                                          daemon_limit: tuple[int, int] | None) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 100:
        pytest.skip(f"this test opens {IDLE} sockets; the hard open-files limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    daemon = DaemonProcess(["--bundle", str(fault_bundle), "--source", str(fault_video), "--loop", "--fps", "5",
                            "--http-port", "0", "--jsonl", "/dev/null"], open_files=daemon_limit)
    idle: list[socket.socket] = []
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 60, "a healthy daemon")
        cpu0, wall0 = cpu_seconds(daemon.proc.pid), time.monotonic()
        time.sleep(2)
        baseline = (cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - wall0)
        start = time.monotonic()
        for _ in range(IDLE):  # each sends half a request line and goes quiet (slowloris)
            conn = socket.create_connection(("127.0.0.1", port), timeout=2)
            conn.sendall(b"GET /heal")
            idle.append(conn)
        opened = time.monotonic() - start
        cpu0, wall0 = cpu_seconds(daemon.proc.pid), time.monotonic()
        for _ in range(5):
            asked = time.monotonic()
            assert _raw_get(port, "/healthz", timeout=1.0)[0] == 200
            assert time.monotonic() - asked < 1.0
        time.sleep(2)
        held = (cpu_seconds(daemon.proc.pid) - cpu0) / (time.monotonic() - wall0)
        print(f"{IDLE} idle connections opened in {opened:.1f} s; daemon CPU {baseline:.0%} before, "
              f"{held:.0%} while they were held")
        assert held < baseline + 0.4, f"daemon CPU {held:.0%} with idle connections held (was {baseline:.0%})"
    finally:
        for conn in idle:
            conn.close()
        daemon.stop()


def test_idle_connection_is_closed_after_the_timeout(fault_bundle: Path, fault_video: Path, tmp_path: Path) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{fault_bundle}"\nsource = "{fault_video}"\n[capture]\nloop = true\nfps = 5\n'
                      f'[jsonl]\npath = "/dev/null"\n[http]\nport = 0\ntimeout = 2\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        port = daemon.http_port()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /lab")
            start = time.monotonic()
            assert conn.recv(1) == b""  # closed by the daemon
            assert 1.5 < time.monotonic() - start < 8
    finally:
        daemon.stop()


def test_token_guards_every_path_but_healthz(fault_bundle: Path, fault_video: Path, tmp_path: Path) -> None:
    """The token as systemd installs it (LoadCredential=http-token), checked on known and unknown paths."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "http-token").write_text("s3cret-token\n")
    daemon = DaemonProcess(["--bundle", str(fault_bundle), "--source", str(fault_video), "--loop", "--fps", "5",
                            "--http-port", "0", "--jsonl", "/dev/null"],
                           env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 60, "a healthy daemon without a token")
        for path in ("/labels", "/metrics", "/", "/nope", "/labels?x=1"):
            for token in (None, "wrong", "s3cret-token-and-more", ""):
                status, headers = _raw_get(port, path, token)
                assert status == 401, (path, token)
                assert headers["www-authenticate"].startswith("Bearer")
        for path in ("/labels", "/metrics"):
            assert _raw_get(port, path, "s3cret-token")[0] == 200
        assert _raw_get(port, "/nope", "s3cret-token")[0] == 404
        assert "s3cret" not in "\n".join(daemon.stderr)
    finally:
        daemon.stop()


def test_token_sources_in_order(tmp_path: Path) -> None:
    from edgeface.core.errors import ConfigError
    from edgeface.daemon.secrets import read_secret

    (tmp_path / "http-token").write_text("from-credential")
    (tmp_path / "file").write_text("  from-file\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "EDGEFACE_HTTP_TOKEN": "from-env"}
    assert read_secret("t", str(tmp_path / "file"), "http-token", "EDGEFACE_HTTP_TOKEN", environ) == "from-file"
    assert read_secret("t", "", "http-token", "EDGEFACE_HTTP_TOKEN", environ) == "from-credential"
    assert read_secret("t", "", "absent", "EDGEFACE_HTTP_TOKEN", environ) == "from-env"
    assert read_secret("t", "", "absent", "EDGEFACE_HTTP_TOKEN", {}) is None
    (tmp_path / "empty").write_text("\n")
    for name, problem in (("empty", "is empty"), ("missing", "is not a file")):
        with pytest.raises(ConfigError, match=problem):
            read_secret("[http] token", str(tmp_path / name))


def test_routes_registered_by_another_module_are_guarded_too() -> None:
    """The route API the web page uses: method + path -> (status, headers, body); the token applies."""
    from edgeface.daemon.server import HttpServer, json_reply

    server = HttpServer("127.0.0.1", 0, token="t0ken")
    server.route("POST", "/echo", lambda request: json_reply(201, {"got": request.body.decode(),
                                                                   "q": request.query.get("a")}))
    server.start()
    try:
        port = server.address[1]
        import json
        import urllib.request

        def post(token: str | None) -> tuple[int, str]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/echo?a=1", data=b"hello", method="POST",
                                             headers={"Authorization": f"Bearer {token}"} if token else {})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert post(None)[0] == 401
        status, body = post("t0ken")
        assert status == 201 and json.loads(body) == {"got": "hello", "q": ["1"]}
        assert http_get(port, "/echo", headers={"Authorization": "Bearer t0ken"})[0] == 405
    finally:
        server.close(2)


def test_source_url_password_is_never_shown(fault_bundle: Path) -> None:
    from helpers.ports import free_port

    url = f"rtsp://viewer:hunter2pw@127.0.0.1:{free_port()}/stream?token=alsosecret"
    daemon = DaemonProcess(["--bundle", str(fault_bundle), "--source", url, "--http-port", "0"])
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: "reconnecting" in "\n".join(daemon.stderr) or "retrying" in "\n".join(daemon.stderr),
                        30, "the source to fail")
        status, body = http_get(port, "/healthz")
        assert status == 503 and "viewer:***@127.0.0.1" in body
        for text in (body, http_get(port, "/metrics")[1], "\n".join(daemon.stderr)):
            assert "hunter2pw" not in text and "alsosecret" not in text
    finally:
        daemon.stop()

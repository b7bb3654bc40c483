"""daemon/access.py without a socket: one host and access check for every route (token, sessions, wrong
tokens limited per client, tokens too short). Each test builds requests, dispatches them on the server's
``Router`` and reads the replies. tests/faults/test_http_faults.py tries the same on a running daemon."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edgeface.core.errors import ConfigError
from edgeface.daemon.access import FAILURE_BURST, MIN_TOKEN_CHARS, Access, FailureLimit, Sessions
from edgeface.daemon.http import Reply, Request
from edgeface.daemon.server import Router

TOKEN = "a-token-of-24-characters"



class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def daemon_router(token: str | None = TOKEN, hosts: tuple[str, ...] = (), **access: Any) -> Router:
    """The daemon's three routes and a sign-in-like public one, as ``edgeface run`` adds them."""
    router = Router(Access(token, hosts, **access))
    router.route("GET", "/healthz", lambda r: Reply.json({"status": "ok"}))
    router.route("GET", "/labels", lambda r: Reply.json({"faces": []}))
    router.route("GET", "/metrics", lambda r: Reply.text("edgeface_up 1\n"))
    router.route("GET", "/ui/login", lambda r: Reply.html("form"), public=True)
    router.route("GET", "/ui/people", lambda r: Reply.html(f"session={bool(r.session)}"),
                 on_unauthorized=lambda r: Reply.redirect("/ui/login"))
    return router


def get(router: Router, path: str, host: str | None = "127.0.0.1:8321", remote: str = "192.168.1.20",
        **headers: str) -> Reply:
    sent = {k.replace("_", "-"): v for k, v in headers.items()} | ({"host": host} if host is not None else {})
    return router.dispatch(Request("GET", path, {}, sent, b"", remote))


def test_one_host_check_for_every_route() -> None:
    router = daemon_router(hosts=("frontdoor.lan", "Cam.Example"))
    bearer = f"Bearer {TOKEN}"
    for host in ("127.0.0.1:8321", "[::1]:8321", "192.168.1.7", "localhost:8321", "frontdoor.lan:80", "cam.example",
                 None, ""):  # no Host header (HTTP/1.0 tools): no browser, so no DNS rebinding
        assert get(router, "/labels", host, authorization=bearer).status == 200, host
    for path in ("/healthz", "/labels", "/metrics", "/ui/login", "/ui/people", "/nothing"):
        for host in ("attacker.example:8321", "[", "[::1", "a b", "x:99999999", "127.0.0.1.attacker.example"):
            reply = get(router, path, host, authorization=bearer)
            assert reply.status == 421 and b"[http] hosts" in reply.body, (path, host)


def test_the_token_guards_every_route_but_the_public_ones() -> None:
    router = daemon_router()
    assert get(router, "/healthz").status == 200 and get(router, "/ui/login").status == 200
    for path in ("/labels", "/metrics", "/nothing", "/ui/api/live"):
        for header in ({}, {"authorization": "Bearer"}, {"authorization": f"Basic {TOKEN}"},
                       {"authorization": f"Bearer {TOKEN}x"}, {"cookie": f"edgeface_session={TOKEN}"}):
            reply = get(router, path, remote=f"10.0.0.{len(header)}", **header)
            assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer"), (path, header)
    assert get(router, "/labels", authorization=f"Bearer {TOKEN}").status == 200
    assert get(router, "/nothing", authorization=f"Bearer {TOKEN}").status == 404
    assert get(router, "/ui/people").headers["Location"] == "/ui/login"  # a page: to the sign-in form
    assert router.dispatch(Request("POST", "/healthz", headers={"host": "127.0.0.1"})).status == 405
    assert get(daemon_router(token=None), "/labels").status == 200  # no token: the host check only


def test_sessions_are_random_revocable_expiring_and_bounded() -> None:
    clock = Clock()
    sessions = Sessions(seconds=60, limit=3, clock=clock)
    router = daemon_router(sessions=sessions)
    verdict = router.access.sign_in(Request("POST", "/ui/login", remote="192.168.1.20"), TOKEN)
    session = verdict.session
    assert len(session) >= 40 and TOKEN not in session and session != router.access.sign_in(
        Request("POST", "/ui/login"), TOKEN).session  # random each time, never the token
    cookie = router.access.cookie(session, "/ui/")
    assert cookie.startswith(f"edgeface_session={session}; Path=/ui/; HttpOnly; SameSite=Strict")
    assert get(router, "/ui/people", cookie=f"edgeface_session={session}").body == b"session=True"
    router.access.sign_out(session)  # revoked: a copy of the cookie is worth nothing
    assert get(router, "/ui/people", cookie=f"edgeface_session={session}").status == 303
    fresh = router.access.sign_in(Request("POST", "/ui/login"), TOKEN).session
    clock.now += 61  # expired
    assert get(router, "/labels", cookie=f"edgeface_session={fresh}").status == 401
    kept = [router.access.sign_in(Request("POST", "/ui/login"), TOKEN).session for _ in range(5)]
    assert len(sessions) == 3  # bounded: the oldest went first
    assert [get(router, "/labels", cookie=f"edgeface_session={s}").status for s in kept] == [401, 401, 200, 200, 200]
    assert router.access.sign_in(Request("POST", "/ui/login"), "wrong-token-guess-123").session == ""


def test_wrong_tokens_are_limited_per_client_and_nothing_waits(monkeypatch: pytest.MonkeyPatch,
                                                               daemon_log: pytest.LogCaptureFixture) -> None:
    """Guessing through the header and through the sign-in form costs from one budget per client, answered
    429 with Retry-After once spent; no request thread ever sleeps (one second per wrong sign-in stalled
    /healthz before)."""
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a request slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    clock = Clock()
    router = daemon_router(limit=FailureLimit(clock=clock))
    access = router.access
    for i in range(FAILURE_BURST):
        wrong = (get(router, "/labels", authorization=f"Bearer guess-{i:020d}") if i % 2 else
                 access.sign_in(Request("POST", "/ui/login", remote="192.168.1.20"), f"guess-{i:020d}"))
        assert wrong.status == 401, i
    limited = get(router, "/labels", authorization=f"Bearer {TOKEN}")  # the right token, from the guesser
    assert limited.status == 429 and limited.headers["Retry-After"] == "6"
    assert access.sign_in(Request("POST", "/ui/login", remote="192.168.1.20"), TOKEN).status == 429
    assert get(router, "/labels", authorization=f"Bearer {TOKEN}", remote="192.168.1.30").status == 200  # others
    assert get(router, "/healthz").status == 200  # public: never limited
    clock.now += 6  # one attempt back
    assert get(router, "/labels", authorization=f"Bearer {TOKEN}").status == 200
    assert get(router, "/labels", authorization="Bearer guess-again-1234567890").status == 401  # forgotten on success
    assert "guess" not in daemon_log.text and TOKEN not in daemon_log.text
    assert "wrong token from 192.168.1.20" in daemon_log.text


def test_failure_limit_is_bounded() -> None:
    limit = FailureLimit(burst=2, refill=10, max_clients=100, clock=Clock())
    for i in range(1000):
        limit.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limit._clients) == 100


def test_a_token_too_short_to_be_a_secret_is_refused(tmp_path) -> None:
    from edgeface.daemon.secrets import read_secret

    with pytest.raises(ConfigError, match="too short"):
        Access("x")
    (tmp_path / "token").write_text("hunter2\n")
    (tmp_path / "http-token").write_text("hunter2\n")
    cases = ((dict(file=str(tmp_path / "token")), f"[http] token in {tmp_path / 'token'}: shorter than 16"),
             (dict(credential="http-token", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}),
              "[http] token (systemd credential http-token): shorter than 16"),
             (dict(env="EDGEFACE_HTTP_TOKEN", environ={"EDGEFACE_HTTP_TOKEN": "hunter2"}),
              "[http] token from $EDGEFACE_HTTP_TOKEN: shorter than 16"))
    for where, message in cases:
        with pytest.raises(ConfigError) as info:
            read_secret("[http] token", min_chars=MIN_TOKEN_CHARS, **where)
        assert str(info.value).startswith(message) and "hunter2" not in str(info.value)
        assert "\n" not in str(info.value)

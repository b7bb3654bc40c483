"""Who may use the daemon's HTTP server: one place decides, for every route (the daemon's ``/labels`` and
``/metrics`` and the web page's alike), before any handler runs.

* **Host.** A request must name the device by an IP address, ``localhost``, this machine's host name (or
  ``<name>.local``), or a name in ``[http] hosts``. A web site that points a name of its own at the device
  (DNS rebinding) is refused (421), so a browser on the LAN cannot be made to read the device's answers, even
  where there is no token. A request without a ``Host`` header (HTTP/1.0 tools) is let through: browsers
  always send one.
* **Token.** With a token set, every route but the public ones (``/healthz``, the page's sign-in form and
  files) needs ``Authorization: Bearer <token>`` (compared in constant time) or a session.
* **Sessions.** The page's sign-in form trades the token for a session: a random id in a cookie (HttpOnly,
  SameSite=Strict), of which the server keeps only a hash. Signing out revokes it; it expires after
  ``SESSION_DAYS``; at most ``MAX_SESSIONS`` live at once (the oldest goes first). They live in memory: a
  restart or reload of the daemon signs everyone out. The cookie is never the token.
* **Guessing.** A wrong token, in a header or the sign-in form, costs the client (its address) one of
  ``FAILURE_BURST`` attempts, given back one every ``FAILURE_REFILL`` seconds; a client with none left is
  answered 429 with ``Retry-After`` without its token being looked at. Nothing waits: a request thread never
  sleeps, so wrong guesses cannot hold up ``/healthz``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from edgeface.core.errors import ConfigError
from edgeface.daemon.http import Request
from edgeface.daemon.service import Throttled

log = logging.getLogger("edgeface.daemon")

MIN_TOKEN_CHARS = 16  # shorter is a password, not a secret: `edgeface deploy --http-token generate` makes 43
SESSION_COOKIE = "edgeface_session"
SESSION_DAYS = 30
MAX_SESSIONS = 64
FAILURE_BURST = 10  # wrong tokens a client may send at once...
FAILURE_REFILL = 6.0  # ...then one more every this many seconds (10 a minute)
MAX_CLIENTS = 4096  # clients whose wrong tokens are remembered; the one quiet the longest is forgotten first


class Sessions:
    """Signed-in browsers: session ids (random, 256 bits) by their SHA-256, with when each expires."""

    def __init__(self, seconds: float = SESSION_DAYS * 86400, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.limit = limit
        self._clock = clock
        self._expires: collections.OrderedDict[str, float] = collections.OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def create(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._expires[_digest(session)] = self._clock() + self.seconds
            while len(self._expires) > self.limit:
                self._expires.popitem(last=False)
        return session

    def valid(self, session: str) -> bool:
        key = _digest(session)
        with self._lock:
            expires = self._expires.get(key)
            if expires is not None and self._clock() >= expires:
                del self._expires[key]
                expires = None
        return expires is not None

    def revoke(self, session: str) -> None:
        with self._lock:
            self._expires.pop(_digest(session), None)

    def __len__(self) -> int:
        return len(self._expires)


class FailureLimit:
    """Wrong tokens per client: a bucket of ``burst`` attempts, one given back every ``refill`` seconds."""

    def __init__(self, burst: int = FAILURE_BURST, refill: float = FAILURE_REFILL, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.refill = refill
        self.max_clients = max_clients
        self._clock = clock
        self._clients: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _left(self, client: str, now: float) -> float:
        left, at = self._clients.get(client, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) / self.refill)

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            left = self._left(client, self._clock())
        return 0 if left >= 1.0 else max(1, math.ceil((1.0 - left) * self.refill))

    def failed(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            self._clients[client] = (max(0.0, self._left(client, now) - 1.0), now)
            self._clients.move_to_end(client)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    def forget(self, client: str) -> None:
        """``client`` gave the right token: its earlier mistakes no longer count."""
        with self._lock:
            self._clients.pop(client, None)


@dataclass(frozen=True)
class Verdict:
    """What ``Access.check`` decided: ``status`` 0 to let the request through (``session``: the session that
    did, if any), else the refusal (401, 421, 429) with ``retry_after`` seconds for a 429."""

    status: int = 0
    reason: str = ""
    session: str = ""
    retry_after: int = 0


class Access:
    """The host check, the token, sessions and the limit on guesses for one server: see the module docstring.

    ``token``: None for no token (then only the host is checked). ``hosts``: names the server answers to
    besides IP addresses, ``localhost`` and this machine's name."""

    def __init__(self, token: str | None = None, hosts: Iterable[str] = (), sessions: Sessions | None = None,
                 limit: FailureLimit | None = None) -> None:
        if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
            raise ConfigError(f"the HTTP token is shorter than {MIN_TOKEN_CHARS} characters: too short to be a "
                              "secret")
        self._token = token.strip().encode() if token is not None else None
        name = socket.gethostname().split(".")[0].lower()
        self.hosts = {"localhost", name, f"{name}.local"} | {h.strip().lower() for h in hosts if h.strip()}
        self.sessions = sessions if sessions is not None else Sessions()
        self.limit = limit if limit is not None else FailureLimit()
        self._wrong = Throttled()
        self._limited = Throttled()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header names this device (see the module docstring); "" (none) is let through."""
        if not host:
            return True
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:  # "[", an unclosed IPv6 literal
            return False
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def check(self, request: Request, public: bool) -> Verdict:
        """The host, then (unless ``public``) a session or the token. Every route goes through here."""
        if not self.host_allowed(request.headers.get("host", "")):
            return Verdict(421, "this device answers to its IP address or host name only (add other names to "
                                "[http] hosts)")
        if public or self._token is None:
            return Verdict()
        session = request.cookies.get(SESSION_COOKIE, "")
        if session and self.sessions.valid(session):
            return Verdict(session=session)
        scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Verdict(401, "sign in first: a bearer token is required (Authorization: Bearer <token>)")
        return self._attempt(request.remote, presented)

    def sign_in(self, request: Request, given: str) -> Verdict:
        """The sign-in form's token: on success ``session`` is a new session for the cookie."""
        verdict = self._attempt(request.remote, given)
        return Verdict(session=self.sessions.create()) if verdict.status == 0 else verdict

    def _attempt(self, client: str, presented: str) -> Verdict:
        """One guess at the token, limited per client."""
        wait = self.limit.retry_after(client)
        if wait:
            self._limited.warning("http: too many wrong tokens from %s; answering 429 to its attempts", client)
            return Verdict(429, f"too many wrong tokens from this address: try again in {wait} s", retry_after=wait)
        assert self._token is not None
        if hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self._token):
            self.limit.forget(client)
            return Verdict()
        self.limit.failed(client)
        self._wrong.warning("http: wrong token from %s", client)
        return Verdict(401, "wrong token")

    def sign_out(self, session: str) -> None:
        if session:
            self.sessions.revoke(session)

    def cookie(self, session: str, path: str) -> str:
        """The ``Set-Cookie`` value that keeps ``session`` for the pages under ``path``."""
        return (f"{SESSION_COOKIE}={session}; Path={path}; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(self.sessions.seconds)}")

    @staticmethod
    def expired_cookie(path: str) -> str:
        return f"{SESSION_COOKIE}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0"


def _digest(session: str) -> str:
    return hashlib.sha256(session.encode("utf-8", "replace")).hexdigest()

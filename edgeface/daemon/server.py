"""The daemon's HTTP server: routes (method + path -> handler), an optional bearer token, bounded connections.

Built on waitress (pure-Python WSGI, no C extension): one thread runs an event loop over ``poll()`` (no
1,024-descriptor ceiling as with ``select()``) that reads requests and writes answers for every connection;
only a complete request reaches one of a few worker threads. An idle or half-sent connection costs a socket
and a small object, not a thread. The standard library's ``ThreadingHTTPServer`` gives each connection a
thread that blocks in ``recv`` with no time limit and accepts in a loop that spins once the process runs out
of descriptors: 100 connections that sent half a request line, with the open-files limit at 64, kept it at
150% CPU and ``/healthz`` unanswered.

Bounds, on top of waitress's own request size limits:

* ``timeout``: a connection with no traffic for this long (idle keep-alive, a half-sent request, a client that
  does not read) is closed;
* ``max_connections``: at the cap, the connection idle the longest (never one whose request is being served)
  is closed to admit the new one, so idle connections, however many, cannot lock others out;
* running out of descriptors pauses accepting for half a second (one warning a minute) instead of spinning;
* ``raise_open_files_limit`` lifts the soft open-files limit to the hard one.

Routes are registered before ``start``: ``server.route("GET", "/labels", handler)``; a handler takes a
``Request`` and returns a ``Reply`` (``Reply.json(value)``, ``Reply.html(text)``, ``Reply.redirect(path)``...;
``Content-Length`` is added, and ``Cache-Control: no-store`` unless the reply says otherwise). The web page
(``edgeface.web``) answers with the same type. A ``HEAD`` request is answered by its ``GET`` route without the body.
With a token set, every path but ``/healthz`` (unknown paths too) needs ``Authorization: Bearer <token>``,
compared in constant time; without it the answer is 401 with ``WWW-Authenticate: Bearer``. A route added with
``public=True`` is let through and checks access itself (the web page, whose browser cannot send that header
on a link or an image, checks the token from its sign-in cookie with ``check_token``).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import resource
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from functools import cached_property
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable, Iterable, Mapping

from edgeface.core.errors import ConfigError, DependencyError
from edgeface.daemon.secrets import redact
from edgeface.daemon.service import Throttled

log = logging.getLogger("edgeface.daemon")

PUBLIC_PATHS = ("/healthz",)  # answered without the token: a health check must not need a secret
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_FORM_BYTES = 64 * 1024  # a page's forms send a few hundred bytes
WORKER_THREADS = 2
RESERVED_FDS = 32  # descriptors kept for everything but HTTP connections (camera, files, MQTT, logs)



@dataclass(frozen=True)
class Request:
    """One complete HTTP request as a route handler sees it. Header names are lower case."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    remote: str = ""

    def arg(self, name: str, default: str = "") -> str:
        """The first value of the query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    @cached_property
    def form(self) -> dict[str, list[str]]:
        """The body as an ``application/x-www-form-urlencoded`` form (what a page's forms send)."""
        return urllib.parse.parse_qs(self.body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)

    def field(self, name: str, default: str = "") -> str:
        """The first value of the form field ``name``."""
        values = self.form.get(name)
        return values[0] if values else default

    @cached_property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: the daemon's routes and the web page's alike. ``headers`` come on top of the
    ``Content-Type`` (and may replace the server's ``Cache-Control: no-store``)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Reply":
        return cls(status, text.encode("utf-8"))

    @classmethod
    def html(cls, text: str, status: int = 200) -> "Reply":
        return cls(status, text.encode("utf-8"), "text/html; charset=utf-8")

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "Reply":
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    @classmethod
    def jpeg(cls, data: bytes, cache: bool = False) -> "Reply":
        """A face crop or frame; ``cache`` for images named by their content (or an id never reused)."""
        return cls(200, data, "image/jpeg", {"Cache-Control": "private, max-age=86400"} if cache else {})

    @classmethod
    def redirect(cls, location: str) -> "Reply":
        """303 See Other: after a form's POST the browser asks for ``location`` with GET (no resubmission)."""
        return cls(303, b"", "text/plain", {"Location": location})

    def with_headers(self, headers: Mapping[str, str]) -> "Reply":
        """This reply with ``headers`` added (or replacing those of the same name)."""
        return replace(self, headers={**self.headers, **headers})


Handler = Callable[[Request], Reply]


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one (systemd's soft default is 1,024); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # a sandbox may refuse; the cap below then follows the soft limit
            log.warning("http: cannot raise the open-files limit from %d to %d (%s)", soft, hard, exc)
    return soft


class Router:
    """Routes (method + exact path -> handler) and the token check: ``dispatch`` is everything the server does
    with a complete request, so a test can build a ``Request``, dispatch it and read the ``Reply`` without a
    socket."""

    def __init__(self, token: str | None = None) -> None:
        self.refused = 0  # requests answered 401
        self._token = token.encode() if token else None
        self._routes: dict[str, dict[str, Handler]] = {}
        self._public: set[str] = set(PUBLIC_PATHS)  # paths answered without the token check

    def route(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        """Answer ``method`` (``GET``, ``POST``, ...) on ``path`` (exact, no query) with ``handler``.

        ``public``: the server does not ask for the token on this path; the handler must decide who may use it.
        """
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self._routes.setdefault(path, {})[method.upper()] = handler
        if public:
            self._public.add(path)

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def check_token(self, presented: str) -> bool:
        """Whether ``presented`` is the token (compared in constant time); True when there is no token."""
        return self._token is None or hmac.compare_digest(presented.strip().encode(), self._token)

    def dispatch(self, request: Request) -> Reply:
        """The reply to ``request``: 401 without the token where one is needed, 404 or 405 for no route, the
        handler's reply (a 500 and a logged traceback if it fails)."""
        try:
            return self._answer(request)
        except Exception:  # a failing handler is a 500 and a logged traceback, never a dead server
            log.exception("http: %s %s failed", request.method, redact(request.path))
            return Reply.json({"error": "internal error; see the daemon's log"}, 500)

    def _answer(self, request: Request) -> Reply:
        method, path = request.method, request.path
        if self._token is not None and path not in self._public and not self._authorized(request):
            self.refused += 1
            return Reply.json({"error": "a bearer token is required (Authorization: Bearer <token>)"}, 401
                              ).with_headers({"WWW-Authenticate": 'Bearer realm="edgeface"'})
        methods = self._routes.get(path)
        if methods is None:
            return Reply.json({"error": f"no such endpoint {path}; try {', '.join(self.paths)}"}, 404)
        handler = methods.get("GET" if method == "HEAD" and "HEAD" not in methods else method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            return Reply.json({"error": f"{method} not allowed on {path}; use {allowed}"}, 405).with_headers(
                {"Allow": allowed})
        return handler(request)

    def _authorized(self, request: Request) -> bool:
        scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and self.check_token(presented)


def request_from_environ(environ: Mapping[str, Any]) -> Request:
    """A WSGI request (waitress has read it whole, within its size limits) as a ``Request``."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return Request(method=str(environ.get("REQUEST_METHOD", "GET")).upper(), path=environ.get("PATH_INFO") or "/",
                   query=urllib.parse.parse_qs(environ.get("QUERY_STRING", "")), headers=headers,
                   body=environ["wsgi.input"].read(length) if length > 0 else b"",
                   remote=environ.get("REMOTE_ADDR", ""))


class HttpServer:
    """A ``Router`` on a waitress server in a thread of its own; see the module docstring for the bounds."""

    name = "http"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 timeout: float = 10.0, max_connections: int = 256) -> None:
        try:
            from waitress.adjustments import Adjustments
        except ModuleNotFoundError:
            raise DependencyError("the HTTP server needs waitress: pip install waitress") from None
        self.requests = 0
        self.router = Router(token)
        self._stop = threading.Event()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        room = max(8, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else max_connections
        self.max_connections = min(max_connections, room)
        seconds = max(1, round(timeout))
        adj = Adjustments(host=host, port=port, threads=WORKER_THREADS, asyncore_use_poll=True,
                          # the listener and waitress's wake-up pipe count against the limit too
                          connection_limit=self.max_connections + 2, channel_timeout=seconds,
                          cleanup_interval=max(1, seconds // 2), max_request_header_size=MAX_HEADER_BYTES,
                          max_request_body_size=MAX_BODY_BYTES, ident="edgeface", expose_tracebacks=False,
                          log_socket_errors=False, backlog=128)
        try:
            self._server = _server_class()(self._wsgi, adj=adj)
        except OSError as exc:
            raise ConfigError(f"[http] cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); set [http] port or --http-port") from None
        self.address = (self._server.effective_host, self._server.effective_port)
        self._thread = threading.Thread(target=self._serve, name="edgeface-http", daemon=True)

    def route(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        """``Router.route``: add a route before ``start``."""
        self.router.route(method, path, handler, public=public)

    def start(self) -> None:
        """Answer requests (connections made before this wait in the listen backlog)."""
        self._thread.start()
        log.info("http: serving %s on http://%s:%s%s", " ".join(self.router.paths), *self.address,
                 " (bearer token required except on /healthz)" if self.router.has_token else "")

    def close(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._server.pull_trigger()
            self._thread.join(timeout)
        else:
            self._shutdown()

    def metrics(self) -> dict[str, float]:
        return {"sent": self.requests, "dropped": 0}

    # --- serving -----------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        from waitress import wasyncore

        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=0.5, map=self._server._map, use_poll=True, count=1)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        from waitress import wasyncore

        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=0.5)
        wasyncore.close_all(self._server._map)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        self.requests += 1
        request = request_from_environ(environ)
        reply = self.router.dispatch(request)
        out = {"Cache-Control": "no-store", **reply.headers, "Content-Type": reply.content_type,
               "Content-Length": str(len(reply.body))}
        start_response(f"{reply.status} {_REASONS.get(reply.status, 'Status')}", list(out.items()))
        return [b""] if request.method == "HEAD" else [reply.body]


_REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
            421: "Misdirected Request", 503: "Service Unavailable"}


def _server_class() -> type:
    """waitress's TCP server with two changes: at the connection cap the longest-idle connection makes room,
    and running out of descriptors pauses accepting instead of spinning on a listener that stays readable."""
    from waitress.server import TcpWSGIServer

    logging.getLogger("waitress").setLevel(logging.ERROR)  # its queue-depth notes would flood the journal

    class BoundedServer(TcpWSGIServer):
        next_channel_cleanup: float  # waitress's, set in its constructor
        evicted = 0
        _paused_until = 0.0
        _out_of_files = Throttled()

        def readable(self) -> bool:
            now = time.time()
            if now >= self.next_channel_cleanup:  # waitress's sweep of connections past the timeout
                self.next_channel_cleanup = now + self.adj.cleanup_interval
                self.maintenance(now)
            if not self.accepting or time.monotonic() < self._paused_until:
                return False
            if len(self._map) >= self.adj.connection_limit:
                self._make_room()
                return False
            return True

        def _make_room(self) -> None:
            channels = list(self.active_channels.values())
            if any(channel.will_close for channel in channels):
                return  # one already on its way out: it closes on this loop turn
            idle = [channel for channel in channels if not channel.requests]
            if idle:
                min(idle, key=lambda channel: channel.last_activity).will_close = True
                self.evicted += 1

        def accept(self) -> Any:
            try:
                return super().accept()
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self._paused_until = time.monotonic() + 0.5
                self._out_of_files.warning("http: out of file descriptors (%s); pausing new connections",
                                           exc.strerror)
                return None

    return BoundedServer

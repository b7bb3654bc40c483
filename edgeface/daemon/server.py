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
``Request`` and returns a ``Reply`` (``edgeface.daemon.http``: ``Reply.json(value)``, ``Reply.html(text)``,
``Reply.redirect(path)``...; ``Content-Length`` is added, and ``Cache-Control: no-store`` unless the reply says
otherwise). The web page (``edgeface.web``) adds its routes to the same ``Router`` and answers with the same
type. A ``HEAD`` request is answered by its ``GET`` route without the body.

Every request, to every route, goes through one check first (``edgeface.daemon.access``): the host it names,
then, with a token set, the token or a sign-in session; only ``/healthz`` and routes added with
``public=True`` (the page's sign-in form and files) need no token. Without one the answer is 401 with
``WWW-Authenticate: Bearer``, after too many wrong ones 429 with ``Retry-After``. A malformed request is a
4xx with one line saying why (``HttpError``); a handler that fails is a 500 whose traceback goes to the log
only.
"""

from __future__ import annotations

import errno
import logging
import resource
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

from edgeface.core.errors import ConfigError, DependencyError
from edgeface.daemon.access import Access
from edgeface.daemon.http import Handler, HttpError, Reply, Request, parse_query
from edgeface.daemon.secrets import redact
from edgeface.daemon.service import Throttled

log = logging.getLogger("edgeface.daemon")

PUBLIC_PATHS = ("/healthz",)  # answered without the token: a health check must not need a secret
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
WORKER_THREADS = 2
RESERVED_FDS = 32  # descriptors kept for everything but HTTP connections (camera, files, MQTT, logs)



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


@dataclass(frozen=True)
class Route:
    handler: Handler
    public: bool = False  # answered without the token (the host is checked all the same)
    on_unauthorized: Handler | None = None  # the answer to a GET without a token instead of 401 (a sign-in page)


class Router:
    """Routes and who may use them: ``answer(environ)`` and ``dispatch(request)`` are everything the server
    does with a complete request, so a test can build one, dispatch it and read the ``Reply`` without a
    socket. Every route, the daemon's and the web page's, goes through ``access`` first."""

    def __init__(self, access: Access | None = None) -> None:
        self.access = access or Access()
        self._routes: dict[str, dict[str, Route]] = {}

    def route(self, method: str, path: str, handler: Handler, *, public: bool = False,
              on_unauthorized: Handler | None = None) -> None:
        """Answer ``method`` (``GET``, ``POST``, ...) on ``path`` (exact, no query) with ``handler``.

        ``public``: no token needed (``/healthz``, a sign-in form). ``on_unauthorized``: what a ``GET``
        without a token gets instead of 401 (the web page's redirect to its sign-in form)."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self._routes.setdefault(path, {})[method.upper()] = Route(handler, public or path in PUBLIC_PATHS,
                                                                  on_unauthorized)

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    def answer(self, environ: Mapping[str, Any]) -> Reply:
        """The reply to a WSGI request (a malformed one is a 4xx)."""
        try:
            request = request_from_environ(environ)
        except HttpError as exc:
            return exc.reply()
        return self.dispatch(request)

    def dispatch(self, request: Request) -> Reply:
        """The reply to ``request``: the host and access check, 404 or 405 for no route, then the handler's
        reply; a 4xx for a request the handler finds malformed (``HttpError``), a 500 and a logged traceback
        (never shown) if the handler fails."""
        try:
            return self._answer(request)
        except HttpError as exc:
            return exc.reply()
        except Exception:  # a failing handler is a 500 and a logged traceback, never a dead server
            log.exception("http: %s %s failed", request.method, redact(request.path))
            return Reply.json({"error": "internal error; see the daemon's log"}, 500)

    def _answer(self, request: Request) -> Reply:
        method, path = request.method, request.path
        methods = self._routes.get(path, {})
        route = methods.get("GET" if method == "HEAD" and "HEAD" not in methods else method)
        public = route.public if route is not None else any(r.public for r in methods.values())
        verdict = self.access.check(request, public=public)
        if verdict.status == 401 and route is not None and route.on_unauthorized is not None \
                and method in ("GET", "HEAD") and "authorization" not in request.headers:
            return route.on_unauthorized(request)
        if verdict.status:
            reply = Reply.json({"error": verdict.reason}, verdict.status)
            if verdict.status == 401:
                return reply.with_headers({"WWW-Authenticate": 'Bearer realm="edgeface"'})
            if verdict.status == 429:
                return reply.with_headers({"Retry-After": str(verdict.retry_after)})
            return reply
        if not methods:
            return Reply.json({"error": f"no such endpoint {path}; try {', '.join(self.paths)}"}, 404)
        if route is None:
            allowed = ", ".join(sorted(methods))
            return Reply.json({"error": f"{method} not allowed on {path}; use {allowed}"}, 405).with_headers(
                {"Allow": allowed})
        return route.handler(replace(request, session=verdict.session) if verdict.session else request)


def request_from_environ(environ: Mapping[str, Any]) -> Request:
    """A WSGI request (waitress has read it whole, within its size limits) as a ``Request``; ``HttpError``
    400 for what does not parse."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError(400, "Content-Length is not a number") from None
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return Request(method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
                   path=str(environ.get("PATH_INFO") or "/"), query=parse_query(str(environ.get("QUERY_STRING", ""))),
                   headers=headers, body=environ["wsgi.input"].read(length) if length > 0 else b"",
                   remote=str(environ.get("REMOTE_ADDR", "")))


class HttpServer:
    """A ``Router`` on a waitress server in a thread of its own; see the module docstring for the bounds."""

    name = "http"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 hosts: Iterable[str] = (), timeout: float = 10.0, max_connections: int = 256) -> None:
        try:
            from waitress.adjustments import Adjustments
        except ModuleNotFoundError:
            raise DependencyError("the HTTP server needs waitress: pip install waitress") from None
        self.requests = 0
        self.router = Router(Access(token, hosts))
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

    @property
    def access(self) -> Access:
        return self.router.access

    def start(self) -> None:
        """Answer requests (connections made before this wait in the listen backlog)."""
        self._thread.start()
        log.info("http: serving %s on http://%s:%s%s", " ".join(self.router.paths), *self.address,
                 " (bearer token required except on /healthz)" if self.access.has_token else "")

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
        reply = self.router.answer(environ)
        out = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **reply.headers,
               "Content-Type": reply.content_type, "Content-Length": str(len(reply.body))}
        start_response(f"{reply.status} {_REASONS.get(reply.status, 'Status')}", list(out.items()))
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]


_REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            415: "Unsupported Media Type", 421: "Misdirected Request", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


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

"""The daemon's HTTP server: ``/healthz``, ``/labels`` (the latest frame) and ``/metrics``.

Not a sink: it delivers nothing, it answers from the run's state. It takes each published frame like the sinks
do only to keep the latest for ``/labels``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

from edgeface.core.errors import ConfigError
from edgeface.daemon.records import Published

if TYPE_CHECKING:
    from edgeface.daemon.config import HttpConfig

log = logging.getLogger("edgeface.daemon")


class HttpServer:
    """``/healthz``, ``/labels`` and ``/metrics`` on a small threaded HTTP server (localhost by default).

    ``health()`` returns (healthy, details); ``metrics_text()`` the Prometheus exposition. Both are the run's.
    """

    name = "http"

    def __init__(self, config: "HttpConfig", health: Callable[[], tuple[bool, dict[str, Any]]],
                 metrics_text: Callable[[], str]) -> None:
        from http.server import ThreadingHTTPServer

        self._latest: Published | None = None
        self.requests = 0
        sink = self
        handler = _make_handler(sink, health, metrics_text)
        try:
            self._server = ThreadingHTTPServer((config.host, config.port), handler)
        except OSError as exc:
            raise ConfigError(f"[http] cannot listen on {config.host}:{config.port} "
                              f"({exc.strerror or exc}); set [http] port or --http-port") from None
        self._server.daemon_threads = True
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgeface-http", daemon=True)

    def start(self) -> None:
        """Answer requests. Called once every sink exists, so the first /metrics already lists them all
        (connections made before this wait in the listen backlog)."""
        self._thread.start()
        log.info("http: serving /healthz /labels /metrics on http://%s:%s", *self.address)

    def publish(self, item: Published) -> None:
        self._latest = item

    def latest(self) -> dict[str, Any]:
        item = self._latest
        if item is None:
            return {"time": None, "frame": None, "faces": []}
        return item.result.to_dict()

    def close(self, timeout: float) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only when it runs
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def metrics(self) -> dict[str, float]:
        return {"sent": self.requests, "dropped": 0}


def _make_handler(sink: HttpServer, health: Callable[[], tuple[bool, dict[str, Any]]],
                  metrics_text: Callable[[], str]) -> type:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeface"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            sink.requests += 1
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                healthy, details = health()
                self._reply(200 if healthy else 503, json.dumps(details), "application/json")
            elif path == "/labels":
                self._reply(200, json.dumps(sink.latest()), "application/json")
            elif path == "/metrics":
                self._reply(200, metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._reply(404, json.dumps({"error": f"no such endpoint {path}; try /healthz, /labels, /metrics"}),
                            "application/json")

        def _reply(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler

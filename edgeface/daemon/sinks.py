"""Where labels go, behind one interface, several at once: JSON lines, MQTT, HTTP.

The pipeline calls ``Sink.publish`` once per frame; it never waits on the network or a disk. JSON lines and
MQTT put records in a bounded buffer emptied by their own thread, which retries with backoff when the output
fails; when the buffer is full the oldest record is dropped and counted. The HTTP server only keeps a reference
to the latest frame and answers from the run's counters.

MQTT topics (``<topic>`` defaults to ``edgeface``, ``<device>`` to the host name)::

    <topic>/<device>/status   "online" / "offline", retained; "offline" is also the last will
    <topic>/<device>/frame    a frame's JSON record, as in JSON lines (not retained)
    <topic>/<device>/state    retained summary: faces, identities, and the largest face's labels

With ``discovery = true`` Home Assistant sensors (faces, people, identity, emotion, gender) are announced under
``<discovery_prefix>/sensor/<device>_*/config`` (retained), all tied to the status topic for availability.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edgeface.core.errors import ConfigError, DependencyError

if TYPE_CHECKING:
    from edgeface.daemon.config import HttpConfig, MqttConfig
    from edgeface.daemon.pipeline import FrameResult

log = logging.getLogger("edgeface.daemon")


class Published:
    """One frame as the sinks see it: the result, whether its labels changed, and its JSON (made once)."""

    __slots__ = ("result", "changed", "_json")

    def __init__(self, result: "FrameResult", changed: bool) -> None:
        self.result = result
        self.changed = changed
        self._json: str | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.result.to_dict(), separators=(",", ":"))
        return self._json

    def wanted(self, mode: str) -> bool:
        """``every``: frames with faces; ``change``: frames whose tracks or labels differ from the last one."""
        return self.changed if mode == "change" else bool(self.result.faces)


class Sink(Protocol):
    name: str

    def publish(self, item: Published) -> None:
        """Hand over a frame; must return at once."""

    def close(self, timeout: float) -> None:
        """Deliver what is buffered, within ``timeout`` seconds, and release resources."""

    def metrics(self) -> dict[str, float]:
        """Counters for /metrics: at least sent and dropped."""


class QueuedSink:
    """A bounded buffer and a worker thread that calls ``_send``; a failing send is retried with backoff."""

    name = "queued"

    def __init__(self, queue: int, publish_mode: str) -> None:
        self.publish_mode = publish_mode
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._limit = queue
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"edgeface-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, item: Published) -> None:
        if item.wanted(self.publish_mode):
            self._put(item.json)

    def _put(self, payload: Any) -> None:
        with self._cond:
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(payload)
            self._cond.notify()

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        self._thread.join(max(0.0, timeout))
        with self._cond:  # whatever could not be delivered in time is lost: count it
            self.dropped += len(self._queue)
            self._queue.clear()
        self._finish()

    def metrics(self) -> dict[str, float]:
        return {"sent": self.sent, "dropped": self.dropped, "errors": self.errors, "queued": len(self._queue)}

    def _run(self) -> None:
        delay = 0.2
        last_warning = -float("inf")
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() > self._deadline:
                    return
                payload = self._queue[0]
            try:
                self._send(payload)
            except Exception as exc:  # an output that fails is retried, never allowed to kill the daemon
                self.errors += 1
                if time.monotonic() - last_warning > 60:  # an output down for days must not flood the journal
                    last_warning = time.monotonic()
                    log.warning("%s sink: %s; retrying with backoff, buffering up to %d records",
                                self.name, exc, self._limit)
                with self._cond:
                    self._cond.wait(min(delay, max(0.0, self._deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            with self._cond:
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()
            self.sent += 1

    def _send(self, payload: Any) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


# --- JSON lines --------------------------------------------------------------------------------------------

class JsonLinesSink(QueuedSink):
    """One JSON object per line, to stdout or to a file rotated by size (``name.1`` ... ``name.N``)."""

    name = "jsonl"

    def __init__(self, path: str = "-", publish: str = "every", max_bytes: int = 10_000_000, backups: int = 3,
                 queue: int = 256) -> None:
        super().__init__(queue, publish)
        self.path = None if path == "-" else Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._handle = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"[jsonl] path {self.path}: cannot open for writing ({exc.strerror or exc})") from None
        self.start()

    def _send(self, line: str) -> None:
        if self.path is None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(line + "\n")
        self._handle.flush()
        if self._handle.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None and self._handle is not None
        self._handle.close()
        self._handle = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self.path is None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass


# --- MQTT --------------------------------------------------------------------------------------------------

class MqttSink(QueuedSink):
    """paho-mqtt: the client's own thread connects and reconnects; ours feeds it only while it is connected."""

    name = "mqtt"

    def __init__(self, config: "MqttConfig", device: str, model_name: str = "edgeface") -> None:
        super().__init__(config.queue, config.publish)
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise DependencyError("MQTT needs paho-mqtt: pip install paho-mqtt") from None
        self.config = config
        self.device = device
        self.model_name = model_name
        self.base = f"{config.topic.rstrip('/')}/{device}"
        self.status_topic = f"{self.base}/status"
        self.connected = threading.Event()
        self.connects = 0
        self._last_state: str | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or f"edgeface-{device}")
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls:
            client.tls_set()
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(config.queue)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._mqtt = mqtt
        # connect_async + loop_start: a broker that is down at start is retried by paho's thread, not fatal.
        client.connect_async(config.host, config.port, keepalive=config.keepalive)
        client.loop_start()
        self.start()

    def publish(self, item: Published) -> None:
        if item.wanted(self.publish_mode):
            self._put((f"{self.base}/frame", item.json, self.config.qos, False))
        if item.changed:
            state = json.dumps(self.state(item.result), separators=(",", ":"))
            self._put((f"{self.base}/state", state, 1, True))

    @staticmethod
    def state(result: "FrameResult") -> dict[str, Any]:
        """The retained summary Home Assistant reads: counts, names, and the largest face's labels."""
        faces = result.faces
        primary = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None
        return {
            "time": round(result.time, 3),
            "faces": len(faces),
            "identities": sorted({f.labels.identity.label for f in faces}),
            "identity": primary.labels.identity.label if primary else "none",
            "emotion": primary.labels.emotion.label if primary else "none",
            "gender": primary.labels.gender.label if primary else "none",
        }

    def _send(self, message: tuple[str, str, int, bool]) -> None:
        if not self.connected.wait(0.5):
            raise ConnectionError(f"broker {self.config.host}:{self.config.port} not connected")
        topic, payload, qos, retain = message
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} failed ({self._mqtt.error_string(info.rc)})")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt: broker %s:%s refused the connection (%s)", self.config.host, self.config.port, reason)
            return
        self.connects += 1
        log.info("mqtt: connected to %s:%s", self.config.host, self.config.port)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        if self.config.discovery:
            for topic, payload in self.discovery_messages():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self.connected.is_set():
            log.warning("mqtt: lost the broker %s:%s (%s); reconnecting", self.config.host, self.config.port, reason)
        self.connected.clear()

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant MQTT discovery: one sensor per summary field, available while the daemon is online."""
        device = {"identifiers": [f"edgeface_{self.device}"], "name": f"edgeface {self.device}",
                  "manufacturer": "edgeface", "model": self.model_name}
        sensors = {
            "faces": ("Faces", "{{ value_json.faces }}"),
            "people": ("People", "{{ value_json.identities | join(', ') }}"),
            "identity": ("Identity", "{{ value_json.identity }}"),
            "emotion": ("Emotion", "{{ value_json.emotion }}"),
            "gender": ("Gender", "{{ value_json.gender }}"),
        }
        messages = []
        for key, (title, template) in sensors.items():
            payload: dict[str, Any] = {
                "name": title, "unique_id": f"edgeface_{self.device}_{key}", "state_topic": f"{self.base}/state",
                "value_template": template, "availability_topic": self.status_topic, "device": device,
            }
            if key == "faces":
                payload["state_class"] = "measurement"
            messages.append((f"{self.config.discovery_prefix}/sensor/{self.device}_{key}/config", payload))
        return messages

    def _finish(self) -> None:
        # A clean stop says "offline" itself (the will is only sent when the connection dies).
        if self.connected.is_set():
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(0.5)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "connected": float(self.connected.is_set()), "connects": self.connects}


# --- HTTP --------------------------------------------------------------------------------------------------

class HttpSink:
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


def _make_handler(sink: HttpSink, health: Callable[[], tuple[bool, dict[str, Any]]],
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

"""One run of ``edgeface run``: a source (on its capture thread), the face pipeline and the outputs wired
together, health and metrics answered, systemd told how it goes, and a clean stop."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeface.core.version import __version__
from edgeface.daemon.config import DaemonConfig, HttpConfig
from edgeface.daemon.metrics import prometheus_text
from edgeface.daemon.records import FrameObserver, Published
from edgeface.daemon.service import EXIT_OK, SystemdNotifier, install_stop_handlers
from edgeface.daemon.sinks.base import Sink
from edgeface.daemon.snapshots import SnapshotWriter
from edgeface.daemon.sources import Capture, Frame
from edgeface.daemon.stats import RunStats, process_status
from edgeface.recognition.pipeline import FacePipeline
from edgeface.recognition.records import FrameResult

if TYPE_CHECKING:
    from edgeface.daemon.server import HttpServer, Reply, Request

log = logging.getLogger("edgeface.daemon")

HTTP_TOKEN_CREDENTIAL, HTTP_TOKEN_ENV = "http-token", "EDGEFACE_HTTP_TOKEN"


# Called once the run's parts exist, before the HTTP server answers: an observer of every frame that may add
# routes to the server, or None for nothing (the web page, ``edgeface.web``, which sits above the daemon and is
# passed in by the CLI, answers None when its config says it is off). Called again for each run after a SIGHUP.
Extension = Callable[["Daemon"], "FrameObserver | None"]


class Daemon:
    """One run of ``edgeface run``: everything is opened and checked in the constructor (errors are one line,
    exit code 2), then ``run`` loops until the source ends, ``stop`` is set, or a signal arrives.

    ``extensions`` are called with the daemon once its pipeline, sinks and server exist; each returns an
    observer that sees every processed frame with its image."""

    def __init__(self, config: DaemonConfig, extensions: Sequence[Extension] = ()) -> None:
        from edgeface.core.bundle import load_bundle
        from edgeface.daemon.sinks.jsonl import JsonLinesSink
        from edgeface.daemon.sinks.mqtt import MqttSink
        from edgeface.daemon.sources import open_source
        from edgeface.runtime.litert import runtime_name

        self.config = config
        self.bundle = load_bundle(config.bundle)
        self.source = open_source(config.source, config.capture.width, config.capture.height, config.capture.fps,
                                  loop=config.capture.loop)
        drop = config.capture.drop_stale
        latest_only = self.source.live if drop == "auto" else drop == "yes"
        self.capture = Capture(self.source, latest_only, config.capture.retry_max, pace_fps=config.capture.fps)
        self.pipeline = FacePipeline(self.bundle, config.threads, config.detect, config.tracking, config.recognition,
                                     config.visits, config.identity_threshold, config.gallery,
                                     config.similarity_threshold, camera=config.device)
        self.runtime = runtime_name()
        self.stats = RunStats()
        self.sinks: list[Sink] = []
        self.http: HttpServer | None = None
        self.latest: Published | None = None
        self.snapshots = (SnapshotWriter(Path(config.snapshots.dir), config.snapshots.interval,
                                         config.snapshots.max_files) if config.snapshots.dir else None)
        self.observers: list[FrameObserver] = [self.snapshots] if self.snapshots is not None else []
        try:
            if config.http.enabled:
                self.http = self._http_server(config.http)
            if config.jsonl_on:
                self.sinks.append(JsonLinesSink(config.jsonl.path, config.jsonl.publish, config.jsonl.max_bytes,
                                                config.jsonl.backups, config.jsonl.queue,
                                                config.jsonl.unhealthy_after, config.jsonl.frames,
                                                config.jsonl.visits))
            if config.mqtt_on:
                labeler = self.pipeline.labeler
                self.sinks.append(MqttSink(config.mqtt, config.device, self.bundle.path.stem,
                                           people=lambda: labeler.enrolled + labeler.trained))
            for extension in extensions:
                observer = extension(self)
                if observer is not None:
                    self.observers.append(observer)
            if self.http is not None:
                self.http.start()
        except BaseException:
            self._close_observers()
            self._close_outputs(0.5)
            raise
        self._last_signature: tuple = ()

    def _http_server(self, config: HttpConfig) -> "HttpServer":
        """``/healthz``, ``/labels`` and ``/metrics``; more routes can be added until ``start``."""
        from edgeface.daemon.secrets import read_secret, redact
        from edgeface.daemon.server import HttpServer, json_reply

        token = read_secret("[http] token", config.token_file, HTTP_TOKEN_CREDENTIAL, HTTP_TOKEN_ENV)
        server = HttpServer(config.host, config.port, token=token, timeout=config.timeout,
                            max_connections=config.max_connections)

        def healthz(request: Request) -> Reply:
            healthy, details = self.health()
            status, headers, body = json_reply(200 if healthy else 503, details)
            return status, headers, redact(body)  # a source URL's password, in "source" or "reason"

        server.route("GET", "/healthz", healthz)
        server.route("GET", "/labels", lambda request: json_reply(200, self.latest_labels()))
        server.route("GET", "/metrics", lambda request: (
            200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, self.metrics_text()))
        return server

    def latest_labels(self) -> dict[str, Any]:
        """The latest processed frame as a JSON-lines record (``/labels``)."""
        item = self.latest
        return {"time": None, "frame": None, "faces": []} if item is None else item.result.to_dict()

    # --- health and metrics --------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the source is connected, a frame was processed within ``[http] stale_after``, and no
        sink has failed to deliver for longer than its ``unhealthy_after``."""
        stats, capture = self.stats, self.capture.stats
        age = None if stats.last_processed is None else time.monotonic() - stats.last_processed
        failing = [problem for problem in (sink.problem() for sink in self.sinks) if problem]
        if not capture.connected:
            reason = capture.last_error or "source not opened yet"
        elif age is None:
            reason = "no frame processed yet"
        elif age > self.config.http.stale_after:
            reason = f"no frame processed for {age:.1f} s"
        else:
            reason = "; ".join(failing)
        return not reason, {
            "status": "unhealthy" if reason else "ok", "reason": reason or None,
            "source": self.source.name, "source_connected": capture.connected,
            "frames": stats.processed, "fps": round(stats.fps, 2),
            "last_frame_age_s": None if age is None else round(age, 3),
            "uptime_s": round(time.monotonic() - stats.started, 1),
            "bundle": self.bundle.path.name, "precision": self.bundle.precision,
            "model_sha256": self.bundle.model_sha256,
            "dropped": capture.dropped, "corrupt": capture.corrupt,
            "sinks": {sink.name: sink.status() for sink in self.sinks},
            **({"snapshots": self.snapshots.status()} if self.snapshots is not None else {}),
        }

    def metrics_text(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        healthy, _ = self.health()
        info = {"version": __version__, "bundle": self.bundle.path.name, "precision": self.bundle.precision,
                "runtime": self.runtime}
        return prometheus_text(info, healthy, self.stats, self.capture.stats,
                               {out.name: out.metrics() for out in self.outputs}, process_status())

    @property
    def outputs(self) -> list[Any]:
        """The HTTP server (counted by requests answered) and the sinks, as /metrics and the status line list them."""
        return ([self.http] if self.http is not None else []) + list(self.sinks)

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, reloading: threading.Event | None = None) -> int:
        """Loop until the source ends or ``stop`` is set; returns exit code 0. With ``reloading`` set at the
        end, systemd is told the service reloads rather than stops."""
        stop = stop or threading.Event()
        notifier = SystemdNotifier()
        try:
            self.pipeline.warm_up()
            self.capture.start()
            notifier.ready(f"reading {self.source.name}")
            log.info("running: %s, bundle %s (%s, %s)", self.source.name, self.bundle.path.name,
                     self.bundle.precision, self.runtime)
            max_frames = self.config.service.max_frames
            status_every = self.config.service.status_interval
            next_status = time.monotonic() + status_every
            while not stop.is_set():
                notifier.watchdog()
                item = self.capture.get(timeout=0.25)
                if item is Capture.END:
                    log.info("source ended after %d frames", self.stats.processed)
                    self._publish(self.pipeline.finish(self.capture.end_time))  # the open visits leave
                    break
                if item is not None:
                    self._handle(item)  # type: ignore[arg-type]
                    if max_frames and self.stats.processed >= max_frames:
                        break
                if status_every and time.monotonic() >= next_status:
                    next_status = time.monotonic() + status_every
                    line = self.status_line()
                    log.info("%s", line)
                    notifier.status(line)
            return EXIT_OK
        finally:
            if reloading is not None and reloading.is_set():
                notifier.reloading()
            else:
                notifier.stopping()
            self.close()
            notifier.close()
            log.info("stopped: %s", self.status_line())
            log.info("summary %s", json.dumps({**self.stats.summary(), **process_status(),
                                                "dropped": self.capture.stats.dropped,
                                                "corrupt": self.capture.stats.corrupt}))

    def _handle(self, frame: Frame) -> None:
        result = self.pipeline.process(frame.image, frame.index, frame.time, frame.capture_s)
        start = time.perf_counter()
        item = self._publish(result)
        for observer in self.observers:
            observer.observe(frame.image, item)
        self.stats.record(result, dict(result.timings, publish=time.perf_counter() - start))

    def _publish(self, result: FrameResult) -> Published:
        signature = result.signature()
        item = Published(result, signature != self._last_signature)
        self._last_signature = signature
        if result.faces or self.latest is None:
            self.latest = item
        for sink in self.sinks:
            sink.publish(item)
        return item

    def status_line(self) -> str:
        c = self.capture.stats
        sinks = ", ".join(f"{s.name} {int(m['sent'])} sent {int(m['dropped'])} dropped"
                          for s, m in ((s, s.metrics()) for s in self.outputs))
        return (f"{self.stats.processed} frames ({self.stats.fps:.1f} fps), {self.stats.faces} faces, "
                f"{c.dropped} stale dropped, {c.corrupt} corrupt, source "
                f"{'connected' if c.connected else 'DISCONNECTED'}; {sinks}")

    def close(self) -> None:
        """Stop capture and flush the sinks, within about 1.5 s in all."""
        deadline = time.monotonic() + 1.5
        self.capture.stop(timeout=0.4)
        self._close_observers()
        self._close_outputs(deadline - time.monotonic())

    def _close_observers(self) -> None:
        for observer in self.observers:
            try:
                observer.close()
            except Exception as exc:  # one failing must not keep the sinks from flushing
                log.warning("error while closing %s: %s", type(observer).__name__, exc)

    def _close_outputs(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        for sink in self.outputs:
            try:
                sink.close(max(0.05, deadline - time.monotonic()))
            except Exception as exc:  # one sink failing to close must not keep the others open
                log.warning("%s sink: error while closing: %s", sink.name, exc)


def run_daemon(config: DaemonConfig, stop: threading.Event | None = None,
               reload: Callable[[], DaemonConfig] | None = None, extensions: Sequence[Extension] = ()) -> int:
    """Open everything (one-line errors), run until the source ends or SIGTERM/SIGINT, return the exit code.

    The signal handlers are in place before the model loads, so a stop during start-up is clean too. With
    ``reload`` (which reads the config again), SIGHUP flushes and stops the run, then starts a new one with
    the config ``reload`` returns; if that config fails to load, or its bundle, gallery or source fail to
    open, with the previous config. Without it, SIGHUP stops like SIGTERM.
    """
    from edgeface.core.errors import EdgefaceError
    from edgeface.daemon.server import raise_open_files_limit

    stop = stop or threading.Event()
    reload_requested = threading.Event()
    undo_signals = install_stop_handlers(stop, reload_requested if reload is not None else None)
    raise_open_files_limit()
    previous: DaemonConfig | None = None  # the config that last ran, while a reloaded one is being opened
    try:
        while True:
            try:
                daemon = Daemon(config, extensions)
            except EdgefaceError as exc:
                if previous is None:
                    raise
                log.error("reload: %s; keeping the previous configuration", exc)
                config, previous = previous, None
                continue
            previous = None
            code = daemon.run(stop, reload_requested)
            if reload is None or not reload_requested.is_set():
                return code
            try:
                config, previous = reload(), config
                log.info("reloaded the configuration from %s", config.origin)
            except EdgefaceError as exc:
                log.error("reload: %s; keeping the previous configuration", exc)
            reload_requested.clear()
            stop.clear()
    finally:
        undo_signals()

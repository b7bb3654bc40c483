"""One run of ``edgeface run``: a source (on its capture thread), the face pipeline and the outputs wired
together, health and metrics answered, systemd told how it goes, and a clean stop."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeface.core.version import __version__
from edgeface.daemon.config import DaemonConfig, HttpConfig
from edgeface.daemon.metrics import prometheus_text
from edgeface.daemon.records import FrameObserver, Published
from edgeface.daemon.service import EXIT_OK, SystemdNotifier, Throttled, install_stop_handlers
from edgeface.daemon.sinks.base import Sink
from edgeface.daemon.snapshots import SnapshotWriter
from edgeface.daemon.sources import Capture, Frame
from edgeface.daemon.stats import RunStats, process_status
from edgeface.recognition.pipeline import FacePipeline
from edgeface.recognition.records import FrameResult

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle
    from edgeface.daemon.http import Reply, Request
    from edgeface.daemon.server import HttpServer
    from edgeface.daemon.sources import FrameSource

log = logging.getLogger("edgeface.daemon")

HTTP_TOKEN_CREDENTIAL, HTTP_TOKEN_ENV = "http-token", "EDGEFACE_HTTP_TOKEN"
RETRY_SECONDS = 5.0
RETRY_WARNING = Throttled()


# Called once the run's parts exist, before the HTTP server answers: an observer of every frame that may add
# routes to the server, or None for nothing (the web page, ``edgeface.web``, which sits above the daemon and is
# passed in by the CLI, answers None when its config says it is off). Called again for each run after a SIGHUP.
Extension = Callable[["Daemon"], "FrameObserver | None"]


@dataclass
class Loaded:
    """What a config loads from disk before anything runs: the bundle, the face pipeline (its gallery read),
    the source (not opened yet) and the HTTP token. A reload loads the new config's while the running one
    goes on, so a reload that fails to load keeps the running state and re-reads nothing."""

    config: DaemonConfig
    bundle: "Bundle"
    pipeline: FacePipeline
    source: "FrameSource"
    http_token: str | None


def load(config: DaemonConfig) -> Loaded:
    """Read and check everything ``config`` names; errors are one ``EdgefaceError`` line."""
    from edgeface.core.bundle import load_bundle
    from edgeface.daemon.access import MIN_TOKEN_CHARS
    from edgeface.daemon.secrets import read_secret

    bundle = load_bundle(config.bundle)
    source = _open_source(config)
    token = (read_secret("[http] token", config.http.token_file, HTTP_TOKEN_CREDENTIAL, HTTP_TOKEN_ENV,
                         min_chars=MIN_TOKEN_CHARS) if config.http.enabled else None)
    pipeline = FacePipeline(bundle, config.threads, config.detect, config.tracking, config.recognition,
                            config.visits, config.identity_threshold, config.gallery, config.similarity_threshold,
                            camera=config.device)
    return Loaded(config, bundle, pipeline, source, token)


def _open_source(config: DaemonConfig) -> "FrameSource":
    """The config's source, checked (a path must exist) but not opened: the capture thread opens it."""
    from edgeface.daemon.sources import open_source

    return open_source(config.source, config.capture.width, config.capture.height, config.capture.fps,
                       loop=config.capture.loop)


class Daemon:
    """One run of ``edgeface run``: everything is opened and checked in the constructor (errors are one line,
    exit code 2), then ``run`` loops until the source ends, ``stop`` is set, or a signal arrives.

    ``extensions`` are called with the daemon once its pipeline, sinks and server exist; each returns an
    observer that sees every processed frame with its image. ``loaded``: what ``load(config)`` gives, when
    it was loaded already (a reload). ``failures``: reloads that failed before this run began, for /healthz.
    """

    def __init__(self, config: DaemonConfig, extensions: Sequence[Extension] = (), loaded: Loaded | None = None,
                 failures: "Failures | None" = None) -> None:
        from edgeface.daemon.sinks.jsonl import JsonLinesSink
        from edgeface.daemon.sinks.mqtt import MqttSink
        from edgeface.runtime.litert import runtime_name

        self.loaded = loaded = loaded if loaded is not None else load(config)
        self.config = config = loaded.config
        self.bundle = loaded.bundle
        self.source = loaded.source
        self.pipeline = loaded.pipeline
        drop = config.capture.drop_stale
        latest_only = self.source.live if drop == "auto" else drop == "yes"
        self.capture = Capture(self.source, latest_only, config.capture.retry_max, pace_fps=config.capture.fps)
        self.runtime = runtime_name()
        self.stats = RunStats()
        self.failures = failures if failures is not None else Failures()
        self.next: Loaded | None = None  # a reload that loaded: what the next run runs
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
        from edgeface.daemon.http import Reply
        from edgeface.daemon.secrets import redact
        from edgeface.daemon.server import HttpServer

        hosts = [h for h in f"{config.hosts},{self.config.web.hosts}".split(",") if h.strip()]
        server = HttpServer(config.host, config.port, token=self.loaded.http_token, hosts=hosts,
                            timeout=config.timeout,
                            max_connections=config.max_connections)

        def healthz(request: Request) -> Reply:
            healthy, details = self.health()
            reply = Reply.json(details, 200 if healthy else 503)
            return replace(reply, body=redact(reply.body.decode()).encode())  # a source URL's password

        server.route("GET", "/healthz", healthz)
        server.route("GET", "/labels", lambda request: Reply.json(self.latest_labels()))
        server.route("GET", "/metrics", lambda request: Reply(
            200, self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8"))
        return server

    def latest_labels(self) -> dict[str, Any]:
        """The latest processed frame as a JSON-lines record (``/labels``)."""
        item = self.latest
        return {"time": None, "frame": None, "faces": []} if item is None else item.result.to_dict()

    # --- health and metrics --------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the source is connected, a frame was processed within ``[http] stale_after``, and no
        sink has failed to deliver for longer than its ``unhealthy_after``.

        A reload or gallery re-read that failed does not make it unhealthy: the daemon labels on with the
        state that last loaded, and ``reload_failed`` says what failed, why and since when."""
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
            "reload_failed": self.failures.status(self.pipeline.labeler.failure),
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

    def run(self, stop: threading.Event | None = None, reloading: threading.Event | None = None,
            reload: Callable[[], DaemonConfig] | None = None) -> int:
        """Loop until the source ends or ``stop`` is set; returns exit code 0.

        When ``reloading`` is set (SIGHUP) and ``reload`` is given, the new config is read and loaded here,
        while this run goes on: if that fails, the failure is logged and shown in /healthz and this run goes
        on unchanged; if it loads, this run stops (flushing its outputs, systemd told it reloads) with
        ``self.next`` holding what the next run runs."""
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
                if reloading is not None and reloading.is_set() and reload is not None:
                    reloading.clear()
                    self.next = self._load_again(reload)
                    if self.next is not None:
                        break
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
            if self.next is not None:
                notifier.reloading()
            else:
                notifier.stopping()
            self.close()
            notifier.close()
            log.info("stopped: %s", self.status_line())
            log.info("summary %s", json.dumps({**self.stats.summary(), **process_status(),
                                                "dropped": self.capture.stats.dropped,
                                                "corrupt": self.capture.stats.corrupt}))

    def _load_again(self, reload: Callable[[], DaemonConfig]) -> Loaded | None:
        """The config read and loaded again (SIGHUP), or None, logged once and kept for /healthz, when that
        fails: this run then goes on as it was."""
        from edgeface.core.errors import EdgefaceError

        log.info("reloading the configuration")
        try:
            loaded = load(reload())
        except EdgefaceError as exc:
            self.failures.failed("config", str(exc))
            return None
        return loaded

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


class Failures:
    """Reloads that failed, for /healthz and the log: what failed, the error, since when; each logged once."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None

    def failed(self, what: str, error: str) -> None:
        if self.config is None or self.config["error"] != error:
            log.error("reload: %s; keeping the previous configuration", error)
            self.config = {"what": what, "error": error, "since": _now()}

    def status(self, gallery: dict[str, Any] | None) -> dict[str, Any] | None:
        """``{"config": {...}, "gallery": {...}}`` for what failed, None when nothing did."""
        failed = {key: value for key, value in (("config", self.config), ("gallery", gallery)) if value}
        return failed or None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_daemon(config: DaemonConfig, stop: threading.Event | None = None,
               reload: Callable[[], DaemonConfig] | None = None, extensions: Sequence[Extension] = ()) -> int:
    """Open everything (one-line errors), run until the source ends or SIGTERM/SIGINT, return the exit code.

    The signal handlers are in place before the model loads, so a stop during start-up is clean too. With
    ``reload`` (which reads the config again), SIGHUP loads the config ``reload`` returns while the run goes
    on (``Daemon.run``); only once it loaded is the run stopped, flushed, and a new one started with it. If
    its outputs then fail to open (a port taken, a folder gone), the previous run's loaded state starts again,
    nothing re-read. A reload never ends the daemon. Without ``reload``, SIGHUP stops like SIGTERM.
    """
    from edgeface.daemon.server import raise_open_files_limit

    stop = stop or threading.Event()
    reload_requested = threading.Event()
    undo_signals = install_stop_handlers(stop, reload_requested if reload is not None else None)
    raise_open_files_limit()
    try:
        daemon = Daemon(config, extensions)
        while True:
            code = daemon.run(stop, reload_requested, reload)
            if daemon.next is None or stop.is_set():
                return code
            restarted = _start_again(daemon, extensions, stop)
            if restarted is None:
                return code
            daemon = restarted
    finally:
        undo_signals()


def _start_again(previous: Daemon, extensions: Sequence[Extension], stop: threading.Event) -> Daemon | None:
    """The run after a reload: the new loaded state, or, if its outputs do not open, the previous one (tried
    again every few seconds while even that fails: a port another program took meanwhile). None: stopped."""
    from edgeface.core.errors import EdgefaceError

    loaded = previous.next
    assert loaded is not None
    try:
        daemon = Daemon(loaded.config, extensions, loaded)
        log.info("reloaded the configuration from %s", loaded.config.origin)
        return daemon
    except EdgefaceError as exc:
        previous.failures.failed("config", str(exc))
    notifier = SystemdNotifier()
    try:
        while not stop.is_set():
            try:
                # The previous pipeline as it was (nothing re-read); a new source object, since the previous
                # one may still be held by a capture thread stuck in a camera read.
                again = replace(previous.loaded, source=_open_source(previous.config))
                return Daemon(previous.config, extensions, again, previous.failures)
            except EdgefaceError as exc:
                RETRY_WARNING.warning("the previous configuration does not start again either: %s; retrying", exc)
                notifier.watchdog()
                stop.wait(RETRY_SECONDS)
        return None
    finally:
        notifier.close()

"""Frames to labels, and the run loop around it.

``FacePipeline.process`` takes one RGB frame through detect -> align -> one batched inference for all its
faces -> tracking and smoothing -> ``Labeler``, timing each stage. ``Daemon`` wires a source (on its capture
thread), the pipeline and the sinks together, answers health and metrics, and stops cleanly.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeface import __version__
from edgeface.daemon.config import DaemonConfig, DetectConfig, TrackingConfig
from edgeface.daemon.service import EXIT_OK, SystemdNotifier, install_stop_handlers
from edgeface.core.results import FaceLabels

if TYPE_CHECKING:
    from edgeface.daemon.sinks import Published, Sink
    from edgeface.daemon.sources import Frame
    from edgeface.core.bundle import Bundle

log = logging.getLogger("edgeface.daemon")

STAGES = ("capture", "detect", "crop", "infer", "track", "publish")


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame: where it is, which track it belongs to, and its (smoothed) labels."""

    box: tuple[float, float, float, float]
    track: int
    labels: FaceLabels

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], "track": self.track, **self.labels.to_dict()}


@dataclass(frozen=True)
class FrameResult:
    """All faces of one processed frame, and the seconds each stage took on it."""

    time: float
    index: int
    faces: tuple[FaceResult, ...]
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "frame": self.index, "faces": [f.to_dict() for f in self.faces]}

    def signature(self) -> tuple:
        """What 'changed' compares: the tracks on screen and their labels (not scores or boxes)."""
        return tuple(sorted((f.track, f.labels.identity.label, f.labels.emotion.label, f.labels.gender.label)
                            for f in self.faces))


class FacePipeline:
    """Detector, engine, tracker and labeler for one bundle; ``process`` one frame at a time."""

    def __init__(self, bundle: "Bundle", threads: int = 2, detect: DetectConfig = DetectConfig(),
                 tracking: TrackingConfig = TrackingConfig(), identity_threshold: float | None = None,
                 gallery: str = "", similarity_threshold: float | None = None) -> None:
        from edgeface.daemon.tracking import Tracker
        from edgeface.faces.detect import create_detector
        from edgeface.runtime.engine import LiteRTEngine
        from edgeface.runtime.labeler import Labeler

        self.spec = bundle.spec
        self.detector = create_detector(detect.detector or bundle.spec.crop.detector)
        if hasattr(self.detector, "min_score"):
            self.detector.min_score = detect.min_score
        self.min_face = detect.min_face or bundle.spec.crop.min_face
        self.max_faces = detect.max_faces
        self.engine = LiteRTEngine.from_bundle(bundle, num_threads=threads)
        # Enrolled people and thresholds: flags, then the gallery's calibration, then the bundle (docs/identity.md).
        self.labeler = Labeler.for_bundle(bundle, identity_threshold, similarity_threshold, gallery)
        self.tracker = Tracker(tracking.iou, tracking.max_missed, tracking.smoothing)

    def warm_up(self) -> None:
        """Run each model once, so the first real frame is not the slow one (delegate set-up)."""
        size = self.spec.input_size
        self.detector.detect(np.zeros((240, 320, 3), np.uint8))
        self.engine.predict(np.zeros((1, size, size, 3), np.uint8))

    def process(self, image: np.ndarray, index: int = 0, when: float | None = None, capture_s: float = 0.0
                ) -> FrameResult:
        from edgeface.faces.align import align_faces

        timings = {"capture": capture_s}
        t0 = time.perf_counter()
        faces = [f for f in self.detector.detect(image) if f.height >= self.min_face]
        if len(faces) > self.max_faces:
            faces = sorted(faces, key=lambda f: -f.area)[:self.max_faces]
        t1 = time.perf_counter()
        crops = align_faces(image, faces, self.spec.crop, self.spec.input_size)
        t2 = time.perf_counter()
        outputs = self.engine.predict(crops) if faces else {}
        t3 = time.perf_counter()
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        tracks, smoothed = self.tracker.update(boxes, outputs)
        labels = self.labeler(smoothed) if faces else []
        t4 = time.perf_counter()
        timings.update(detect=t1 - t0, crop=t2 - t1, infer=t3 - t2, track=t4 - t3)
        results = tuple(FaceResult(tuple(float(v) for v in f.box), track, label)  # type: ignore[arg-type]
                        for f, track, label in zip(faces, tracks, labels))
        return FrameResult(time=time.time() if when is None else when, index=index, faces=results, timings=timings)


class RunStats:
    """Counters and per-stage time sums of a run (read by /healthz, /metrics and the status line)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.processed = 0
        self.faces = 0
        self.faces_current = 0
        self.stage_sum = dict.fromkeys(STAGES, 0.0)
        self.first_processed: float | None = None
        self.last_processed: float | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=30)

    def record(self, result: FrameResult) -> None:
        now = time.monotonic()
        self.processed += 1
        self.faces += len(result.faces)
        self.faces_current = len(result.faces)
        for stage, seconds in result.timings.items():
            self.stage_sum[stage] = self.stage_sum.get(stage, 0.0) + seconds
        if self.first_processed is None:
            self.first_processed = now
        self.last_processed = now
        self._recent.append(now)

    def summary(self) -> dict[str, Any]:
        """The run in numbers: mean fps from first to last frame, mean milliseconds per stage."""
        span = (self.last_processed or 0.0) - (self.first_processed or 0.0)
        return {
            "frames": self.processed, "faces": self.faces,
            "fps": round((self.processed - 1) / span, 2) if span > 0 else None,
            "stage_ms": {s: round(1000 * v / self.processed, 2) for s, v in self.stage_sum.items()}
            if self.processed else {},
        }

    @property
    def fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0


class SnapshotWriter:
    """Frames with faces, written only when the user configured a folder (privacy: off by default)."""

    def __init__(self, folder: Path, interval: float, max_files: int) -> None:
        self.folder = folder
        self.interval = interval
        self.max_files = max_files
        self._last = -float("inf")
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)

    def maybe_write(self, image: np.ndarray, item: "Published") -> None:
        from edgeface.core.imageio import write_image

        now = time.monotonic()
        if not item.result.faces or now - self._last < self.interval:
            return
        self._last = now
        stem = self.folder / f"snapshot-{int(item.result.time * 1000)}-{item.result.index}"
        try:
            write_image(stem.with_suffix(".jpg"), image)
            stem.with_suffix(".json").write_text(item.json + "\n")
            self.written += 1
            files = sorted(self.folder.glob("snapshot-*.jpg"), key=lambda p: p.stat().st_mtime)
            for old in files[:max(0, len(files) - self.max_files)]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except Exception as exc:  # a full disk must not stop the labelling
            log.warning("snapshot %s not written: %s", stem, exc)


class Daemon:
    """One run of ``edgeface run``: everything is opened and checked in the constructor (errors are one line,
    exit code 2), then ``run`` loops until the source ends, ``stop`` is set, or a signal arrives."""

    def __init__(self, config: DaemonConfig) -> None:
        from edgeface.daemon.sinks import HttpSink, JsonLinesSink, MqttSink
        from edgeface.daemon.sources import Capture, open_source
        from edgeface.core.bundle import load_bundle
        from edgeface.runtime.litert import runtime_name

        self.config = config
        self.bundle = load_bundle(config.bundle)
        self.source = open_source(config.source, config.capture.width, config.capture.height, config.capture.fps,
                                  loop=config.capture.loop)
        drop = config.capture.drop_stale
        latest_only = self.source.live if drop == "auto" else drop == "yes"
        self.capture = Capture(self.source, latest_only, config.capture.retry_max, pace_fps=config.capture.fps)
        self.pipeline = FacePipeline(self.bundle, config.threads, config.detect, config.tracking,
                                     config.identity_threshold, config.gallery, config.similarity_threshold)
        self.runtime = runtime_name()
        self.stats = RunStats()
        self.sinks: list[Sink] = []
        self.http: HttpSink | None = None
        self.snapshots = (SnapshotWriter(Path(config.snapshots.dir), config.snapshots.interval,
                                         config.snapshots.max_files) if config.snapshots.dir else None)
        try:
            if config.http.enabled:
                self.http = HttpSink(config.http, self.health, self.metrics_text)
                self.sinks.append(self.http)
            if config.jsonl_on:
                self.sinks.append(JsonLinesSink(config.jsonl.path, config.jsonl.publish, config.jsonl.max_bytes,
                                                config.jsonl.backups, config.jsonl.queue))
            if config.mqtt_on:
                self.sinks.append(MqttSink(config.mqtt, config.device, self.bundle.path.stem))
            if self.http is not None:
                self.http.start()
        except BaseException:
            self._close_sinks(0.5)
            raise
        self._last_signature: tuple = ()

    # --- health and metrics --------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the source is connected and a frame was processed within ``[http] stale_after``."""
        stats, capture = self.stats, self.capture.stats
        age = None if stats.last_processed is None else time.monotonic() - stats.last_processed
        if not capture.connected:
            reason = capture.last_error or "source not opened yet"
        elif age is None:
            reason = "no frame processed yet"
        elif age > self.config.http.stale_after:
            reason = f"no frame processed for {age:.1f} s"
        else:
            reason = ""
        return not reason, {
            "status": "unhealthy" if reason else "ok", "reason": reason or None,
            "source": self.source.name, "source_connected": capture.connected,
            "frames": stats.processed, "fps": round(stats.fps, 2),
            "last_frame_age_s": None if age is None else round(age, 3),
            "uptime_s": round(time.monotonic() - stats.started, 1),
            "bundle": self.bundle.path.name, "precision": self.bundle.precision,
            "model_sha256": self.bundle.model_sha256,
            "dropped": capture.dropped, "corrupt": capture.corrupt,
        }

    def metrics_text(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        stats, capture = self.stats, self.capture.stats
        lines: list[str] = []

        def metric(name: str, kind: str, help: str, samples: Mapping[str, float] | float) -> None:
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")
            if isinstance(samples, Mapping):
                lines.extend(f"{name}{{{labels}}} {value:g}" for labels, value in samples.items())
            else:
                lines.append(f"{name} {samples:g}")

        info = (f'version="{__version__}",bundle="{self.bundle.path.name}",precision="{self.bundle.precision}",'
                f'runtime="{self.runtime}"')
        metric("edgeface_info", "gauge", "Build and model information.", {info: 1})
        metric("edgeface_uptime_seconds", "gauge", "Seconds since the daemon started.",
               time.monotonic() - stats.started)
        healthy, _ = self.health()
        metric("edgeface_healthy", "gauge", "1 when /healthz answers 200.", float(healthy))
        metric("edgeface_source_connected", "gauge", "1 while the frame source delivers.", float(capture.connected))
        metric("edgeface_source_reconnects_total", "counter", "Times the source was opened again after a loss.",
               capture.reconnects)
        metric("edgeface_frames_captured_total", "counter", "Frames read from the source.", capture.captured)
        metric("edgeface_frames_processed_total", "counter", "Frames run through the pipeline.", stats.processed)
        metric("edgeface_frames_dropped_total", "counter", "Stale frames replaced by a newer one before processing.",
               capture.dropped)
        metric("edgeface_frames_corrupt_total", "counter", "Unusable frames skipped.", capture.corrupt)
        metric("edgeface_faces_total", "counter", "Faces labelled.", stats.faces)
        metric("edgeface_faces", "gauge", "Faces in the latest processed frame.", stats.faces_current)
        metric("edgeface_fps", "gauge", "Processed frames per second over the last 30 frames.", stats.fps)
        stage_sum = {f'stage="{s}"': v for s, v in stats.stage_sum.items()}
        metric("edgeface_stage_seconds_sum", "counter", "Seconds spent per pipeline stage.", stage_sum)
        metric("edgeface_stage_seconds_count", "counter", "Frames timed per stage.",
               {f'stage="{s}"': stats.processed for s in stats.stage_sum})
        per_sink = {sink.name: sink.metrics() for sink in self.sinks}
        for key, kind, help in (("sent", "counter", "Records delivered (HTTP: requests answered)."),
                                ("dropped", "counter", "Records dropped: buffer full or undelivered at stop."),
                                ("errors", "counter", "Failed deliveries (retried)."),
                                ("queued", "gauge", "Records waiting in the buffer."),
                                ("connected", "gauge", "1 while connected (MQTT)."),
                                ("connects", "counter", "Connections made (MQTT).")):
            values = {f'sink="{name}"': m[key] for name, m in per_sink.items() if key in m}
            if values:
                suffix = "_total" if kind == "counter" else ""
                metric(f"edgeface_sink_{key}{suffix}", kind, help, values)
        process = process_status()
        if process:
            metric("process_resident_memory_bytes", "gauge", "Resident memory.", process["rss_bytes"])
            metric("process_open_fds", "gauge", "Open file descriptors.", process["open_fds"])
            metric("process_threads", "gauge", "OS threads.", process["threads"])
        return "\n".join(lines) + "\n"

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> int:
        """Loop until the source ends or ``stop`` is set; returns exit code 0."""
        stop = stop or threading.Event()
        notifier = SystemdNotifier()
        from edgeface.daemon.sinks import Published
        from edgeface.daemon.sources import Capture

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
                    break
                if item is not None:
                    self._handle(item, Published)  # type: ignore[arg-type]
                    if max_frames and self.stats.processed >= max_frames:
                        break
                if status_every and time.monotonic() >= next_status:
                    next_status = time.monotonic() + status_every
                    line = self.status_line()
                    log.info("%s", line)
                    notifier.status(line)
            return EXIT_OK
        finally:
            notifier.stopping()
            self.close()
            notifier.close()
            log.info("stopped: %s", self.status_line())
            log.info("summary %s", json.dumps({**self.stats.summary(), **process_status(),
                                                "dropped": self.capture.stats.dropped,
                                                "corrupt": self.capture.stats.corrupt}))

    def _handle(self, frame: "Frame", published_type: type) -> None:
        result = self.pipeline.process(frame.image, frame.index, frame.time, frame.capture_s)
        start = time.perf_counter()
        signature = result.signature()
        item = published_type(result, signature != self._last_signature)
        self._last_signature = signature
        for sink in self.sinks:
            sink.publish(item)
        if self.snapshots is not None:
            self.snapshots.maybe_write(frame.image, item)
        timings = dict(result.timings, publish=time.perf_counter() - start)
        self.stats.record(FrameResult(result.time, result.index, result.faces, timings))

    def status_line(self) -> str:
        c = self.capture.stats
        sinks = ", ".join(f"{s.name} {int(m['sent'])} sent {int(m['dropped'])} dropped"
                          for s, m in ((s, s.metrics()) for s in self.sinks))
        return (f"{self.stats.processed} frames ({self.stats.fps:.1f} fps), {self.stats.faces} faces, "
                f"{c.dropped} stale dropped, {c.corrupt} corrupt, source "
                f"{'connected' if c.connected else 'DISCONNECTED'}; {sinks}")

    def close(self) -> None:
        """Stop capture and flush the sinks, within about 1.5 s in all."""
        deadline = time.monotonic() + 1.5
        self.capture.stop(timeout=0.4)
        self._close_sinks(deadline - time.monotonic())

    def _close_sinks(self, budget: float) -> None:
        deadline = time.monotonic() + budget
        for sink in self.sinks:
            try:
                sink.close(max(0.05, deadline - time.monotonic()))
            except Exception as exc:  # one sink failing to close must not keep the others open
                log.warning("%s sink: error while closing: %s", sink.name, exc)


def process_status(pid: int | str = "self") -> dict[str, int]:
    """Resident memory, peak resident memory, threads and open files of a process, from /proc (Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return {
            "rss_bytes": int(fields["VmRSS"].split()[0]) * 1024,
            "peak_rss_bytes": int(fields["VmHWM"].split()[0]) * 1024,
            "threads": int(fields["Threads"]),
            "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        }
    except (OSError, KeyError, ValueError):
        return {}


def run_daemon(config: DaemonConfig, stop: threading.Event | None = None) -> int:
    """Open everything (one-line errors), run until the source ends or SIGTERM/SIGINT, return the exit code.

    The signal handlers are in place before the model loads, so a stop during start-up is clean too.
    """
    stop = stop or threading.Event()
    undo_signals = install_stop_handlers(stop)
    try:
        return Daemon(config).run(stop)
    finally:
        undo_signals()

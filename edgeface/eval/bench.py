"""Latency, size and memory of bundles on this device: what ``edgeface bench`` runs (no TensorFlow, no pytest).

Measured, per bundle and thread count:

* **per-face latency**: one aligned crop through ``LiteRTEngine.predict`` (batch 1), including the input
  quantization and output dequantization the runtime does for every face;
* **full frame**: face detection + alignment + one batched inference, on a 640x480 frame with 1 and with 3
  faces (synthetic people drawn by ``edgeface.data.synthetic``, or the user's own photo);
* **peak memory**: peak resident set size of a fresh process that loads the bundle and runs it
  (``edgeface.eval.memprobe``), and how much of it the model adds;
* **face detection** alone, once per frame (it does not depend on the model).

All (bundle, thread count) engines are created first, then timed round-robin, one call each per round: a
burst of load from another process slows every model alike, so the ratios between them (int8 vs float32)
hold even on a busy machine. Latencies are wall-clock milliseconds; p50 is the median, p95 the 95th
percentile.

``BenchReport.to_dict()`` is the ``--json`` output (stable shape, fields may be added)::

    {"format": "edgeface-bench", "format_version": 1, "created": ..., "edgeface_version": ...,
     "machine": {"platform": ..., "machine": ..., "cpu": ..., "cpu_count": ..., "python": ...,
                 "runtime": "ai_edge_litert", "runtime_version": ...},
     "runs": R, "warmup": W,
     "frames": [{"label": "1 face", "size": [640, 480], "faces": 1, "detector": "blazeface",
                 "detection": STATS}, ...],
     "models": [{"path": ..., "name": ..., "precision": ..., "backbone": ..., "input_size": ...,
                 "size_bytes": ..., "file_bytes": ..., "sha256": ..., "threads": T,
                 "face": STATS, "frames": {"1 face": STATS, ...},
                 "memory": {"baseline_kib": ..., "peak_kib": ..., "model_kib": ...} or null}, ...]}

    STATS = {"runs": ..., "mean_ms": ..., "p50_ms": ..., "p95_ms": ..., "min_ms": ..., "max_ms": ...}
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.version import __version__
from edgeface.eval.memprobe import MemoryUsage, measure_memory
from edgeface.eval.models import ModelInfo, describe_model, display_names

FORMAT = "edgeface-bench"
FORMAT_VERSION = 1
FRAME_SIZE = (480, 640)  # (h, w): a usual camera preview size on the Pi


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        if ms.size == 0:
            raise EdgefaceError("no timings to summarise")
        return cls(int(ms.size), float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                   float(ms.min()), float(ms.max()))

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Frame:
    label: str
    image: np.ndarray  # RGB uint8
    faces: int  # faces the detector finds in it


@dataclass(frozen=True)
class ModelBench:
    model: ModelInfo
    name: str
    threads: int
    face: LatencyStats
    frames: dict[str, LatencyStats] = field(default_factory=dict)
    memory: MemoryUsage | None = None


@dataclass(frozen=True)
class BenchReport:
    models: tuple[ModelBench, ...]
    frames: tuple[tuple[Frame, str, LatencyStats], ...]  # (frame, detector name, detection latency)
    runs: int
    warmup: int
    machine: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "edgeface_version": __version__,
            "machine": dict(self.machine), "runs": self.runs, "warmup": self.warmup,
            "frames": [{"label": f.label, "size": [int(f.image.shape[1]), int(f.image.shape[0])], "faces": f.faces,
                        "detector": detector, "detection": stats.to_dict()} for f, detector, stats in self.frames],
            "models": [{
                "path": str(m.model.path), "name": m.name, "kind": m.model.kind, "precision": m.model.precision,
                "backbone": m.model.backbone, "input_size": m.model.spec.input_size,
                "size_bytes": m.model.size_bytes, "file_bytes": m.model.file_bytes, "sha256": m.model.sha256,
                "source_sha256": m.model.source_sha256, "threads": m.threads,
                "face": m.face.to_dict(), "frames": {k: v.to_dict() for k, v in m.frames.items()},
                "memory": m.memory.to_dict() if m.memory else None,
            } for m in self.models],
        }


def cpu_model() -> str:
    """The CPU's name: x86's "model name", a Raspberry Pi's "Model" (the board, last in /proc/cpuinfo)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                cpu = value.strip()
    except OSError:
        pass
    return cpu


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, core count, Python, and the TFLite runtime and its version."""
    from importlib import metadata

    from edgeface.runtime.litert import runtime_name

    cpu = cpu_model()
    runtime = runtime_name()
    distribution = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(runtime, runtime)
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "runtime": runtime,
            "runtime_version": version}


def time_round_robin(calls: Mapping[Hashable, Callable[[], Any]], runs: int, warmup: int = 5,
                     progress: bool = False, desc: str = "timing") -> dict[Hashable, LatencyStats]:
    """Time each call ``runs`` times, one call of each per round (see the module docstring for why)."""
    from edgeface.core.progress import progress_bar

    if runs < 1:
        raise EdgefaceError(f"runs must be 1 or more, got {runs}")
    for call in calls.values():
        for _ in range(warmup):  # the first calls pack weights and fault pages in
            call()
    seconds: dict[Hashable, list[float]] = {key: [] for key in calls}
    clock = time.perf_counter
    for _ in progress_bar(range(runs), desc=desc, unit="round", enabled=None if progress else False):
        for key, call in calls.items():
            start = clock()
            call()
            seconds[key].append(clock() - start)
    return {key: LatencyStats.from_seconds(values) for key, values in seconds.items()}


def synthetic_frames(counts: Sequence[int] = (1, 3), size: tuple[int, int] = FRAME_SIZE,
                     seed: int = 0) -> list[tuple[str, np.ndarray, int]]:
    """Camera-sized frames with ``n`` synthetic people side by side: (label, RGB image, faces drawn)."""
    from edgeface.data.synthetic import composite_frame, head_width, make_people, render_head

    h, w = size
    people = make_people(max(counts), seed=seed)
    frames = []
    for n in counts:
        face_w = 0.16 * w  # about 100 px at 640: a person a metre or two from the camera
        layers = []
        for i in range(n):
            sprite = render_head(people[i], ("neutral", "happy")[i % 2], np.random.default_rng([seed, i]),
                                 width=head_width(1.2 * face_w))
            layers.append((sprite, ((i + 0.5) * w / n, 0.42 * h, face_w)))
        image, _ = composite_frame((h, w), layers, np.random.default_rng([seed, n]))
        frames.append((f"{n} face{'s' if n > 1 else ''}", image, n))
    return frames


def bench_models(models: Sequence[str | Path], threads: Sequence[int] = (1, 2), runs: int = 100,
                 warmup: int = 5, frame_runs: int | None = None, frames: bool = True, memory: bool = True,
                 image: str | Path | None = None, progress: bool = False,
                 on_log: Callable[[str], None] = lambda _: None) -> BenchReport:
    """Measure bundles on this device. ``image``: the user's own photo instead of the synthetic frames."""
    from edgeface.faces.align import align_faces
    from edgeface.faces.detect import create_detector
    from edgeface.runtime.engine import LiteRTEngine

    if not models:
        raise EdgefaceError("give at least one bundle to measure")
    if not threads or any(t < 1 for t in threads):
        raise EdgefaceError(f"thread counts must be 1 or more, got {list(threads)}")
    infos = [describe_model(path) for path in models]
    keras = [str(i.path) for i in infos if i.kind != "bundle"]
    if keras:
        raise EdgefaceError(f"{keras[0]}: bench measures bundles (what the device runs); convert it first "
                            "with `edgeface convert`")
    names = display_names(infos)
    threads = list(dict.fromkeys(threads))
    frame_runs = frame_runs or max(runs // 3, 5)

    on_log(f"loading {len(infos)} bundle(s) x {len(threads)} thread count(s)")
    engines = {(i, t): LiteRTEngine.from_bundle(info.path, num_threads=t)
               for i, info in enumerate(infos) for t in threads}
    rng = np.random.default_rng(0)
    crops = {size: rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
             for size in {info.spec.input_size for info in infos}}
    face_calls: dict[Hashable, Callable[[], Any]] = {
        key: partial(engine.predict, crops[engine.spec.input_size]) for key, engine in engines.items()}
    on_log(f"per-face latency: {runs} rounds")
    face_stats = time_round_robin(face_calls, runs, warmup, progress, desc="per-face latency")

    frame_rows: list[tuple[Frame, str, LatencyStats]] = []
    frame_stats: dict[Hashable, LatencyStats] = {}
    if frames:
        from edgeface.core.imageio import read_image

        pictures: Sequence[tuple[str, np.ndarray, int | None]]
        if image is not None:
            pictures = [(Path(image).name, read_image(image), None)]
        else:
            pictures = synthetic_frames()
        detectors = {name: create_detector(name) for name in {info.spec.crop.detector for info in infos}}
        frame_list = []
        detect_calls: dict[Hashable, Callable[[], Any]] = {}
        for label, picture, drawn in pictures:
            found = {name: len(d.detect(picture)) for name, d in detectors.items()}
            for name, count in found.items():
                if drawn is not None and count != drawn:
                    on_log(f"note: {name} finds {count} of the {drawn} faces in the '{label}' frame")
                elif count == 0:
                    on_log(f"note: {name} finds no face in {label}: its frame times are detection alone")
            frame_list.append(Frame(label, picture, max(found.values())))
            for name, detector in detectors.items():
                detect_calls[(label, name)] = partial(detector.detect, picture)
        frame_calls: dict[Hashable, Callable[[], Any]] = dict(detect_calls)
        for (i, t), engine in engines.items():
            spec = infos[i].spec
            detector = detectors[spec.crop.detector]
            for frame in frame_list:
                def run(d=detector, e=engine, p=frame.image, s=spec) -> Any:
                    faces = [f for f in d.detect(p) if f.height >= s.crop.min_face]
                    return e.predict(align_faces(p, faces, s.crop, s.input_size))
                frame_calls[(i, t, frame.label)] = run
        on_log(f"detection and full frames: {frame_runs} rounds")
        frame_stats = time_round_robin(frame_calls, frame_runs, min(warmup, 3), progress, desc="frames")
        for frame in frame_list:
            for name in detectors:
                frame_rows.append((frame, name, frame_stats[(frame.label, name)]))

    del engines  # free the interpreters before the memory probes start their own
    results = []
    for i, info in enumerate(infos):
        for t in threads:
            usage = measure_memory(info.path, num_threads=t) if memory else None
            per_frame = {row[0].label: frame_stats[(i, t, row[0].label)] for row in frame_rows
                         if (i, t, row[0].label) in frame_stats}
            results.append(ModelBench(info, names[i], t, face_stats[(i, t)], per_frame, usage))
    return BenchReport(tuple(results), tuple(frame_rows), runs, warmup, machine_info())

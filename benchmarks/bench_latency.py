"""Per-face inference latency per precision and thread count, face detection, and whole frames.

Timing assertions do not belong here: the one speed check (int8 faster than float32, from the same run) is
``benchmarks/check_speedup.py`` reading the ``--benchmark-json`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmodels import PRECISIONS, BenchModel

THREADS = (1, 2)


def _extra(benchmark: Any, model: BenchModel, kind: str, **info: Any) -> None:
    benchmark.extra_info.update({"kind": kind, "backbone": model.backbone, "input_size": model.input_size, **info})


# precision varies fastest, so float32 and int8 of one thread count run close together in time
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thread")
def test_face_latency(benchmark: Any, bench_model: BenchModel, bench_bundles: dict[str, Path],
                      bundle_memory: dict[str, Any], precision: str, threads: int) -> None:
    """One aligned face through the engine (batch 1), as the device runs it for every face."""
    from edgeface.eval.models import describe_model
    from edgeface.runtime.engine import LiteRTEngine

    engine = LiteRTEngine.from_bundle(bench_bundles[precision], num_threads=threads)
    size = engine.spec.input_size
    crop = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(5):  # XNNPACK packs weights on the first calls
        engine.predict(crop)
    memory = bundle_memory[precision]
    benchmark.group = f"face {bench_model.key}, {threads} thread{'s' if threads > 1 else ''}"
    info = describe_model(bench_bundles[precision])
    _extra(benchmark, bench_model, "face", precision=precision, threads=threads,
           size_bytes=info.size_bytes, file_bytes=info.file_bytes,
           peak_rss_kib=memory.peak_kib if memory else None, model_rss_kib=memory.model_kib if memory else None)
    out = benchmark(engine.predict, crop)
    assert out["identity"].shape == (1, bench_model.people)  # the model really ran


@pytest.mark.parametrize("faces", [1, 3], ids=lambda n: f"{n}face")
def test_face_detection(benchmark: Any, frames: dict[int, np.ndarray], faces: int) -> None:
    """BlazeFace on a 640x480 frame (independent of the face model)."""
    from edgeface.faces.detect import create_detector

    detector = create_detector("blazeface")
    frame = frames[faces]
    assert len(detector.detect(frame)) == faces  # the frame is what it claims to be
    benchmark.group = "detection 640x480"
    benchmark.extra_info.update({"kind": "detection", "faces": faces, "detector": detector.name})
    benchmark(detector.detect, frame)


@pytest.mark.parametrize("faces", [1, 3], ids=lambda n: f"{n}face")
def test_frame(benchmark: Any, bench_model: BenchModel, bench_bundles: dict[str, Path],
               frames: dict[int, np.ndarray], faces: int) -> None:
    """A whole frame as the daemon handles it: detect, align every face, one batched int8 inference."""
    from edgeface.faces.align import align_faces
    from edgeface.faces.detect import create_detector
    from edgeface.runtime.engine import LiteRTEngine

    engine = LiteRTEngine.from_bundle(bench_bundles["int8"], num_threads=1)
    spec = engine.spec
    detector = create_detector(spec.crop.detector)
    frame = frames[faces]

    def run() -> dict[str, np.ndarray]:
        found = [f for f in detector.detect(frame) if f.height >= spec.crop.min_face]
        return engine.predict(align_faces(frame, found, spec.crop, spec.input_size))

    assert run()["identity"].shape[0] == faces
    benchmark.group = f"frame {bench_model.key} int8, 1 thread"
    _extra(benchmark, bench_model, "frame", precision="int8", threads=1, faces=faces)
    benchmark(run)

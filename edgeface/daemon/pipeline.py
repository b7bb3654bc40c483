"""One frame to labels: detect -> align -> one batched inference for all its faces -> track -> label.

``FacePipeline.process`` takes one RGB frame through these steps, timing each, and returns a ``FrameResult``.
The daemon's run loop (``edgeface.daemon.run``) feeds it frames; the public API (``edgeface.load``) too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from edgeface.daemon.config import DetectConfig, TrackingConfig
from edgeface.daemon.records import FaceResult, FaceSamples, FrameResult
from edgeface.faces.detect import Face

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle


class FacePipeline:
    """Detector, engine, tracker and labeler for one bundle: ``process`` one frame at a time (the daemon),
    ``run`` over frames, or ``label`` one image. ``edgeface.load`` makes one."""

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

    def detect(self, image: np.ndarray) -> list[Face]:
        """The faces of an RGB image the pipeline labels: big enough, at most ``max_faces`` (the largest)."""
        faces = [f for f in self.detector.detect(image) if f.height >= self.min_face]
        if len(faces) > self.max_faces:
            faces = sorted(faces, key=lambda f: -f.area)[:self.max_faces]
        return faces

    def label(self, image: np.ndarray | str | Path) -> tuple[FaceResult, ...]:
        """Every face of one image (RGB uint8 array, or an image file), labelled on its own: no tracking, no
        smoothing across calls (``track`` is -1). Identity follows the daemon's rule (docs/identity.md)."""
        from edgeface.faces.align import align_faces

        if not isinstance(image, np.ndarray):
            from edgeface.core.imageio import read_image

            image = read_image(image)
        faces = self.detect(image)
        if not faces:
            return ()
        labels = self.labeler(self.engine.predict(align_faces(image, faces, self.spec.crop, self.spec.input_size)))
        return tuple(FaceResult(_box(f), -1, label) for f, label in zip(faces, labels))

    def run(self, frames: Iterable[np.ndarray]) -> Iterator[FrameResult]:
        """Frames in (RGB uint8 arrays, e.g. from a video), one ``FrameResult`` out per frame, faces tracked
        and their labels smoothed across frames as the daemon does."""
        for index, frame in enumerate(frames):
            yield self.process(frame, index)

    def process(self, image: np.ndarray, index: int = 0, when: float | None = None, capture_s: float = 0.0
                ) -> FrameResult:
        from edgeface.faces.align import align_faces

        timings = {"capture": capture_s}
        t0 = time.perf_counter()
        faces = self.detect(image)
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
        results = tuple(FaceResult(_box(f), track, label) for f, track, label in zip(faces, tracks, labels))
        samples = FaceSamples(tuple(faces), crops, outputs) if faces else None
        return FrameResult(time=time.time() if when is None else when, index=index, faces=results, timings=timings,
                           samples=samples)


def _box(face: Face) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = face.box
    return float(x0), float(y0), float(x1), float(y1)

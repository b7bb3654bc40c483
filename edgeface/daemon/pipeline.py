"""One frame to labels: detect -> align -> one batched inference for all its faces -> track -> label.

``FacePipeline.process`` takes one RGB frame through these steps, timing each, and returns a ``FrameResult``.
The daemon's run loop (``edgeface.daemon.run``) feeds it frames; the public API (``edgeface.load``) too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from edgeface.daemon.config import DetectConfig, TrackingConfig
from edgeface.daemon.records import FaceResult, FrameResult

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle


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

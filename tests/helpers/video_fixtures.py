"""Matching the daemon's output to a test video's truth, and choosing the photos a small model names right.

The videos themselves are made by ``edgeface.eval.video``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeface.eval.bench import FRAME_SIZE
from edgeface.eval.video import FacePhoto, backdrop, paste_face


def match_truth(record: dict, truth: list[dict]) -> list[tuple[dict, dict | None]]:
    """Pair each face of a JSON-lines record with the ground-truth face whose centre is nearest (or None when
    no truth face is within half a face width)."""
    faces = truth[record["frame"]]["faces"]
    pairs = []
    for face in record["faces"]:
        cx, cy = (face["box"][0] + face["box"][2]) / 2, (face["box"][1] + face["box"][3]) / 2
        best, best_d = None, float("inf")
        for t in faces:
            tx, ty = (t["box"][0] + t["box"][2]) / 2, (t["box"][1] + t["box"][3]) / 2
            d = np.hypot(cx - tx, cy - ty)
            if d < best_d and d < 0.5 * (t["box"][2] - t["box"][0]):
                best, best_d = t, d
        pairs.append((face, best))
    return pairs


def recognised_photos(photos: dict[str, list[FacePhoto]], bundle: Path, face_width: float = 120.0,
                      min_score: float = 0.7) -> dict[str, list[FacePhoto]]:
    """Only the photos the bundle names correctly as they will appear in the video (pasted at ``face_width``
    on the backdrop, then detect, align, infer: the daemon's own steps).

    The labels test checks the daemon's plumbing and tracking, not how well a small test model generalises, so
    it composites photos whose right answer the model is known to give: on a clean frame at the centre, and on
    one that is off-centre, noisy and lossily compressed as the video's frames are.
    """
    import cv2

    from edgeface.faces.align import align_faces
    from edgeface.faces.detect import create_detector
    from edgeface.core.bundle import load_bundle
    from edgeface.runtime.engine import LiteRTEngine
    from edgeface.runtime.labeler import Labeler

    loaded = load_bundle(bundle)
    spec = loaded.spec
    engine = LiteRTEngine.from_bundle(loaded, num_threads=1)
    labeler = Labeler(spec, loaded.identity_threshold)
    detector = create_detector(spec.crop.detector, shared=True)
    height, width = FRAME_SIZE
    background = backdrop(np.random.default_rng(0), height, width)
    kept: dict[str, list[FacePhoto]] = {}
    rng = np.random.default_rng(1)

    def named_right(person: str, photo: FacePhoto, centre: tuple[float, float], degrade: bool) -> bool:
        canvas = background.copy()
        paste_face(canvas, photo, centre, face_width)
        if degrade:  # the video's sensor noise, then a lossy codec round trip
            canvas = np.clip(canvas + rng.normal(0, 2.0, canvas.shape), 0, 255).astype(np.uint8)
            _, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 70])
            canvas = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        faces = detector.detect(canvas)
        if len(faces) != 1:
            return False
        (labels,) = labeler(engine.predict(align_faces(canvas, faces, spec.crop, spec.input_size)))
        return labels.identity.label == person and labels.identity.score >= min_score

    for person, items in photos.items():
        for photo in items:
            if (named_right(person, photo, (width / 2, height / 2), degrade=False)
                    and named_right(person, photo, (width / 3 + 7.3, height / 2 + 11.7), degrade=True)):
                kept.setdefault(person, []).append(photo)
    return kept

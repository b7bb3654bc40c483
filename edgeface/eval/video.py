"""Videos of real people for measuring the daemon: labelled photos composited onto 640x480 frames.

Each person on screen holds a lane and drifts slowly; every ``hold`` frames they show another of their
photos (same person, new picture), as a camera would see a person turn and move. The ground truth per frame
(identity and face box) comes back with the video, so the daemon's output can be matched to the people in it
(``benchmarks/bench_daemon.py``, the daemon's label tests). Nothing is written outside the path given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeface.eval.bench import FRAME_SIZE


@dataclass(frozen=True)
class FacePhoto:
    identity: str
    image: np.ndarray  # RGB uint8, the whole photo
    box: tuple[float, float, float, float]  # the face in it, from the project's detector


def face_photos(csv: Path, per_person: int = 6, people: Sequence[str] | None = None,
                min_face: int = 60) -> dict[str, list[FacePhoto]]:
    """Up to ``per_person`` photos per person in which BlazeFace finds exactly one clear, frontal face."""
    from edgeface.core.imageio import read_image
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.detect import create_detector

    detector = create_detector("blazeface", shared=True)
    found: dict[str, list[FacePhoto]] = {}
    for sample in load_dataset(csv).samples:
        if people is not None and sample.identity not in people:
            continue
        photos = found.setdefault(str(sample.identity), [])
        if len(photos) >= per_person:
            continue
        image = read_image(sample.image)
        faces = detector.detect(image)
        if len(faces) == 1 and faces[0].height >= min_face and faces[0].score >= 0.8:
            photos.append(FacePhoto(str(sample.identity), image, faces[0].box))
    return {person: photos for person, photos in sorted(found.items()) if photos}


def backdrop(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain room-like backdrop: a gradient with some low-frequency blotches (no faces in it)."""
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 60 * (xs / width) + 30 * (ys / height)
    blotches = cv2.resize(rng.uniform(-25, 25, (6, 8)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    tint = np.array([1.0, 0.95, 0.85], np.float32)
    return np.clip((base + blotches)[..., None] * tint, 0, 255).astype(np.uint8)


def paste_face(canvas: np.ndarray, photo: FacePhoto, centre: tuple[float, float], face_width: float,
           columns: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """Paste the face with a margin of head and shoulders, scaled to ``face_width``, writing only within
    ``columns`` (x from, x to) when given; returns the face box."""
    import cv2

    x0, y0, x1, y1 = photo.box
    scale = face_width / (x1 - x0)
    fw, fh = x1 - x0, y1 - y0
    # The patch: the face plus half a face each side, more below (chin, neck), a little more above (hair).
    px0, py0 = max(0, int(x0 - 0.5 * fw)), max(0, int(y0 - 0.6 * fh))
    px1, py1 = min(photo.image.shape[1], int(x1 + 0.5 * fw)), min(photo.image.shape[0], int(y1 + 0.8 * fh))
    patch = cv2.resize(photo.image[py0:py1, px0:px1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # Place the patch so the face centre lands on ``centre``.
    face_cx, face_cy = ((x0 + x1) / 2 - px0) * scale, ((y0 + y1) / 2 - py0) * scale
    left, top = int(round(centre[0] - face_cx)), int(round(centre[1] - face_cy))
    height, width = canvas.shape[:2]
    lo, hi = (0, width) if columns is None else (max(0, int(columns[0])), min(width, int(columns[1])))
    cx0, cy0 = max(lo, left), max(0, top)
    cx1, cy1 = min(hi, left + patch.shape[1]), min(height, top + patch.shape[0])
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = patch[cy0 - top:cy1 - top, cx0 - left:cx1 - left]
    box_w, box_h = fw * scale, fh * scale
    return (centre[0] - box_w / 2, centre[1] - box_h / 2, centre[0] + box_w / 2, centre[1] + box_h / 2)


def write_face_video(path: Path, photos: dict[str, list[FacePhoto]], people: Sequence[str], frames: int = 40,
                     fps: int = 10, hold: int = 10, face_width: float = 120.0, seed: int = 0) -> list[dict]:
    """Write an mp4 (mp4v) of ``people`` side by side for ``frames`` frames; returns the per-frame truth
    ``[{"frame": i, "faces": [{"identity", "box"}]}]`` and writes it beside the video as JSON too."""
    import cv2

    height, width = FRAME_SIZE
    rng = np.random.default_rng(seed)
    background = backdrop(rng, height, width)
    lane = width / len(people)
    starts = [(lane * (i + 0.5), height * float(rng.uniform(0.4, 0.55))) for i in range(len(people))]
    drift = [float(rng.uniform(-0.6, 0.6)) for _ in people]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    truth = []
    try:
        for f in range(frames):
            canvas = background.copy()
            faces = []
            for i, person in enumerate(people):
                photo = photos[person][(f // hold + i) % len(photos[person])]
                centre = (starts[i][0] + drift[i] * f, starts[i][1] + 4.0 * np.sin(f / 5.0 + i))
                # Each patch stays in its lane: a neighbour's shoulders must not cover part of this face's crop
                # (the photos were chosen for how the model names them alone, see recognised_photos).
                box = paste_face(canvas, photo, centre, face_width, columns=(lane * i, lane * (i + 1)))
                faces.append({"identity": person, "box": [round(v, 1) for v in box]})
            noise = rng.normal(0, 2.0, canvas.shape).astype(np.float32)
            frame = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            truth.append({"frame": f, "faces": faces})
    finally:
        writer.release()
    path.with_suffix(".json").write_text(json.dumps(truth))
    return truth

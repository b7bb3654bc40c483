"""Face detectors behind one interface: ``detect(image_rgb) -> list[Face]``.

* ``blazeface`` (default): MediaPipe's BlazeFace short-range model (faces within about 2 m), run with LiteRT.
  It gives six keypoints, so crops can be aligned on the eyes. A few milliseconds per frame on a Pi.
* ``blazeface-full``: BlazeFace full-range (sparse), for faces up to about 5 m; slower.
* ``blazeface-fallback``: short range, then full range on images where short range finds no face: short range
  misses small faces (about 25 pixels wide) that full range finds, at about 3 times short range's cost, on
  those images only. For photo collections.
* ``haar``: OpenCV's frontal-face Haar cascade (opencv-python-headless < 5). No keypoints: eye positions are
  estimated from the box, so crops are less well aligned.

The BlazeFace models are MediaPipe's (Apache-2.0), shipped inside this package in ``edgeface/faces/models``
with their licence and notice, so the runtime wheel needs nothing else to detect faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from edgeface.core.errors import DependencyError, EdgefaceError

# Keypoint order of BlazeFace: subject's right eye (left in the image), left eye, nose tip, mouth centre,
# right ear tragion, left ear tragion.
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH = 0, 1, 2, 3


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: tuple[tuple[float, float], ...] | None = None  # BlazeFace order, see above

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class FaceDetector(Protocol):
    """Finds faces in an RGB uint8 image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


# A photo's own subject scores high; the other "faces" of a one-person photo are mostly the detector's weak
# guesses (a pattern, a hand, a poster), often larger than the subject. Faces this far below the surest are
# not the subject's. Chosen on celeba-299's training photos with several detections (146): the largest face
# was the labelled person's in 98, the largest within 0.1 of the surest in 132.
SUBJECT_SCORE_MARGIN = 0.1


def primary_face(faces: Sequence[Face]) -> Face | None:
    """The face a single-person photo is about: the largest of those the detector is nearly as sure of as of
    its surest (within ``SUBJECT_SCORE_MARGIN``), ties broken by score."""
    if not faces:
        return None
    surest = max(f.score for f in faces)
    return max((f for f in faces if f.score >= surest - SUBJECT_SCORE_MARGIN), key=lambda f: (f.area, f.score))


# --- BlazeFace -----------------------------------------------------------------------------------------

_BLAZEFACE_MODELS = {
    # name: (file in edgeface/faces/models, input side, strides, anchors per stride position)
    "blazeface": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16)),
    "blazeface-full": ("face_detection_full_range_sparse.tflite", 192, (4,)),
}


MODELS_DIR = Path(__file__).resolve().parent / "models"


def blazeface_model_path(filename: str) -> Path:
    """A BlazeFace model file shipped in this package (``edgeface/faces/models``)."""
    path = MODELS_DIR / filename
    if not path.is_file():
        raise DependencyError(f"BlazeFace model {path} is missing: reinstall edgeface (or use --detector haar)")
    return path


def _ssd_anchors(input_size: int, strides: Sequence[int]) -> np.ndarray:
    """Anchor centres (x, y), normalised, as MediaPipe's SsdAnchorsCalculator makes them for BlazeFace.

    Consecutive layers with the same stride share a grid, and each layer adds two anchors per cell
    (the interpolated scale and the aspect-ratio-1 anchor); all BlazeFace anchors are unit-sized.
    """
    anchors: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        count = 0
        while layer < len(strides) and strides[layer] == stride:
            count += 2
            layer += 1
        if len(strides) == 1:  # full-range model: one anchor per cell (interpolated_scale_aspect_ratio = 0)
            count = 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        anchors.append(np.repeat(centres, count, axis=1).reshape(-1, 2))
    return np.concatenate(anchors).astype(np.float32)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
                  ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's blending NMS: overlapping detections are averaged, weighted by score, for steadier boxes."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    remaining = np.ones(len(scores), dtype=bool)
    kept: list[tuple[np.ndarray, float, np.ndarray]] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = remaining & (iou > iou_threshold)
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        kps = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((box, float(scores[i]), kps))
        remaining &= ~group
    return kept


class BlazeFaceDetector:
    """BlazeFace run with the LiteRT interpreter (no TensorFlow)."""

    def __init__(self, name: str = "blazeface", min_score: float = 0.5, iou_threshold: float = 0.3,
                 num_threads: int | None = 1) -> None:
        from edgeface.runtime.litert import make_interpreter

        if name not in _BLAZEFACE_MODELS:
            raise EdgefaceError(f"unknown BlazeFace model {name!r}; choose one of {', '.join(_BLAZEFACE_MODELS)}")
        filename, self.input_size, strides = _BLAZEFACE_MODELS[name]
        self.name = name
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        path = blazeface_model_path(filename)
        self._interpreter = make_interpreter(path.read_bytes(), num_threads=num_threads, source=str(path))
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]))
        self._scores_index, self._boxes_index = outputs[0]["index"], outputs[1]["index"]  # (.., 1), (.., 16)
        self._anchors = _ssd_anchors(self.input_size, strides)
        self._tensor = np.zeros((1, self.input_size, self.input_size, 3), dtype=np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        height, width = image.shape[:2]
        side = self.input_size
        # Letterbox: keep the aspect ratio, pad the short side, as the model was trained.
        scale = side / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        pad_x, pad_y = (side - new_w) // 2, (side - new_h) // 2
        tensor = self._tensor
        tensor.fill(0.0)
        tensor[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
        self._interpreter.set_tensor(self._input, tensor)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._boxes_index)[0]
        logits = np.clip(self._interpreter.get_tensor(self._scores_index)[0, :, 0], -80.0, 80.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep] / side, scores[keep], self._anchors[keep]
        centres = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        faces = []
        for box, score, kps in _weighted_nms(boxes, scores, keypoints, self.iou_threshold):
            # From the normalised letterboxed square back to image pixels.
            to_px = np.array([side / scale, side / scale], dtype=np.float32)
            offset = np.array([pad_x / scale, pad_y / scale], dtype=np.float32)
            x0, y0 = box[0:2] * to_px - offset
            x1, y1 = box[2:4] * to_px - offset
            points = kps * to_px - offset
            faces.append(Face(
                box=(float(max(x0, 0)), float(max(y0, 0)), float(min(x1, width)), float(min(y1, height))),
                score=score,
                keypoints=tuple((float(x), float(y)) for x, y in points),
            ))
        return faces


# --- Haar cascade --------------------------------------------------------------------------------------

class HaarDetector:
    """OpenCV's frontal-face Haar cascade. Needs opencv-python-headless < 5 (5.x ships no cascades)."""

    name = "haar"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise DependencyError("this OpenCV has no Haar cascades: pip install 'opencv-python-headless<5'")
        # checked above; the stubs that come with OpenCV leave cv2.data out
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DependencyError(f"cannot load Haar cascade {path}")
        self._params: dict[str, Any] = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                            minSize=(min_size, min_size))

    def detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found, _, weights = self._cascade.detectMultiScale3(gray, outputRejectLevels=True, **self._params)
        return [
            Face(box=(float(x), float(y), float(x + w), float(y + h)), score=float(min(1.0, s / 10.0)))
            for (x, y, w, h), s in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]


class FallbackDetector:
    """``first``, and ``second`` on images where ``first`` finds no face."""

    def __init__(self, name: str, first: BlazeFaceDetector, second: BlazeFaceDetector) -> None:
        self.name, self.first, self.second = name, first, second

    @property
    def min_score(self) -> float:
        return self.first.min_score

    @min_score.setter
    def min_score(self, value: float) -> None:  # the daemon's [detect] min_score applies to both
        self.first.min_score = self.second.min_score = value

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.first.detect(image) or self.second.detect(image)


DETECTORS = ("blazeface", "blazeface-full", "blazeface-fallback", "haar")


@lru_cache(maxsize=8)
def _cached_detector(name: str) -> FaceDetector:
    return create_detector(name)


def check_detector_name(name: str) -> str:
    """``name`` if a detector has it; otherwise the one-line error (without loading any model)."""
    if name not in DETECTORS:
        raise EdgefaceError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return name


def create_detector(name: str = "blazeface", shared: bool = False) -> FaceDetector:
    """Make a detector by name. ``shared=True`` reuses one instance per process (not thread-safe)."""
    check_detector_name(name)
    if shared:
        return _cached_detector(name)
    if name in _BLAZEFACE_MODELS:
        return BlazeFaceDetector(name)
    if name == "blazeface-fallback":
        return FallbackDetector(name, BlazeFaceDetector("blazeface"), BlazeFaceDetector("blazeface-full"))
    return HaarDetector()

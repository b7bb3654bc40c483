"""Distillation teachers: face encoders trained on millions of faces, whose descriptors of the training crops the
student's identity embedding learns to predict (``edgeface train --teacher dlib``).

A few photos per person are too few for an ImageNet backbone to learn what makes faces differ; a face encoder
already knows. During training a Dense layer on the student's identity embedding is pulled (by cosine) toward the
teacher's descriptor of the same crop; the layer and the teacher are dropped afterwards, so the model that is
converted and shipped is unchanged in shape and cost.

Teachers see edgeface's own aligned crops, so there is one detector and one alignment as everywhere else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeface.core.errors import ModelError
from edgeface.core.spec import CropSpec

# The face box dlib's shape predictor expects, relative to the eye centre in units of the eye distance:
# the median of dlib's own HOG detections on 200 aligned celeba-299 crops (left, top, right, bottom; dlib's
# boxes sit a little left of the eyes' centre).
_DLIB_FACE_BOX = (-1.235, -0.634, 1.071, 1.673)


class Teacher(Protocol):
    name: str
    dimensions: int

    def describe(self, crops: np.ndarray, crop: CropSpec, progress: bool = False) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB aligned crops -> (N, dimensions) float32 descriptors."""
        ...


def face_box(crop: CropSpec, size: int, box: tuple[float, float, float, float] = _DLIB_FACE_BOX
             ) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the face inside an aligned crop of side ``size``."""
    centre_x, centre_y = 0.5 * size, crop.eye_line * size
    distance = crop.eye_distance * size
    left, top, right, bottom = (centre_x + box[0] * distance, centre_y + box[1] * distance,
                                centre_x + box[2] * distance, centre_y + box[3] * distance)
    clip = lambda v: int(round(min(max(v, 0), size - 1)))  # noqa: E731
    return clip(left), clip(top), clip(right), clip(bottom)


class DlibTeacher:
    """dlib's ResNet face encoder (99.38% on LFW; the model behind ``face_recognition``): 128-d descriptors.

    Needs ``pip install 'edgeface[teacher]'`` (dlib-bin and face-recognition-models; models under CC0).
    About 11 crops per second on one core; descriptors are cached with the crops.
    """

    name = "dlib"
    dimensions = 128

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise ModelError(f"the dlib teacher needs {exc.name}: pip install 'edgeface[teacher]'") from None
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def describe(self, crops: np.ndarray, crop: CropSpec, progress: bool = False) -> np.ndarray:
        crops = np.asarray(crops)
        out = np.zeros((len(crops), self.dimensions), np.float32)
        if len(crops) == 0:
            return out
        rectangle = self._dlib.rectangle(*face_box(crop, crops.shape[1]))
        rows: object = range(len(crops))
        if progress:
            from edgeface.core.progress import progress_bar
            rows = progress_bar(rows, desc="teacher descriptors", unit="face")
        for row in rows:  # type: ignore[attr-defined]
            image = np.ascontiguousarray(crops[row])
            shape = self._landmarks(image, rectangle)
            out[row] = np.asarray(self._encoder.compute_face_descriptor(image, shape), np.float32)
        return out


TEACHERS = {"dlib": DlibTeacher}


def load_teacher(name: str) -> Teacher:
    if name not in TEACHERS:
        raise ModelError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
    return TEACHERS[name]()


def describe_cached(teacher: Teacher, crops: np.ndarray, crop: CropSpec, cache_dir: Path | None,
                    progress: bool = False) -> np.ndarray:
    """The teacher's descriptors of ``crops``, computed once per set of crops (keyed by their bytes)."""
    from edgeface.core.fileio import write_atomic
    from edgeface.core.paths import default_cache_dir

    crops = np.ascontiguousarray(crops)
    digest = hashlib.sha256(f"{teacher.name}|{crop}|{crops.shape}\n".encode())
    digest.update(crops.data)
    path = Path(cache_dir or default_cache_dir()) / "teacher" / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape == (len(crops), teacher.dimensions):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed
    descriptors = teacher.describe(crops, crop, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda handle: np.save(handle, descriptors))
    return descriptors


def distillation_targets(descriptors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centred unit vectors: face encoders' raw descriptors share one large direction (dlib: cosine 0.83
    between strangers' faces), which would leave a cosine loss almost nothing to teach."""
    centred = np.asarray(descriptors, np.float32) - np.asarray(mean, np.float32)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.maximum(norms, 1e-12)).astype(np.float32)

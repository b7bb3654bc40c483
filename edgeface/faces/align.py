"""Cut an aligned face crop out of an image: the eyes (or landmarks) land where the model's CropSpec says.

This is the only place crops are made, for training, calibration, evaluation and the Pi alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeface.core.spec import MOUTH_SHAPE_SIZE, CropSpec
from edgeface.faces.detect import LEFT_EYE, RIGHT_EYE, Face

# Where the eyes sit inside a detector box when the detector gives no keypoints (Haar): measured on
# BlazeFace detections of real photos, so Haar crops come out close to BlazeFace crops.
_BOX_EYES = ((0.30, 0.40), (0.68, 0.38))


def eye_positions(face: Face) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) in pixels, from keypoints or estimated from the box."""
    if face.keypoints is not None:
        return np.asarray(face.keypoints[RIGHT_EYE], np.float64), np.asarray(face.keypoints[LEFT_EYE], np.float64)
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    return tuple(np.array([x0 + fx * w, y0 + fy * h]) for fx, fy in _BOX_EYES)  # type: ignore[return-value]


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation, uniform scale and translation taking ``source`` points closest to ``target`` (least
    squares; exact for two points)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    s, t = source - source_mean, target - target_mean
    energy = float((s ** 2).sum())
    cos = float((s * t).sum()) / energy
    sin = float((s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]).sum()) / energy
    rotation = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([rotation, (target_mean - rotation @ source_mean)[:, None]])


def alignment_matrix(face: Face, crop: CropSpec, size: int, points: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 similarity transform taking image pixels to crop pixels. ``points``: the crop's landmarks in
    image pixels, when it is aligned on landmarks rather than the detector's keypoints."""
    targets = np.asarray(crop.targets(), np.float64) * size
    if points is not None:
        return similarity_transform(points, targets)
    if face.keypoints is not None and len(face.keypoints) >= len(targets):
        # Keypoints are in BlazeFace order, the eyes first (image-left eye first), as the targets.
        source = np.asarray(face.keypoints[:len(targets)], np.float64)
    else:
        source, targets = np.stack(eye_positions(face)), targets[:2]
    if float(np.hypot(*(source[1] - source[0]))) < 1e-3:  # degenerate keypoints: fall back to the box
        if face.keypoints is None:  # an empty box: centre it, unscaled
            centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
            return np.hstack([np.eye(2), (0.5 * size - centre)[:, None]])
        return alignment_matrix(Face(face.box, face.score, None), crop, size)
    return similarity_transform(source, targets)


def face_marks(image: np.ndarray, face: Face, crop: CropSpec) -> np.ndarray | None:
    """The face mesh's (468, 2) landmarks in image pixels when ``crop`` is aligned on landmarks (else None: it
    uses the detector's keypoints, and no mesh runs)."""
    if not crop.landmarks:
        return None
    from edgeface.faces.landmarks import face_mesh

    return face_mesh().landmarks(image, face)


def _aligned_on(marks: np.ndarray, crop: CropSpec) -> np.ndarray:
    from edgeface.faces.landmarks import LANDMARK_SETS

    return marks[list(LANDMARK_SETS[str(crop.landmarks)])]


def align_face(image: np.ndarray, face: Face, crop: CropSpec, size: int) -> np.ndarray:
    """One aligned RGB uint8 crop of ``size`` x ``size`` pixels."""
    return align_face_and_shape(image, face, crop, size)[0]


def align_face_and_shape(image: np.ndarray, face: Face, crop: CropSpec, size: int
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """One aligned crop (as :func:`align_face`) and the mouth's shape from the same landmarks
    (``edgeface.faces.geometry``; None when ``crop`` is not aligned on landmarks)."""
    from edgeface.faces.geometry import mouth_shape

    marks = face_marks(image, face, crop)
    points = None if marks is None else _aligned_on(marks, crop)
    crop_image = _warp(image, alignment_matrix(face, crop, size, points), size)
    return crop_image, None if marks is None else mouth_shape(marks)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    import cv2

    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    source = image
    # warpAffine samples bilinearly; shrinking a big face more than 2x that way aliases, so halve first.
    while scale < 0.5 and min(source.shape[:2]) > 2 * size:
        source = cv2.pyrDown(source)
        matrix = matrix.copy()
        matrix[:, :2] *= 2.0
        scale *= 2.0
    return cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_faces(image: np.ndarray, faces: Sequence[Face], crop: CropSpec, size: int) -> np.ndarray:
    """All faces of one image as a batch (N, size, size, 3), ready for one batched inference."""
    return align_faces_and_shapes(image, faces, crop, size)[0]


def align_faces_and_shapes(image: np.ndarray, faces: Sequence[Face], crop: CropSpec, size: int
                           ) -> tuple[np.ndarray, np.ndarray | None]:
    """All faces of one image as a batch (as :func:`align_faces`) and their mouths' shapes (N, MOUTH_SHAPE_SIZE),
    or None when ``crop`` is not aligned on landmarks."""
    out = np.empty((len(faces), size, size, 3), dtype=np.uint8)
    shapes = np.zeros((len(faces), MOUTH_SHAPE_SIZE), np.float32) if crop.landmarks else None
    for i, face in enumerate(faces):
        out[i], shape = align_face_and_shape(image, face, crop, size)
        if shapes is not None and shape is not None:
            shapes[i] = shape
    return out, shapes

"""Cut an aligned face crop out of an image: the eyes land where the model's CropSpec says.

This is the only place crops are made, for training, calibration, evaluation and the Pi alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeface.core.spec import CropSpec
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


def alignment_matrix(face: Face, crop: CropSpec, size: int) -> np.ndarray:
    """The 2x3 similarity transform taking image pixels to crop pixels."""
    eye_a, eye_b = eye_positions(face)
    src_centre = (eye_a + eye_b) / 2
    delta = eye_b - eye_a
    src_distance = float(np.hypot(*delta))
    if src_distance < 1e-3:  # degenerate keypoints: fall back to the box
        return alignment_matrix(Face(face.box, face.score, None), crop, size)
    angle = np.arctan2(delta[1], delta[0])
    scale = crop.eye_distance * size / src_distance
    cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
    dst_centre = np.array([0.5 * size, crop.eye_line * size])
    # Rotate and scale about the eye centre, then move it to its place in the crop.
    rotation = np.array([[cos, -sin], [sin, cos]])
    translation = dst_centre - rotation @ src_centre
    return np.hstack([rotation, translation[:, None]])


def align_face(image: np.ndarray, face: Face, crop: CropSpec, size: int) -> np.ndarray:
    """One aligned RGB uint8 crop of ``size`` x ``size`` pixels."""
    import cv2

    matrix = alignment_matrix(face, crop, size)
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
    out = np.empty((len(faces), size, size, 3), dtype=np.uint8)
    for i, face in enumerate(faces):
        out[i] = align_face(image, face, crop, size)
    return out

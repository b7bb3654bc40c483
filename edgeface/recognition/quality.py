"""How good a view of a face is, before it is recognised: cheap enough to score every face in every frame.

The score is the product of four factors in (0, 1]:

* **size**: the face's height against ``GOOD_FACE_PX`` (a face that small is magnified into the model's crop);
* **sharpness**: the variance of the Laplacian of the grey face, shrunk to ``SHARPNESS_SIDE`` pixels (motion blur
  and focus), saturating at ``SHARP_LAPLACIAN``;
* **detector**: the detector's confidence;
* **pose**: how frontal the face is, from the detector's keypoints (eyes and nose tip): the nose's offset from
  the middle of the eyes along the eye line, in eye distances, is about 0 for a frontal face and grows to about
  0.5 in profile. A detector without keypoints (Haar) gives no pose: the factor is 1.

It weighs a face's evidence in its track (a good view counts more) and decides when a track is worth
recognising again (a clearly better view than its best so far).
"""

from __future__ import annotations

import numpy as np

from edgeface.faces.detect import LEFT_EYE, NOSE, RIGHT_EYE, Face

GOOD_FACE_PX = 112.0
SHARPNESS_SIDE = 48
SHARP_LAPLACIAN = 300.0
PROFILE_OFFSET = 0.6  # nose offset (eye distances) at which the pose factor reaches its floor
FLOOR = 0.05


def face_quality(grey: np.ndarray, face: Face) -> float:
    """The view's quality in (0, 1]; ``grey`` is the frame in grey levels (uint8), shared by all its faces."""
    size = min(1.0, max(face.height, 1.0) / GOOD_FACE_PX)
    return max(FLOOR, size) * sharpness_factor(grey, face) * max(FLOOR, min(1.0, face.score)) * pose_factor(face)


def sharpness_factor(grey: np.ndarray, face: Face) -> float:
    import cv2

    height, width = grey.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return FLOOR
    patch = cv2.resize(grey[y0:y1, x0:x1], (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    variance = float(cv2.Laplacian(patch, cv2.CV_32F).var())
    return max(FLOOR, min(1.0, variance / SHARP_LAPLACIAN))


def pose_factor(face: Face) -> float:
    """1 for a frontal face, falling to ``FLOOR`` in profile (1 when the detector gives no keypoints)."""
    if face.keypoints is None or len(face.keypoints) <= NOSE:
        return 1.0
    right, left, nose = (np.asarray(face.keypoints[i], np.float64) for i in (RIGHT_EYE, LEFT_EYE, NOSE))
    axis = left - right
    distance = float(np.hypot(*axis))
    if distance < 1e-6:
        return FLOOR
    offset = float(np.dot(nose - (left + right) / 2, axis)) / distance ** 2
    return max(FLOOR, 1.0 - abs(offset) / PROFILE_OFFSET)

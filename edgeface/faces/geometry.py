"""The mouth's shape from the face mesh: what a smile changes, in a few numbers a handful of labels can fit.

A household labels few photos for emotion. A logistic regression on the encoder's hundreds of features fits such
few labels poorly; the same regression on the mouth's shape does not: six numbers that a smile moves (the mouth
widens, its corners rise towards the nose, the lips part), measured on the landmarks alignment already computes.
``train`` fits the emotion head on them when they serve it better (docs/training.md), and the device computes
that head in float from the same landmarks, whatever the model's precision.

Every measure is in the frame of the eyes: rotated so the line through the outer eye corners is level, in
units of the distance between them, so a face's size and roll do not change it.
"""

from __future__ import annotations

import numpy as np

from edgeface.core.spec import MOUTH_SHAPE_SIZE
# Face-mesh indices: outer eye corners (image-left, image-right), mouth corners (likewise), inner lips (upper,
# lower), outer lips (top, bottom), the tip of the nose.
_EYES = (33, 263)
_CORNERS = (61, 291)
_INNER_LIPS = (13, 14)
_OUTER_LIPS = (0, 17)
_NOSE_TIP = 1


def mouth_shape(marks: np.ndarray) -> np.ndarray:
    """(MOUTH_SHAPE_SIZE,) float32 from one face's (468, 2) mesh landmarks, in pixels: the mouth's width, its
    corners' height over the lips' centre, the lips' opening, the mouth's height, the corners' and the upper
    lip's height under the tip of the nose (in the eyes' frame; see the module's note)."""
    marks = np.asarray(marks, np.float64)
    left, right = marks[_EYES[0]], marks[_EYES[1]]
    axis = right - left
    distance = float(np.hypot(*axis))
    if not distance > 1e-6:
        return np.zeros(MOUTH_SHAPE_SIZE, np.float32)
    cos, sin = axis / distance
    level = np.array([[cos, sin], [-sin, cos]]) / distance
    points = (marks - (left + right) / 2) @ level.T
    y = points[:, 1]
    corners = (y[_CORNERS[0]] + y[_CORNERS[1]]) / 2
    return np.array([
        np.hypot(*(points[_CORNERS[1]] - points[_CORNERS[0]])),  # width
        corners - (y[_INNER_LIPS[0]] + y[_INNER_LIPS[1]]) / 2,  # corners over the lips' centre
        y[_INNER_LIPS[1]] - y[_INNER_LIPS[0]],  # opening
        y[_OUTER_LIPS[1]] - y[_OUTER_LIPS[0]],  # height
        corners - y[_NOSE_TIP],  # corners under the nose
        y[_OUTER_LIPS[0]] - y[_NOSE_TIP],  # upper lip under the nose
    ], np.float32)

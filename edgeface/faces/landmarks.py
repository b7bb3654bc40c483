"""Face landmarks for alignment: MediaPipe's face mesh (468 points) on the detector's face, run with LiteRT.

A backbone trained on crops aligned by another tool needs crops aligned the same way. dlib's face encoder was
trained on chips aligned on five points (the outer and inner corners of both eyes and the bottom of the nose);
BlazeFace's keypoints (eye centres, nose tip, mouth) are too coarse to reproduce those chips, the face mesh
has the same five points. The mesh model reads a 192x192 square around the face, turned upright on the eyes,
as MediaPipe's own pipeline crops it (its cost per face: docs/results.md, "The daemon").

The model (``face_landmark.tflite``, Apache-2.0, from MediaPipe) ships with the BlazeFace models.
"""

from __future__ import annotations

import threading

import numpy as np

from edgeface.faces.detect import LEFT_EYE, RIGHT_EYE, Face, blazeface_model_path

MESH_MODEL = "face_landmark.tflite"
MESH_INPUT = 192
MESH_POINTS = 468
ROI_SCALE = 1.5  # MediaPipe's face ROI: the detector's box, squared on its long side and enlarged 1.5x
# The five points dlib's face aligner uses, in its order, as face-mesh indices: the image-right eye's outer and
# inner corners (the subject's left eye), the image-left eye's outer and inner corners, the bottom of the nose.
DLIB_FIVE = (263, 362, 33, 133, 2)
LANDMARK_SETS = {"mesh5": DLIB_FIVE}


class FaceMesh:
    """468 face landmarks in image pixels for a detected face."""

    def __init__(self, num_threads: int | None = 1) -> None:
        from edgeface.runtime.litert import make_interpreter

        path = blazeface_model_path(MESH_MODEL)
        self._interpreter = make_interpreter(path.read_bytes(), num_threads=num_threads, source=str(path))
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        self._points = next(d["index"] for d in outputs if int(np.prod(d["shape"])) >= MESH_POINTS * 3)

    def roi_matrix(self, face: Face) -> np.ndarray:
        """The 2x3 transform from image pixels to the model's input: the face's square, eyes level."""
        x0, y0, x1, y1 = face.box
        side = ROI_SCALE * max(x1 - x0, y1 - y0, 1.0)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        angle = 0.0
        if face.keypoints is not None:
            (ax, ay), (bx, by) = face.keypoints[RIGHT_EYE], face.keypoints[LEFT_EYE]
            angle = float(np.arctan2(by - ay, bx - ax))
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = (MESH_INPUT / side) * np.array([[cos, sin], [-sin, cos]])
        return np.hstack([rotation, (MESH_INPUT / 2 - rotation @ centre)[:, None]])

    def landmarks(self, image: np.ndarray, face: Face) -> np.ndarray:
        """(468, 2) landmark positions in ``image`` pixels."""
        import cv2

        matrix = self.roi_matrix(face)
        roi = cv2.warpAffine(image, matrix, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        self._interpreter.set_tensor(self._input, (roi.astype(np.float32) * np.float32(1 / 255))[None])
        self._interpreter.invoke()
        points = self._interpreter.get_tensor(self._points).reshape(-1, 3)[:MESH_POINTS, :2]
        inverse = cv2.invertAffineTransform(matrix)
        return points @ inverse[:, :2].T + inverse[:, 2]


_local = threading.local()


def face_mesh() -> FaceMesh:
    """One face mesh per thread (an interpreter is not thread-safe), loaded when first needed."""
    mesh = getattr(_local, "mesh", None)
    if mesh is None:
        mesh = _local.mesh = FaceMesh()
    return mesh

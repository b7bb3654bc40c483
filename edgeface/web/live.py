"""The live view: the newest frame and its faces, encoded as a small JPEG only when a page asks for it.

``observe`` (the pipeline thread) keeps a reference to the newest frame and its result: no copy, no encoding.
A page polls ``state`` (JSON) a few times a second and then fetches that frame's JPEG, encoded once per frame
however many pages look, downscaled to ``MAX_WIDTH``. While no page is open nothing is encoded at all
(``encoded`` counts the frames that were).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeface.daemon.records import FrameResult, Published

MAX_WIDTH = 640
JPEG_QUALITY = 70


class LiveView:
    def __init__(self, max_width: int = MAX_WIDTH) -> None:
        self.max_width = max_width
        self._latest: tuple[np.ndarray, "FrameResult"] | None = None
        self._shown: tuple[np.ndarray, "FrameResult"] | None = None  # the frame the last ``state`` described
        self._jpeg: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self.encoded = 0

    def observe(self, image: np.ndarray, item: "Published") -> None:
        self._latest = (image, item.result)

    def state(self) -> dict[str, Any] | None:
        """The newest frame as the page draws it: its index, size and faces (None before the first frame). Its
        JPEG is then ``jpeg(index)``, even if newer frames came meanwhile."""
        latest = self._latest
        if latest is None:
            return None
        self._shown = latest
        image, result = latest
        height, width = image.shape[:2]
        return {"frame": result.index, "time": round(result.time, 3), "width": width, "height": height,
                "faces": [face.to_dict() for face in result.faces]}

    def jpeg(self, index: int | None = None) -> bytes | None:
        """The JPEG of frame ``index`` if it is the one ``state`` last described, else of the newest frame."""
        from edgeface.core.imageio import encode_image

        chosen = self._shown if self._shown is not None and self._shown[1].index == index else self._latest
        if chosen is None:
            return None
        image, result = chosen
        with self._lock:
            if self._jpeg is not None and self._jpeg[0] == result.index:
                return self._jpeg[1]
            data = encode_image(_downscale(image, self.max_width), ".jpg", JPEG_QUALITY)
            self._jpeg = (result.index, data)
            self.encoded += 1
            return data


def _downscale(image: np.ndarray, max_width: int) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    if width <= max_width:
        return image
    scale = max_width / width
    return cv2.resize(image, (max_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)

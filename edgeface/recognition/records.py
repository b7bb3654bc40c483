"""The records the recognition pipeline gives: a face, a frame (with its visit events), and what the model saw.

The pipeline makes them; the daemon's sinks and HTTP server, the web page and the Python API read them. They
live here so that none of those modules needs another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeface.core.results import FaceLabels

if TYPE_CHECKING:
    from edgeface.faces.detect import Face
    from edgeface.recognition.visits import VisitEvent


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame: where it is, its track and visit, and its track's labels so far."""

    box: tuple[float, float, float, float]
    track: int
    labels: FaceLabels
    visit: str = ""  # the visit its track belongs to, once the visit has arrived

    def to_dict(self) -> dict[str, Any]:
        record = {"box": [round(v, 1) for v in self.box], "track": self.track, **self.labels.to_dict()}
        if self.visit:
            record["visit"] = self.visit
        return record


@dataclass(frozen=True)
class FaceSamples:
    """What the model saw of a frame: the detector's faces (in the order of ``FrameResult.faces``), which of
    them were recognised in this frame (``recognised``: indices), and for those the aligned crops (R, S, S, 3)
    uint8 and the model's own outputs (R, ...). Kept for observers that keep faces (the web page); the outputs
    never carry them."""

    detections: tuple["Face", ...]
    recognised: tuple[int, ...]
    crops: np.ndarray
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FrameResult:
    """All faces of one processed frame, the visit events it caused, and the seconds each stage took."""

    time: float
    index: int
    faces: tuple[FaceResult, ...]
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    samples: FaceSamples | None = field(default=None, compare=False, repr=False)
    events: tuple["VisitEvent", ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "frame": self.index, "faces": [f.to_dict() for f in self.faces]}

    def signature(self) -> tuple:
        """What 'changed' compares: the tracks on screen and their labels (not scores or boxes)."""
        return tuple(sorted((f.track, f.labels.identity.label, f.labels.emotion.label, f.labels.gender.label)
                            for f in self.faces))

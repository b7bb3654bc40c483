"""The records the daemon passes along: a face, a frame, and a frame as its outputs see it.

The face pipeline makes them; the run loop, the sinks and the HTTP server read them. They live here so that
none of those modules needs another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np

from edgeface.core.results import FaceLabels

if TYPE_CHECKING:
    from edgeface.faces.detect import Face


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame: where it is, which track it belongs to, and its (smoothed) labels."""

    box: tuple[float, float, float, float]
    track: int
    labels: FaceLabels

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], "track": self.track, **self.labels.to_dict()}


@dataclass(frozen=True)
class FaceSamples:
    """What the model saw of a frame's faces, in the order of ``FrameResult.faces``: the detector's faces, the
    aligned crops (N, S, S, 3) uint8 and the model's own outputs per face, before any smoothing. Kept only for
    observers that keep faces (the web page's unknown faces); the outputs never carry them."""

    detections: tuple["Face", ...]
    crops: np.ndarray
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FrameResult:
    """All faces of one processed frame, and the seconds each stage took on it."""

    time: float
    index: int
    faces: tuple[FaceResult, ...]
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    samples: FaceSamples | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "frame": self.index, "faces": [f.to_dict() for f in self.faces]}

    def signature(self) -> tuple:
        """What 'changed' compares: the tracks on screen and their labels (not scores or boxes)."""
        return tuple(sorted((f.track, f.labels.identity.label, f.labels.emotion.label, f.labels.gender.label)
                            for f in self.faces))


class Published:
    """One frame as the sinks see it: the result, whether its labels changed, and its JSON (made once)."""

    __slots__ = ("result", "changed", "_json")

    def __init__(self, result: "FrameResult", changed: bool) -> None:
        self.result = result
        self.changed = changed
        self._json: str | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.result.to_dict(), separators=(",", ":"))
        return self._json

    def wanted(self, mode: str) -> bool:
        """``every``: frames with faces; ``change``: frames whose tracks or labels differ from the last one."""
        return self.changed if mode == "change" else bool(self.result.faces)


class FrameObserver(Protocol):
    """Something that sees every processed frame with its image, on the pipeline's thread (so it must be quick
    and never block): snapshots, the web page. ``close`` is called once at the end of the run."""

    def observe(self, image: np.ndarray, item: Published) -> None: ...

    def close(self) -> None: ...

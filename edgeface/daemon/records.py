"""A processed frame as the daemon's outputs see it (``Published``), and what watches every frame.

The records themselves (faces, frames, visit events) are the recognition pipeline's
(``edgeface.recognition.records``); the run loop, the sinks and the HTTP server pass these along, so that none
of those modules needs another.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgeface.recognition.records import FrameResult


class Published:
    """One frame as the sinks see it: the result, whether its labels changed, and its JSON (made once)."""

    __slots__ = ("result", "changed", "_json", "_events")

    def __init__(self, result: "FrameResult", changed: bool) -> None:
        self.result = result
        self.changed = changed
        self._json: str | None = None
        self._events: list[str] | None = None

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.result.to_dict(), separators=(",", ":"))
        return self._json

    @property
    def events(self) -> list[str]:
        """The frame's visit events (arrived, named, left), each as one JSON record."""
        if self._events is None:
            self._events = [json.dumps(e.to_dict(), separators=(",", ":")) for e in self.result.events]
        return self._events

    def wanted(self, mode: str) -> bool:
        """``every``: frames with faces; ``change``: frames whose tracks or labels differ from the last one."""
        return self.changed if mode == "change" else bool(self.result.faces)


class FrameObserver(Protocol):
    """Something that sees every processed frame with its image, on the pipeline's thread (so it must be quick
    and never block): snapshots, the web page. ``close`` is called once at the end of the run."""

    def observe(self, image: np.ndarray, item: Published) -> None: ...

    def close(self) -> None: ...

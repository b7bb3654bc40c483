"""Light tracking across frames: a face keeps its track id while its box overlaps the last one (IoU).

Each track keeps an exponential moving average of the model's outputs (probabilities per head, and the
embedding), and the labels are decided on those smoothed outputs by the one ``Labeler``: one blurry frame
does not flip a label, and the identity threshold applies to the smoothed confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), boxes as x0, y0, x1, y1."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray
    outputs: dict[str, np.ndarray] = field(repr=False)
    missed: int = 0
    hits: int = 1


class Tracker:
    """Greedy IoU matching of this frame's faces to the live tracks, and per-track output smoothing."""

    def __init__(self, iou: float = 0.3, max_missed: int = 5, smoothing: float = 0.6) -> None:
        self.iou = iou
        self.max_missed = max_missed
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, outputs: Mapping[str, np.ndarray]
               ) -> tuple[list[int], dict[str, np.ndarray]]:
        """Match ``boxes`` (N, 4) to tracks; returns each face's track id and the smoothed ``outputs`` (N, ...)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        matches = self._match(boxes)
        ids: list[int] = []
        smoothed = {name: np.empty_like(np.asarray(value)) for name, value in outputs.items()}
        for i, box in enumerate(boxes):
            current = {name: np.asarray(value[i], np.float32) for name, value in outputs.items()}
            track = matches.get(i)
            if track is None:
                track = Track(self._next_id, box, current)
                self._next_id += 1
                self.tracks.append(track)
            else:
                track.box, track.missed, track.hits = box, 0, track.hits + 1
                track.outputs = {name: self._blend(name, track.outputs.get(name), value)
                                 for name, value in current.items()}
            ids.append(track.id)
            for name in smoothed:
                smoothed[name][i] = track.outputs[name]
        seen = set(ids)
        for track in self.tracks:
            if track.id not in seen:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return ids, smoothed

    def _match(self, boxes: np.ndarray) -> dict[int, Track]:
        if not self.tracks or not len(boxes):
            return {}
        overlap = iou_matrix(boxes, np.stack([t.box for t in self.tracks]))
        matches: dict[int, Track] = {}
        # Best overlaps first; each face and each track used once.
        for flat in np.argsort(-overlap, axis=None):
            i, j = np.unravel_index(flat, overlap.shape)
            if overlap[i, j] < self.iou:
                break
            track = self.tracks[j]
            if i in matches or any(t is track for t in matches.values()):
                continue
            matches[int(i)] = track
        return matches

    def _blend(self, name: str, old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
        if old is None or old.shape != new.shape or self.smoothing <= 0:
            return new
        mixed = self.smoothing * old + (1.0 - self.smoothing) * new
        if name == "embedding":  # keep the embedding's length (a gallery compares directions)
            norm = float(np.linalg.norm(mixed))
            if norm > 0:
                mixed = mixed * (float(np.linalg.norm(new)) / norm)
        return mixed.astype(np.float32)

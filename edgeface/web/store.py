"""Faces the camera saw, kept on the device for the web page: unknown visits and strangers' faces.

Beside the gallery, in its ``.faces`` folder (``edgeface.people.album``; 0700, files 0600)::

    unknown/<visit>/visit.json      one visit: a track the daemon could not name, with its best face crops
    unknown/<visit>/<face>.jpg      (aligned, 112x112) and each crop's embedding and identity confidence
    strangers/<face>.json, .jpg     faces a person said were nobody enrolled: what the thresholds are
                                    calibrated on

Retention: unknown visits past ``max_visits`` or older than ``keep_days`` are deleted, strangers past
``max_strangers`` or older than ``strangers_keep_days`` (``prune``); naming or ignoring a visit deletes it at
once. Nothing here is sent anywhere.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from edgeface.people.album import private_dir, write_private

log = logging.getLogger("edgeface.daemon.web")

_ID = re.compile(r"[0-9a-z-]{1,64}")
DAY = 86400.0


def valid_id(text: str) -> bool:
    """Visit and face ids come from this module; anything else in a request is refused before it nears a path."""
    return bool(_ID.fullmatch(text))


@dataclass
class FaceSample:
    """One face crop the camera saw: the aligned face (JPEG), what the model made of it, and how good it is."""

    id: str
    time: float
    embedding: np.ndarray = field(repr=False)  # (D,), the model's own (unsmoothed) output for this crop
    confidence: float  # the identity head's top probability
    sharpness: float
    height: float  # face box height, pixels
    jpeg: bytes | None = field(default=None, repr=False)  # until written
    best: str = ""  # the nearest enrolled person and their similarity: why a face was (nearly) named
    similarity: float = -1.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": round(self.time, 3), "confidence": round(self.confidence, 5),
                "sharpness": round(self.sharpness, 1), "height": round(self.height, 1), "best": self.best,
                "similarity": round(self.similarity, 5),
                "embedding": np.round(self.embedding.astype(np.float64), 6).tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FaceSample":
        return cls(str(raw["id"]), float(raw["time"]), np.asarray(raw["embedding"], np.float32),
                   float(raw["confidence"]), float(raw["sharpness"]), float(raw["height"]),
                   best=str(raw.get("best", "")), similarity=float(raw.get("similarity", -1.0)))


class FaceGroup(Protocol):
    """Faces the page shows and acts on together, as one card: a ``Visit`` today."""

    @property
    def id(self) -> str: ...

    @property
    def first(self) -> float: ...

    @property
    def last(self) -> float: ...

    @property
    def samples(self) -> Sequence[FaceSample]: ...


@dataclass
class Visit:
    """A track the daemon could not name: one card on the page."""

    id: str
    track: int
    first: float
    last: float
    samples: list[FaceSample] = field(default_factory=list)
    ended: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "track": self.track, "first": round(self.first, 3), "last": round(self.last, 3),
                "samples": [s.to_dict() for s in self.samples]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Visit":
        return cls(str(raw["id"]), int(raw["track"]), float(raw["first"]), float(raw["last"]),
                   [FaceSample.from_dict(s) for s in raw["samples"]], ended=True)


class FaceStore:
    """The ``unknown/`` and ``strangers/`` folders of one gallery's faces folder."""

    def __init__(self, root: Path, max_visits: int = 100, keep_days: float = 7.0, max_strangers: int = 500,
                 strangers_keep_days: float = 90.0) -> None:
        self.root = root
        self.unknown = root / "unknown"
        self.strangers_dir = root / "strangers"
        self.max_visits = max_visits
        self.keep_s = keep_days * DAY
        self.max_strangers = max_strangers
        self.strangers_keep_s = strangers_keep_days * DAY

    # --- unknown visits --------------------------------------------------------------------------------

    def load_visits(self) -> list[Visit]:
        """Visits kept by earlier runs (damaged ones are deleted and logged)."""
        visits = []
        for folder in sorted(self.unknown.glob("*")) if self.unknown.is_dir() else []:
            try:
                visits.append(Visit.from_dict(json.loads((folder / "visit.json").read_text())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("web: unknown faces %s unreadable (%s); deleted", folder.name, exc)
                shutil.rmtree(folder, ignore_errors=True)
        return visits

    def save_visit(self, visit: dict[str, Any], crops: dict[str, bytes]) -> None:
        """Write a visit (``Visit.to_dict()``) and those of its crops not yet on disk; drop crops it replaced."""
        folder = private_dir(private_dir(private_dir(self.root) / "unknown") / visit["id"])
        for face_id, data in crops.items():
            write_private(folder / f"{face_id}.jpg", data)
        write_private(folder / "visit.json", json.dumps(visit).encode())
        kept = {f"{s['id']}.jpg" for s in visit["samples"]} | {"visit.json"}
        for path in folder.iterdir():
            if path.name not in kept:
                path.unlink(missing_ok=True)

    def delete_visit(self, visit_id: str) -> None:
        if valid_id(visit_id):
            shutil.rmtree(self.unknown / visit_id, ignore_errors=True)

    def visit_crop(self, visit_id: str, face_id: str) -> Path | None:
        if not (valid_id(visit_id) and valid_id(face_id)):
            return None
        return self.unknown / visit_id / f"{face_id}.jpg"

    # --- strangers -------------------------------------------------------------------------------------

    def add_strangers(self, faces: Iterable[tuple[FaceSample, bytes]], reason: str) -> int:
        """Keep faces (each with its JPEG crop) as strangers' faces, for calibration."""
        folder = private_dir(private_dir(self.root) / "strangers")
        added = 0
        for sample, jpeg in faces:
            write_private(folder / f"{sample.id}.jpg", jpeg)
            write_private(folder / f"{sample.id}.json", json.dumps({**sample.to_dict(), "reason": reason}).encode())
            added += 1
        self.prune()
        return added

    def strangers(self) -> list[tuple[FaceSample, str]]:
        """Every stranger's face with why it was kept, newest first."""
        found = []
        for path in self.strangers_dir.glob("*.json") if self.strangers_dir.is_dir() else []:
            try:
                raw = json.loads(path.read_text())
                found.append((FaceSample.from_dict(raw), str(raw.get("reason", ""))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("web: stranger's face %s unreadable (%s); deleted", path.name, exc)
                self.delete_stranger(path.stem)
        return sorted(found, key=lambda item: -item[0].time)

    def delete_stranger(self, face_id: str) -> None:
        if valid_id(face_id):
            for suffix in (".json", ".jpg"):
                (self.strangers_dir / f"{face_id}{suffix}").unlink(missing_ok=True)

    def stranger_crop(self, face_id: str) -> Path | None:
        return self.strangers_dir / f"{face_id}.jpg" if valid_id(face_id) else None

    # --- retention -------------------------------------------------------------------------------------

    def expired(self, visits: list[Visit], now: float | None = None) -> list[Visit]:
        """The visits retention removes: older than ``keep_days``, or past ``max_visits`` (oldest first)."""
        now = time.time() if now is None else now
        newest_first = sorted(visits, key=lambda v: -v.last)
        return [v for i, v in enumerate(newest_first) if i >= self.max_visits or now - v.last > self.keep_s]

    def prune(self, now: float | None = None) -> None:
        """Strangers' faces past their count or age."""
        now = time.time() if now is None else now
        for i, (sample, _) in enumerate(self.strangers()):
            if i >= self.max_strangers or now - sample.time > self.strangers_keep_s:
                self.delete_stranger(sample.id)

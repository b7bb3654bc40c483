"""Faces the camera saw, kept on the device for the web page: stranger groups and strangers' faces.

Beside the gallery, in its ``.faces`` folder (``edgeface.people.album``; 0700, files 0600)::

    unknown/groups.json           the stranger groups (``edgeface.recognition.strangers``: each group's id, first
                                  and last seen, visits and averaged embedding), and those marked "a stranger"
    unknown/<group>/faces.json    a group's good face crops from all its visits: each crop's visit, time,
    unknown/<group>/<face>.jpg    embedding and identity confidence, and the crop (aligned, 112x112)
    strangers/<face>.json, .jpg   faces said to be nobody enrolled ("a stranger") or not a person ("not X"):
                                  what the thresholds are calibrated on (their embeddings are in the gallery
                                  too, as the identity rule's negative evidence)

Retention (``expired_visits``, ``prune``): a group's faces from visits older than ``keep_days``, or past the
newest ``max_visits`` visits, are deleted (and a group not seen for ``keep_days``, with the rest of its faces);
strangers' faces past ``max_strangers`` or older than ``strangers_keep_days``. Naming or ignoring a group
deletes it at once. Nothing here is sent anywhere.
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
from edgeface.recognition.strangers import StrangerGroup

log = logging.getLogger("edgeface.daemon.web")

_ID = re.compile(r"[0-9a-z-]{1,64}")
DAY = 86400.0
GROUPS_FILE = "groups.json"
FACES_FILE = "faces.json"


def valid_id(text: str) -> bool:
    """Group and face ids come from this package and the pipeline; anything else in a request is refused before
    it nears a path."""
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
    visit: str = ""  # the pipeline's visit it was seen in ("" before the visit arrived)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": round(self.time, 3), "confidence": round(self.confidence, 5),
                "sharpness": round(self.sharpness, 1), "height": round(self.height, 1), "best": self.best,
                "similarity": round(self.similarity, 5), "visit": self.visit,
                "embedding": np.round(self.embedding.astype(np.float64), 6).tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FaceSample":
        return cls(str(raw["id"]), float(raw["time"]), np.asarray(raw["embedding"], np.float32),
                   float(raw["confidence"]), float(raw["sharpness"]), float(raw["height"]),
                   best=str(raw.get("best", "")), similarity=float(raw.get("similarity", -1.0)),
                   visit=str(raw.get("visit", "")))


class FaceGroup(Protocol):
    """Faces the page shows and acts on together, as one card: a stranger group's."""

    @property
    def id(self) -> str: ...

    @property
    def first(self) -> float: ...

    @property
    def last(self) -> float: ...

    @property
    def visits(self) -> int: ...

    @property
    def samples(self) -> Sequence[FaceSample]: ...


@dataclass
class SavedGroups:
    """What ``FaceStore.load_groups`` read back: the groups, those marked "a stranger", and each group's faces."""

    groups: list[StrangerGroup] = field(default_factory=list)
    marked: set[str] = field(default_factory=set)
    faces: dict[str, list[FaceSample]] = field(default_factory=dict)


@dataclass(frozen=True)
class StrangerFace:
    """A face kept as a stranger's or as not somebody's, with why (``reason``) and whose it is not (``of``:
    a name, or "" for nobody enrolled)."""

    sample: FaceSample
    reason: str
    of: str = ""


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
        self.strangers_keep_days = strangers_keep_days
        self.strangers_keep_s = strangers_keep_days * DAY

    # --- stranger groups --------------------------------------------------------------------------------

    def load_groups(self) -> SavedGroups:
        """The groups kept by earlier runs with their faces (damaged ones are deleted and logged). A visit folder
        of an earlier edgeface (one card per visit) becomes a group of its own."""
        saved = SavedGroups()
        if not self.unknown.is_dir():
            return saved
        try:
            raw = json.loads((self.unknown / GROUPS_FILE).read_text()) if (self.unknown / GROUPS_FILE).is_file() \
                else {}
            for entry in raw.get("groups", []):
                group = StrangerGroup.from_dict(entry)
                if valid_id(group.id):
                    saved.groups.append(group)
            saved.marked = {str(g) for g in raw.get("marked", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("web: stranger groups unreadable (%s); starting afresh", exc)
            saved = SavedGroups()
        known = {g.id for g in saved.groups}
        for folder in sorted(p for p in self.unknown.iterdir() if p.is_dir()):
            try:
                if (folder / "visit.json").is_file():
                    group, samples = _group_of_old_visit(json.loads((folder / "visit.json").read_text()))
                    if group.id in known:
                        raise ValueError(f"group {group.id} exists")
                    saved.groups.append(group)
                    known.add(group.id)
                    self.save_faces(group.id, [s.to_dict() for s in samples],
                                    {s.id: (folder / f"{s.id}.jpg").read_bytes() for s in samples})
                    shutil.rmtree(folder)
                    folder = self.unknown / group.id
                if folder.name not in known:
                    raise ValueError("no such group")
                raw = json.loads((folder / FACES_FILE).read_text())
                saved.faces[folder.name] = [FaceSample.from_dict(s) for s in raw["faces"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("web: unknown faces %s unreadable (%s); deleted", folder.name, exc)
                shutil.rmtree(folder, ignore_errors=True)
        saved.marked &= known
        return saved

    def save_groups(self, groups: Iterable[dict[str, Any]], marked: Iterable[str]) -> None:
        """Write the groups (``StrangerGroup.to_dict()`` each) and the ids of those marked "a stranger"."""
        data = {"groups": list(groups), "marked": sorted(marked)}
        write_private(private_dir(private_dir(self.root) / "unknown") / GROUPS_FILE, json.dumps(data).encode())

    def save_faces(self, group_id: str, faces: list[dict[str, Any]], crops: dict[str, bytes]) -> None:
        """Write a group's faces (``FaceSample.to_dict()`` each) and those crops not yet on disk; drop the crops
        it no longer lists."""
        if not valid_id(group_id):
            return
        folder = private_dir(private_dir(private_dir(self.root) / "unknown") / group_id)
        for face_id, data in crops.items():
            if valid_id(face_id):
                write_private(folder / f"{face_id}.jpg", data)
        write_private(folder / FACES_FILE, json.dumps({"id": group_id, "faces": faces}).encode())
        kept = {f"{f['id']}.jpg" for f in faces} | {FACES_FILE}
        for path in folder.iterdir():
            if path.name not in kept:
                path.unlink(missing_ok=True)

    def delete_group(self, group_id: str) -> None:
        if valid_id(group_id):
            shutil.rmtree(self.unknown / group_id, ignore_errors=True)

    def group_crop(self, group_id: str, face_id: str) -> Path | None:
        if not (valid_id(group_id) and valid_id(face_id)):
            return None
        return self.unknown / group_id / f"{face_id}.jpg"

    def expired_visits(self, visits: dict[tuple[str, str], float], now: float | None = None
                       ) -> set[tuple[str, str]]:
        """Of ``visits`` ({(group, visit): its newest face's time}), those whose faces retention deletes: older
        than ``keep_days``, or past the newest ``max_visits``."""
        now = time.time() if now is None else now
        newest_first = sorted(visits, key=lambda key: -visits[key])
        return {key for i, key in enumerate(newest_first) if i >= self.max_visits or now - visits[key] > self.keep_s}

    # --- strangers -------------------------------------------------------------------------------------

    def add_strangers(self, faces: Iterable[tuple[FaceSample, bytes]], reason: str, of: str = "") -> int:
        """Keep faces (each with its JPEG crop) as strangers' faces, for calibration."""
        folder = private_dir(private_dir(self.root) / "strangers")
        added = 0
        for sample, jpeg in faces:
            if not valid_id(sample.id):
                continue
            write_private(folder / f"{sample.id}.jpg", jpeg)
            record = {**sample.to_dict(), "reason": reason, "of": of}
            write_private(folder / f"{sample.id}.json", json.dumps(record).encode())
            added += 1
        self.prune()
        return added

    def strangers(self) -> list[StrangerFace]:
        """Every stranger's face with why it was kept, newest first."""
        found = []
        for path in self.strangers_dir.glob("*.json") if self.strangers_dir.is_dir() else []:
            try:
                raw = json.loads(path.read_text())
                found.append(StrangerFace(FaceSample.from_dict(raw), str(raw.get("reason", "")),
                                          str(raw.get("of", ""))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("web: stranger's face %s unreadable (%s); deleted", path.name, exc)
                self.delete_stranger(path.stem)
        return sorted(found, key=lambda face: -face.sample.time)

    def delete_stranger(self, face_id: str) -> None:
        if valid_id(face_id):
            for suffix in (".json", ".jpg"):
                (self.strangers_dir / f"{face_id}{suffix}").unlink(missing_ok=True)

    def stranger_crop(self, face_id: str) -> Path | None:
        return self.strangers_dir / f"{face_id}.jpg" if valid_id(face_id) else None

    def prune(self, now: float | None = None) -> None:
        """Strangers' faces past their count or age."""
        now = time.time() if now is None else now
        for i, face in enumerate(self.strangers()):
            if i >= self.max_strangers or now - face.sample.time > self.strangers_keep_s:
                self.delete_stranger(face.sample.id)


def _group_of_old_visit(raw: dict[str, Any]) -> tuple[StrangerGroup, list[FaceSample]]:
    """An unknown visit an earlier edgeface kept (``<visit>/visit.json``), as a group of one visit."""
    samples = [FaceSample.from_dict(s) for s in raw["samples"]]
    if not samples:
        raise ValueError("no faces")
    for sample in samples:
        sample.visit = str(raw["id"])
    mean = np.mean([s.embedding / max(float(np.linalg.norm(s.embedding)), 1e-12) for s in samples], axis=0)
    first, last = float(raw["first"]), float(raw["last"])
    group = StrangerGroup(f"s{int(first * 1000):x}", mean.astype(np.float32), first, last, [str(raw["id"])], 1)
    return StrangerGroup.from_dict(group.to_dict()), samples  # from_dict checks and normalises the centroid

"""The gallery: enrolled people's face embeddings, stored on the device, matched by cosine similarity.

A gallery belongs to one model: embeddings of another model live in another space, so a gallery records the
``model_sha256`` of the bundle it was made with, and one made with another model is refused. By default each
model has its own gallery file in the state directory (:func:`default_gallery_path`), so a new bundle starts
with an empty gallery instead of a meaningless one.

The file is one JSON document, written atomically (a reader never sees half a file; the daemon reloads it when
it changes)::

    {"format": "edgeface-gallery", "format_version": 2, "model_sha256": "...", "embedding_size": 128,
     "similarity_threshold": 0.62, "identity_threshold": 0.71, "calibration": {...},
     "people": [{"id": "9f2c...", "name": "Maya", "added": "2025-01-01T10:00:00+00:00",
                 "photos": [{"file": "maya1.jpg", "sha256": "..."}], "embeddings": [[...], ...]}],
     "negatives": [{"id": "3f2a...", "of": "Maya", "added": "...", "reason": "not Maya", "embedding": [...]}]}

``negatives`` are faces somebody said were *not* a person (``of``: their name), or nobody enrolled at all (``of``
empty: a stranger). The identity rule uses them as evidence (``edgeface.runtime.identity``): a face nearer a
negative of Maya than Maya's own faces is not Maya. Version 1 files (no negatives) are read as they are.

No image is stored in it: only embeddings and the names of the photos they came from (the small face crops that
the web page shows live beside it, ``edgeface.people.album``). Reading and matching need numpy only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from edgeface.core.errors import ConfigError, EdgefaceError
from edgeface.core.fileio import open_private, private_dir, write_private
from edgeface.core.reader import SHA256_HEX, Items, Table, kind_of, read_json, shown
from edgeface.core.paths import default_state_dir
from edgeface.core.results import UNKNOWN

GALLERY_FORMAT = "edgeface-gallery"
GALLERY_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format versions this edgeface reads (1: without negatives)
# Used until `edgeface calibrate` stores a measured one: similarities depend on the model, so this is only a
# starting point.
DEFAULT_SIMILARITY_THRESHOLD = 0.80
# The thresholds a labeler accepts: a cosine below 0.1 (or -1, the bottom of its range) would name nearly
# every face after someone; a probability lives in [0, 1], and an identity threshold just above 1 names nobody
# by the identity head (calibrate puts it there when strangers reach the head's top probability). NaN is
# refused (it would turn matching off).
THRESHOLD_RANGES = {"similarity_threshold": (0.1, 1.0), "identity_threshold": (0.0, 1.01)}
# Bounds of a gallery file, far above what a household needs: 16 MiB is about 12,000 embeddings of 128
# numbers, and parsing it takes about 80 MB (a Pi Zero 2 has 512 MB in all).
MAX_GALLERY_BYTES = 16 << 20
MAX_PEOPLE = 10_000
MAX_EMBEDDINGS = 10_000  # per person, and photo records per person
MAX_EMBEDDING_SIZE = 4096
MAX_NEGATIVES = 100_000  # faces said to be not someone, strangers' faces (kept within web retention limits)
_FACE_ID = re.compile(r"[0-9A-Za-z._-]{1,128}")
_PERSON_ID = re.compile(r"[0-9a-f]{16}")
_NUMBERS = frozenset((int, float))


def check_threshold(name: str, value: float, where: str = "") -> float:
    """``value`` if it is a number within ``THRESHOLD_RANGES[name]``, else one ConfigError line."""
    low, high = THRESHOLD_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ConfigError(f"{where}{name} = {shown(value)}: must be a number in [{low:g}, {high:g}]")
    return float(value)
MAX_NAME_LENGTH = 64


class GalleryError(EdgefaceError):
    """A gallery file is unreadable, of another model, or a request on it is invalid."""


def default_gallery_path(model_sha256: str, state_dir: str | Path | None = None) -> Path:
    """``<state dir>/galleries/<first 16 hex digits of the model's SHA-256>.json``: one gallery per model."""
    return Path(state_dir or default_state_dir()) / "galleries" / f"{model_sha256[:16]}.json"


def check_name(name: str) -> str:
    """A name as stored: trimmed, NFC; refused when empty, too long, reserved or with control characters."""
    cleaned = unicodedata.normalize("NFC", name.strip())
    if not cleaned:
        raise GalleryError("the name is empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise GalleryError(f"name {cleaned[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise GalleryError(f"name {cleaned!r} contains control characters")
    if cleaned.lower() == UNKNOWN:
        raise GalleryError(f"{cleaned!r} is reserved for faces nobody matches; choose another name")
    return cleaned


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), as float32."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def new_person_id() -> str:
    """A person's id: random, kept through renames, so that devices sharing people agree on who is who."""
    import secrets

    return secrets.token_hex(8)


def legacy_person_id(name: str) -> str:
    """The id of a person read from a gallery written before people had ids (format version 1)."""
    import hashlib

    return hashlib.sha256(unicodedata.normalize("NFC", name).casefold().encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Person:
    """One enrolled person: unit-length embeddings (K, D) and the photos they came from."""

    name: str
    embeddings: np.ndarray = field(repr=False)
    photos: tuple[Mapping[str, str], ...] = ()  # {"file": name, "sha256": digest of the file}
    added: str = ""
    id: str = field(default_factory=new_person_id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "added": self.added, "photos": [dict(p) for p in self.photos],
                "embeddings": np.round(self.embeddings.astype(np.float64), 6).tolist()}


@dataclass(frozen=True)
class Negative:
    """A face somebody said was not ``of`` (a person's name), or, with ``of`` empty, nobody enrolled (a stranger)."""

    id: str  # the face's id (its crop's digest where the device kept a crop)
    of: str
    embedding: np.ndarray = field(repr=False)  # (D,) unit length
    added: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "of": self.of, "added": self.added, "reason": self.reason,
                "embedding": np.round(self.embedding.astype(np.float64), 6).tolist()}


@dataclass(frozen=True)
class Match:
    """The best gallery match of each face: index into ``Gallery.names`` (-1: empty gallery) and cosine."""

    index: np.ndarray  # (N,) int
    similarity: np.ndarray  # (N,) float32, -1 for an empty gallery


@dataclass(frozen=True)
class Gallery:
    """Enrolled people for one model, plus the thresholds ``edgeface calibrate`` measured for them.

    Immutable: ``with_person``, ``without`` and ``calibrated`` return a new gallery; ``save`` writes it.
    """

    model_sha256: str
    embedding_size: int
    people: tuple[Person, ...] = ()
    similarity_threshold: float | None = None  # None: not calibrated, DEFAULT_SIMILARITY_THRESHOLD applies
    identity_threshold: float | None = None  # None: not calibrated, the bundle's applies
    # The same for a track's evidence over a visit (calibrated per visit); None: the two above apply.
    visit_similarity_threshold: float | None = None
    visit_identity_threshold: float | None = None
    calibration: Mapping[str, Any] | None = None
    negatives: tuple[Negative, ...] = ()
    path: Path | None = field(default=None, compare=False)

    # --- questions -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.people)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.people)

    def get(self, name: str) -> Person | None:
        key = unicodedata.normalize("NFC", name.strip()).casefold()
        return next((p for p in self.people if p.name.casefold() == key), None)

    @property
    def calibration_is_stale(self) -> bool:
        """Calibrated for other people than those enrolled now (the threshold depends on the gallery)."""
        if self.calibration is None:
            return False
        return sorted(self.calibration.get("people", [])) != sorted(self.names)

    @cached_property
    def _matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """All embeddings stacked (M, D), person by person, and the first row of each person (P,)."""
        if not self.people:
            return np.zeros((0, self.embedding_size), np.float32), np.zeros(0, np.int64)
        rows = unit_rows(np.concatenate([p.embeddings for p in self.people]))
        starts = np.cumsum([0] + [len(p.embeddings) for p in self.people[:-1]])
        return rows, starts

    @cached_property
    def _centres(self) -> np.ndarray:
        """Each person's centre (P, D): the mean of their photos' unit embeddings, at unit length."""
        rows, starts = self._matrix
        if not len(rows):
            return np.zeros((0, self.embedding_size), np.float32)
        return unit_rows(np.add.reduceat(rows, starts, axis=0))

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """How much each face (N, D) looks like each person (N, P): half the cosine with their most similar
        photo, half the cosine with their centre (the mean of their photos).

        The best photo keeps one enrolled photo in another pose or light useful; the centre averages out what
        is particular to each photo (light, expression, the crop), which a stranger's resemblance to one photo
        often is. Together they name more of the household at the same false-accept rate than either alone
        (``benchmarks/household.py``, docs/identity.md). With one photo, both are that photo's cosine.
        """
        faces = unit_rows(np.asarray(embeddings).reshape(-1, self.embedding_size))
        rows, starts = self._matrix
        if not len(rows) or not len(faces):
            return np.zeros((len(faces), len(self.people)), np.float32)
        best = np.maximum.reduceat(faces @ rows.T, starts, axis=1)
        return (0.5 * (best + faces @ self._centres.T)).astype(np.float32)

    def match(self, embeddings: np.ndarray) -> Match:
        """The most similar person for each face."""
        sims = self.similarities(embeddings)
        if sims.shape[1] == 0:
            return Match(np.full(len(sims), -1, np.int64), np.full(len(sims), -1.0, np.float32))
        index = sims.argmax(1)
        return Match(index, sims[np.arange(len(sims)), index])

    @cached_property
    def _negative_matrix(self) -> tuple[np.ndarray, tuple[str, ...]]:
        if not self.negatives:
            return np.zeros((0, self.embedding_size), np.float32), ()
        return unit_rows(np.stack([n.embedding for n in self.negatives])), tuple(n.of.casefold() for n in self.negatives)

    def negative_similarities(self, embeddings: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """For each face (N, D) and each name (K): the cosine similarity of the face with the nearest face said
        to be not that person (their "not X" faces and every stranger's face); -1 where there is none."""
        faces = unit_rows(np.asarray(embeddings).reshape(-1, self.embedding_size))
        out = np.full((len(faces), len(names)), -1.0, np.float32)
        rows, owners = self._negative_matrix
        if not len(rows) or not len(faces):
            return out
        sims = faces @ rows.T
        owner = np.asarray(owners, dtype=object)
        strangers = owner == ""
        for k, name in enumerate(names):
            mask = strangers | (owner == name.casefold())
            if mask.any():
                out[:, k] = sims[:, mask].max(axis=1)
        return out

    # --- changes ---------------------------------------------------------------------------------------

    def with_person(self, name: str, embeddings: np.ndarray, photos: Sequence[Mapping[str, str]] = (),
                    replace_existing: bool = False) -> "Gallery":
        """Add a person, or more photos of one already enrolled (``replace_existing``: start them afresh)."""
        name = check_name(name)
        photos = [_read_photo(Table(p, "", GalleryError, f"{name!r} photo")) for p in photos]
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size or not len(embeddings):
            raise GalleryError(f"{name}: expected embeddings of shape (K, {self.embedding_size}), "
                               f"got {embeddings.shape}")
        existing = self.get(name)
        people = list(self.people)
        if existing is not None and not replace_existing:
            merged = replace(existing, embeddings=np.concatenate([existing.embeddings, unit_rows(embeddings)]),
                             photos=tuple(existing.photos) + tuple(photos))
            people[people.index(existing)] = merged
        else:
            person = Person(name, unit_rows(embeddings), tuple(photos), _now())
            if existing is not None:
                person = replace(person, id=existing.id)
                people[people.index(existing)] = person
            else:
                people.append(person)
        return replace(self, people=tuple(people))

    def without(self, name: str) -> "Gallery":
        """The gallery without that person, their photos and the faces said not to be them."""
        person = self._person(name)
        key = person.name.casefold()
        return replace(self, people=tuple(p for p in self.people if p is not person),
                       negatives=tuple(n for n in self.negatives if n.of.casefold() != key))

    def without_photo(self, name: str, sha256: str) -> "Gallery":
        """Forget one enrolled photo of a person (its embedding and record); a person left with no photo is
        forgotten too. Refused when the gallery's records do not say which embedding came from which photo."""
        person = self._person(name)
        if len(person.photos) != len(person.embeddings):
            raise GalleryError(f"{person.name}: {len(person.embeddings)} embeddings for {len(person.photos)} "
                               "photo records, so one photo cannot be told from another; remove the person")
        index = next((i for i, p in enumerate(person.photos) if p.get("sha256") == sha256), None)
        if index is None:
            raise GalleryError(f"{person.name} has no photo {sha256[:12]}")
        if len(person.embeddings) == 1:
            return self.without(person.name)
        kept = replace(person, embeddings=np.delete(person.embeddings, index, axis=0),
                       photos=person.photos[:index] + person.photos[index + 1:])
        return replace(self, people=tuple(kept if p is person else p for p in self.people))

    def renamed(self, name: str, new_name: str) -> "Gallery":
        """The person ``name`` under ``new_name`` (refused when somebody else already has that name)."""
        person = self._person(name)
        new_name = check_name(new_name)
        other = self.get(new_name)
        if other is not None and other is not person:
            raise GalleryError(f"{other.name!r} is already enrolled; remove one of the two first")
        key = person.name.casefold()
        return replace(self, people=tuple(replace(p, name=new_name) if p is person else p for p in self.people),
                       negatives=tuple(replace(n, of=new_name) if n.of.casefold() == key else n
                                       for n in self.negatives))

    def with_negatives(self, of: str, embeddings: np.ndarray, ids: Sequence[str], reason: str = "") -> "Gallery":
        """Keep faces as evidence that they are not ``of`` (a name, enrolled or trained), or with ``of`` empty
        that they are nobody's (a stranger). A face already kept under the same id is replaced."""
        of = check_name(of) if of else ""
        embeddings = unit_rows(np.asarray(embeddings, np.float32).reshape(-1, self.embedding_size))
        if len(ids) != len(embeddings):
            raise GalleryError(f"{len(ids)} ids for {len(embeddings)} faces")
        added = [Negative(str(i), of, e, _now(), reason) for i, e in zip(ids, embeddings)]
        fresh = {n.id for n in added}
        return replace(self, negatives=tuple(n for n in self.negatives if n.id not in fresh) + tuple(added))

    def without_negatives(self, ids: Sequence[str]) -> "Gallery":
        gone = set(ids)
        return replace(self, negatives=tuple(n for n in self.negatives if n.id not in gone))

    def pruned(self, max_negatives: int, max_age_days: float, now: datetime | None = None) -> "Gallery":
        """Without the negatives past the newest ``max_negatives`` or older than ``max_age_days``: the
        retention limits of faces the camera saw (docs/web.md)."""
        now = now or datetime.now(timezone.utc)
        kept = []
        for negative in sorted(self.negatives, key=lambda n: n.added, reverse=True)[:max_negatives]:
            try:
                age = (now - datetime.fromisoformat(negative.added)).total_seconds() / 86400
            except ValueError:
                age = 0.0
            if age <= max_age_days:
                kept.append(negative)
        if len(kept) == len(self.negatives):
            return self
        keep = {n.id for n in kept}
        return replace(self, negatives=tuple(n for n in self.negatives if n.id in keep))

    def _person(self, name: str) -> Person:
        person = self.get(name)
        if person is None:
            known = ", ".join(self.names) or "nobody is enrolled"
            raise GalleryError(f"{name!r} is not enrolled ({known})")
        return person

    def calibrated(self, similarity_threshold: float, identity_threshold: float | None,
                   details: Mapping[str, Any], visit_similarity_threshold: float | None = None,
                   visit_identity_threshold: float | None = None) -> "Gallery":
        def checked(name: str, value: float | None) -> float | None:
            return None if value is None else check_threshold(name, value)

        return replace(self, similarity_threshold=check_threshold("similarity_threshold", similarity_threshold),
                       identity_threshold=checked("identity_threshold", identity_threshold),
                       visit_similarity_threshold=checked("similarity_threshold", visit_similarity_threshold),
                       visit_identity_threshold=checked("identity_threshold", visit_identity_threshold),
                       calibration={**details, "people": list(self.names), "date": _now()})

    # --- files -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": GALLERY_FORMAT, "format_version": GALLERY_VERSION,
                "model_sha256": self.model_sha256, "embedding_size": self.embedding_size,
                "similarity_threshold": self.similarity_threshold,
                "identity_threshold": self.identity_threshold,
                "visit_similarity_threshold": self.visit_similarity_threshold,
                "visit_identity_threshold": self.visit_identity_threshold, "calibration": self.calibration,
                "people": [p.to_dict() for p in self.people],
                "negatives": [n.to_dict() for n in self.negatives]}

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (temporary file + rename), mode 0600 in a 0700 folder: embeddings are biometric
        data, for the user that enrolled them (on a Pi, the service user) alone."""
        path = Path(path or self.path or "")
        if not path.name:
            raise GalleryError("no path to save the gallery to")
        private_dir(path.parent)
        data = json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")
        return write_private(path, data, durable=True)


def empty_gallery(model_sha256: str, embedding_size: int, path: Path | None = None) -> Gallery:
    if embedding_size <= 0:
        raise GalleryError("this bundle's model has no embedding output, so nobody can be enrolled: train "
                           "and convert it again with this edgeface version")
    return Gallery(model_sha256=model_sha256, embedding_size=embedding_size, path=path)


def read_gallery(path: str | Path, model_sha256: str | None = None) -> Gallery:
    """Load and check a gallery file; with ``model_sha256``, refuse one made with another model.

    Every field is checked as it is read (``edgeface.core.reader``): what ``with_person`` and ``check_name``
    would refuse on write is refused on read too, each problem one ``GalleryError`` line naming the file and
    the field."""
    path = Path(path)
    where = str(path)
    table = Table(read_json(path, MAX_GALLERY_BYTES, GalleryError, "gallery"), where, GalleryError)
    if table.get("format", None) != GALLERY_FORMAT:
        raise GalleryError(f"{path}: not an edgeface gallery")
    version = table.get("format_version", None)
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise GalleryError(f"{path}: gallery format version {shown(version)} is not supported "
                           f"(this edgeface reads version {', '.join(map(str, READABLE_VERSIONS))})")
    sha = table.text("model_sha256", pattern=SHA256_HEX, describe="the model's SHA-256 (64 hex digits)")
    if model_sha256 is not None and sha != model_sha256:
        raise GalleryError(f"{path}: this gallery was made with model {sha[:12]}, not with this bundle's "
                           f"model {model_sha256[:12]}; embeddings of different models cannot be compared "
                           "(enroll the people again with this bundle)")
    size = table.integer("embedding_size", 1, MAX_EMBEDDING_SIZE)
    people: list[Person] = []
    seen: dict[str, str] = {}
    for entry in table.items("people", MAX_PEOPLE, default=[]).tables():
        person = _read_person(entry, size, where)
        key = person.name.casefold()
        if key in seen:
            raise GalleryError(f"{path}: {person.name!r} and {seen[key]!r} are the same name: keep one "
                               "(remove the other, or merge their photos by enrolling them again)")
        seen[key] = person.name
        people.append(person)
    negatives = tuple(_read_negative(entry, size, where)
                      for entry in table.items("negatives", MAX_NEGATIVES, default=[]).tables())

    def threshold(key: str, kind: str) -> float | None:
        value = table.get(key, None)
        return None if value is None else check_threshold(kind, value, f"{path}: ")

    return Gallery(model_sha256=sha, embedding_size=size, people=tuple(people), negatives=negatives,
                   similarity_threshold=threshold("similarity_threshold", "similarity_threshold"),
                   identity_threshold=threshold("identity_threshold", "identity_threshold"),
                   visit_similarity_threshold=threshold("visit_similarity_threshold", "similarity_threshold"),
                   visit_identity_threshold=threshold("visit_identity_threshold", "identity_threshold"),
                   calibration=_read_calibration(table), path=path)


def _read_person(entry: Table, size: int, where: str) -> Person:
    """One ``people`` entry: its name as ``check_name`` stores names, its photo records, and K embeddings of
    ``size`` finite numbers each, none zero."""
    raw_name = entry.text("name", MAX_NAME_LENGTH * 4)
    try:
        name = check_name(raw_name)
    except GalleryError as exc:
        entry.fail("name", f"not a name edgeface stores ({exc})", raw_name)
    entry.name = repr(name)  # fields below are named after the person: 'Maya'.embeddings[2]
    photos = tuple(_read_photo(photo) for photo in entry.items("photos", MAX_EMBEDDINGS, default=[]).tables())
    added = entry.text("added", 64, default="")
    rows = entry.items("embeddings", MAX_EMBEDDINGS, default=[])
    if not len(rows):
        raise GalleryError(f"{where}: {name!r} has no embeddings: enroll them again or remove them")
    embeddings = _unit_embeddings(rows, size)
    if embeddings is None:
        raise GalleryError(f"{where}: {name!r} has an embedding that is zero, NaN or infinite: enroll them again")
    # A stable id (it names the person's MQTT topics and entities); version-1 files had none.
    person_id = entry.text("id", 64, _PERSON_ID, "16 hex digits", default=None, none=True) \
        or legacy_person_id(name)
    return Person(name, embeddings, photos, added, person_id)


def _unit_embeddings(rows: Items, size: int) -> np.ndarray | None:
    """Rows of exactly ``size`` numbers each, scaled to length 1 (in float64, then stored as float32: a
    number past float32's range stays finite); None when one is zero, NaN or infinite."""
    for index, row in enumerate(rows.raw):
        if not isinstance(row, list) or len(row) != size:
            got = f"{len(row)} numbers" if isinstance(row, list) else kind_of(row)
            rows.fail(index, f"must be {size} numbers (the gallery's embedding_size), not {got}")
        if not _NUMBERS.issuperset(map(type, row)):
            rows.fail(index, "must hold numbers only")
    embeddings = np.asarray(rows.raw, dtype=np.float64).reshape(len(rows), size)
    with np.errstate(over="ignore"):  # 1e308 squared: an infinite norm, refused below
        norms = np.linalg.norm(embeddings, axis=1)
    if not np.isfinite(embeddings).all() or not (norms > 0).all() or not np.isfinite(norms).all():
        return None
    return (embeddings / norms[:, None]).astype(np.float32)


def _read_negative(entry: Table, size: int, where: str) -> Negative:
    """A face said to be not ``of`` (a name as ``check_name`` stores it), or a stranger's (``of`` empty): its
    id (letters, digits, ``._-``: it may name a crop), and one embedding of ``size`` numbers."""
    face_id = entry.text("id", 128, _FACE_ID, "letters, digits, '.', '_' or '-'")
    of = entry.text("of", MAX_NAME_LENGTH * 4, default="")
    if of:
        try:
            of = check_name(of)
        except GalleryError as exc:
            entry.fail("of", f"not a name edgeface stores ({exc})", of)
    row = entry.get("embedding")
    embedding = _unit_embeddings(Items([row], where, GalleryError, entry.label("embedding"), 1), size)
    if embedding is None:
        raise GalleryError(f"{where}: negative face {face_id!r} has an embedding that is zero, NaN or infinite")
    return Negative(face_id, of, embedding[0], entry.text("added", 64, default=""),
                    entry.text("reason", 256, default=""))


def _read_photo(photo: Table) -> dict[str, str]:
    """A photo record: the photo's file name and SHA-256 (which names its face crop on disk: hex only, so
    that it can never point outside the crops folder), and any other short text fields."""
    record = {"file": photo.text("file", 255, default=""),
              "sha256": photo.text("sha256", pattern=SHA256_HEX, describe="64 hex digits")}
    for key in photo.raw:
        if key not in record:
            record[key] = photo.text(key, 255)
    return record


def _read_calibration(table: Table) -> dict[str, Any] | None:
    """What ``calibrate`` recorded: numbers, the people calibrated for, its date; other fields are kept as
    they are (they are shown, never used)."""
    if table.get("calibration", None) is None:
        return None
    calibration = table.table("calibration")
    for key in ("far_target", "far_measured", "gallery_far", "model_far"):
        calibration.number(key, 0.0, 1.0, default=None, none=True)
    for key in ("faces", "photos"):
        calibration.integer(key, 0, 1 << 40, default=0)
    calibration.items("people", MAX_PEOPLE, default=[]).texts(MAX_NAME_LENGTH * 4)
    calibration.text("date", 64, default="")
    return dict(calibration.raw)


def open_gallery(model_sha256: str, embedding_size: int, path: str | Path | None = None,
                 state_dir: str | Path | None = None) -> Gallery:
    """The gallery at ``path`` (default: this model's file in the state directory), or an empty one."""
    path = Path(path) if path else default_gallery_path(model_sha256, state_dir)
    if not path.exists():
        return empty_gallery(model_sha256, embedding_size, path)
    gallery = read_gallery(path, model_sha256)
    if gallery.embedding_size != embedding_size:
        raise GalleryError(f"{path}: embeddings of size {gallery.embedding_size}, the model makes "
                           f"{embedding_size}")
    return gallery


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of one gallery between processes (two `enroll` at once lose nothing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the write itself is still atomic)
        yield
        return
    try:
        private_dir(path.parent)
        handle = open_private(path.with_name(path.name + ".lock"), os.O_RDWR)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot write to the state directory ({exc.strerror or exc}); "
                          "set EDGEFACE_STATE_DIR or pass --state-dir") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


__all__ = ["DEFAULT_SIMILARITY_THRESHOLD", "THRESHOLD_RANGES", "Gallery", "GalleryError", "Match", "Negative",
           "Person",
           "check_name", "check_threshold", "default_gallery_path", "empty_gallery", "locked", "open_gallery",
           "read_gallery"]

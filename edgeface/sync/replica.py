"""One device's copy of the household's people: the records it holds, the gallery they make, and the records a
changed gallery makes. Pure logic: no file, no network, no clock but the one given.

**Merging** keeps, per element, the version ``supersedes`` prefers: a join (commutative, associative,
idempotent), so devices that hold the same records hold the same replica, whatever order the records came in.

**The gallery** of a replica (``materialize``) is a pure function of its records:

* a person is in it when their record is live and they have at least one live face;
* people whose names are equal (ignoring case) are one person: the household enrolled the same name on two
  devices at once (or renamed somebody to a name in use) and means one person. Their faces are pooled; the id
  is the smallest of theirs; the name is the one written last;
* faces in the order they were enrolled; negatives of a removed person are left out; the settings as recorded.

**A change** to the gallery file, made by another process (``edgeface enroll``, ``people remove``,
``calibrate``, the web page), is the difference between the gallery the replica last made (``base``) and the
file (``changes``): each element that differs becomes a record stamped by this device. Removing a person writes
a tombstone for them and for each of their faces, so that no embedding of theirs stays on the broker.
"""

from __future__ import annotations

import base64
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edgeface.core.gallery import Gallery, Negative, Person, new_person_id, unit_rows
from edgeface.sync.clock import HybridClock
from edgeface.sync.records import (
    EPOCH_KEY,
    SETTINGS,
    Record,
    decode_embedding,
    embedding_face_id,
    encode_embedding,
    face_key,
    negative_key,
    person_key,
    setting_key,
    supersedes,
)


def name_key(name: str) -> str:
    """Names that are one person: equal after NFC and case folding (as ``Gallery.get`` compares them)."""
    return unicodedata.normalize("NFC", name.strip()).casefold()


@dataclass(frozen=True)
class Provenance:
    """Where each element of a materialised gallery came from: gallery person id -> the person ids pooled in
    it, (gallery person id, face id) -> the face records, negative id -> its record."""

    people: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    faces: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    negatives: Mapping[str, str] = field(default_factory=dict)


EMPTY = Provenance()


def person_face_ids(person: Person) -> list[str]:
    """Each enrolled face's id: its photo's SHA-256 when every face has its photo record, else a digest of its
    embedding."""
    photos = person.photos
    if len(photos) == len(person.embeddings) and all(_is_digest(p.get("sha256")) for p in photos):
        return [str(p["sha256"]) for p in photos]
    return [embedding_face_id(e) for e in person.embeddings]


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class Replica:
    """The records one device holds for one embedding space, and what they make."""

    def __init__(self, device: str, embedding_size: int, clock: HybridClock | None = None,
                 records: Iterable[Record] = ()) -> None:
        self.device = device
        self.embedding_size = embedding_size
        self.clock = clock or HybridClock()
        # A face's crop (JPEG) by its photo's SHA-256, sent with the face when the household shares crops.
        self.crop_source: Callable[[str], bytes | None] | None = None
        self.records: dict[str, Record] = {}
        for record in records:
            self.merge(record)

    # --- merging --------------------------------------------------------------------------------------------

    def merge(self, record: Record) -> bool:
        """Keep ``record`` if it supersedes what is held for its element; True when it changed the replica."""
        held = self.records.get(record.key)
        if held is not None and (held == record or not supersedes(record, held)):
            return False
        self.records[record.key] = record
        self.clock.observe(record.stamp)
        return True

    def stamp(self, key: str, data: Mapping[str, Any] | None) -> Record:
        """A new version of an element, written by this device now, merged."""
        record = Record(key, self.clock.tick(), self.device, data)
        self.merge(record)
        return record

    def drop(self, key: str) -> None:
        self.records.pop(key, None)

    # --- the gallery ----------------------------------------------------------------------------------------

    def _live(self, kind: str) -> list[Record]:
        return [r for r in self.records.values() if r.kind == kind and not r.deleted]

    def _removed_people(self) -> set[str]:
        return {r.key.split("/")[1] for r in self.records.values() if r.kind == "person" and r.deleted}

    def materialize(self, model_sha256: str, path: Any = None) -> tuple[Gallery, Provenance]:
        """The gallery these records make, and where each of its elements came from."""
        people = {r.key.split("/")[1]: r for r in self._live("person")}
        faces: dict[str, list[Record]] = {}
        for record in self._live("face"):
            owner = record.key.split("/")[1]
            if owner in people:
                faces.setdefault(owner, []).append(record)
        groups: dict[str, list[str]] = {}
        for pid in sorted(people):
            if pid in faces:
                groups.setdefault(name_key(str(people[pid].data["name"])), []).append(pid)  # type: ignore[index]
        gallery_people: list[Person] = []
        provenance_people: dict[str, tuple[str, ...]] = {}
        provenance_faces: dict[tuple[str, str], list[str]] = {}
        named: dict[str, str] = {}  # person id -> the name of the gallery person they are in
        for members in groups.values():
            rep = members[0]  # sorted: the smallest id
            name = str(max((people[m] for m in members), key=lambda r: r.version).data["name"])  # type: ignore[index]
            pooled: dict[str, Record] = {}
            for record in sorted((f for m in members for f in faces[m]), key=lambda r: (r.key.split("/")[1] != rep,
                                                                                      r.key)):
                fid = record.key.split("/")[2]
                pooled.setdefault(fid, record)
                provenance_faces.setdefault((rep, fid), []).append(record.key)
            ordered = sorted(pooled.items(), key=lambda item: (item[1].data["added"], item[1].data["order"],  # type: ignore[index]
                                                               item[0]))
            embeddings = np.stack([decode_embedding(r.data["embedding"], self.embedding_size)  # type: ignore[index]
                                   for _, r in ordered])
            photos = [dict(r.data["photo"]) for _, r in ordered if r.data["photo"] is not None]  # type: ignore[index]
            added = str(people[rep].data["added"])  # type: ignore[index]
            gallery_people.append(Person(name, unit_rows(embeddings), tuple(photos), added, rep))
            provenance_people[rep] = tuple(members)
            for member in members:
                named[member] = name
        gallery_people.sort(key=lambda p: (p.added, p.id))
        negatives: list[Negative] = []
        provenance_negatives: dict[str, str] = {}
        removed = self._removed_people()
        for record in sorted(self._live("negative"), key=lambda r: (r.data["added"], r.key)):  # type: ignore[index]
            data = record.data
            of = data["of"]  # type: ignore[index]
            if "person" in of:
                if of["person"] in removed or of["person"] not in people:
                    continue  # not X, for a person removed (or not heard of yet)
                target = named.get(of["person"], str(people[of["person"]].data["name"]))  # type: ignore[index]
            else:
                target = str(of.get("name", ""))
            embedding = unit_rows(decode_embedding(data["embedding"], self.embedding_size)[None])[0]  # type: ignore[index]
            negatives.append(Negative(str(data["id"]), target, embedding, str(data["added"]),  # type: ignore[index]
                                      str(data["reason"])))  # type: ignore[index]
            provenance_negatives[str(data["id"])] = record.key  # type: ignore[index]
        settings = {name: self._setting(name) for name in SETTINGS}
        gallery = Gallery(model_sha256=model_sha256, embedding_size=self.embedding_size, people=tuple(gallery_people),
                          negatives=tuple(negatives), path=path, **settings)
        return gallery, Provenance(provenance_people, {k: tuple(v) for k, v in provenance_faces.items()},
                                   provenance_negatives)

    def _setting(self, name: str) -> Any:
        record = self.records.get(setting_key(name))
        return None if record is None or record.deleted else record.data["value"]  # type: ignore[index]

    # --- changes --------------------------------------------------------------------------------------------

    def changes(self, base: Gallery | None, provenance: Provenance, current: Gallery,
                adopt: bool = False) -> list[Record]:
        """The records that turn ``base`` (the gallery this replica made last, with its provenance) into
        ``current`` (the file now), stamped and merged.

        ``adopt``: ``base`` is unknown (a device joining the household, or one that lost its sync state): the
        file's people, faces, negatives and settings that the household does not know yet are added, and the
        rest is left to the household's records.
        """
        drafts = (self._adopt(current) if adopt or base is None
                  else self._diff(base, provenance, current))
        return [self.stamp(key, data) for key, data in drafts]

    def _adopt(self, current: Gallery) -> list[tuple[str, dict[str, Any] | None]]:
        drafts: list[tuple[str, dict[str, Any] | None]] = []
        removed = self._removed_people()
        known_names = {name_key(str(r.data["name"])): r.key.split("/")[1]  # type: ignore[index]
                       for r in self._live("person")}
        ids: dict[str, str] = {}
        for person in current.people:
            pid = person.id
            if pid in removed:  # removed by the household since: this device's copy is not a new enrollment
                continue
            if person_key(pid) not in self.records:
                pid = known_names.get(name_key(person.name), pid)
                if person_key(pid) not in self.records:
                    drafts.append((person_key(pid), {"name": person.name, "added": person.added}))
            ids[name_key(person.name)] = pid
            drafts += [(face_key(pid, fid), {**data, "order": order})
                       for order, (fid, data) in enumerate(self._face_data(person))
                       if face_key(pid, fid) not in self.records]
        for negative in current.negatives:
            key = negative_key(negative.id)
            if key not in self.records:
                drafts.append((key, self._negative_data(negative, current, ids)))
        for name in SETTINGS:
            value = getattr(current, name)
            if setting_key(name) not in self.records and value is not None:
                drafts.append((setting_key(name), {"value": value}))
        return drafts

    def _diff(self, base: Gallery, provenance: Provenance, current: Gallery
              ) -> list[tuple[str, dict[str, Any] | None]]:
        drafts: list[tuple[str, dict[str, Any] | None]] = []
        before = {p.id: p for p in base.people}
        removed = self._removed_people()
        ids: dict[str, str] = {}  # name in the file -> the person id its records go under
        for person in current.people:
            old = before.get(person.id)
            if old is None:
                pid = person.id if person.id not in removed else new_person_id()
                drafts.append((person_key(pid), {"name": person.name, "added": person.added}))
                drafts += [(face_key(pid, fid), {**data, "order": order})
                           for order, (fid, data) in enumerate(self._face_data(person))]
                ids[name_key(person.name)] = pid
                continue
            ids[name_key(person.name)] = person.id
            members = provenance.people.get(person.id, (person.id,))
            if (person.name, person.added) != (old.name, old.added):
                for member in members:
                    held = self.records.get(person_key(member))
                    added = person.added if member == person.id or held is None or held.deleted else \
                        str(held.data["added"])  # type: ignore[index]
                    drafts.append((person_key(member), {"name": person.name, "added": added}))
            had = set(person_face_ids(old))
            now = dict(self._face_data(person))
            drafts += [(face_key(person.id, fid), {**data, "order": order})
                       for order, (fid, data) in enumerate(now.items()) if fid not in had]
            for fid in had - set(now):
                drafts += [(key, None) for key in provenance.faces.get((person.id, fid), (face_key(person.id, fid),))]
        for pid, old in before.items():
            if pid not in {p.id for p in current.people}:
                members = provenance.people.get(pid, (pid,))
                drafts += [(person_key(member), None) for member in members]
                for fid in person_face_ids(old):
                    drafts += [(key, None) for key in provenance.faces.get((pid, fid), (face_key(pid, fid),))]
        old_negatives = {n.id: n for n in base.negatives}
        old_ids = {name_key(p.name): p.id for p in base.people}
        for negative in current.negatives:
            data = self._negative_data(negative, current, ids)
            kept = old_negatives.get(negative.id)
            if kept is None or _comparable(self._negative_data(kept, base, old_ids)) != _comparable(data):
                drafts.append((negative_key(negative.id), data))
        for nid in set(old_negatives) - {n.id for n in current.negatives}:
            drafts.append((provenance.negatives.get(nid, negative_key(nid)), None))
        for name in SETTINGS:
            if getattr(base, name) != getattr(current, name):
                drafts.append((setting_key(name), {"value": getattr(current, name)}))
        return drafts

    def _face_data(self, person: Person) -> list[tuple[str, dict[str, Any]]]:
        """Each face of a gallery person as record data, by face id (duplicates once)."""
        aligned = len(person.photos) == len(person.embeddings)
        out: dict[str, dict[str, Any]] = {}
        for i, fid in enumerate(person_face_ids(person)):
            photo = dict(person.photos[i]) if aligned and fid == person.photos[i].get("sha256") else None
            if photo is not None:
                photo = {str(k): str(v) for k, v in photo.items()}
            if fid in out:
                continue
            out[fid] = {"embedding": encode_embedding(person.embeddings[i]), "photo": photo, "added": person.added}
            crop = self.crop_source(fid) if photo is not None and self.crop_source is not None else None
            if crop:
                out[fid]["crop"] = base64.b64encode(crop).decode("ascii")
        return list(out.items())

    def _negative_data(self, negative: Negative, gallery: Gallery, ids: Mapping[str, str]) -> dict[str, Any]:
        person = gallery.get(negative.of) if negative.of else None
        of: dict[str, str] = ({} if not negative.of else
                              {"person": ids.get(name_key(person.name), person.id)} if person is not None
                              else {"name": negative.of})
        return {"id": negative.id, "embedding": encode_embedding(negative.embedding), "of": of,
                "added": negative.added, "reason": negative.reason}

    # --- housekeeping ---------------------------------------------------------------------------------------

    def orphans(self) -> list[Record]:
        """Tombstones for the faces and negatives of removed people that are still live (enrolled on one
        device while another removed the person), written by the device that wrote either: their embeddings
        leave the broker too."""
        removed = {r.key.split("/")[1]: r for r in self.records.values() if r.kind == "person" and r.deleted}
        out = []
        for record in list(self.records.values()):
            if record.deleted:
                continue
            owner = (record.key.split("/")[1] if record.kind == "face"
                     else (record.data or {}).get("of", {}).get("person") if record.kind == "negative" else None)
            tombstone = removed.get(owner or "")
            if tombstone is not None and self.device in (record.device, tombstone.device):
                out.append(self.stamp(record.key, None))
        return out

    def expired(self, now_ms: int, lifetime_ms: int) -> list[str]:
        """The keys of tombstones older than ``lifetime_ms``, dropped from the replica (and to be cleared from
        the broker): removals are remembered that long."""
        keys = [k for k, r in self.records.items() if r.deleted and now_ms - r.stamp.wall_ms > lifetime_ms]
        for key in keys:
            del self.records[key]
        return keys

    def epoch(self) -> Record | None:
        return self.records.get(EPOCH_KEY)


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    """A negative's data without its embedding: a face's embedding does not change, and the file keeps 6
    decimals of it, so comparing it would see changes that are not there."""
    return {k: v for k, v in data.items() if k != "embedding"}


def canonical(gallery: Gallery) -> dict[str, Any]:
    """What two galleries must share to be the same for the household (the model's digest aside)."""
    raw = gallery.to_dict()
    raw.pop("model_sha256", None)
    return raw


__all__ = ["EMPTY", "Provenance", "Replica", "canonical", "name_key", "person_face_ids", "replace"]

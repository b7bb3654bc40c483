"""What the Unknown page lists: groups of faces nobody could name, each named, kept as a stranger's or ignored
as a whole. ``Unknowns`` is the interface the page uses; ``VisitUnknowns`` is today's source, one group per
visit (a track, from the moment a person comes into view until they leave), kept in memory by the watcher
while it lasts and written to the store on the page's own thread (``flush``).

Another source (groups of a stranger's visits across days, say) only has to answer the same few questions.
"""

from __future__ import annotations

import threading
from typing import Protocol, Sequence

from edgeface.web.store import FaceGroup, FaceSample, FaceStore, valid_id
from edgeface.web.watch import FaceWatcher


class Unknowns(Protocol):
    """Groups of faces nobody could name, newest first. ``lock`` is held by an action on a group (naming it,
    say) so that the group is not written or expired meanwhile."""

    lock: threading.Lock

    def groups(self) -> Sequence[FaceGroup]: ...

    def count(self) -> int: ...

    def group(self, group_id: str) -> FaceGroup | None: ...

    def crop(self, group_id: str, face_id: str) -> bytes | None:
        """The JPEG of one face of a group (None when there is no such face)."""

    def faces(self, group: FaceGroup, chosen: set[str]) -> list[tuple[FaceSample, bytes]]:
        """The faces of ``group`` whose ids are in ``chosen``, with their JPEGs."""

    def drop(self, group_id: str) -> None:
        """Named, kept as a stranger's or ignored: the group leaves the list, and its faces the disk."""

    def flush(self) -> None:
        """Write what changed since the last call and apply retention (the page's thread, every second)."""


class VisitUnknowns:
    """One group per unknown visit: the watcher's visits, written to ``store`` (None: naming is off)."""

    def __init__(self, watcher: FaceWatcher, store: FaceStore | None) -> None:
        self.watcher = watcher
        self.store = store
        self.lock = threading.Lock()  # writes of unknown faces against the actions that delete them

    def groups(self) -> Sequence[FaceGroup]:
        return self.watcher.newest_visits()

    def count(self) -> int:
        return len(self.watcher.newest_visits())

    def group(self, group_id: str) -> FaceGroup | None:
        return self.watcher.visit(group_id) if valid_id(group_id) else None

    def crop(self, group_id: str, face_id: str) -> bytes | None:
        visit = self.watcher.visit(group_id)
        sample = next((s for s in visit.samples if s.id == face_id), None) if visit is not None else None
        if sample is not None and sample.jpeg is not None:  # not written yet
            return sample.jpeg
        path = self.store.visit_crop(group_id, face_id) if self.store is not None else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def faces(self, group: FaceGroup, chosen: set[str]) -> list[tuple[FaceSample, bytes]]:
        faces, chosen = [], set(chosen)
        for sample in group.samples:
            if sample.id in chosen:
                chosen.discard(sample.id)  # each face once, however often its crop was seen
                data = self.crop(group.id, sample.id)
                if data is not None:
                    faces.append((sample, data))
        return faces

    def drop(self, group_id: str) -> None:
        self.watcher.take_visit(group_id)
        if self.store is not None:
            self.store.delete_visit(group_id)

    def flush(self) -> None:
        """Write the visits changed since the last call, and delete those retention removes."""
        if self.store is None:
            return
        with self.lock:
            for raw, crops in self.watcher.pending():
                if self.watcher.visit(raw["id"]) is None:  # named or ignored meanwhile
                    continue
                self.store.save_visit(raw, crops)
                self.watcher.written(raw["id"], set(crops))
            expired = self.store.expired(self.watcher.newest_visits())
            for visit in expired:
                self.store.delete_visit(visit.id)
            self.watcher.forget_visits(expired)

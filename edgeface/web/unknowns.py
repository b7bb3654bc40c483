"""What the Unknown page lists: the strangers the camera saw, one card per stranger group (the same unknown
person's visits, grouped across time by face: ``edgeface.recognition.strangers``), each with the good crops of
its visits; a group is named, marked "a stranger" or ignored as a whole.

``Unknowns`` is the interface the page uses; ``StrangerCards`` is its source. The groups themselves are the
recognition pipeline's (``FacePipeline.strangers``, which assigns each unknown visit to one): the cards mirror
them on the pipeline's thread (``sync``), where the page's removals are also handed back to them, so that the
pipeline's groups are never touched by another thread. Crops are added on the pipeline's thread (``add``) and
written, with the groups, on the page's own thread (``flush``), which also applies retention.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from edgeface.web.store import FaceGroup, FaceSample, FaceStore, SavedGroups, valid_id

if TYPE_CHECKING:
    from edgeface.recognition.strangers import StrangerGroups

FACES_PER_VISIT = 4  # crops kept of one visit: the first that pass the gates, SAMPLE_EVERY apart (watch.py)
FACES_PER_GROUP = 16  # crops on one card; past it a new visit's crop replaces one of the visit with the most


class Unknowns(Protocol):
    """Groups of faces nobody could name, newest first. ``lock`` is held by an action on a group (naming it,
    say) so that the group is not written or expired meanwhile."""

    lock: threading.RLock

    def groups(self) -> Sequence[FaceGroup]: ...

    def count(self) -> int: ...

    def group(self, group_id: str) -> FaceGroup | None: ...

    def crop(self, group_id: str, face_id: str) -> bytes | None:
        """The JPEG of one face of a group (None when there is no such face)."""

    def faces(self, group: FaceGroup, chosen: set[str]) -> list[tuple[FaceSample, bytes]]:
        """The faces of ``group`` whose ids are in ``chosen``, with their JPEGs."""

    def drop(self, group_id: str) -> None:
        """Named or ignored: the group leaves the list, the pipeline's groups, and its faces the disk."""

    def mark(self, group_id: str) -> None:
        """Marked "a stranger": the group stays (the person's next visits join it) but makes no card again and
        keeps no face."""

    def flush(self) -> None:
        """Write what changed since the last call and apply retention (the page's thread, every second)."""


@dataclass
class StrangerCard:
    """One stranger group as the page shows it."""

    id: str
    first: float
    last: float
    visits: int  # visits in all (the pipeline's count)
    raw: dict[str, Any] = field(repr=False)  # the group as the pipeline saves it (StrangerGroup.to_dict)
    samples: list[FaceSample] = field(default_factory=list)
    marked: bool = False  # "a stranger": no card, no face kept


class StrangerCards:
    """The cards of the Unknown page over the pipeline's stranger groups ``strangers``, kept in ``store`` (None:
    naming is off, nothing is kept)."""

    def __init__(self, strangers: "StrangerGroups", store: FaceStore | None) -> None:
        self.strangers = strangers
        self.store = store
        self.lock = threading.RLock()
        self.cards: dict[str, StrangerCard] = {}
        self._visit_group: dict[str, str] = {}  # the pipeline's visit id -> its group (visits of this run)
        self._drop: set[str] = set()  # removed on the page: to be removed from the pipeline's groups too
        self._dirty: set[str] = set()  # groups whose faces changed since the last flush
        self._gone: set[str] = set()  # groups whose folder is to be deleted
        self._groups_changed = False

    @classmethod
    def load(cls, strangers: "StrangerGroups", store: FaceStore | None) -> "StrangerCards":
        """Cards for the groups ``store`` kept, which join ``strangers`` (so their ids stay what they were)."""
        cards = cls(strangers, store)
        saved = store.load_groups() if store is not None else SavedGroups()
        for group in saved.groups:
            strangers.groups.setdefault(group.id, group)
        for group in strangers.groups.values():
            samples = saved.faces.get(group.id, []) if group.id not in saved.marked else []
            last = max([group.last_seen, *(s.time for s in samples)])
            cards.cards[group.id] = StrangerCard(group.id, group.first_seen, last, group.count, group.to_dict(),
                                                 samples, group.id in saved.marked)
        strangers.changed = False
        return cards

    # --- the pipeline's thread -------------------------------------------------------------------------

    def sync(self) -> None:
        """Hand the page's removals to the pipeline's groups, then mirror what changed in them."""
        with self.lock:
            for group_id in self._drop:
                self.strangers.remove(group_id)
            self._drop.clear()
            if not self.strangers.changed:
                return
            self.strangers.changed = False
            current = self.strangers.groups
            for group_id in [g for g in self.cards if g not in current]:  # the pipeline let it go (too many)
                self._forget(group_id)
            for group in current.values():
                card = self.cards.get(group.id)
                if card is None:
                    card = self.cards[group.id] = StrangerCard(group.id, group.first_seen, group.last_seen, 0, {})
                card.first, card.visits, card.raw = group.first_seen, group.count, group.to_dict()
                card.last = max(card.last, group.last_seen)  # the group's is its latest visit's arrival
            self._groups_changed = True

    def arrived(self, visit_id: str, group_id: str) -> None:
        """An unknown visit arrived, in that group."""
        with self.lock:
            if group_id in self.cards:
                self._visit_group[visit_id] = group_id

    def named(self, visit_id: str) -> None:
        """A visit got a name after all: its faces are nobody's stranger's."""
        with self.lock:
            card = self.cards.get(self._visit_group.pop(visit_id, ""))
            if card is not None and any(s.visit == visit_id for s in card.samples):
                card.samples = [s for s in card.samples if s.visit != visit_id]
                self._dirty.add(card.id)

    def wants(self, visit_id: str) -> bool:
        """Whether a face of this visit would be kept: its group has a card that keeps faces, with room for it."""
        with self.lock:
            card = self.cards.get(self._visit_group.get(visit_id, ""))
            return card is not None and not card.marked and \
                sum(s.visit == visit_id for s in card.samples) < FACES_PER_VISIT

    def add(self, visit_id: str, sample: FaceSample) -> bool:
        """Keep one face (its JPEG in ``sample.jpeg`` until written) of an unknown visit, on its group's card."""
        with self.lock:
            if not self.wants(visit_id):
                return False
            card = self.cards[self._visit_group[visit_id]]
            if any(s.id == sample.id for s in card.samples):  # a crop identical to one kept (a still scene, a
                return False  # looping file) adds nothing and would be enrolled twice
            sample.visit = visit_id
            if len(card.samples) >= FACES_PER_GROUP:  # room: one of the visit with the most faces goes
                counts: dict[str, int] = {}
                for s in card.samples:
                    counts[s.visit] = counts.get(s.visit, 0) + 1
                crowded = max(counts, key=lambda v: counts[v])
                card.samples.remove(next(s for s in card.samples if s.visit == crowded))
            card.samples.append(sample)
            card.last = max(card.last, sample.time)
            self._dirty.add(card.id)
            return True

    def group_of(self, visit_id: str) -> str:
        """The card a visit's faces are on ("" for none)."""
        with self.lock:
            card = self.cards.get(self._visit_group.get(visit_id, ""))
            return card.id if card is not None and card.samples and not card.marked else ""

    # --- the page's threads ----------------------------------------------------------------------------

    def groups(self) -> list[StrangerCard]:
        with self.lock:
            return sorted((c for c in self.cards.values() if c.samples and not c.marked), key=lambda c: -c.last)

    def count(self) -> int:
        return len(self.groups())

    def group(self, group_id: str) -> StrangerCard | None:
        with self.lock:
            card = self.cards.get(group_id) if valid_id(group_id) else None
            return card if card is not None and card.samples and not card.marked else None

    def crop(self, group_id: str, face_id: str) -> bytes | None:
        with self.lock:
            card = self.cards.get(group_id)
            sample = next((s for s in card.samples if s.id == face_id), None) if card is not None else None
            if sample is None:
                return None
            if sample.jpeg is not None:  # not written yet
                return sample.jpeg
        path = self.store.group_crop(group_id, face_id) if self.store is not None else None
        try:
            return path.read_bytes() if path is not None else None
        except OSError:  # deleted meanwhile
            return None

    def faces(self, group: FaceGroup, chosen: set[str]) -> list[tuple[FaceSample, bytes]]:
        faces, chosen = [], set(chosen)
        for sample in list(group.samples):
            if sample.id in chosen:
                chosen.discard(sample.id)  # each face once, however often its crop was seen
                data = self.crop(group.id, sample.id)
                if data is not None:
                    faces.append((sample, data))
        return faces

    def drop(self, group_id: str) -> None:
        with self.lock:
            if group_id in self.cards:
                self._forget(group_id)
                self._drop.add(group_id)
                self._groups_changed = True
                if self.store is not None:  # its faces leave the disk now; the groups file at the next flush
                    self.store.delete_group(group_id)
                    self._gone.discard(group_id)

    def mark(self, group_id: str) -> None:
        with self.lock:
            card = self.cards.get(group_id)
            if card is not None:
                card.marked, card.samples = True, []
                self._dirty.add(group_id)
                self._groups_changed = True

    def flush(self, now: float | None = None) -> None:
        """Write the groups and the faces changed since the last call, and delete what retention removes."""
        if self.store is None:
            return
        with self.lock:
            self._expire(time.time() if now is None else now)
            for group_id in self._gone:
                self.store.delete_group(group_id)
            self._gone.clear()
            for group_id in self._dirty:
                card = self.cards.get(group_id)
                if card is None:
                    continue
                if not card.samples:
                    self.store.delete_group(group_id)
                    continue
                self.store.save_faces(group_id, [s.to_dict() for s in card.samples],
                                      {s.id: s.jpeg for s in card.samples if s.jpeg is not None})
                for sample in card.samples:  # on disk: let go of the bytes
                    sample.jpeg = None
            self._dirty.clear()
            if self._groups_changed:
                self._groups_changed = False
                self.store.save_groups([c.raw for c in self.cards.values() if c.raw],
                                       [c.id for c in self.cards.values() if c.marked])

    # --- steps -------------------------------------------------------------------------------------------

    def _forget(self, group_id: str) -> None:
        self.cards.pop(group_id, None)
        self._visit_group = {v: g for v, g in self._visit_group.items() if g != group_id}
        self._dirty.discard(group_id)
        self._gone.add(group_id)

    def _expire(self, now: float) -> None:
        """Retention (``FaceStore``): groups not seen for ``keep_days`` go; so do the faces of visits older than
        that or past the newest ``max_visits``."""
        store = self.store
        assert store is not None
        for card in [c for c in self.cards.values() if now - c.last > store.keep_s]:
            self.drop(card.id)
        newest: dict[tuple[str, str], float] = {}
        for card in self.cards.values():
            for sample in card.samples:
                key = (card.id, sample.visit)
                newest[key] = max(newest.get(key, 0.0), sample.time)
        for group_id, visit in store.expired_visits(newest, now):
            card = self.cards[group_id]
            card.samples = [s for s in card.samples if s.visit != visit]
            self._dirty.add(group_id)

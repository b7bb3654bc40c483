"""Strangers remembered: visits nobody could name, grouped across time by the face seen.

Each visit that ends unknown joins the group whose faces it is most similar to (the cosine similarity of its
averaged embedding with the group's, at least ``threshold``: the similarity at which the device would name an
enrolled person), or starts a new group. "The same unknown person, 5 visits this week" is one group; naming it
on the web page enrolls the good faces of all its visits at once. Pure numpy; whoever keeps faces on disk
(the web page's store) saves and loads the groups with ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

import numpy as np

MAX_GROUPS = 500
MAX_VISITS_LISTED = 50  # visit ids a group remembers (its count goes on)


@dataclass
class StrangerGroup:
    id: str
    centroid: np.ndarray = field(repr=False)  # (D,) unit: its visits' embeddings averaged
    first_seen: float
    last_seen: float
    visits: list[str] = field(default_factory=list)  # the latest visit ids
    count: int = 0  # visits in all

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "first_seen": round(self.first_seen, 3), "last_seen": round(self.last_seen, 3),
                "visits": list(self.visits), "count": self.count,
                "centroid": np.round(self.centroid.astype(np.float64), 6).tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "StrangerGroup":
        centroid = np.asarray(raw["centroid"], np.float32)
        if centroid.ndim != 1 or not np.isfinite(centroid).all() or not np.linalg.norm(centroid) > 0:
            raise ValueError("a stranger group's centroid must be a non-zero vector")
        return cls(str(raw["id"]), centroid / np.linalg.norm(centroid), float(raw["first_seen"]),
                   float(raw["last_seen"]), [str(v) for v in raw.get("visits", [])][-MAX_VISITS_LISTED:],
                   int(raw.get("count", 0)))


class StrangerGroups:
    """Groups of unknown visits; the oldest group goes when there are more than ``max_groups``."""

    def __init__(self, groups: list[StrangerGroup] = (), max_groups: int = MAX_GROUPS) -> None:  # type: ignore[assignment]
        self.groups: dict[str, StrangerGroup] = {g.id: g for g in groups}
        self.max_groups = max_groups
        self.changed = False  # since the owner last saved

    def assign(self, visit_id: str, embedding: np.ndarray, when: float, threshold: float,
               busy: Collection[str] = ()) -> str:
        """The group of an unknown visit (its faces' averaged embedding): the nearest at ``threshold`` or above,
        else a new one; never one of ``busy`` (groups of visits still open: two faces in view at once are two
        people). Returns the group's id."""
        unit = np.asarray(embedding, np.float64)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
        group = self.nearest(unit, threshold, busy)
        if group is None:
            group_id = f"s{int(when * 1000):x}"
            while group_id in self.groups:  # two new groups in one millisecond
                group_id += "x"
            group = StrangerGroup(group_id, unit.astype(np.float32), when, when)
            self.groups[group.id] = group
        else:
            mixed = group.centroid * min(group.count, 20) + unit  # the centroid follows its latest visits
            group.centroid = (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32)
        group.last_seen = max(group.last_seen, when)
        group.count += 1
        group.visits = (group.visits + [visit_id])[-MAX_VISITS_LISTED:]
        self.changed = True
        while len(self.groups) > self.max_groups:
            oldest = min(self.groups.values(), key=lambda g: g.last_seen)
            del self.groups[oldest.id]
        return group.id

    def nearest(self, embedding: np.ndarray, threshold: float, busy: Collection[str] = ()
                ) -> StrangerGroup | None:
        groups = [g for g in self.groups.values() if g.id not in busy]
        if not groups:
            return None
        unit = np.asarray(embedding, np.float64) / max(float(np.linalg.norm(embedding)), 1e-12)
        sims = np.stack([g.centroid for g in groups]).astype(np.float64) @ unit
        best = int(np.argmax(sims))
        return groups[best] if sims[best] >= threshold else None

    def forget_visit(self, visit_id: str) -> None:
        """A visit that got a name after all is nobody's stranger."""
        for group in self.groups.values():
            if visit_id in group.visits:
                group.visits.remove(visit_id)
                group.count = max(0, group.count - 1)
                self.changed = True
        for empty in [g.id for g in self.groups.values() if g.count == 0]:
            del self.groups[empty]

    def remove(self, group_id: str) -> StrangerGroup | None:
        group = self.groups.pop(group_id, None)
        self.changed = self.changed or group is not None
        return group

    def newest(self) -> list[StrangerGroup]:
        return sorted(self.groups.values(), key=lambda g: -g.last_seen)

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups.values()]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], max_groups: int = MAX_GROUPS) -> "StrangerGroups":
        return cls([StrangerGroup.from_dict(g) for g in raw.get("groups", [])], max_groups)

"""Visits: a person's stay in front of the camera, from the first sight to ``leave_after`` seconds unseen.

A visit is announced once who it is has been decided, so that its first event already carries the name:

* ``arrived``: the visit's track was seen in ``min_frames`` frames and the identity rule decided: a name, or
  ``unknown`` once its track's first faces matched nobody (then the visit carries its stranger group: the same
  unknown person seen before). A track that leaves before it is decided makes no visit: it was too short to
  say, and a false "stranger" alert is worse than none.
* ``named``: who it is changed after arriving (a better view named an unknown visit, or the evidence turned).
* ``left``: nobody of the visit has been seen for ``leave_after`` seconds (or the video ended).

One person has one visit at a time: a track named Maya while Maya's visit is open (she turned away, was lost
and found again elsewhere in the picture) continues that visit, and so does an unknown track whose face matches
an open unknown visit nobody else is continuing. Each event carries the visit: camera, who, first and last
seen, seconds from first sight to the name, the best view's score and, with ``crops``, that face as a JPEG.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgeface.core.results import UNKNOWN
from edgeface.recognition.settings import TIME_TOLERANCE, VisitConfig

if TYPE_CHECKING:
    from edgeface.recognition.strangers import StrangerGroups

EVENTS = ("arrived", "named", "left")
MAX_OPEN = 256  # open visits at most (a crowd): the longest unseen is closed first
CROP_QUALITY = 85


@dataclass(frozen=True)
class TrackView:
    """What the visits need to know of a track in this frame."""

    track: int
    who: str  # "": not decided yet; "unknown": decided, nobody; else the name
    score: float
    quality: float  # its best view so far
    crop: np.ndarray | None = field(default=None, repr=False)  # that view's aligned face
    embedding: np.ndarray | None = field(default=None, repr=False)  # its faces' embeddings, averaged


@dataclass
class Visit:
    id: str
    camera: str
    first_seen: float
    last_seen: float
    who: str = ""
    arrived: bool = False
    named_at: float | None = None  # when it first got a person's name
    score: float = 0.0
    frames: int = 0
    stranger: str = ""  # the stranger group of an unknown visit
    best_quality: float = 0.0
    crop: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    tracks: set[int] = field(default_factory=set)
    _frame: float = field(default=-1.0, repr=False)

    @property
    def seconds_to_name(self) -> float | None:
        return None if self.named_at is None else self.named_at - self.first_seen

    def to_dict(self, crops: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "visit": self.id, "camera": self.camera, "who": self.who or UNKNOWN,
            "stranger": self.stranger or None, "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "seconds_to_name": None if self.seconds_to_name is None else round(self.seconds_to_name, 3),
            "frames": self.frames, "score": round(float(self.score), 4)}
        if crops and self.crop is not None:
            from edgeface.core.imageio import encode_image

            record["crop"] = base64.b64encode(encode_image(self.crop, ".jpg", CROP_QUALITY)).decode("ascii")
        return record


@dataclass(frozen=True)
class VisitEvent:
    """``arrived``, ``named`` or ``left``, with the visit as it was then."""

    kind: str
    time: float
    visit: dict[str, Any]
    previous: str = ""  # for ``named``: who it was before

    def to_dict(self) -> dict[str, Any]:
        record = {"event": self.kind, "time": round(self.time, 3), **self.visit}
        if self.previous:
            record["previous"] = self.previous
        return record


class VisitBook:
    """The visits of one camera, updated once per frame with the tracks in it."""

    def __init__(self, config: VisitConfig = VisitConfig(), camera: str = "camera",
                 strangers: "StrangerGroups | None" = None) -> None:
        self.config = config
        self.camera = camera
        self.strangers = strangers
        self.open: dict[str, Visit] = {}
        self._by_track: dict[int, Visit] = {}
        self.undecided_dropped = 0  # tracks that left before who they were was decided

    def visit_of(self, track: int) -> Visit | None:
        return self._by_track.get(track)

    def update(self, now: float, present: Sequence[TrackView], ended: Sequence[int],
               same_person: float) -> list[VisitEvent]:
        """This frame's tracks; ``ended``: tracks the tracker dropped; ``same_person``: the similarity at which
        two unknown faces are taken for one person (the identity rule's similarity threshold)."""
        events: list[VisitEvent] = []
        for view in present:
            visit = self._by_track.get(view.track)
            if visit is None:
                visit = Visit(f"{self.camera}-{int(now * 1000)}-{view.track}", self.camera, now, now)
                visit.tracks.add(view.track)
                self._by_track[view.track] = visit
            self._see(visit, view, now)
            if not visit.arrived:
                events += self._maybe_arrive(visit, view, now, same_person)
            elif view.who and view.who != visit.who:
                events.append(self._rename(visit, view.who, view.score, now))
        for track in ended:
            visit = self._by_track.pop(track, None)
            if visit is not None:
                visit.tracks.discard(track)
                if not visit.arrived and not visit.tracks:
                    self.undecided_dropped += 1
        for visit in list(self.open.values()):
            if now - visit.last_seen >= self.config.leave_after - TIME_TOLERANCE:
                events.append(self._leave(visit, now))
        while len(self.open) > MAX_OPEN:
            events.append(self._leave(min(self.open.values(), key=lambda v: v.last_seen), now))
        return events

    def finish(self, now: float) -> list[VisitEvent]:
        """Every open visit has left (the video ended)."""
        events = [self._leave(visit, now) for visit in list(self.open.values())]
        self._by_track.clear()
        return events

    # --- steps ---------------------------------------------------------------------------------------------

    def _see(self, visit: Visit, view: TrackView, now: float) -> None:
        visit.last_seen = now
        if visit._frame != now:
            visit.frames += 1
            visit._frame = now
        if view.quality > visit.best_quality and view.crop is not None:
            visit.best_quality, visit.crop = view.quality, view.crop
        if view.embedding is not None:
            visit.embedding = view.embedding

    def _maybe_arrive(self, visit: Visit, view: TrackView, now: float, same_person: float) -> list[VisitEvent]:
        if not view.who or visit.frames < self.config.min_frames:
            return []
        other = self._continued(view, same_person, exclude=visit)
        if other is not None:  # the same person's visit goes on
            self._by_track[view.track] = other
            other.tracks.add(view.track)
            self._see(other, view, now)
            if view.who != UNKNOWN and other.who != view.who:
                return [self._rename(other, view.who, view.score, now)]
            return []
        visit.arrived, visit.who, visit.score = True, view.who, view.score
        if view.who != UNKNOWN:
            visit.named_at = now
        elif self.strangers is not None and visit.embedding is not None:
            busy = {v.stranger for v in self.open.values() if v.stranger}
            visit.stranger = self.strangers.assign(visit.id, visit.embedding, now, same_person, busy)
        self.open[visit.id] = visit
        return [VisitEvent("arrived", now, visit.to_dict(self.config.crops))]

    def _continued(self, view: TrackView, same_person: float, exclude: Visit) -> Visit | None:
        """An open visit this track continues: the same name, or for an unknown face, an unknown visit nobody
        else continues whose face matches."""
        for visit in self.open.values():
            if visit is exclude:
                continue
            if view.who != UNKNOWN and visit.who == view.who:
                return visit
            if view.who == UNKNOWN and visit.who == UNKNOWN and not visit.tracks and \
                    view.embedding is not None and visit.embedding is not None and \
                    float(np.dot(view.embedding, visit.embedding)) >= same_person:
                return visit
        return None

    def _rename(self, visit: Visit, who: str, score: float, now: float) -> VisitEvent:
        previous, visit.who, visit.score = visit.who, who, score
        if who != UNKNOWN:
            if visit.named_at is None:
                visit.named_at = now
            if visit.stranger and self.strangers is not None:
                self.strangers.forget_visit(visit.id)
            visit.stranger = ""
        return VisitEvent("named", now, visit.to_dict(self.config.crops), previous=previous)

    def _leave(self, visit: Visit, now: float) -> VisitEvent:
        self.open.pop(visit.id, None)
        for track in list(visit.tracks):
            if self._by_track.get(track) is visit:
                del self._by_track[track]
        return VisitEvent("left", now, visit.to_dict(self.config.crops))

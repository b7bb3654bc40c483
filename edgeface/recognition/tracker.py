"""Tracking faces across frames by where they are heading, and by who they are where that is not enough.

Every frame, each face is matched to the track whose predicted box (its last box moved on at its speed) it overlaps
best (``associate``); a recognised face whose embedding is far from its track's (another person stepped into the
same place, or passed in front of the track's face) starts a track of its own. A face that overlaps its track only
loosely (``loose``) is recognised at once, so that such a change of person is caught in its first frame. Where that
is ambiguous (two faces crossing, one face between two tracks), the faces involved are recognised first and matched
by appearance: the cosine similarity of their embeddings with each track's faces so far, plus the overlap
(``commit``). A face that matches no live track is compared with the tracks lost in the last ``reid_seconds`` near
where it appears: one with a matching embedding continues (a face turned away or hidden for a moment keeps its
track, and so its visit); else it starts a new track.

Pure numpy: no model here. The pipeline (``edgeface.recognition.pipeline``) supplies the embeddings.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from edgeface.recognition.settings import TIME_TOLERANCE, TrackingConfig

SPEED_SMOOTHING = 0.5  # weight of a track's past speed against the latest step
MAX_SPEED = 4.0  # face widths per second: detection jitter must not send a prediction across the frame
IOU_WEIGHT = 0.5  # weight of overlap beside appearance when matching an ambiguous group
APPEARANCE_MEMORY = 10  # a track's appearance is the mean of about its last this many embeddings
# A face this far below the re-identification similarity is not its overlapping track's person. On the household
# videos (benchmarks/household.py, dlib's encoder) a person who stepped into another's track scored 0.07-0.17 below
# it; the track's own person scored less than 0.06 below it in 99.5% of recognitions.
SPLIT_MARGIN = 0.08
LOOSE_OVERLAP = 0.5  # a face overlapping its track's predicted box less than this may be somebody else
MAX_GROUP = 4  # larger ambiguous groups (rare) are matched greedily rather than by trying every assignment


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


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


@dataclass
class Track:
    """One face followed across frames."""

    id: int
    box: np.ndarray  # (4,) where it was last seen
    first_seen: float
    last_seen: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre, pixels per second
    frames: int = 1
    appearance: np.ndarray | None = field(default=None, repr=False)  # (D,) unit: its faces' embeddings, averaged
    embeddings: int = 0

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    def predicted(self, now: float, horizon: float) -> np.ndarray:
        """The box moved on at the track's speed for up to ``horizon`` seconds."""
        shift = self.velocity * min(max(now - self.last_seen, 0.0), horizon)
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]])

    def remember(self, embedding: np.ndarray) -> None:
        """Add a recognised face's embedding to the track's appearance."""
        unit = np.asarray(embedding, np.float64)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
        k = min(self.embeddings, APPEARANCE_MEMORY - 1)
        mixed = unit if self.appearance is None else self.appearance * k + unit
        self.appearance = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
        self.embeddings += 1


@dataclass(frozen=True)
class Association:
    """The frame's faces before recognition: the live track each one continues (None: a face that starts a
    track or resumes a lost one), and the faces whose track depends on who they are (``ambiguous``)."""

    tracks: tuple[int | None, ...]
    ambiguous: frozenset[int]
    candidates: Mapping[int, tuple[int, ...]]  # ambiguous face -> the live tracks it might continue
    overlap: np.ndarray = field(repr=False)  # (faces, live tracks) IoU with the predicted boxes
    live: tuple[int, ...] = ()  # the track ids behind ``overlap``'s columns
    loose: frozenset[int] = frozenset()  # faces continuing a track by an overlap below ``LOOSE_OVERLAP``


class Tracker:
    """The live and recently lost tracks of one camera."""

    def __init__(self, config: TrackingConfig = TrackingConfig()) -> None:
        self.config = config
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def associate(self, boxes: np.ndarray, now: float) -> Association:
        """Match each face to a live track by overlap with the track's predicted box."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        live = [t for t in self.tracks.values() if now - t.last_seen <= self.config.lost_after + TIME_TOLERANCE]
        if not len(boxes) or not live:
            return Association(tuple([None] * len(boxes)), frozenset(), {}, np.zeros((len(boxes), len(live))),
                               tuple(t.id for t in live))
        predicted = np.stack([t.predicted(now, self.config.lost_after) for t in live])
        overlap = iou_matrix(boxes, predicted)
        edges = overlap >= self.config.iou
        chosen: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for flat in np.argsort(-overlap, axis=None, kind="stable"):  # best overlaps first, each used once
            i, j = (int(v) for v in np.unravel_index(flat, overlap.shape))
            if not edges[i, j]:
                break
            if chosen[i] is None and j not in used:
                chosen[i] = j
                used.add(j)
        ambiguous: set[int] = set()
        candidates: dict[int, tuple[int, ...]] = {}
        for faces, tracks in _groups(edges):
            if len(faces) > 1 or len(tracks) > 1:
                for i in faces:
                    ambiguous.add(i)
                    candidates[i] = tuple(live[j].id for j in tracks if edges[i, j])
        ids = tuple(live[j].id if j is not None else None for j in chosen)
        loose = frozenset(i for i, j in enumerate(chosen) if j is not None and overlap[i, j] < LOOSE_OVERLAP)
        return Association(ids, frozenset(ambiguous), candidates, overlap, tuple(t.id for t in live), loose)

    def commit(self, boxes: np.ndarray, association: Association, embeddings: Mapping[int, np.ndarray],
               now: float, reid_similarity: float) -> tuple[list[int], list[Track]]:
        """Settle each face's track and update the tracks. ``embeddings``: face index -> embedding of the faces
        recognised in this frame. Returns each face's track id, and the tracks that ended (lost for longer than
        ``reid_seconds``)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        chosen = list(association.tracks)
        self._settle_ambiguous(chosen, association, embeddings)
        for i, track_id in enumerate(chosen):  # the overlap chose it, the face says it is somebody else
            appearance = self.tracks[track_id].appearance if track_id is not None else None
            if appearance is not None and i in embeddings:
                unit = embeddings[i] / max(float(np.linalg.norm(embeddings[i])), 1e-12)
                if float(unit @ appearance) < reid_similarity - SPLIT_MARGIN:
                    chosen[i] = None
        taken = {t for t in chosen if t is not None}
        for i in range(len(boxes)):  # a face nobody continues: a lost track resumed, else a new one
            if chosen[i] is None and i in embeddings:
                chosen[i] = self._resume(boxes[i], embeddings[i], now, taken, reid_similarity)
                if chosen[i] is not None:
                    taken.add(chosen[i])  # type: ignore[arg-type]
        ids: list[int] = []
        for i, box in enumerate(boxes):
            track_id = chosen[i]
            if track_id is None:
                track = Track(self._next_id, box.copy(), now, now)
                self._next_id += 1
                self.tracks[track.id] = track
            else:
                track = self.tracks[track_id]
                self._move(track, box, now)
            if i in embeddings:
                track.remember(embeddings[i])
            ids.append(track.id)
        horizon = max(self.config.lost_after, self.config.reid_seconds)
        ended = [t for t in self.tracks.values() if now - t.last_seen > horizon + TIME_TOLERANCE]
        for track in ended:
            del self.tracks[track.id]
        return ids, ended

    def _settle_ambiguous(self, chosen: list[int | None], association: Association,
                          embeddings: Mapping[int, np.ndarray]) -> None:
        """Re-match each ambiguous group by appearance and overlap, where every face in it was recognised and
        every track in it has been; otherwise the overlap's choice stands."""
        column = {track_id: j for j, track_id in enumerate(association.live)}
        done: set[int] = set()
        for face in sorted(association.ambiguous):
            if face in done:
                continue
            group = _group_of(face, association)
            done |= set(group[0])
            faces, tracks = group
            if not all(i in embeddings for i in faces) or not all(self.tracks[t].appearance is not None
                                                                  for t in tracks):
                continue
            score = np.full((len(faces), len(tracks)), -np.inf)
            for a, i in enumerate(faces):
                unit = embeddings[i] / max(float(np.linalg.norm(embeddings[i])), 1e-12)
                for b, t in enumerate(tracks):
                    appearance = self.tracks[t].appearance  # not None: checked for the whole group above
                    if appearance is not None and t in association.candidates.get(i, ()):
                        score[a, b] = float(unit @ appearance) + \
                            IOU_WEIGHT * float(association.overlap[i, column[t]])
            for a, match in _best_assignment(score).items():
                chosen[faces[a]] = tracks[match] if match is not None else None

    def _resume(self, box: np.ndarray, embedding: np.ndarray, now: float, taken: set[int],
                reid_similarity: float) -> int | None:
        unit = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
        width = float(box[2] - box[0])
        best, best_similarity = None, reid_similarity
        for track in self.tracks.values():
            if track.id in taken or track.appearance is None or \
                    now - track.last_seen > self.config.reid_seconds + TIME_TOLERANCE:
                continue
            reach = self.config.reid_distance * max(width, track.width)
            if float(np.hypot(*(_centre(box) - _centre(track.box)))) > reach:
                continue
            similarity = float(unit @ track.appearance)
            if similarity >= best_similarity:
                best, best_similarity = track.id, similarity
        return best

    def _move(self, track: Track, box: np.ndarray, now: float) -> None:
        dt = now - track.last_seen
        if 0 < dt <= self.config.lost_after + TIME_TOLERANCE:
            step = (_centre(box) - _centre(track.box)) / dt
            limit = MAX_SPEED * max(track.width, 1.0)
            speed = float(np.hypot(*step))
            if speed > limit:
                step *= limit / speed
            track.velocity = SPEED_SMOOTHING * track.velocity + (1 - SPEED_SMOOTHING) * step
        else:  # resumed after being lost: where it went meanwhile says nothing of where it goes next
            track.velocity = np.zeros(2)
        track.box, track.last_seen = box.copy(), now
        track.frames += 1


def _groups(edges: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """Connected groups of faces and tracks (rows and columns of ``edges``) linked by candidate matches."""
    faces_left = set(range(edges.shape[0]))
    groups = []
    while faces_left:
        start = faces_left.pop()
        faces, tracks = {start}, set()
        frontier = [start]
        while frontier:
            i = frontier.pop()
            for j in np.flatnonzero(edges[i]):
                if int(j) not in tracks:
                    tracks.add(int(j))
                    for k in np.flatnonzero(edges[:, j]):
                        if int(k) not in faces:
                            faces.add(int(k))
                            faces_left.discard(int(k))
                            frontier.append(int(k))
        if tracks:
            groups.append((sorted(faces), sorted(tracks)))
    return groups


def _group_of(face: int, association: Association) -> tuple[list[int], list[int]]:
    """The ambiguous faces linked to ``face`` through shared candidate tracks, and those tracks."""
    faces, tracks = {face}, set(association.candidates.get(face, ()))
    changed = True
    while changed:
        changed = False
        for other in association.ambiguous:
            if other not in faces and tracks & set(association.candidates.get(other, ())):
                faces.add(other)
                tracks |= set(association.candidates[other])
                changed = True
    return sorted(faces), sorted(tracks)


def _best_assignment(score: np.ndarray) -> dict[int, int | None]:
    """Rows to distinct columns maximising the total score (-inf: not allowed); a row may stay unmatched."""
    rows, cols = score.shape
    if rows > MAX_GROUP or cols > MAX_GROUP:
        result: dict[int, int | None] = {r: None for r in range(rows)}
        used: set[int] = set()
        for flat in np.argsort(-score, axis=None, kind="stable"):
            r, c = (int(v) for v in np.unravel_index(flat, score.shape))
            if not np.isfinite(score[r, c]):
                break
            if result[r] is None and c not in used:
                result[r] = c
                used.add(c)
        return result
    best: tuple[float, int, tuple[int | None, ...]] = (-np.inf, 0, (None,) * rows)
    options: Sequence[int | None] = list(range(cols)) + [None]
    for combo in itertools.product(options, repeat=rows):
        picked = [c for c in combo if c is not None]
        if len(picked) != len(set(picked)):
            continue
        if any(c is not None and not np.isfinite(score[r, c]) for r, c in enumerate(combo)):
            continue
        total = sum(float(score[r, c]) for r, c in enumerate(combo) if c is not None)
        key = (total, len(picked), combo)
        if key[:2] > best[:2]:
            best = key
    return dict(enumerate(best[2]))

"""What the web page keeps of the frames it watches: the faces nobody could name, one visit per track, and the
latest recognitions.

Runs on the daemon's pipeline thread (``observe``), so it does little per frame: for each face it keeps at
most one crop per track every ``SAMPLE_EVERY`` seconds, aligned at 112x112 (the size ``enroll`` measures
sharpness at), and only crops that pass ``enroll``'s gates (face at least ``MIN_FACE_PX`` tall, sharpness at
least ``MIN_SHARPNESS``) for unknown faces. Writing to disk happens on the page's own thread (``pending`` /
``written``), never here.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeface.core.results import UNKNOWN
from edgeface.core.spec import EMBEDDING_NAME
from edgeface.people.enroll import MIN_FACE_PX, MIN_SHARPNESS, SHARPNESS_SIZE, crop_sharpness
from edgeface.web.store import FaceSample, Visit

if TYPE_CHECKING:
    from edgeface.core.spec import CropSpec
    from edgeface.daemon.records import Published
    from edgeface.runtime.labeler import Labeler

MIN_FRAMES = 3  # a track must be seen this often before its faces are kept: a one-frame false detection makes no card
SAMPLE_EVERY = 0.5  # seconds between two crops kept of one track
MAX_SAMPLES = 8  # crops per visit: the first that pass the gates, SAMPLE_EVERY apart
VISIT_END = 2.0  # a track not seen this long has left
MAX_RECENT = 30  # recognitions kept, in memory only
JPEG_QUALITY = 90


@dataclass
class Recognition:
    """The latest face of one named track (memory only): for "recent recognitions" and "not X"."""

    id: str
    track: int
    name: str
    score: float
    first: float
    last: float
    sample: FaceSample
    jpeg: bytes
    emotion: str = ""
    gender: str = ""
    visit: str = ""  # the unknown visit this track was named from on the page, if it was


class FaceWatcher:
    """Unknown visits and recent recognitions, updated from each frame; thread-safe (``lock``)."""

    def __init__(self, crop: "CropSpec", labeler: "Labeler", visits: list[Visit] = (),  # type: ignore[assignment]
                 keep_faces: bool = True) -> None:
        self.crop = crop
        self.labeler = labeler
        self.keep_faces = keep_faces  # False when there is no gallery to name anyone into
        self.lock = threading.Lock()
        self.visits: dict[str, Visit] = {v.id: v for v in visits}
        self.recent: collections.OrderedDict[str, Recognition] = collections.OrderedDict()
        self._open: dict[int, str] = {}  # live track -> its visit id
        self._named: dict[int, str] = {}  # live track -> recognition id
        self._seen: dict[int, list[float]] = {}  # track -> [frames seen, last seen, last crop kept]
        self._dismissed: dict[int, str] = {}  # live track -> the visit named or ignored on the page
        self._dirty: set[str] = set()
        self.kept = 0  # crops kept since start

    # --- the pipeline thread ---------------------------------------------------------------------------

    def observe(self, image: np.ndarray, item: "Published") -> None:
        result, samples = item.result, item.result.samples
        now = result.time
        with self.lock:
            faces = result.faces if samples is not None and self.keep_faces else ()
            recognised = samples.recognised if samples is not None else ()
            for i, face in enumerate(faces):
                seen = self._seen.setdefault(face.track, [0, now, -float("inf")])
                seen[0] += 1
                seen[1] = now
                if seen[0] < MIN_FRAMES or now - seen[2] < SAMPLE_EVERY or i not in recognised:
                    continue
                unknown = face.labels.identity.label == UNKNOWN
                if unknown and face.track in self._dismissed:
                    continue
                sample, jpeg = self._sample(image, samples, i, now, gated=unknown)
                if sample is None:
                    continue
                seen[2] = now
                self.kept += 1
                if unknown:
                    self._add_unknown(face.track, sample, jpeg, now)
                else:
                    self._add_recognition(face, sample, jpeg, now)
            self._end_tracks(now)

    def _sample(self, image: np.ndarray, samples: Any, i: int, now: float, gated: bool
                ) -> tuple[FaceSample | None, bytes]:
        from edgeface.core.imageio import encode_image
        from edgeface.faces.align import align_face

        detection = samples.detections[i]
        k = samples.recognised.index(i)  # the face's row in the model's outputs
        if EMBEDDING_NAME not in samples.outputs or (gated and detection.height < MIN_FACE_PX):
            return None, b""
        face = align_face(image, detection, self.crop, SHARPNESS_SIZE)
        sharp = crop_sharpness(face)
        if gated and sharp < MIN_SHARPNESS:
            return None, b""
        jpeg = encode_image(face, ".jpg", JPEG_QUALITY)
        embedding = np.asarray(samples.outputs[EMBEDDING_NAME][k], np.float32)
        best, similarity = self._nearest(embedding)
        sample = FaceSample(hashlib.sha256(jpeg).hexdigest()[:16], now, embedding,
                            float(np.max(samples.outputs["identity"][k])), sharp, float(detection.height),
                            best=best, similarity=similarity)
        return sample, jpeg

    def _nearest(self, embedding: np.ndarray) -> tuple[str, float]:
        gallery = self.labeler.gallery
        if gallery is None or not len(gallery):
            return "", -1.0
        sims = gallery.similarities(embedding[None])[0]
        best = int(np.argmax(sims))
        return gallery.names[best], float(sims[best])

    def _add_unknown(self, track: int, sample: FaceSample, jpeg: bytes, now: float) -> None:
        sample.jpeg = jpeg
        visit_id = self._open.get(track)
        visit = self.visits.get(visit_id) if visit_id else None
        if visit is None:
            visit = Visit(f"{int(now * 1000)}-{track}", track, now, now)
            self.visits[visit.id] = visit
            self._open[track] = visit.id
        visit.last = now
        # At most MAX_SAMPLES, then the card stays as it is (a face someone ticks stays there); a crop identical
        # to one kept (a still scene, a looping file) adds nothing and would be enrolled twice.
        if len(visit.samples) < MAX_SAMPLES and all(s.id != sample.id for s in visit.samples):
            visit.samples.append(sample)
        self._dirty.add(visit.id)

    def _add_recognition(self, face: Any, sample: FaceSample, jpeg: bytes, now: float) -> None:
        name = face.labels.identity.label
        entry = self.recent.get(self._named.get(face.track, ""))
        if entry is None or entry.name != name:
            entry = Recognition(f"{int(now * 1000)}-{face.track}", face.track, name, 0.0, now, now, sample, jpeg,
                                visit=self._dismissed.get(face.track, ""))
            self.recent[entry.id] = entry
            self._named[face.track] = entry.id
            while len(self.recent) > MAX_RECENT:
                self.recent.popitem(last=False)
        entry.sample, entry.jpeg, entry.last = sample, jpeg, now
        entry.score = face.labels.identity.score
        entry.emotion, entry.gender = face.labels.emotion.label, face.labels.gender.label
        self.recent.move_to_end(entry.id)

    def _end_tracks(self, now: float) -> None:
        for track in [t for t, s in self._seen.items() if now - s[1] > VISIT_END]:
            del self._seen[track]
            self._named.pop(track, None)
            self._dismissed.pop(track, None)
            visit_id = self._open.pop(track, None)
            if visit_id in self.visits:
                self.visits[visit_id].ended = True
                self._dirty.add(visit_id)

    # --- the page's threads ----------------------------------------------------------------------------

    def pending(self) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
        """The visits changed since the last call, as (visit JSON, crops not yet written): to be written."""
        with self.lock:
            out = []
            for visit_id in self._dirty:
                visit = self.visits.get(visit_id)
                if visit is not None:
                    out.append((visit.to_dict(), {s.id: s.jpeg for s in visit.samples if s.jpeg is not None}))
            self._dirty.clear()
            return out

    def written(self, visit_id: str, face_ids: set[str]) -> None:
        """Those crops are on disk: let go of their bytes."""
        with self.lock:
            visit = self.visits.get(visit_id)
            for sample in visit.samples if visit is not None else ():
                if sample.id in face_ids:
                    sample.jpeg = None

    def visit(self, visit_id: str) -> Visit | None:
        with self.lock:
            return self.visits.get(visit_id)

    def newest_visits(self) -> list[Visit]:
        with self.lock:
            return sorted((v for v in self.visits.values() if v.samples), key=lambda v: -v.last)

    def take_visit(self, visit_id: str) -> Visit | None:
        """Remove a visit (named, ignored or kept as a stranger's): its track makes no new card while it stays."""
        with self.lock:
            visit = self.visits.pop(visit_id, None)
            self._dirty.discard(visit_id)
            if visit is not None:
                for track, open_id in list(self._open.items()):
                    if open_id == visit_id:
                        del self._open[track]
                        self._dismissed[track] = visit_id
            return visit

    def forget_visits(self, visits: list[Visit]) -> None:
        with self.lock:
            for visit in visits:
                self.visits.pop(visit.id, None)
                self._dirty.discard(visit.id)

    def recognitions(self) -> list[Recognition]:
        with self.lock:
            return list(reversed(self.recent.values()))

    def take_recognition(self, recognition_id: str) -> Recognition | None:
        with self.lock:
            return self.recent.pop(recognition_id, None)

    def recognition_of(self, track: int) -> str:
        with self.lock:
            return self._named.get(track, "")

    def visit_of(self, track: int) -> str:
        with self.lock:
            return self._open.get(track, "")

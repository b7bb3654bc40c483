"""What the web page keeps of the frames it watches: the good faces of the visits nobody could name (on their
stranger group's card, ``unknowns``) and the latest recognitions.

The visits are the recognition pipeline's own (``edgeface.recognition.visits``): its ``arrived`` events say
which stranger group an unknown visit joined, each face carries its visit once the visit has arrived, and a
``named`` event takes a visit's faces off its card. The faces a track showed before its visit arrived (the
first ones, while the pipeline was still deciding) are held for the track and join the visit when it arrives
unknown.

Runs on the daemon's pipeline thread (``observe``), so it does little per frame: it keeps at most one crop per
track every ``SAMPLE_EVERY`` seconds, of a face the model saw in that frame, aligned at 112x112 (the size
``enroll`` measures sharpness at), and for unknown faces only crops that pass ``enroll``'s gates (face at least
``MIN_FACE_PX`` tall, sharpness at least ``MIN_SHARPNESS``). Writing to disk happens on the page's own thread,
never here.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgeface.core.results import UNKNOWN
from edgeface.core.spec import EMBEDDING_NAME
from edgeface.people.enroll import MIN_FACE_PX, MIN_SHARPNESS, SHARPNESS_SIZE, crop_sharpness
from edgeface.web.store import FaceSample
from edgeface.web.unknowns import FACES_PER_VISIT, StrangerCards

if TYPE_CHECKING:
    from edgeface.core.spec import CropSpec
    from edgeface.daemon.records import Published
    from edgeface.recognition.records import FaceResult, FaceSamples
    from edgeface.runtime.labeler import Labeler

MIN_FRAMES = 3  # a track must be seen this often before its faces are kept: a one-frame false detection keeps none
SAMPLE_EVERY = 0.5  # seconds between two crops kept of one track
NOT_FACES = 8  # faces kept of a named track: what "Not X" keeps as that face's evidence
TRACK_END = 2.0  # a track not seen this long has left
MAX_RECENT = 30  # recognitions kept, in memory only
MAX_STRANGER_VISITS = 1000  # unknown visits whose stranger group is remembered (for "not X")
JPEG_QUALITY = 90


@dataclass
class Recognition:
    """One named track's latest faces (memory only): for "recent recognitions" and "not X"."""

    id: str
    track: int
    name: str
    score: float
    first: float
    last: float
    faces: collections.deque = field(default_factory=lambda: collections.deque(maxlen=NOT_FACES))
    emotion: str = ""
    gender: str = ""
    visit: str = ""  # the pipeline's visit of the track
    stranger: str = ""  # the stranger group that visit was in before it was named ("" for none)

    @property
    def sample(self) -> FaceSample:
        """The latest face."""
        return self.faces[-1][0]

    @property
    def jpeg(self) -> bytes:
        return self.faces[-1][1]


class FaceWatcher:
    """Unknown visits' faces (onto ``cards``) and recent recognitions, from each frame; thread-safe (``lock``)."""

    def __init__(self, crop: "CropSpec", labeler: "Labeler", cards: StrangerCards, keep_faces: bool = True) -> None:
        self.crop = crop
        self.labeler = labeler
        self.cards = cards
        self.keep_faces = keep_faces  # False when there is no gallery to name anyone into
        self.lock = threading.Lock()
        self.recent: collections.OrderedDict[str, Recognition] = collections.OrderedDict()
        self._named: dict[int, str] = {}  # live track -> recognition id
        self._seen: dict[int, list[float]] = {}  # track -> [frames seen, last seen, last crop kept]
        self._early: dict[int, list[FaceSample]] = {}  # track -> its faces from before its visit arrived
        # unknown visit -> its stranger group, kept after the visit is named: "not X" on a face of a visit that
        # was a card's takes back the naming of that card
        self._stranger_of: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.kept = 0  # crops kept since start

    # --- the pipeline thread ---------------------------------------------------------------------------

    def observe(self, image: np.ndarray, item: "Published") -> None:
        result, samples = item.result, item.result.samples
        now = result.time
        if not self.keep_faces:
            return
        self.cards.sync()
        for event in result.events:
            visit = event.visit
            if event.kind == "arrived" and visit["who"] == UNKNOWN and visit.get("stranger"):
                self.cards.arrived(visit["visit"], visit["stranger"])
                with self.lock:
                    self._stranger_of[visit["visit"]] = visit["stranger"]
                    while len(self._stranger_of) > MAX_STRANGER_VISITS:
                        self._stranger_of.popitem(last=False)
            elif event.kind == "named" and visit["who"] != UNKNOWN:
                self.cards.named(visit["visit"])
        with self.lock:
            for i, face in enumerate(result.faces if samples is not None else ()):
                assert samples is not None
                seen = self._seen.setdefault(face.track, [0, now, -float("inf")])
                seen[0] += 1
                seen[1] = now
                unknown = face.labels.identity.label == UNKNOWN
                if face.visit and face.track in self._early:  # its visit arrived: its first faces join it
                    for early in self._early.pop(face.track):
                        if unknown:
                            self.cards.add(face.visit, early)
                if seen[0] < MIN_FRAMES or now - seen[2] < SAMPLE_EVERY or i not in samples.recognised:
                    continue
                if unknown and not (self.cards.wants(face.visit) if face.visit else
                                    len(self._early.get(face.track, ())) < FACES_PER_VISIT):
                    continue
                sample = self._sample(image, samples, i, now, gated=unknown)
                if sample is None:
                    continue
                seen[2] = now
                self.kept += 1
                if not unknown:
                    self._add_recognition(face, sample, now)
                elif face.visit:
                    self.cards.add(face.visit, sample)
                else:
                    self._early.setdefault(face.track, []).append(sample)
            self._end_tracks(now)

    def _sample(self, image: np.ndarray, samples: "FaceSamples", i: int, now: float, gated: bool
                ) -> FaceSample | None:
        from edgeface.core.imageio import encode_image
        from edgeface.faces.align import align_face

        detection = samples.detections[i]
        k = samples.recognised.index(i)  # the face's row in the model's outputs
        if EMBEDDING_NAME not in samples.outputs or (gated and detection.height < MIN_FACE_PX):
            return None
        face = align_face(image, detection, self.crop, SHARPNESS_SIZE)
        sharp = crop_sharpness(face)
        if gated and sharp < MIN_SHARPNESS:
            return None
        jpeg = encode_image(face, ".jpg", JPEG_QUALITY)
        embedding = np.asarray(samples.outputs[EMBEDDING_NAME][k], np.float32)
        best, similarity = self._nearest(embedding)
        return FaceSample(hashlib.sha256(jpeg).hexdigest()[:16], now, embedding,
                          float(np.max(samples.outputs["identity"][k])), sharp, float(detection.height), jpeg,
                          best=best, similarity=similarity)

    def _nearest(self, embedding: np.ndarray) -> tuple[str, float]:
        gallery = self.labeler.gallery
        if gallery is None or not len(gallery):
            return "", -1.0
        sims = gallery.similarities(embedding[None])[0]
        best = int(np.argmax(sims))
        return gallery.names[best], float(sims[best])

    def _add_recognition(self, face: "FaceResult", sample: FaceSample, now: float) -> None:
        name = face.labels.identity.label
        entry = self.recent.get(self._named.get(face.track, ""))
        if entry is None or entry.name != name:
            entry = Recognition(f"{int(now * 1000)}-{face.track}", face.track, name, 0.0, now, now)
            self.recent[entry.id] = entry
            self._named[face.track] = entry.id
            while len(self.recent) > MAX_RECENT:
                self.recent.popitem(last=False)
        jpeg, sample.jpeg = sample.jpeg or b"", None
        entry.faces.append((sample, jpeg))
        entry.last, entry.visit = now, face.visit or entry.visit
        entry.stranger = self._stranger_of.get(entry.visit, entry.stranger)
        entry.score = face.labels.identity.score
        entry.emotion, entry.gender = face.labels.emotion.label, face.labels.gender.label
        self.recent.move_to_end(entry.id)

    def _end_tracks(self, now: float) -> None:
        for track in [t for t, s in self._seen.items() if now - s[1] > TRACK_END]:
            del self._seen[track]
            self._named.pop(track, None)
            self._early.pop(track, None)

    # --- the page's threads ----------------------------------------------------------------------------

    def recognitions(self) -> list[Recognition]:
        with self.lock:
            return list(reversed(self.recent.values()))

    def take_recognition(self, recognition_id: str) -> Recognition | None:
        with self.lock:
            return self.recent.pop(recognition_id, None)

    def recognition_of(self, track: int) -> str:
        with self.lock:
            return self._named.get(track, "")

    def card_of(self, visit: str) -> str:
        """The card of an unknown visit's faces ("" for none)."""
        return self.cards.group_of(visit) if visit else ""


"""Frames to people: detect and track every face in every frame, recognise each track only when it is worth it,
decide who it is from all its faces, and tell when visits start, get a name and end.

Per frame (``FacePipeline.process``):

1. **detect** the faces and score each view's quality (``quality.py``: size, sharpness, detector score, pose);
2. **track**: match the faces to the tracks by where each track is heading (``tracker.py``);
3. **choose** the faces to recognise: always the faces whose track is ambiguous (crossing people), new faces and
   faces that only loosely continue their track (somebody else may have stepped in); then, up to
   ``[recognition] budget`` faces in all, tracks still gathering their first ``gather`` faces, tracks with a
   clearly better view than their best so far, tracks due for their periodic ``refresh``; every other face keeps
   its track's labels;
4. **recognise** those faces: landmarks, alignment and one batched inference of the bundle's model;
5. settle the tracks (ambiguous ones by appearance; lost ones found again by their face) and add each recognised
   face to its track's **evidence** (``evidence.py``); the identity rule names a track from all of it;
6. **visits** (``visits.py``): ``arrived`` once who it is has been decided, ``named``, ``left``.

The daemon (``edgeface run``), ``edgeface.load(...).run(frames)`` and the web page all go through this class,
so they give the same labels and visits for the same frames and times.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from edgeface.core.results import UNKNOWN, FaceLabels
from edgeface.core.spec import EMBEDDING_NAME
from edgeface.recognition.evidence import NOT_SEEN, Observation, TrackEvidence
from edgeface.recognition.records import FaceResult, FaceSamples, FrameResult
from edgeface.recognition.settings import (
    TIME_TOLERANCE,
    DetectConfig,
    RecognitionConfig,
    TrackingConfig,
    VisitConfig,
)
from edgeface.recognition.visits import TrackView, VisitBook, VisitEvent

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle
    from edgeface.faces.detect import Face
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.recognition.tracker import Association

DEFAULT_FPS = 10.0  # the frame rate ``run`` assumes for frames that come without times


class FacePipeline:
    """Detector, engine, tracker, evidence and visits for one bundle and one camera: ``process`` one frame at a
    time (the daemon), ``run`` over frames, or ``label`` a photo. ``edgeface.load`` makes one."""

    def __init__(self, bundle: "Bundle", threads: int = 2, detect: DetectConfig = DetectConfig(),
                 tracking: TrackingConfig = TrackingConfig(), recognition: RecognitionConfig = RecognitionConfig(),
                 visits: VisitConfig = VisitConfig(), identity_threshold: float | None = None, gallery: str = "",
                 similarity_threshold: float | None = None, camera: str = "camera",
                 strangers: "StrangerGroups | None" = None) -> None:
        from edgeface.faces.detect import create_detector
        from edgeface.recognition.strangers import StrangerGroups
        from edgeface.recognition.tracker import Tracker
        from edgeface.runtime.engine import LiteRTEngine
        from edgeface.runtime.labeler import Labeler

        self.spec = bundle.spec
        self.detector = create_detector(detect.detector or bundle.spec.crop.detector)
        if hasattr(self.detector, "min_score"):
            self.detector.min_score = detect.min_score
        self.min_face = detect.min_face or bundle.spec.crop.min_face
        self.max_faces = detect.max_faces
        self.recognition = recognition
        self.engine = LiteRTEngine.from_bundle(bundle, num_threads=threads)
        # Enrolled people and thresholds: flags, then the gallery's calibration, then the bundle (docs/identity.md).
        self.labeler = Labeler.for_bundle(bundle, identity_threshold, similarity_threshold, gallery)
        self.tracker = Tracker(tracking)
        self.strangers = strangers if strangers is not None else StrangerGroups()
        self.visits = VisitBook(visits, camera, self.strangers)
        self.tracks: dict[int, TrackEvidence] = {}
        self.frames = 0
        self.recognised = 0  # faces that went through the model
        self._decided_version: dict[int, int] = {}
        self._last_time = 0.0

    def warm_up(self) -> None:
        """Run each model once, so the first real frame is not the slow one (delegate set-up)."""
        size = self.spec.input_size
        self.detector.detect(np.zeros((240, 320, 3), np.uint8))
        self.engine.predict(np.zeros((1, size, size, 3), np.uint8))

    def detect(self, image: np.ndarray) -> list["Face"]:
        """The faces of an RGB image the pipeline labels: big enough, at most ``max_faces`` (the largest)."""
        faces = [f for f in self.detector.detect(image) if f.height >= self.min_face]
        if len(faces) > self.max_faces:
            faces = sorted(faces, key=lambda f: -f.area)[:self.max_faces]
        return faces

    def label(self, image: np.ndarray | str | Path) -> tuple[FaceResult, ...]:
        """Every face of one image (RGB uint8 array, or an image file), each decided on its own evidence by the
        rule for photos (``track`` is -1: no tracking, nothing kept between calls)."""
        from edgeface.faces.align import align_faces_and_shapes

        if not isinstance(image, np.ndarray):
            from edgeface.core.imageio import read_image

            image = read_image(image)
        faces = self.detect(image)
        if not faces:
            return ()
        crops, shapes = align_faces_and_shapes(image, faces, self.spec.crop, self.spec.input_size)
        labels = self.labeler(self.engine.predict(crops, shapes))
        return tuple(FaceResult(_box(f), -1, label) for f, label in zip(faces, labels))

    def run(self, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS, start: float | None = None
            ) -> Iterator[FrameResult]:
        """Frames in (RGB uint8 arrays, e.g. a video's, ``fps`` apart, the first at ``start``: now by default),
        one ``FrameResult`` out per frame with its faces and visit events; then, when visits are still open,
        one more result without faces (index: the frame count) that carries their ``left`` events."""
        start = time.time() if start is None else start
        index = -1
        for index, frame in enumerate(frames):
            yield self.process(frame, index, start + index / fps)
        end = self.finish(start + (index + 1) / fps, index + 1)
        if end.events:
            yield end

    def finish(self, when: float, index: int = -1) -> FrameResult:
        """The end of the frames (a video ended): every open visit leaves."""
        from edgeface.recognition.tracker import Tracker

        events = self.visits.finish(when)
        self.tracks.clear()
        self._decided_version.clear()
        self.tracker = Tracker(self.tracker.config)  # the next frames are another video
        return FrameResult(time=when, index=index, faces=(), events=tuple(events))

    def process(self, image: np.ndarray, index: int = 0, when: float | None = None, capture_s: float = 0.0
                ) -> FrameResult:
        """One RGB frame, taken at ``when`` (unix seconds; default now). Times drive tracking, refreshes and
        visits: frames of a video should carry the video's times, not the time they were processed."""
        import cv2

        from edgeface.faces.align import align_faces_and_shapes

        now = time.time() if when is None else when
        timings = {"capture": capture_s}
        t0 = time.perf_counter()
        self.labeler.refresh()  # people enrolled or removed meanwhile count from this frame on
        faces = self.detect(image)
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        association = self.tracker.associate(boxes, now)
        t1 = time.perf_counter()
        quality = self._quality(cv2, image, faces)
        chosen = self._choose(association, quality, now)
        crops, shapes = align_faces_and_shapes(image, [faces[i] for i in chosen], self.spec.crop,
                                               self.spec.input_size)
        t2 = time.perf_counter()
        outputs = self.engine.predict(crops, shapes) if chosen else {}
        t3 = time.perf_counter()
        embeddings = ({i: outputs[EMBEDDING_NAME][k] for k, i in enumerate(chosen)}
                      if EMBEDDING_NAME in outputs else {})
        ids, ended = self.tracker.commit(boxes, association, embeddings, now,
                                         self.labeler.visit_rule.similarity_threshold)
        evidence = self.labeler.evidence(outputs) if chosen else []
        rule = self.labeler.visit_rule
        for k, i in enumerate(chosen):
            track = self.tracks.setdefault(ids[i], TrackEvidence())
            face_outputs = {name: np.asarray(value[k]) for name, value in outputs.items()}
            observation = Observation(now, quality[i], face_outputs, crops[k].copy())
            track.add(observation, evidence[k], self.labeler.version)
            track.decide(self.labeler, rule)
            self._decided_version[ids[i]] = self.labeler.version
        for gone in ended:
            self.tracks.pop(gone.id, None)
            self._decided_version.pop(gone.id, None)
        labels, views = [], []
        for track_id in ids:
            track = self.tracks.setdefault(track_id, TrackEvidence())
            if track.count and self._decided_version.get(track_id) != self.labeler.version:  # the people changed
                track.decide(self.labeler, rule)
                self._decided_version[track_id] = self.labeler.version
            emotion, gender = track.attributes(self.spec)
            labels.append(FaceLabels(track.identity if track.count else NOT_SEEN, emotion, gender))
            views.append(TrackView(track_id, self._who(track), track.identity.score, track.best_quality,
                                   track.best.crop if track.best is not None else None, track.embedding()))
        events = self.visits.update(now, views, [t.id for t in ended], rule.similarity_threshold)
        t4 = time.perf_counter()
        self.frames += 1
        self.recognised += len(chosen)
        self._last_time = now
        timings.update(detect=t1 - t0, crop=t2 - t1, infer=t3 - t2, track=t4 - t3)
        results = tuple(FaceResult(_box(f), track_id, label, self._visit_id(track_id))
                        for f, track_id, label in zip(faces, ids, labels))
        samples = (FaceSamples(tuple(faces), tuple(chosen), crops, outputs) if faces else None)
        return FrameResult(time=now, index=index, faces=results, timings=timings, samples=samples,
                           events=tuple(events))

    # --- steps -------------------------------------------------------------------------------------------------

    @staticmethod
    def _quality(cv2: object, image: np.ndarray, faces: list["Face"]) -> list[float]:
        from edgeface.recognition.quality import face_quality

        if not faces:
            return []
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # type: ignore[attr-defined]
        return [face_quality(grey, face) for face in faces]

    def _choose(self, association: "Association", quality: list[float], now: float) -> list[int]:
        """The faces to recognise in this frame: every new face and every face whose track is ambiguous (they
        have no labels yet, or no sure track), then the most needed others up to ``budget`` in all."""
        config = self.recognition
        due: list[tuple[int, float, int]] = []
        for i, track_id in enumerate(association.tracks):
            track = self.tracks.get(track_id) if track_id is not None else None
            if i in association.ambiguous:
                priority = 0
            elif track is None or not track.count or i in association.loose:  # new, or perhaps someone else
                priority = 1
            elif not track.name and track.count < config.gather:
                priority = 2
            elif quality[i] >= track.best_quality * config.better_view and quality[i] > track.best_quality:
                priority = 3
            elif now - track.last_time >= config.refresh - TIME_TOLERANCE:
                priority = 4
            else:
                continue
            waited = now - track.last_time if track is not None and track.count else float("inf")
            due.append((priority, -waited, i))
        due.sort()
        needed = sum(1 for priority, _, _ in due if priority <= 1)
        return sorted(i for _, _, i in due[:max(needed, config.budget)])

    def _who(self, track: TrackEvidence) -> str:
        if track.name:
            return track.name
        return UNKNOWN if track.count >= self.recognition.gather else ""

    def _visit_id(self, track_id: int) -> str:
        visit = self.visits.visit_of(track_id)
        return visit.id if visit is not None and visit.arrived else ""

    @property
    def open_visits(self) -> list:
        return list(self.visits.open.values())


def _box(face: "Face") -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = face.box
    return float(x0), float(y0), float(x1), float(y1)


__all__ = ["DEFAULT_FPS", "FacePipeline", "VisitEvent"]

"""The household harness (issue 34): does the device name the people who come home, and nobody else?

Households are made of people the model was never trained on:

* **enrolled** people (``--enrolled`` per household), each enrolled with ``edgeface enroll``'s own code from 3 to
  5 photos;
* **strangers** (``--strangers``), never enrolled, who come by on video;
* **calibration strangers**: the other people, never on video, "photographed by other cameras": the gallery is
  calibrated on their photos at a ``--far`` per-visit false-accept rate (``calibrate_faces`` with their
  photos taken as visits, ``calibrate``'s own grouping).

Each enrolled person and stranger visits ``--visits`` times (they arrive, move, cross others, leave and return)
in scenes of 1 to 5 faces at once (``edgeface.eval.video.visits_scene``), shown by photos not used for
enrollment. Every scene runs through ``edgeface.load(...).run`` twice on the same video:

* **per track** (the daemon's defaults): the faces worth it recognised, each track named from all its evidence
  by the per-visit rule;
* **every face**: every face recognised in every frame (``budget=64, refresh=0, gather=10**6``); its labels are
  the per-track rule on all faces, and its per-face outputs feed
* **per frame** (the rule before issue 34): an exponential moving average (0.6) of each track's model outputs,
  labelled frame by frame by the photo rule with the per-face thresholds.

Only enrolled people are named: the bundle's trained people are never members of these households, so the
identity head names nobody (``identity_threshold`` above 1, as a user of a model trained on other people sets
it; ``--name-trained`` calibrates it beside the gallery instead).

Scored against the scene's truth: enrolled visits named right (the right name given, never a wrong one; of all
visits; of the visits the camera saw: the face found in at least ``[visits] min_frames`` frames, as fewer
make no visit on the device; and of the visits whose face was in full view for ``IN_VIEW_SECONDS``: neither
half out of the frame nor covered by a nearer face, which separates what the camera could not see from what the
recognition missed), strangers' visits given a name (in any frame), face frames with a wrong name, and the time from a person's
first frame on screen to their right name. The figures go to ``results/household-<set>.json``; per-visit
details of the failures (which person, what the evidence said) to ``--details`` (never committed).

    python benchmarks/household.py --set celeba --bundle bundles/openset/openset-dlib-resnet-int8.edgeface
    python benchmarks/household.py --set synthetic --bundle B --households 1 --enrolled 4 --strangers 4

The celeba set is the open-set split's 100 untrained people (``openset_celeba.py``, seed 0); the synthetic
set is people of ``edgeface.data.synthetic`` that the synthetic models are not trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgeface.recognition.settings import VisitConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA_CSV = SHARED / "data" / "celeba-299" / "labels.csv"

EVERY_FACE = {"budget": 64, "refresh": 0.0, "gather": 10 ** 6}  # today's per-frame cost: every face, every frame
EMA = 0.6  # the per-frame rule's smoothing of a track's outputs (the daemon before issue 34)
EMA_MAX_MISSED = 5  # ... and the frames a track could be missed before it was dropped
START = 1_700_000_000.0  # the first frame's time (unix seconds): visits and refreshes follow the video's times
NAME_NO_TRAINED = 1.01  # an identity threshold above any probability: the identity head names nobody
# A visit the camera saw: its face found in this many frames (``[visits] min_frames``: fewer make no visit).
SEEN_FRAMES = VisitConfig().min_frames
# A visit in full view: its face at least FULL_VIEW visible (in the frame, not covered) this long, all told.
IN_VIEW_SECONDS = 1.0
FULL_VIEW = 0.9
RULES = ("per_track", "every_face", "per_frame")
LOCAL_OPTIONS = ("--cache", "--details", "--out")  # where a run keeps its files: not part of its command


@dataclass(frozen=True)
class Config:
    households: int = 5
    enrolled: int = 10
    strangers: int = 20
    enroll_photos: tuple[int, int] = (3, 5)
    visits: int = 2
    max_faces: tuple[int, ...] = (1, 2, 3, 4, 5)
    far: float = 0.01
    fps: float = 10.0
    hold: float = 1.5  # seconds each photo of a visit is shown
    seed: int = 0
    threads: int = 2
    recognition: tuple[tuple[str, float], ...] = ()  # the per-track run's [recognition] settings besides defaults
    lookalikes: int = 0  # strangers who are lookalikes of enrolled people (synthetic set), among ``strangers``
    # Whether the bundle's trained people may be named. They are never members of these households (the celeba
    # set's are other celebrities, the synthetic set's other drawn people), so by default only the enrolled
    # are named, as a user of a model trained on other people sets it (``identity_threshold`` above 1).
    name_trained: bool = False


# --- people -------------------------------------------------------------------------------------------------

@dataclass
class People:
    """The people a harness draws households from: each person's photos (paths, in a seeded order), the
    model's outputs for those with a face (``outputs[path]``), and the photos usable on video."""

    photos: dict[str, list[Path]]
    outputs: dict[Path, dict[str, np.ndarray]] = field(default_factory=dict)
    video: dict[Path, Any] = field(default_factory=dict)  # path -> FacePhoto
    actors: dict[str, Any] = field(default_factory=dict)  # synthetic set: identity -> drawn Actor
    twins: dict[str, str] = field(default_factory=dict)  # synthetic set: person -> their lookalike


def celeba_people(bundle: Any, csv: Path = CELEBA_CSV, seed: int = 0) -> People:
    """The open-set split's people the model was never trained on (its enrolled third and strangers)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openset_celeba import load_split

    split = load_split(csv, seed)
    trained = set(bundle.spec.labels["identity"])
    samples = [s for photos in split.enroll.values() for s in photos] + split.queries + \
        split.strangers[0] + split.strangers[1]
    overlap = {s.identity for s in samples} & trained
    if overlap:
        raise SystemExit(f"error: the bundle was trained on {len(overlap)} of the untrained people of the open-set "
                         f"split (seed {seed}); train it on openset_celeba.py --write-train-csv")
    photos: dict[str, list[Path]] = {}
    for s in sorted(samples, key=lambda s: str(s.image)):
        photos.setdefault(str(s.identity), []).append(Path(s.image))
    rng = random.Random(seed)
    for person in sorted(photos):
        rng.shuffle(photos[person])
    return People(photos)


def synthetic_people(folder: Path, count: int, photos: int = 8, seed: int = 0, face_width: float = 150.0) -> People:
    """``count`` synthetic people that the test models are not trained on (``make_people`` beyond the first 6
    of seed 0), each with a lookalike (``lookalike``), ``photos`` photos each, and their heads drawn for video."""
    from edgeface.data.manifest import load_dataset
    from edgeface.data.synthetic import make_people, make_synthetic_dataset
    from edgeface.eval.video import synthetic_actor

    looks = make_people(6 + count, seed=seed)[6:]
    others = make_people(2 * count, seed=seed + 1000)
    twins = [lookalike(look, other) for look, other in zip(looks, others)]
    csv = make_synthetic_dataset(folder, people=looks + twins, photos_per_person=photos, seed=seed + 1)
    people = People({})
    for sample in load_dataset(csv).samples:
        people.photos.setdefault(str(sample.identity), []).append(Path(sample.image))
    people.actors = {look.name: synthetic_actor(look, face_width, views=3, seed=seed) for look in looks + twins}
    people.twins = {look.name: twin.name for look, twin in zip(looks, twins)}
    return people


def lookalike(look: Any, other: Any) -> Any:
    """Somebody with ``look``'s face (shape, skin, features) and ``other``'s hair, eyes, glasses, beard and
    clothes: the stranger who looks like a household member."""
    from dataclasses import replace

    return replace(look, name=f"{look.name} alike", hair_color=other.hair_color, hair_style=other.hair_style,
                   eye_color=other.eye_color, glasses=not look.glasses, shirt_color=other.shirt_color,
                   beard=other.beard if look.gender == other.gender == "male" else look.beard)


def embed(people: People, embedder: Any, cache: Path | None = None) -> None:
    """The model's outputs for every photo with a face (as ``calibrate`` reads strangers: no quality checks);
    kept in ``cache`` (a folder, never committed: outputs of the data) for the next run of the same model."""
    paths = [p for photos in people.photos.values() for p in photos]
    stored = cache / f"outputs-{embedder.bundle.model_sha256[:16]}.npz" if cache else None
    if stored is not None and stored.is_file():
        with np.load(stored) as data:
            found = [Path(p) for p in data["paths"]]
            outputs = {k[len("out_"):]: data[k] for k in data.files if k.startswith("out_")}
    else:
        checks, outputs = embedder.photos(paths, quality=False)
        found = [c.path for c in checks if c.ok]
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            np.savez(stored, paths=np.array([str(p) for p in found]), **{f"out_{k}": v for k, v in outputs.items()})
    for row, path in enumerate(found):
        people.outputs[path] = {k: v[row] for k, v in outputs.items()}


def find_video_photos(people: People, cache: Path | None = None) -> None:
    """The photos BlazeFace finds one clear face in, to be shown on video (real photos only); the faces found
    are kept in ``cache`` for the next run."""
    from edgeface.core.imageio import read_image
    from edgeface.data.manifest import Sample
    from edgeface.eval.video import FacePhoto, face_photos
    from edgeface.faces.detect import Face

    stored = cache / "video-faces.json" if cache else None
    if stored is not None and stored.is_file():
        for path, (identity, box, score, keypoints) in json.loads(stored.read_text()).items():
            face = Face(tuple(box), score, tuple(map(tuple, keypoints)) if keypoints else None)
            people.video[Path(path)] = FacePhoto(identity, read_image(path), face, path)
        return
    samples = [Sample(path, identity) for identity, paths in people.photos.items() for path in paths]
    for photos in face_photos(samples, per_person=10 ** 6, min_face=40, min_score=0.7).values():
        for photo in photos:
            people.video[Path(photo.path)] = photo
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps({str(p): (f.identity, list(f.face.box), f.face.score, f.face.keypoints)
                                      for p, f in people.video.items()}))


# --- one household ------------------------------------------------------------------------------------------

@dataclass
class Household:
    index: int
    enrolled: dict[str, list[Path]]  # person -> enrollment photos offered
    strangers: list[str]
    calibration: list[str]
    gallery: Path
    thresholds: dict[str, Any] = field(default_factory=dict)


def choose(people: People, config: Config, index: int) -> tuple[list[str], list[str], list[str]]:
    """Enrolled, strangers on video and calibration strangers of household ``index`` (seeded)."""
    rng = random.Random(f"{config.seed}-{index}")
    shown = {person: [p for p in photos if p in people.video or people.actors]
             for person, photos in people.photos.items()}
    eligible = sorted(p for p in people.photos if len([x for x in people.photos[p] if x in people.outputs])
                      >= config.enroll_photos[1] and len(shown[p]) >= config.enroll_photos[1] + 2)
    rng.shuffle(eligible)
    enrolled = sorted(eligible[:config.enrolled])
    twins = [people.twins[p] for p in enrolled if p in people.twins][:config.lookalikes]
    others = sorted(p for p in people.photos if p not in enrolled and p not in twins and len(shown[p]) >= 2)
    rng.shuffle(others)
    strangers = sorted(twins + others[:config.strangers - len(twins)])
    calibration = sorted(p for p in people.photos if p not in enrolled and p not in strangers)
    if len(enrolled) < config.enrolled or len(strangers) < config.strangers:
        raise SystemExit(f"error: household {index}: {len(enrolled)} people can be enrolled and {len(strangers)} "
                         f"can be strangers; asked for {config.enrolled} and {config.strangers}")
    return enrolled, strangers, calibration


def build_household(people: People, config: Config, index: int, embedder: Any, folder: Path) -> Household:
    """Enroll, then calibrate on the calibration strangers, as a user would (gallery file in ``folder``)."""
    from edgeface.people.calibrate import calibrate_faces, visits_of
    from edgeface.people.enroll import enroll

    enrolled, strangers, calibration = choose(people, config, index)
    rng = random.Random(f"{config.seed}-{index}-photos")
    gallery = folder / f"household-{index}.json"
    offered = {}
    for person in enrolled:
        count = rng.randint(*config.enroll_photos)
        offered[person] = [p for p in people.photos[person] if p in people.outputs][:count]
        enroll(embedder.bundle, person, offered[person], gallery_path=gallery, embedder=embedder)
    rows = [(person, path) for person in calibration for path in people.photos[person] if path in people.outputs]
    embeddings = np.stack([people.outputs[p]["embedding"] for _, p in rows])
    identity = np.stack([people.outputs[p]["identity"] for _, p in rows])
    result = calibrate_faces(embedder.bundle, embeddings, identity if config.name_trained else None, config.far,
                             gallery, visits=visits_of(
        [person for person, _ in rows]))
    household = Household(index, offered, strangers, calibration, gallery)
    household.thresholds = {
        "per_face": {"similarity": result.thresholds.similarity, "identity": result.thresholds.identity,
                     "far_measured": result.thresholds.far},
        "per_visit": {"similarity": result.visit_thresholds.similarity,
                      "identity": result.visit_thresholds.identity, "far_measured": result.visit_thresholds.far},
        "calibration_faces": len(rows), "calibration_visits": result.visit_thresholds.total,
        "enrolled_photos": sum(len(p.embeddings) for p in result.gallery.people),
        "warnings": list(result.warnings)}
    return household


def household_scenes(people: People, household: Household, config: Config) -> list[Any]:
    """The household's scenes: its people dealt into one scene per ``max_faces``, each visiting
    ``config.visits`` times, shown by photos not used for enrollment."""
    from edgeface.eval.video import photo_actor, visits_scene

    def actor(person: str) -> Any:
        if people.actors:
            return people.actors[person]
        offered = set(household.enrolled.get(person, ()))
        return photo_actor(person, [people.video[p] for p in people.photos[person]
                                    if p in people.video and p not in offered])

    persons = sorted(household.enrolled) + household.strangers
    random.Random(f"{config.seed}-{household.index}-scenes").shuffle(persons)
    scenes = []
    for k, max_faces in enumerate(config.max_faces):
        group = persons[k::len(config.max_faces)]
        if group:
            visits = [actor(p) for p in group for _ in range(config.visits)]
            scenes.append(visits_scene(visits, max_faces=max_faces, fps=config.fps, hold=config.hold,
                                       seed=config.seed * 1000 + household.index * 10 + k))
    return scenes


# --- the rules on a video ------------------------------------------------------------------------------------

@dataclass
class Run:
    """What one rule said of each frame: per frame, each face's (box, track, identity label)."""

    frames: list[list[tuple[tuple[float, ...], int, str]]] = field(default_factory=list)
    recognised: list[list[int]] = field(default_factory=list)  # per frame, the faces that went through the model


def run_pipeline(bundle: Any, gallery: Path, video: Path, frames: int, config: Config, every_face: bool,
                 outputs: list | None = None) -> tuple[Run, Any]:
    """``edgeface.load(...).run`` over the video's ``frames`` frames; returns what it said and its labeler.
    With ``outputs``, each frame's tracks and per-face model outputs are appended to it (every face must then
    be recognised)."""
    import edgeface
    from edgeface.eval.video import read_video
    from edgeface.recognition.settings import RecognitionConfig

    settings = {"recognition": RecognitionConfig(**(EVERY_FACE if every_face else dict(config.recognition)))}
    pipeline = edgeface.load(bundle, gallery=gallery, threads=config.threads,
                             identity_threshold=None if config.name_trained else NAME_NO_TRAINED, **settings)
    run = Run()
    for result in pipeline.run(read_video(video), fps=config.fps, start=START):
        if result.index >= frames:  # the end of the video: only the visits' ``left`` events
            continue
        run.frames.append([(f.box, f.track, f.labels.identity.label) for f in result.faces])
        samples = result.samples
        run.recognised.append(list(samples.recognised) if samples is not None else [])
        if outputs is not None:
            if samples is not None and len(samples.recognised) != len(result.faces):
                raise RuntimeError("every face must be recognised to record the per-face outputs")
            outputs.append(([f.track for f in result.faces], dict(samples.outputs) if samples is not None else {}))
    return run, pipeline.labeler


def per_frame_rule(labeler: Any, outputs: Sequence[tuple[list[int], Mapping[str, np.ndarray]]],
                   boxes: Sequence[Sequence[tuple]]) -> Run:
    """The rule before issue 34 on the same faces: each track's outputs smoothed by an exponential moving
    average (``EMA``; the embedding keeps the newest face's length), each frame labelled by the photo rule
    with the per-face thresholds (``labeler(outputs)``). A track missed for more than ``EMA_MAX_MISSED``
    frames starts afresh, as the old tracker dropped it."""
    smoothed: dict[int, dict[str, np.ndarray]] = {}
    last: dict[int, int] = {}
    run = Run()
    for index, ((tracks, frame), frame_boxes) in enumerate(zip(outputs, boxes)):
        rows: dict[str, list[np.ndarray]] = {name: [] for name in frame}
        for k, track in enumerate(tracks):
            current = {name: np.asarray(value[k], np.float32) for name, value in frame.items()}
            previous = smoothed.get(track) if index - last.get(track, -10 ** 9) <= EMA_MAX_MISSED + 1 else None
            if previous is not None:
                mixed = {}
                for name, value in current.items():
                    blend = EMA * previous[name] + (1 - EMA) * value
                    if name == "embedding":
                        blend *= float(np.linalg.norm(value)) / max(float(np.linalg.norm(blend)), 1e-12)
                    mixed[name] = blend.astype(np.float32)
                current = mixed
            smoothed[track], last[track] = current, index
            for name in rows:
                rows[name].append(current[name])
        labels = labeler({name: np.stack(v) for name, v in rows.items()}) if tracks else []
        run.frames.append([(box, track, label.identity.label)
                           for box, track, label in zip(frame_boxes, tracks, labels)])
        run.recognised.append(list(range(len(tracks))))
    return run


def run_rules(bundle: Any, gallery: Path, video: Path, frames: int, config: Config,
              rules: Sequence[str] = RULES) -> dict[str, Run]:
    """The rules on one video of ``frames`` frames (a pass of the pipeline for per-track, one for the others)."""
    runs = {}
    if "per_track" in rules:
        runs["per_track"], _ = run_pipeline(bundle, gallery, video, frames, config, every_face=False)
    if "every_face" in rules or "per_frame" in rules:
        outputs: list = []
        every_face, labeler = run_pipeline(bundle, gallery, video, frames, config, every_face=True, outputs=outputs)
        boxes = [[box for box, _, _ in frame] for frame in every_face.frames]
        runs.update(every_face=every_face, per_frame=per_frame_rule(labeler, outputs, boxes))
    return runs


# --- scoring ------------------------------------------------------------------------------------------------

@dataclass
class VisitScore:
    identity: str
    enrolled: bool
    start: float
    frames: int = 0  # face frames matched to this visit
    right: int = 0  # ... carrying the right name
    wrong: int = 0  # ... carrying another name (a stranger: any name)
    first_right: float | None = None  # seconds from the visit's first frame on screen to its right name
    names: dict[str, int] = field(default_factory=dict)
    in_view: float = 0.0  # seconds its face was in full view (the truth's, detected or not)

    @property
    def named_right(self) -> bool:
        return self.enrolled and self.right > 0 and self.wrong == 0


@dataclass
class Score:
    """One rule on one or more scenes."""

    visits: list[VisitScore] = field(default_factory=list)
    face_frames: int = 0
    wrong_frames: int = 0
    enrolled_frames: int = 0
    enrolled_right_frames: int = 0
    stranger_frames: int = 0
    stranger_named_frames: int = 0
    unmatched: int = 0  # detections where the truth has nobody
    undetected_visits: int = 0  # visits whose face was never found

    def add(self, other: "Score") -> None:
        for name, value in vars(other).items():
            if name == "visits":
                self.visits += value
            else:
                setattr(self, name, getattr(self, name) + value)

    def figures(self) -> dict[str, Any]:
        enrolled = [v for v in self.visits if v.enrolled]
        strangers = [v for v in self.visits if not v.enrolled]
        seen = [v for v in enrolled if v.frames >= SEEN_FRAMES]
        in_view = [v for v in enrolled if v.in_view >= IN_VIEW_SECONDS - 1e-9]
        times = np.array([v.first_right if v.first_right is not None and v.named_right else np.inf
                          for v in enrolled], np.float64)
        return {
            "enrolled_visits": len(enrolled),
            "enrolled_named_right": _share(sum(v.named_right for v in enrolled), len(enrolled)),
            "enrolled_given_a_wrong_name": _share(sum(v.wrong > 0 for v in enrolled), len(enrolled)),
            "enrolled_never_named": _share(sum(v.right == 0 and v.wrong == 0 for v in enrolled), len(enrolled)),
            "enrolled_seen_named_right": _share(sum(v.named_right for v in seen), len(seen)),
            "enrolled_in_view_named_right": _share(sum(v.named_right for v in in_view), len(in_view)),
            "stranger_visits": len(strangers),
            "strangers_given_a_name": _share(sum(v.wrong > 0 for v in strangers), len(strangers)),
            "face_frames": self.face_frames,
            "face_frames_wrong_name": _share(self.wrong_frames, self.face_frames),
            "enrolled_frames_right": _share(self.enrolled_right_frames, self.enrolled_frames),
            "stranger_frames_named": _share(self.stranger_named_frames, self.stranger_frames),
            "seconds_to_right_name": {"median": _quantile(times, 0.5), "p90": _quantile(times, 0.9),
                                      "named": int(np.isfinite(times).sum())},
            "detections_without_a_face": self.unmatched, "visits_never_detected": self.undetected_visits,
        }


def _share(count: int, total: int) -> dict[str, Any]:
    return {"count": int(count), "of": int(total), "rate": round(count / total, 4) if total else None}


def _quantile(values: np.ndarray, q: float) -> float | None:
    """A quantile where visits never named count as never (inf); None when it falls on one of them."""
    if not len(values):
        return None
    value = float(np.quantile(values, q, method="higher"))
    return round(value, 3) if np.isfinite(value) else None


def score(truth: Any, run: Run, enrolled: Iterable[str]) -> Score:
    """A rule's labels on a video against the video's truth."""
    from edgeface.core.results import UNKNOWN

    enrolled = set(enrolled)
    visits = {v.visit: VisitScore(v.identity, v.identity in enrolled, v.start) for v in truth.visits}
    for faces in truth.frames:
        for face in faces:
            if face.visible >= FULL_VIEW and face.visit in visits:
                visits[face.visit].in_view += 1.0 / truth.fps
    out = Score()
    for index, faces in enumerate(run.frames):
        matched = truth.match(index, [box for box, _, _ in faces])
        for (_, _, label), true in zip(faces, matched):
            if true is None:
                out.unmatched += 1
                continue
            is_enrolled = true.identity in enrolled
            right = label == true.identity
            wrong = label != UNKNOWN and not right
            out.face_frames += 1
            out.wrong_frames += wrong
            if is_enrolled:
                out.enrolled_frames += 1
                out.enrolled_right_frames += right
            else:
                out.stranger_frames += 1
                out.stranger_named_frames += label != UNKNOWN
            visit = visits.get(true.visit)
            if visit is None:  # a face never half on screen: no visit in the truth
                continue
            visit.frames += 1
            visit.right += right
            visit.wrong += wrong
            if label != UNKNOWN:
                visit.names[label] = visit.names.get(label, 0) + 1
            if right and visit.first_right is None:
                visit.first_right = max(0.0, truth.time(index) - visit.start)
    out.visits = list(visits.values())
    out.undetected_visits = sum(v.frames == 0 for v in out.visits)
    return out


def encoder_duty(run: Run, min_frames: int = 10) -> dict[str, Any]:
    """Per track, once named: the share of its frames (after the one that named it) in which its face went
    through the model; tracks seen for at least ``min_frames`` such frames."""
    from edgeface.core.results import UNKNOWN

    named_at: dict[int, int] = {}
    frames: dict[int, int] = {}
    recognised: dict[int, int] = {}

    for index, (faces, chosen) in enumerate(zip(run.frames, run.recognised)):
        for k, (_, track, label) in enumerate(faces):
            if track not in named_at and label != UNKNOWN:
                named_at[track] = index
                continue  # the frame that named it
            if track in named_at:
                frames[track] = frames.get(track, 0) + 1
                recognised[track] = recognised.get(track, 0) + (k in chosen)
    duty = np.array([recognised[t] / frames[t] for t in frames if frames[t] >= min_frames], np.float64)
    return {"tracks": int(len(duty)), "median": round(float(np.median(duty)), 4) if len(duty) else None,
            "max": round(float(duty.max()), 4) if len(duty) else None,
            "tracks_at_most_1_in_5": int((duty <= 0.2 + 1e-9).sum()),
            "frames": int(sum(frames.values())), "recognised": int(sum(recognised.values()))}


# --- the harness --------------------------------------------------------------------------------------------

def run_households(bundle_path: Path, people: People, config: Config, work: Path, details: list | None = None,
                   progress: bool = True, cache: Path | None = None, rules: Sequence[str] = RULES) -> dict[str, Any]:
    """Every household: enroll, calibrate, write its scenes, run the rules, score. Returns the figures."""
    from edgeface.core.bundle import load_bundle
    from edgeface.core.progress import progress_bar
    from edgeface.eval.video import write_scene
    from edgeface.people.enroll import FaceEmbedder

    bundle = load_bundle(bundle_path)
    embedder = FaceEmbedder(bundle, num_threads=config.threads)
    embed(people, embedder, cache)
    if not people.actors:
        find_video_photos(people, cache)
    totals = {rule: Score() for rule in rules}
    duty = []
    households = []
    started = time.monotonic()
    for index in progress_bar(range(config.households), desc="households", unit="household", enabled=progress):
        household = build_household(people, config, index, embedder, work)
        scores = {rule: Score() for rule in rules}
        frames = 0
        for k, scene in enumerate(household_scenes(people, household, config)):
            video = work / f"household-{index}-scene-{k}.mp4"
            truth = write_scene(video, scene)
            frames += truth.frame_count
            runs = run_rules(bundle, household.gallery, video, truth.frame_count, config, rules)
            for rule, run in runs.items():
                scored = score(truth, run, household.enrolled)
                scores[rule].add(scored)
                if details is not None:
                    details += [{"household": index, "scene": k, "rule": rule, **vars(v)} for v in scored.visits
                                if (v.enrolled and not v.named_right) or (not v.enrolled and v.wrong)]
            if "per_track" in runs:
                duty.append(encoder_duty(runs["per_track"]))
            video.unlink()
        for rule in rules:
            totals[rule].add(scores[rule])
        households.append({"household": index, "frames": frames, **household.thresholds,
                           **{rule: scores[rule].figures() for rule in rules}})
    tracks = sum(d["tracks"] for d in duty)
    return {
        "setup": {**{k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
                  "bundle": bundle_path.name, "backbone": bundle.spec.backbone, "precision": bundle.precision,
                  "input_size": bundle.spec.input_size, "people": len(people.photos),
                  "in_view": {"seconds": IN_VIEW_SECONDS, "visible": FULL_VIEW}},
        "rules": {rule: totals[rule].figures() for rule in rules},
        "encoder_after_named": {"tracks": tracks, "tracks_at_most_1_in_5": sum(d["tracks_at_most_1_in_5"]
                                                                                for d in duty),
                                "recognised": sum(d["recognised"] for d in duty),
                                "frames": sum(d["frames"] for d in duty),
                                "worst_track": max((d["max"] for d in duty if d["max"] is not None), default=None)},
        "households": households, "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from results import write_result  # first imported here: the commit it records is the one that runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("celeba", "synthetic"), default="celeba")
    parser.add_argument("--bundle", type=Path, required=True, help="for celeba: trained on the open-set split")
    parser.add_argument("--households", type=int, default=Config.households,
                        help="households drawn; other than the default, the figures go to "
                             "household-<set>-households-N")
    parser.add_argument("--enrolled", type=int, default=Config.enrolled, help="enrolled people per household")
    parser.add_argument("--strangers", type=int, default=Config.strangers, help="strangers on video per household")
    parser.add_argument("--visits", type=int, default=Config.visits, help="visits of each person on video")
    parser.add_argument("--enroll-photos", default="-".join(map(str, Config.enroll_photos)), metavar="LOW-HIGH",
                        help="photos each enrolled person is enrolled from (drawn between LOW and HIGH); other "
                             "than the default, the figures go to household-<set>-enrolled-LOW-HIGH")
    parser.add_argument("--far", type=float, default=Config.far,
                        help="per-visit false-accept rate calibrated; other than the default, the figures go to "
                             "household-<set>[-enrolled-LOW-HIGH]-far-FAR (the trade-off on docs/results.md)")
    parser.add_argument("--synthetic-people", type=int, default=40,
                        help="people of the synthetic set (each also has a lookalike)")
    parser.add_argument("--lookalikes", type=int, default=0,
                        help="strangers who are lookalikes of enrolled people (synthetic set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name-trained", action="store_true",
                        help="let the bundle's trained people (never household members here) be named, with the "
                             "identity head's threshold calibrated beside the gallery's")
    parser.add_argument("--details", type=Path, help="write the failing visits here (JSON; names people)")
    parser.add_argument("--rules", default=",".join(RULES), help="the rules to run (a trial of one)")
    parser.add_argument("--recognition", default="", help="the per-track run's [recognition] settings, e.g. "
                                                          "gather=10,refresh=0.5 (default: the daemon's)")
    parser.add_argument("--cache", type=Path, help="keep the photos' model outputs and faces here between runs "
                                                   "(derived from the data: never commit it)")
    parser.add_argument("--no-write", action="store_true", help="print the figures, do not write results/")
    parser.add_argument("--out", type=Path, help="also write the figures here (a trial: with --no-write)")
    args = parser.parse_args(argv)
    low, _, high = args.enroll_photos.partition("-")
    if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high)):
        parser.error(f"--enroll-photos: LOW-HIGH with 1 <= LOW <= HIGH, got {args.enroll_photos!r}")
    enroll_photos = (int(low), int(high))
    config = Config(households=args.households, enrolled=args.enrolled, strangers=args.strangers,
                    visits=args.visits, enroll_photos=enroll_photos, far=args.far, seed=args.seed,
                    lookalikes=args.lookalikes, name_trained=args.name_trained, recognition=tuple(
                        (k, int(v) if k in ("budget", "gather") else float(v))
                        for k, v in (item.split("=") for item in args.recognition.split(",") if item)))
    with tempfile.TemporaryDirectory(prefix="household-") as tmp:
        work = Path(tmp)
        if args.set == "celeba":
            from edgeface.core.bundle import load_bundle

            people = celeba_people(load_bundle(args.bundle), seed=args.seed)
        else:
            people = synthetic_people(work / "people", args.synthetic_people, seed=args.seed)
        details: list = []
        figures = run_households(args.bundle, people, config, work, details, cache=args.cache,
                                  rules=args.rules.split(","))
    print(json.dumps({"rules": figures["rules"], "encoder_after_named": figures["encoder_after_named"]}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    if args.details:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        args.details.write_text(json.dumps(details, indent=1, default=str))
    if not args.no_write:
        given = list(argv if argv is not None else sys.argv[1:])
        kept = [a for k, a in enumerate(given) if a not in LOCAL_OPTIONS and (k == 0 or given[k - 1] not in
                                                                               LOCAL_OPTIONS)]
        command = "python benchmarks/household.py " + " ".join(kept)  # without where it kept its files
        name = f"household-{args.set}"
        if args.households != Config.households:
            name += f"-households-{args.households}"
        if enroll_photos != Config.enroll_photos:
            name += f"-enrolled-{low}-{high}"
        if args.far != Config.far:
            name += f"-far-{args.far:g}"
        write_result(name, figures, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())


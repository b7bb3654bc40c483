"""Videos of people with their ground truth, for measuring what the device names on video.

A **scene** is people's faces moving along paths over a backdrop: entering, crossing, leaving and returning.

* A person is an ``Actor``: a name, what is true of them (gender), and their ``View``\\s, the faces that are
  pasted: heads drawn by ``edgeface.data.synthetic`` (``synthetic_actor``) or the face patches of real photos
  (``photo_actor``, from ``face_photos``).
* Each of their visits is a ``Walk``: a path of keyframes (time, where the eyes are, how wide the face is),
  followed in straight lines, and the views shown in turn along it.
* ``Scene`` pastes the walks present at each frame, farther (smaller) faces first so that nearer ones cover
  them, and adds sensor noise; ``write_scene`` writes the frames as a video and the truth beside it.
  ``side_by_side`` (people in lanes for the whole video) and ``visits_scene`` (people arriving, crossing,
  leaving and returning) make the usual scenes.

The truth (``SceneTruth``, a JSON file beside the video) gives per frame each face's identity, visit, box,
eyes and how much of it is visible, and per person their visits as on-screen intervals (from the first to the
last frame in which at least ``SEEN`` of their face is visible). ``SceneTruth.match`` pairs the faces a
detector found in a frame with the faces in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.eval.bench import FRAME_SIZE

if TYPE_CHECKING:
    from edgeface.data.synthetic import PersonLook, Sprite
    from edgeface.faces.detect import Face

TRUTH_FORMAT = "edgeface-scene-truth"
TRUTH_VERSION = 1
SEEN = 0.5  # share of a face visible for it to count as on screen
MATCH_DISTANCE = 0.5  # a detected face is a true face when their centres are this close, in face widths
SWAY_PERIOD = 3.0  # seconds of one up-and-down of a walking head
FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # what opencv-python-headless can write (no H.264 in the wheel)


# --- people -------------------------------------------------------------------------------------------------

class View(NamedTuple):
    """One way a person looks: the sprite pasted, and what it shows (``{"emotion": "happy"}``)."""

    sprite: "Sprite"
    labels: Mapping[str, str] = {}


@dataclass(frozen=True)
class Actor:
    identity: str
    views: tuple[View, ...]
    labels: Mapping[str, str] = field(default_factory=dict)  # true of the person in every view (gender)


@dataclass(frozen=True)
class FacePhoto:
    """A photo with one clear face in it, as the project's detector found it."""

    identity: str
    image: np.ndarray = field(repr=False)  # RGB uint8, the whole photo
    face: "Face"
    path: str = ""


def synthetic_actor(look: "PersonLook", face_width: float = 120.0, views: int = 2, seed: int = 0) -> Actor:
    """A synthetic person drawn ``views`` times for faces up to ``face_width`` pixels wide: the expressions in
    turn (neutral, happy), the first view facing the camera, the others turned a little and lit otherwise."""
    from edgeface.core.spec import EMOTIONS
    from edgeface.data.synthetic import head_width, render_head

    key = [seed, sum(map(ord, look.name))]
    rng = np.random.default_rng([*key, 5])
    drawn = []
    for k in range(views):
        emotion = EMOTIONS[(k + 1) % len(EMOTIONS)]  # neutral first
        yaw = 0.0 if k == 0 else float(rng.uniform(-0.25, 0.25))
        light = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.0)))
        sprite = render_head(look, emotion, np.random.default_rng([*key, k]), head_width(face_width), yaw, light)
        drawn.append(View(sprite, {"emotion": emotion}))
    return Actor(look.name, tuple(drawn), {"gender": look.gender})


def photo_sprite(image: np.ndarray, face: "Face") -> "Sprite":
    """A photo's face as a sprite: the face with a margin of hair, neck and background, its edges faded so it
    blends into the backdrop; the eyes from the detector's keypoints (from the box without them)."""
    from edgeface.data.synthetic import Sprite
    from edgeface.faces.detect import LEFT_EYE, RIGHT_EYE

    x0, y0, x1, y1 = face.box
    fw, fh = x1 - x0, y1 - y0
    px0, py0 = max(0, int(x0 - 0.5 * fw)), max(0, int(y0 - 0.6 * fh))
    px1, py1 = min(image.shape[1], int(x1 + 0.5 * fw)), min(image.shape[0], int(y1 + 0.8 * fh))
    patch = np.ascontiguousarray(image[py0:py1, px0:px1])
    h, w = patch.shape[:2]
    fade = max(2.0, 0.12 * min(h, w))
    ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    edge_y = np.minimum(ys + 0.5, h - ys - 0.5)[:, None]
    edge_x = np.minimum(xs + 0.5, w - xs - 0.5)[None, :]
    alpha = np.clip(np.minimum(edge_y, edge_x) / fade, 0.0, 1.0).astype(np.float32)
    if face.keypoints is not None and len(face.keypoints) > max(LEFT_EYE, RIGHT_EYE):
        eyes = [(float(face.keypoints[k][0]) - px0, float(face.keypoints[k][1]) - py0) for k in (RIGHT_EYE, LEFT_EYE)]
    else:
        eyes = [(x0 + f * fw - px0, y0 + 0.38 * fh - py0) for f in (0.3, 0.7)]
    left, right = sorted(eyes)  # image-left eye first
    return Sprite(patch, alpha, (left, right), (x0 - px0, y0 - py0, x1 - px0, y1 - py0))


def photo_actor(identity: str, photos: Sequence[FacePhoto], labels: Mapping[str, str] | None = None) -> Actor:
    """A real person shown by their photos' faces, one view per photo."""
    if not photos:
        raise EdgefaceError(f"{identity}: no photos to show")
    return Actor(identity, tuple(View(photo_sprite(p.image, p.face)) for p in photos), dict(labels or {}))


def face_photos(source: str | Path | Sequence[Any], per_person: int = 6, people: Sequence[str] | None = None,
                min_face: int = 60, min_score: float = 0.8) -> dict[str, list[FacePhoto]]:
    """Up to ``per_person`` photos per person in which BlazeFace finds exactly one clear face (at least
    ``min_face`` pixels tall, detector score ``min_score``), in the given order. ``source``: a CSV manifest or
    its samples (``edgeface.data.manifest.Sample``)."""
    from edgeface.core.imageio import read_image
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.detect import create_detector

    samples: Sequence[Any] = load_dataset(source).samples if isinstance(source, (str, Path)) else source
    detector = create_detector("blazeface", shared=True)
    wanted = None if people is None else set(people)
    found: dict[str, list[FacePhoto]] = {}
    for sample in samples:
        if wanted is not None and sample.identity not in wanted:
            continue
        photos = found.setdefault(str(sample.identity), [])
        if len(photos) >= per_person:
            continue
        image = read_image(sample.image)
        faces = detector.detect(image)
        if len(faces) == 1 and faces[0].height >= min_face and faces[0].score >= min_score:
            photos.append(FacePhoto(str(sample.identity), image, faces[0], str(sample.image)))
    return {person: photos for person, photos in sorted(found.items()) if photos}


# --- scenes -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Walk:
    """One visit of an actor: ``path`` keyframes ``(seconds, x, y, face width)``, ``x, y`` the point between the
    eyes in frame pixels, followed in straight lines (the actor is in the scene from the first keyframe to the
    last); ``views`` indices into the actor's views, shown in turn for ``hold`` seconds each; ``sway`` pixels
    of up-and-down as they walk."""

    actor: Actor
    path: tuple[tuple[float, float, float, float], ...]
    views: tuple[int, ...] = (0,)
    hold: float = 1.0
    sway: float = 0.0

    def __post_init__(self) -> None:
        times = [k[0] for k in self.path]
        if not self.path or times != sorted(times):
            raise EdgefaceError(f"{self.actor.identity}: a walk needs keyframes in time order")
        if any(not 0 <= v < len(self.actor.views) for v in self.views) or not self.views:
            raise EdgefaceError(f"{self.actor.identity}: views {list(self.views)} of {len(self.actor.views)}")

    @property
    def start(self) -> float:
        return self.path[0][0]

    @property
    def end(self) -> float:
        return self.path[-1][0]

    def at(self, t: float) -> tuple[float, float, float] | None:
        """Where the actor is at ``t`` (x, y, face width), None when not in the scene."""
        if not self.start <= t <= self.end:
            return None
        keys = np.array(self.path, np.float64)
        x, y, w = (float(np.interp(t, keys[:, 0], keys[:, k])) for k in (1, 2, 3))
        if self.sway:
            y += self.sway * float(np.sin(2 * np.pi * (t - self.start) / SWAY_PERIOD + len(self.actor.identity)))
        return x, y, w

    def view_at(self, t: float) -> View:
        k = int((t - self.start) // self.hold) if self.hold > 0 else 0
        return self.actor.views[self.views[k % len(self.views)]]


@dataclass(frozen=True)
class Scene:
    """Walks over a backdrop for ``seconds`` at ``fps``; ``size`` (h, w); ``backdrop`` an RGB image of that size
    (default: a plain room drawn from ``seed``); ``noise``: grey levels of sensor noise per frame."""

    walks: tuple[Walk, ...]
    seconds: float
    fps: float = 10.0
    size: tuple[int, int] = FRAME_SIZE
    seed: int = 0
    noise: float = 2.0
    backdrop: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def frame_count(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def frames(self) -> Iterator[tuple[np.ndarray, tuple["TrueFace", ...]]]:
        """Each frame (RGB uint8) with the faces in it."""
        from edgeface.data.synthetic import composite_frame

        background = self.backdrop if self.backdrop is not None else room(np.random.default_rng(self.seed),
                                                                          self.size)
        if background.shape[:2] != tuple(self.size):
            raise EdgefaceError(f"backdrop of {background.shape[1]}x{background.shape[0]}, scene of "
                                f"{self.size[1]}x{self.size[0]}")
        for index in range(self.frame_count):
            t = index / self.fps
            present = [(k, walk, walk.at(t)) for k, walk in enumerate(self.walks)]
            shown = sorted(((where[2], k, walk, where) for k, walk, where in present if where is not None),
                           key=lambda item: (item[0], item[1]))  # farther (smaller) faces first
            layers = [(walk.view_at(t).sprite, where) for _, _, walk, where in shown]
            image, placed = composite_frame(background, layers, np.random.default_rng([self.seed, 99, index]),
                                            self.noise)
            faces = tuple(TrueFace(walk.actor.identity, k, tuple(p["box"]), tuple(map(tuple, p["eyes"])),
                                   p["visible"], {**walk.actor.labels, **walk.view_at(t).labels})
                          for (_, k, walk, _), p in zip(shown, placed) if p["visible"] > 0)
            yield image, tuple(sorted(faces, key=lambda f: f.visit))


def room(rng: np.random.Generator, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A plain room-like backdrop of ``size`` (h, w): a gradient with some low-frequency blotches, no faces."""
    import cv2

    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 60 * (xs / width) + 30 * (ys / height)
    blotches = cv2.resize(rng.uniform(-25, 25, (6, 8)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    tint = np.array([1.0, 0.95, 0.85], np.float32)
    return np.clip((base + blotches)[..., None] * tint, 0, 255).astype(np.uint8)


def side_by_side(actors: Sequence[Actor], seconds: float, fps: float = 10.0, face_width: float = 120.0,
                 hold: float = 1.0, size: tuple[int, int] = FRAME_SIZE, seed: int = 0) -> Scene:
    """Each actor in a lane of their own for the whole video, drifting slowly and swaying, never covering each
    other; their views take turns every ``hold`` seconds (another photo, the other expression)."""
    rng = np.random.default_rng([seed, 17])
    height, width = size
    lane = width / max(len(actors), 1)
    walks = []
    for i, actor in enumerate(actors):
        x = lane * (i + 0.5 + float(rng.uniform(-0.05, 0.05)))
        y = height * float(rng.uniform(0.38, 0.5))
        drift = float(rng.uniform(-0.08, 0.08)) * lane
        views = tuple((i + k) % len(actor.views) for k in range(len(actor.views)))
        walks.append(Walk(actor, ((0.0, x, y, face_width), (seconds, x + drift, y, face_width)), views, hold,
                          sway=0.03 * face_width))
    return Scene(tuple(walks), seconds, fps, size, seed)


def visits_scene(visits: Sequence[Actor], max_faces: int = 3, fps: float = 10.0, size: tuple[int, int] = FRAME_SIZE,
                 face_widths: tuple[float, float] = (80.0, 150.0), visit_seconds: tuple[float, float] = (3.0, 8.0),
                 hold: float = 1.5, away: float = 4.0, seed: int = 0) -> Scene:
    """People coming and going: one walk per entry of ``visits`` (an actor given twice visits twice), at most
    ``max_faces`` on screen at once, in a seeded order.

    Each walk enters from one side of the frame and either crosses it or stops for a while (drifting towards or
    away from the camera) and leaves by either side; walks at the same time cross each other, and the nearer
    face covers the farther one. The same actor is never on screen twice at once and comes back no sooner than
    ``away`` seconds after leaving. Their views change every ``hold`` seconds, starting from a seeded one.
    """
    if not 1 <= max_faces <= 8:
        raise EdgefaceError(f"max_faces must be 1 to 8, got {max_faces}")
    rng = np.random.default_rng([seed, 23])
    height, width = size
    order = [visits[int(k)] for k in rng.permutation(len(visits))]
    free = [float(rng.uniform(0.0, 1.5)) for _ in range(max_faces)]  # when each slot can take the next walk
    gone: dict[str, float] = {}  # when each actor last left
    walks: list[Walk] = []
    for actor in order:
        slot = int(np.argmin(free))
        start = max(free[slot] + float(rng.uniform(0.3, 2.5)), gone.get(actor.identity, -np.inf) + away)
        duration = float(rng.uniform(*visit_seconds))
        w0 = float(rng.uniform(*face_widths))
        w1 = float(np.clip(w0 * rng.uniform(0.8, 1.25), *face_widths))
        y0 = height * float(rng.uniform(0.3, 0.55))
        y1 = float(np.clip(y0 + rng.uniform(-0.05, 0.05) * height, 0.25 * height, 0.6 * height))
        side = 1 if rng.random() < 0.5 else -1  # enters from the left (1) or the right (-1)
        outside = 0.8 * max(w0, w1)  # the eyes this far past the edge: the face is out of the frame
        enter_x = -outside if side == 1 else width + outside
        path: tuple[tuple[float, float, float, float], ...]
        if rng.random() < 0.5:  # crosses the frame
            exit_x = width + outside if side == 1 else -outside
            path = ((start, enter_x, y0, w0), (start + duration, exit_x, y1, w1))
        else:  # stops somewhere, then leaves by either side
            spot = float(rng.uniform(0.2, 0.8)) * width
            walk_in = duration * float(rng.uniform(0.2, 0.3))
            stay = duration * float(rng.uniform(0.3, 0.5))
            exit_x = width + outside if rng.random() < 0.5 else -outside
            wobble = float(rng.uniform(-0.05, 0.05)) * width
            path = ((start, enter_x, y0, w0), (start + walk_in, spot, y0, w0),
                    (start + walk_in + stay, spot + wobble, y1, w1), (start + duration, exit_x, y1, w1))
        first = int(rng.integers(len(actor.views)))
        views = tuple((first + k) % len(actor.views) for k in range(len(actor.views)))
        walks.append(Walk(actor, path, views, hold, sway=0.03 * w0))
        free[slot] = start + duration
        gone[actor.identity] = start + duration
    seconds = max((w.end for w in walks), default=1.0) + 1.0
    return Scene(tuple(walks), seconds, fps, size, seed)


# --- the truth ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrueFace:
    identity: str
    visit: int  # the walk it belongs to (``SceneTruth.visits``' ``visit``)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (may reach outside the frame)
    eyes: tuple[tuple[float, float], ...]  # image-left, image-right
    visible: float  # share of the box inside the frame and not covered by a nearer face
    labels: Mapping[str, str] = field(default_factory=dict)  # emotion, gender ...

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "visit": self.visit, "box": [round(v, 1) for v in self.box],
                "eyes": [[round(v, 1) for v in e] for e in self.eyes], "visible": round(self.visible, 3),
                **self.labels}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "TrueFace":
        fixed = {"identity", "visit", "box", "eyes", "visible"}
        return cls(str(raw["identity"]), int(raw["visit"]), tuple(float(v) for v in raw["box"]),  # type: ignore[arg-type]
                   tuple((float(e[0]), float(e[1])) for e in raw["eyes"]), float(raw["visible"]),
                   {k: str(v) for k, v in raw.items() if k not in fixed})


@dataclass(frozen=True)
class TrueVisit:
    """A person on screen: ``first_frame`` to ``last_frame`` (``start``, ``end`` in seconds from the start)."""

    identity: str
    visit: int
    first_frame: int
    last_frame: int
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "visit": self.visit, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass(frozen=True)
class SceneTruth:
    """What is in a scene's video: people, their visits, and the faces of every frame."""

    fps: float
    size: tuple[int, int]  # (w, h), as video players say it
    people: Mapping[str, Mapping[str, str]]  # identity -> what is true of them (gender)
    visits: tuple[TrueVisit, ...]
    frames: tuple[tuple[TrueFace, ...], ...]
    video: str = ""

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    def time(self, index: int) -> float:
        """Seconds from the start of the video to frame ``index``."""
        return index / self.fps

    def match(self, index: int, boxes: Sequence[Sequence[float]]) -> list[TrueFace | None]:
        """The true face behind each detected box of frame ``index`` (None: nobody there), each true face used
        once: nearest centres first, within ``MATCH_DISTANCE`` face widths."""
        faces = self.frames[index] if 0 <= index < len(self.frames) else ()
        out: list[TrueFace | None] = [None] * len(boxes)
        if not faces or not len(boxes):
            return out
        centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes], np.float64)
        truth = np.array([f.centre for f in faces], np.float64)
        widths = np.array([max(f.box[2] - f.box[0], 1.0) for f in faces])
        distance = np.hypot(*(centres[:, None, :] - truth[None, :, :]).transpose(2, 0, 1)) / widths[None, :]
        used: set[int] = set()
        for flat in np.argsort(distance, axis=None, kind="stable"):
            i, j = (int(v) for v in np.unravel_index(flat, distance.shape))
            if distance[i, j] > MATCH_DISTANCE:
                break
            if out[i] is None and j not in used:
                out[i] = faces[j]
                used.add(j)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": TRUTH_FORMAT, "format_version": TRUTH_VERSION, "video": self.video, "fps": self.fps,
                "size": list(self.size), "frame_count": self.frame_count,
                "people": {k: dict(v) for k, v in self.people.items()},
                "visits": [v.to_dict() for v in self.visits],
                "frames": [{"index": i, "time": round(self.time(i), 3), "faces": [f.to_dict() for f in faces]}
                           for i, faces in enumerate(self.frames)]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "SceneTruth":
        if raw.get("format") != TRUTH_FORMAT or raw.get("format_version") != TRUTH_VERSION:
            raise EdgefaceError(f"not a scene truth file (format {raw.get('format')!r} version "
                                f"{raw.get('format_version')!r}; want {TRUTH_FORMAT!r} {TRUTH_VERSION})")
        frames = tuple(tuple(TrueFace.from_dict(f) for f in frame["faces"]) for frame in raw["frames"])
        visits = tuple(TrueVisit(str(v["identity"]), int(v["visit"]), int(v["first_frame"]), int(v["last_frame"]),
                                 float(v["start"]), float(v["end"])) for v in raw["visits"])
        return cls(float(raw["fps"]), tuple(raw["size"]), {k: dict(v) for k, v in raw["people"].items()},
                   visits, frames, str(raw.get("video", "")))

    @classmethod
    def read(cls, path: str | Path) -> "SceneTruth":
        """The truth of a video (its ``.json`` beside it), or of a truth file given itself."""
        path = Path(path)
        return cls.from_dict(json.loads(path.with_suffix(".json").read_text()))


def scene_truth(scene: Scene, faces: Sequence[Sequence[TrueFace]], video: str = "") -> SceneTruth:
    """The truth of a scene from the faces of each of its frames: visits from their on-screen frames."""
    seen: dict[int, list[int]] = {}
    for index, frame in enumerate(faces):
        for face in frame:
            if face.visible >= SEEN:
                seen.setdefault(face.visit, []).append(index)
    visits = tuple(TrueVisit(scene.walks[k].actor.identity, k, min(frames), max(frames), min(frames) / scene.fps,
                             max(frames) / scene.fps) for k, frames in sorted(seen.items()))
    people = {w.actor.identity: dict(w.actor.labels) for w in scene.walks}
    height, width = scene.size
    return SceneTruth(scene.fps, (width, height), people, visits, tuple(tuple(f) for f in faces), video)


def write_scene(path: str | Path, scene: Scene) -> SceneTruth:
    """Write the scene as a video (``.mp4``: MPEG-4 part 2; ``.avi``: Motion JPEG) and its truth beside it
    (``path`` with ``.json``); returns the truth."""
    import cv2

    path = Path(path)
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise EdgefaceError(f"{path}: video must be {' or '.join(FOURCC)}")
    height, width = scene.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), float(scene.fps), (width, height))
    if not writer.isOpened():
        raise EdgefaceError(f"{path}: OpenCV cannot write {fourcc} video here")
    faces = []
    try:
        for image, frame_faces in scene.frames():
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            faces.append(frame_faces)
    finally:
        writer.release()
    truth = scene_truth(scene, faces, path.name)
    path.with_suffix(".json").write_text(json.dumps(truth.to_dict()))
    return truth


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """A video file's frames, RGB uint8, in order."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise EdgefaceError(f"{path}: OpenCV cannot read this video")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()

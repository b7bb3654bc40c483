"""Test videos (``edgeface.eval.video`` scenes): synthetic people side by side, photos of people the tiny model
never saw, and the real photos a small model names right, for tests that check the daemon's plumbing rather
than a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from edgeface.data.synthetic import PersonLook
    from edgeface.eval.video import FacePhoto, SceneTruth

FACE_WIDTH = 100.0  # pixels: a person a metre or two from a 640x480 camera


def new_people_photos(folder: Path, per_person: int) -> tuple[list["PersonLook"], dict[str, list[Path]]]:
    """3 synthetic people the tiny model was not trained on (it knows the first 6 of seed 0), ``per_person``
    photos each under ``folder``: their looks, and their photos by name."""
    from edgeface.data.synthetic import make_people, make_synthetic_dataset

    new = make_people(9, seed=0)[6:]
    make_synthetic_dataset(folder, people=new, photos_per_person=per_person, seed=3)
    return new, {look.name: sorted((folder / "images").glob(f"{look.name.lower()}_*.jpg")) for look in new}


def synthetic_video(path: Path, faces: int, seconds: float, fps: float = 10.0, seed: int = 0,
                    people: Sequence["PersonLook"] | None = None) -> "SceneTruth":
    """``faces`` synthetic people side by side for ``seconds``: ``people`` (default: up to 3 that are not among
    the tiny model's six), each in one view (faces of the same person that a tiny model tells apart would
    split their track); the truth is written beside the video."""
    from edgeface.data.synthetic import make_people
    from edgeface.eval.video import side_by_side, synthetic_actor, write_scene

    people = make_people(9, seed=0)[6:] if people is None else people  # the tiny model: the first 6 of seed 0
    actors = [synthetic_actor(look, FACE_WIDTH, views=1, seed=seed) for look in people[:faces]]
    return write_scene(path, side_by_side(actors, seconds, fps, FACE_WIDTH, seed=seed))


def recognised_photos(photos: dict[str, list["FacePhoto"]], bundle: Path, face_width: float = 120.0,
                      min_score: float = 0.7) -> dict[str, list["FacePhoto"]]:
    """Only the photos the bundle names correctly as they will appear in the video (pasted at ``face_width``
    on the scene's backdrop, then detect, align, infer: the daemon's own steps).

    The labels test checks the daemon's plumbing and tracking, not how well a small test model generalises, so
    it composites photos whose right answer the model is known to give: on a clean frame at the centre, and on
    one that is off-centre, noisy and lossily compressed as the video's frames are.
    """
    import cv2

    from edgeface.core.bundle import load_bundle
    from edgeface.eval.bench import FRAME_SIZE
    from edgeface.eval.video import Scene, Walk, photo_actor
    from edgeface.faces.align import align_faces
    from edgeface.faces.detect import create_detector
    from edgeface.runtime.engine import LiteRTEngine
    from edgeface.runtime.labeler import Labeler

    loaded = load_bundle(bundle)
    spec = loaded.spec
    engine = LiteRTEngine.from_bundle(loaded, num_threads=1)
    labeler = Labeler(spec, loaded.identity_threshold)
    detector = create_detector(spec.crop.detector, shared=True)
    height, width = FRAME_SIZE

    def named_right(person: str, photo: "FacePhoto", centre: tuple[float, float], degrade: bool) -> bool:
        walk = Walk(photo_actor(person, [photo]), ((0.0, *centre, face_width),))
        canvas, _ = next(Scene((walk,), 0.1, noise=2.0 if degrade else 0.0).frames())
        if degrade:  # a lossy codec round trip
            _, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 70])
            canvas = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        faces = detector.detect(canvas)
        if len(faces) != 1:
            return False
        (labels,) = labeler(engine.predict(align_faces(canvas, faces, spec.crop, spec.input_size)))
        return labels.identity.label == person and labels.identity.score >= min_score

    kept: dict[str, list["FacePhoto"]] = {}
    for person, items in photos.items():
        for photo in items:
            if (named_right(person, photo, (width / 2, height / 2), degrade=False)
                    and named_right(person, photo, (width / 3 + 7.3, height / 2 + 11.7), degrade=True)):
                kept.setdefault(person, []).append(photo)
    return kept


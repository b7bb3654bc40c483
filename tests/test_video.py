"""Scenes of people as video with their truth (``edgeface.eval.video``): the video and the truth agree with each
other and with the detector, people enter, cross, leave and return as planned, and faces are matched to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeface.core.errors import EdgefaceError
from edgeface.data.synthetic import make_people
from edgeface.eval.video import (
    SEEN,
    SceneTruth,
    TrueFace,
    Walk,
    photo_actor,
    read_video,
    scene_truth,
    side_by_side,
    synthetic_actor,
    visits_scene,
    write_scene,
)


@pytest.fixture(scope="module")
def actors() -> list:
    return [synthetic_actor(look, 70.0, views=2) for look in make_people(4, seed=3)]


@pytest.fixture(scope="module")
def blazeface():
    from edgeface.faces.detect import create_detector

    return create_detector("blazeface")


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_a_scene_written_and_read_back_with_its_truth(tmp_path: Path, suffix: str, actors: list, blazeface) -> None:
    path = tmp_path / f"people{suffix}"
    truth = write_scene(path, side_by_side(actors[:2], seconds=1.0, fps=8, face_width=70.0, hold=0.5))
    assert SceneTruth.read(path) == truth and json.loads(path.with_suffix(".json").read_text())["frame_count"] == 8
    assert truth.size == (640, 480) and truth.fps == 8
    assert [(v.identity, v.first_frame, v.last_frame) for v in truth.visits] == \
        [(a.identity, 0, 7) for a in actors[:2]]
    for faces in truth.frames:
        assert [f.identity for f in faces] == [a.identity for a in actors[:2]]
        assert all(f.visible > 0.98 and f.labels["gender"] in ("female", "male") for f in faces)
    assert {f.labels["emotion"] for faces in truth.frames for f in faces} == {"neutral", "happy"}  # views turn
    frames = list(read_video(path))
    assert len(frames) == 8 and frames[0].shape == (480, 640, 3)
    # Where the truth says the faces are, the detector finds them, after compression.
    detected = blazeface.detect(frames[0])
    assert sorted(m.identity if m else "" for m in truth.match(0, [d.box for d in detected])) == \
        sorted(f.identity for f in truth.frames[0])


def test_only_mp4_and_avi_are_written(tmp_path: Path, actors: list) -> None:
    with pytest.raises(EdgefaceError, match="must be .mp4 or .avi"):
        write_scene(tmp_path / "people.mkv", side_by_side(actors[:1], seconds=0.2))


def test_visits_enter_cross_leave_and_return(actors: list) -> None:
    """Two visits each of four people, at most two on screen: each visit enters from outside the frame and
    leaves it, nobody is on screen twice at once, a person comes back only after being away, and people who
    walk at the same time cover each other at times (the nearer face in front)."""
    scene = visits_scene([a for a in actors for _ in range(2)], max_faces=2, size=(240, 320),
                         face_widths=(35.0, 60.0), visit_seconds=(2.0, 4.0), away=2.0, seed=4)
    faces = [f for _, f in scene.frames()]
    truth = scene_truth(scene, faces)
    assert sorted(v.identity for v in truth.visits) == sorted(a.identity for a in actors for _ in range(2))
    assert max(sum(f.visible > 0 for f in frame) for frame in faces) == 2
    for walk in scene.walks:
        for x, _, width in (walk.at(walk.start), walk.at(walk.end)):  # the face is out of the frame
            assert x + width / 2 < 0 or x - width / 2 > 320
    for actor in actors:
        mine = sorted((v for v in truth.visits if v.identity == actor.identity), key=lambda v: v.start)
        assert mine[1].start - mine[0].end >= 2.0
        for frame in faces:
            assert sum(f.identity == actor.identity for f in frame) <= 1
    partly = [f for frame in faces for f in frame if 0.1 < f.visible < 0.9]
    assert partly  # entering, leaving, or behind somebody
    crossed = [(frame, f) for frame in faces for f in frame if f.visible < 0.9 and
               all(0 <= v <= limit for v, limit in zip(f.box, (320, 240, 320, 240)))]
    assert crossed, "nobody was covered by a nearer face"
    for visit in truth.visits:
        assert all(f.visible >= SEEN for f in faces[visit.first_frame] if f.visit == visit.visit)


def test_a_photo_s_face_is_pasted_where_the_truth_says(blazeface) -> None:
    from edgeface.data.synthetic import render_photo
    from edgeface.eval.video import FacePhoto, Scene
    from edgeface.faces.detect import primary_face

    photo = render_photo(make_people(2)[1], "neutral", np.random.default_rng(4))
    face = primary_face(blazeface.detect(photo.image))
    actor = photo_actor("Maya", [FacePhoto("Maya", photo.image, face)])
    walk = Walk(actor, ((0.0, 200.0, 220.0, 110.0), (1.0, 400.0, 240.0, 130.0)))
    frames = list(Scene((walk,), 1.0, fps=4).frames())
    for t, (image, (true,)) in zip(np.arange(4) / 4, frames):
        x, y, width = walk.at(t)
        assert np.allclose(np.mean(true.eyes, axis=0), (x, y), atol=0.5)
        assert true.box[2] - true.box[0] == pytest.approx(width, abs=0.5)
        (found,) = blazeface.detect(image)
        assert np.hypot(*(np.subtract(found.box[:2], true.box[:2]))) < 0.2 * width


def test_truth_matches_each_detected_face_to_one_true_face_nearby() -> None:
    def true(identity: str, x: float) -> TrueFace:
        return TrueFace(identity, 0, (x, 100, x + 80, 180), ((x + 25, 130), (x + 55, 130)), 1.0)

    truth = SceneTruth(10.0, (640, 480), {"Ana": {}, "Bo": {}}, (), ((true("Ana", 100), true("Bo", 170)),))
    boxes = [(180, 100, 260, 180), (105, 95, 185, 175), (110, 100, 190, 180), (500, 100, 580, 180)]
    got = [m.identity if m else None for m in truth.match(0, boxes)]
    assert got == ["Bo", "Ana", None, None]  # nearest first, each true face once, nobody far away
    assert truth.match(5, boxes) == [None] * 4  # past the last frame
    with pytest.raises(EdgefaceError, match="not a scene truth file"):
        SceneTruth.from_dict({"frames": []})
    assert SceneTruth.from_dict(truth.to_dict()) == truth

"""The synthetic face generator: labels, determinism, BlazeFace finds the faces, and frames composed of heads."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeface.data import synthetic
from edgeface.data.synthetic import (
    composite_frame,
    make_people,
    make_synthetic_dataset,
    render_head,
    render_photo,
)
from edgeface.core.errors import DependencyError, EdgefaceError
from edgeface.core.spec import EMOTIONS, GENDERS


@pytest.fixture(scope="module")
def blazeface():
    from edgeface.faces.detect import create_detector

    try:
        return create_detector("blazeface")
    except DependencyError as exc:
        pytest.skip(str(exc))


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


# --- people ----------------------------------------------------------------------------------------------

def test_people_start_with_the_original_four_and_mix_genders() -> None:
    people = make_people(8, seed=3)
    assert [p.name for p in people[:4]] == ["Jimmy", "Maya", "Moataz", "Mona"]
    assert {p.gender for p in people} == set(GENDERS)
    assert len({p.name for p in make_people(40)}) == 40  # names stay unique past the built-in list
    assert make_people(8, seed=3) == people
    assert make_people(8, seed=4) != people
    # A person's gender is tied to the name, whatever the seed.
    assert [p.gender for p in make_people(8, seed=4)] == [p.gender for p in people]


# --- the photo set ---------------------------------------------------------------------------------------

def test_dataset_csv_layout_and_labels(tmp_path: Path) -> None:
    from edgeface.data.manifest import load_dataset
    from edgeface.core.imageio import read_image

    csv_path = make_synthetic_dataset(tmp_path / "set", people=3, photos_per_person=5, image_size=(160, 128))
    assert csv_path == tmp_path / "set" / "labels.csv"
    assert csv_path.read_text().splitlines()[0] == "image,identity,emotion,gender"
    rows = read_rows(csv_path)
    assert len(rows) == 15
    people = {p.name: p.gender for p in make_people(3)}
    for row in rows:
        assert row["identity"] in people and row["gender"] == people[row["identity"]]
        assert row["emotion"] in EMOTIONS
        assert not Path(row["image"]).is_absolute()
    for name in people:  # balanced per person: 5 photos -> 2 and 3
        counts = Counter(r["emotion"] for r in rows if r["identity"] == name)
        assert sorted(counts.values()) == [2, 3]
    assert read_image(csv_path.parent / rows[0]["image"]).shape == (160, 128, 3)
    # The project's own loader reads it without complaint.
    data = load_dataset(csv_path)
    assert len(data) == 15 and not data.problems


def test_dataset_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def files(out: Path, seed: int) -> dict[str, bytes]:
        csv_path = make_synthetic_dataset(out, people=2, photos_per_person=2, image_size=(128, 96), seed=seed)
        return {p.name: p.read_bytes() for p in [csv_path, *sorted((out / "images").iterdir())]}

    first = files(tmp_path / "a", seed=5)
    assert files(tmp_path / "b", seed=5) == first
    other = files(tmp_path / "c", seed=6)
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".jpg"))


def test_render_rejects_unknown_labels() -> None:
    look = make_people(1)[0]
    with pytest.raises(EdgefaceError, match="emotion"):
        render_head(look, "angry", np.random.default_rng(0))


def test_expressions_change_the_mouth_not_the_person() -> None:
    # Same person, same per-photo randomness: only the lower face may differ between the two expressions.
    look = make_people(1)[0]
    happy = render_head(look, "happy", np.random.default_rng(1), width=160).rgb.astype(np.int16)
    neutral = render_head(look, "neutral", np.random.default_rng(1), width=160).rgb.astype(np.int16)
    diff = np.abs(happy - neutral).max(axis=2)
    rows = np.flatnonzero(diff.max(axis=1) > 40)
    mouth_y = synthetic._SPRITE[1] * 0.5 * 160 / synthetic._SPRITE[0]  # roughly where the mouth is drawn
    assert rows.size > 0 and abs(np.median(rows) - mouth_y) < 0.25 * happy.shape[0]


# --- the real detector -----------------------------------------------------------------------------------

def test_blazeface_finds_the_faces_and_their_eyes(blazeface) -> None:
    from edgeface.faces.align import align_face
    from edgeface.faces.detect import LEFT_EYE, RIGHT_EYE, primary_face
    from edgeface.core.spec import CropSpec

    people = make_people(6, seed=11)
    found = eyes_on_target = 0
    total = 24
    for i in range(total):
        photo = render_photo(people[i % 6], EMOTIONS[i % 2], np.random.default_rng([11, i]))
        face = primary_face(blazeface.detect(photo.image))
        if face is None:
            continue
        found += 1
        drawn = np.array(photo.eyes)
        detected = np.array([face.keypoints[RIGHT_EYE], face.keypoints[LEFT_EYE]])
        eye_distance = np.hypot(*(drawn[1] - drawn[0]))
        eyes_on_target += bool(np.hypot(*(detected - drawn).T).max() < 0.25 * eye_distance)
        assert align_face(photo.image, face, CropSpec(), 48).shape == (48, 48, 3)
    assert found / total >= 0.9, f"BlazeFace found {found} of {total} synthetic faces"
    assert eyes_on_target / total >= 0.9, f"eye keypoints on the drawn eyes in {eyes_on_target} of {total}"


# --- video -----------------------------------------------------------------------------------------------

def test_composite_frame_places_eyes_where_asked() -> None:
    look = make_people(2)[1]
    sprite = render_head(look, "neutral", np.random.default_rng(0), width=200)
    frame, placed = composite_frame((240, 320), [(sprite, (160.0, 100.0, 80.0))], np.random.default_rng(0))
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    (eye_a, eye_b), box = placed[0]["eyes"], placed[0]["box"]
    assert np.allclose(np.mean([eye_a, eye_b], axis=0), (160, 100), atol=0.2)
    assert box[2] - box[0] == pytest.approx(80, abs=0.2)
    assert box[0] < eye_a[0] < eye_b[0] < box[2] and box[1] < eye_a[1] < box[3]
    assert placed[0]["visible"] == pytest.approx(1.0, abs=0.01)


def test_composite_frame_says_how_much_of_each_face_is_visible() -> None:
    sprite = render_head(make_people(1)[0], "neutral", np.random.default_rng(0), width=200)
    _, placed = composite_frame((240, 320), [(sprite, (100.0, 100.0, 80.0)), (sprite, (130.0, 100.0, 80.0)),
                                             (sprite, (320.0, 100.0, 80.0))])
    behind, front, cut = (p["visible"] for p in placed)
    assert front == pytest.approx(1.0, abs=0.01) and behind < 0.6  # the second head covers most of the first face
    assert 0.3 < cut < 0.7  # half of the third face is past the frame's right edge

"""Datasets: CSV and folder layouts, validation messages, deterministic splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeface.data.manifest import check_dataset, load_dataset, split_dataset, write_csv
from edgeface.core.errors import DataError
from edgeface.core.imageio import write_image


def _photo(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_image(path, rng.integers(0, 255, (40, 32, 3), dtype=np.uint8))
    return path


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    rows = ["image,identity,emotion,gender"]
    for person, gender in (("Jimmy", "male"), ("Maya", "female"), ("Mona", "female")):
        for i in range(4):
            _photo(tmp_path / "img" / f"{person}{i}.jpg", seed=i)
            emotion = "" if i == 3 else ("happy" if i % 2 else "neutral")
            rows.append(f"img/{person}{i}.jpg,{person},{emotion},{gender}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_csv_loads_relative_paths_and_unknown_labels(small_csv: Path) -> None:
    data = load_dataset(small_csv)
    assert len(data) == 12 and not data.problems
    assert all(s.image.is_absolute() and s.image.is_file() for s in data.samples)
    assert data.labels("identity") == ("Jimmy", "Maya", "Mona")
    assert data.counts("emotion") == {"happy": 3, "neutral": 6}  # three photos have no emotion label
    assert data.samples[3].emotion is None and data.samples[3].where == "labels.csv:5"


def test_absolute_paths_are_accepted(small_csv: Path, tmp_path: Path) -> None:
    absolute = tmp_path / "abs.csv"
    absolute.write_text(f"image,identity,emotion,gender\n{tmp_path / 'img' / 'Maya0.jpg'},Maya,happy,female\n")
    (sample,) = load_dataset(absolute).samples
    assert sample.image == (tmp_path / "img" / "Maya0.jpg").resolve()


def test_unknown_label_is_an_error_naming_file_row_and_value(small_csv: Path) -> None:
    text = small_csv.read_text().replace("img/Maya1.jpg,Maya,happy", "img/Maya1.jpg,Maya,angry")
    small_csv.write_text(text)
    data = load_dataset(small_csv)
    (error,) = data.errors
    assert error.where == "labels.csv:7" and "unknown emotion label 'angry'" in error.message
    with pytest.raises(DataError, match=r"labels.csv:7: unknown emotion label 'angry'"):
        data.raise_for_errors()


def test_duplicate_rows_and_missing_column(small_csv: Path, tmp_path: Path) -> None:
    small_csv.write_text(small_csv.read_text() + "img/Jimmy0.jpg,Jimmy,happy,male\n")
    (error,) = load_dataset(small_csv).errors
    assert "duplicate row" in error.message and "labels.csv:2" in error.message
    bad = tmp_path / "bad.csv"
    bad.write_text("path,who\nx.jpg,a\n")
    with pytest.raises(DataError, match=r"bad.csv:1: no 'image' column"):
        load_dataset(bad)


def test_check_finds_corrupt_and_truncated_images(small_csv: Path) -> None:
    img = small_csv.parent / "img"
    (img / "Jimmy0.jpg").write_bytes(b"this is not a jpeg")
    data = (img / "Maya0.jpg").read_bytes()
    (img / "Maya0.jpg").write_bytes(data[: len(data) // 2])
    report = check_dataset(load_dataset(small_csv))
    messages = {p.where: p.message for p in report.errors}
    assert "not a decodable image" in messages["labels.csv:2"]
    assert "truncated JPEG" in messages["labels.csv:6"]
    assert report.readable == 10 and len(report.unreadable) == 2


def test_check_warns_about_thin_people(small_csv: Path) -> None:
    report = check_dataset(load_dataset(small_csv), min_photos=5)
    assert {p.where for p in report.problems if p.level == "warning"} == {"Jimmy", "Maya", "Mona"}
    assert not report.errors


def test_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _photo(root / "Maya" / "a.jpg")
    _photo(root / "Maya" / "happy" / "b.jpg")
    _photo(root / "Moataz" / "neutral" / "c.png")
    (root / "Moataz" / "notes.txt").write_text("x")
    (root / "people.csv").write_text("identity,gender\nMaya,female\nMoataz,male\n")
    data = load_dataset(root)
    got = {(s.image.name, s.identity, s.emotion, s.gender) for s in data.samples}
    assert got == {("a.jpg", "Maya", None, "female"), ("b.jpg", "Maya", "happy", "female"),
                   ("c.png", "Moataz", "neutral", "male")}
    assert any("not an image file" in p.message for p in data.problems)
    _photo(root / "Maya" / "smiling" / "d.jpg")
    assert any("unknown emotion label 'smiling'" in p.message for p in load_dataset(root).errors)


def test_split_is_per_person_deterministic_and_stable(small_csv: Path, tmp_path: Path) -> None:
    data = load_dataset(small_csv)
    train, val = split_dataset(data, 0.25, seed=3)
    again_train, _ = split_dataset(data, 0.25, seed=3)
    assert [s.image for s in train.samples] == [s.image for s in again_train.samples]
    assert len(train) == 9 and len(val) == 3
    assert {s.identity for s in val.samples} == {"Jimmy", "Maya", "Mona"}
    # Adding a person does not move anyone else's photos.
    shutil.copy(small_csv.parent / "img" / "Mona0.jpg", small_csv.parent / "img" / "New0.jpg")
    bigger = write_csv(list(data.samples) + [data.samples[0].__class__(small_csv.parent / "img" / "New0.jpg", "New")],
                       tmp_path / "bigger.csv")
    bigger_val = split_dataset(load_dataset(bigger), 0.25, seed=3)[1]
    assert {s.image for s in val.samples} <= {s.image for s in bigger_val.samples}


def test_write_csv_round_trip(small_csv: Path, tmp_path: Path) -> None:
    data = load_dataset(small_csv)
    copy = load_dataset(write_csv(data.samples, small_csv.parent / "copy.csv"))
    assert [(s.image, s.identity, s.emotion, s.gender) for s in copy.samples] == \
           [(s.image, s.identity, s.emotion, s.gender) for s in data.samples]
    assert copy.fingerprint() == data.fingerprint()

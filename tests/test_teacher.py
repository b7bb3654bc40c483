"""Distillation from a face encoder (``edgeface train --teacher dlib``): the real dlib model on real faces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeface.core.errors import ModelError
from edgeface.core.spec import CropSpec
from edgeface.train.teacher import describe_cached, distillation_targets, face_box, load_teacher


def test_face_box_follows_the_crop_geometry() -> None:
    assert face_box(CropSpec(), 224) == (29, 47, 184, 202)  # dlib's own median box on aligned 224 crops
    left, top, right, bottom = face_box(CropSpec(), 112)
    assert (left, top, right, bottom) == pytest.approx((14.5, 23.5, 92, 101), abs=1)
    # a tighter crop (eyes further apart) makes a bigger face box, clipped to the crop
    assert face_box(CropSpec(eye_distance=0.6), 100) == (0, 2, 99, 99)


def test_distillation_targets_are_centred_unit_vectors() -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(50, 8)) + 10.0  # a large shared direction, as dlib's descriptors have
    targets = distillation_targets(descriptors, descriptors.mean(0))
    assert np.allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)
    assert abs(float((targets[:25] * targets[25:]).sum(1).mean())) < 0.3  # strangers no longer all alike


def test_unknown_and_missing_teachers_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="unknown teacher 'facenet'; choose one of dlib"):
        load_teacher("facenet")
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib were not installed
    with pytest.raises(ModelError, match=r"the dlib teacher needs dlib: pip install 'edgeface\[teacher\]'"):
        load_teacher("dlib")


@pytest.fixture(scope="module")
def teacher():
    pytest.importorskip("dlib", reason="the teacher extra is not installed: pip install 'edgeface[teacher]'")
    return load_teacher("dlib")


@pytest.fixture(scope="module")
def people_crops(celeba_people_csv: Path):
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples

    data = load_dataset(celeba_people_csv)
    by_person: dict[str, list] = {}
    for sample in data.samples:
        by_person.setdefault(sample.identity, []).append(sample)
    chosen = [s for person in sorted(by_person)[:4] for s in by_person[person][:5]]
    crops = crop_samples(chosen, CropSpec(), 160)
    return crops.crops, np.array([s.identity for s in crops.cropped_samples])


def test_dlib_teacher_tells_real_people_apart(teacher, people_crops, tmp_path: Path) -> None:
    crops, people = people_crops
    descriptors = describe_cached(teacher, crops, CropSpec(), tmp_path)
    assert descriptors.shape == (len(crops), 128) and np.isfinite(descriptors).all()
    distances = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest_is_same_person = people[distances.argmin(1)] == people
    assert nearest_is_same_person.mean() >= 0.8, nearest_is_same_person
    # a second call reads the cache instead of running the encoder again
    calls = []
    original = teacher.describe
    teacher.describe = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        again = describe_cached(teacher, crops, CropSpec(), tmp_path)
    finally:
        del teacher.describe
    assert calls == [] and np.array_equal(again, descriptors)


def test_training_with_a_teacher_keeps_the_exported_model_unchanged(teacher, celeba_people_csv: Path,
                                                                    tmp_path: Path) -> None:
    import keras

    from edgeface.core.modelio import read_metadata
    from edgeface.train.trainer import TrainConfig, train

    weights = Path(os.environ.get("EDGEFACE_WEIGHTS_DIR", "")) / "mobilenet_v2_1.0_224_imagenet_notop.weights.h5"
    if not weights.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found: {weights}")
    result = train(TrainConfig(data=celeba_people_csv, out=tmp_path, backbone="mobilenetv2", weights="imagenet",
                               input_size=96, frozen_epochs=4, epochs=1, patience=4, embedding_size=32,
                               teacher="dlib", verbose=0), on_log=lambda _: None)
    distill = [loss for loss, phase in zip(result.history["distill_loss"], result.history["phase"])
               if phase == "heads"]
    assert len(distill) == 4 and distill[-1] < distill[0]  # the embedding moves toward the teacher
    assert "val_distill_loss" in result.history and len(result.history["distill_loss"]) == 5
    outputs = keras.models.load_model(result.model_path)(np.zeros((1, 96, 96, 3), np.float32))
    assert sorted(outputs) == ["embedding", "emotion", "gender", "identity"]  # no trace of the teacher
    config = read_metadata(result.model_path)["training"]["config"]
    assert config["teacher"] == "dlib" and config["teacher_weight"] == 5.0

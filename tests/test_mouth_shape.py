"""Emotion from the mouth's shape: measured on the face mesh, fitted by ``train`` from a handful of labels,
computed in float on the device beside the crops (``edgeface.faces.geometry``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeface.core.bundle import FloatHead, load_bundle, write_bundle
from edgeface.core.errors import BundleError
from edgeface.core.spec import MOUTH_SHAPE, MOUTH_SHAPE_SIZE
from edgeface.faces.geometry import mouth_shape
from edgeface.runtime.engine import LiteRTEngine, head_from_features
from edgeface.train.choice import MOUTH, PROBE, choose_mouth_shape, fit_shape_head


def _face(smile: float = 0.0) -> np.ndarray:
    """(468, 2) landmarks of an upright face, eyes 100 px apart; ``smile`` widens the mouth and lifts its corners."""
    marks = np.full((468, 2), 100.0)
    marks[33], marks[263] = (50, 100), (150, 100)  # outer eye corners
    marks[1] = (100, 150)  # tip of the nose
    marks[61], marks[291] = (75 - 10 * smile, 185 - 8 * smile), (125 + 10 * smile, 185 - 8 * smile)
    marks[13], marks[14] = (100, 183), (100, 187 + 4 * smile)  # inner lips
    marks[0], marks[17] = (100, 175), (100, 198)  # outer lips
    return marks


def test_the_mouths_shape_does_not_change_with_the_faces_size_roll_or_place() -> None:
    marks = _face(0.5)
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 2.5 * marks @ rotation.T + (40, -13)
    np.testing.assert_allclose(mouth_shape(moved), mouth_shape(marks), atol=1e-5)
    assert mouth_shape(marks).shape == (MOUTH_SHAPE_SIZE,) and mouth_shape(marks).dtype == np.float32


def test_a_smile_widens_the_mouth_lifts_its_corners_and_parts_the_lips() -> None:
    neutral, smiling = mouth_shape(_face(0.0)), mouth_shape(_face(1.0))
    assert smiling[0] == pytest.approx(neutral[0] + 0.2)  # width, in eye distances
    assert smiling[1] < neutral[1]  # corners higher over the lips' centre (image y grows downwards)
    assert smiling[2] > neutral[2]  # the lips part
    assert smiling[4] < neutral[4]  # corners nearer the nose
    degenerate = np.zeros((468, 2))
    assert not mouth_shape(degenerate).any()  # no eye distance: nothing measured, no division by zero


def _shapes(rng: np.random.Generator, labels: list[str]) -> np.ndarray:
    """Mouth shapes of faces labelled happy or neutral: the two differ in width and corner height, measures whose
    spread is tenfold apart, plus noise in the others."""
    happy = np.array([label == "happy" for label in labels], float)
    shapes = rng.normal(0, 1, (len(labels), MOUTH_SHAPE_SIZE)) * [0.05, 0.005, 0.01, 0.02, 0.02, 0.02]
    shapes[:, 0] += 0.9 + 0.15 * happy
    shapes[:, 1] += 0.01 - 0.015 * happy
    return shapes.astype(np.float32)


def test_a_shape_head_learns_from_a_handful_of_labels_and_reads_the_shapes_as_measured() -> None:
    rng = np.random.default_rng(0)
    labels = ["happy", "neutral"] * 6 + [None] * 4  # 12 labelled faces, 4 without an emotion label
    kernel, bias = fit_shape_head(_shapes(rng, labels), labels, ("happy", "neutral"))
    assert kernel.shape == (MOUTH_SHAPE_SIZE, 2) and bias.shape == (2,)
    test_labels = ["happy", "neutral"] * 100
    predicted = np.argmax(_shapes(rng, test_labels) @ kernel + bias, axis=1)
    assert np.mean(predicted == np.array([label == "neutral" for label in test_labels])) > 0.9


def _prepared(train_shapes, train_features, train_labels, val_shapes, val_features, val_labels):
    """What choose_mouth_shape reads of a training run: the crops' samples and shapes, the frozen features."""
    from edgeface.core.spec import ModelSpec
    from edgeface.data.manifest import Sample
    from edgeface.train.frozen import FrozenFeatures
    from edgeface.train.model import ATTRIBUTES, backbone_info

    spec = ModelSpec(labels={"identity": ("ana", "ben"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=150,
                     crop=backbone_info("dlib-resnet-tiny").crop, backbone="dlib-resnet-tiny", embedding_size=128)

    def crops(shapes, labels):
        samples = [Sample(Path(f"{i}.jpg"), "ana", label, None) for i, label in enumerate(labels)]
        return SimpleNamespace(cropped_samples=samples, shapes=shapes, crops=None)

    prepared = SimpleNamespace(spec=spec, train_crops=crops(train_shapes, train_labels),
                               val_crops=crops(val_shapes, val_labels))
    return prepared, FrozenFeatures({ATTRIBUTES: train_features}, {ATTRIBUTES: val_features})


def test_with_few_labels_train_keeps_the_mouths_shape_unless_the_probe_is_clearly_better() -> None:
    """Few labelled validation faces: the two exact fits are compared by cross-validation on every labelled face.
    Shapes that tell the classes apart win over features that do not; features that tell them apart perfectly,
    beside shapes that do not, keep the probe."""
    rng = np.random.default_rng(1)
    train_labels, val_labels = ["happy", "neutral"] * 30, ["happy", "neutral"] * 3
    noise = lambda n: rng.normal(0, 1, (n, 64)).astype(np.float32)  # noqa: E731
    earlier = {"emotion": {"kept": PROBE, "why": "only 6 labelled validation faces"}}

    prepared, frozen = _prepared(_shapes(rng, train_labels), noise(60), train_labels,
                                 _shapes(rng, val_labels), noise(6), val_labels)
    choices, heads = choose_mouth_shape(None, prepared, frozen, earlier)
    assert choices["emotion"]["kept"] == MOUTH
    assert choices["emotion"]["cross_validation"]["n"] == 66
    assert choices["emotion"]["cross_validation"]["mouth_shape"] > 0.9
    assert heads["emotion"].features == MOUTH_SHAPE and heads["emotion"].kernel.shape == (MOUTH_SHAPE_SIZE, 2)

    def telling(labels):
        features = noise(len(labels))
        features[:, 0] += 6 * np.array([label == "happy" for label in labels])
        return features

    uninformative = lambda n: rng.normal(0, 1, (n, MOUTH_SHAPE_SIZE)).astype(np.float32)  # noqa: E731
    prepared, frozen = _prepared(uninformative(60), telling(train_labels), train_labels, uninformative(6),
                                 telling(val_labels), val_labels)
    choices, heads = choose_mouth_shape(None, prepared, frozen, earlier)
    assert choices["emotion"]["kept"] == PROBE and heads == {}
    assert choices["emotion"]["mouth_shape"]["why"].startswith("not clearly better")


def test_crops_aligned_on_the_mesh_come_with_shapes_and_only_those(tiny_model: Path, synthetic_csv: Path) -> None:
    """A crop aligned on the detector's keypoints runs no mesh: it has no shape, and the engine gives the
    model's own output."""
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.keras_model import KerasEngine

    spec = KerasEngine(tiny_model).spec
    assert not spec.crop.landmarks
    assert crop_samples(load_dataset(synthetic_csv).samples[:2], spec.crop, spec.input_size).shapes is None


def test_the_device_computes_a_shape_head_from_the_shapes_beside_the_crops(tiny_bundles: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A bundle's emotion head on the mouth's shape is carried, checked and applied in float to the shapes
    passed with the crops; without shapes the engine gives the model's own output."""
    loaded = load_bundle(tiny_bundles["int8"])
    rng = np.random.default_rng(2)
    head = FloatHead(MOUTH_SHAPE, rng.normal(0, 1, (MOUTH_SHAPE_SIZE, 2)).astype(np.float32),
                     np.array([0.1, -0.1], np.float32))
    path = write_bundle(tmp_path / "shape.edgeface", loaded.model_bytes, loaded.spec, loaded.precision,
                        float_heads={"emotion": head})
    bundle = load_bundle(path)
    assert bundle.float_heads["emotion"].features == MOUTH_SHAPE
    np.testing.assert_array_equal(bundle.float_heads["emotion"].kernel, head.kernel)
    crops = rng.integers(0, 256, (3, loaded.spec.input_size, loaded.spec.input_size, 3), dtype=np.uint8)
    shapes = rng.normal(0, 1, (3, MOUTH_SHAPE_SIZE)).astype(np.float32)
    engine = LiteRTEngine.from_bundle(bundle)
    np.testing.assert_allclose(engine.predict(crops, shapes)["emotion"], head_from_features(shapes, head), atol=1e-6)
    own = LiteRTEngine(loaded.model_bytes, loaded.spec).predict(crops)["emotion"]
    np.testing.assert_array_equal(engine.predict(crops)["emotion"], own)

    wrong = FloatHead(MOUTH_SHAPE, np.zeros((5, 2), np.float32), np.zeros(2, np.float32))
    bad = write_bundle(tmp_path / "bad.edgeface", loaded.model_bytes, loaded.spec, loaded.precision,
                       float_heads={"emotion": wrong})
    with pytest.raises(BundleError, match=r"emotion reads the mouth_shape \(6 values\), not 5"):
        load_bundle(bad)


def test_on_real_faces_the_mouths_shape_tells_a_smile_from_a_few_labels(celeba_csv: Path) -> None:
    """Celeba-299 photos through the real detector and face mesh: a head fitted on 30 photos' shapes names the
    emotion of 90 others far above chance."""
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.model import backbone_info

    samples = [s for s in load_dataset(celeba_csv).samples if s.emotion is not None][:120]
    crop = backbone_info("dlib-resnet").crop
    cropped = crop_samples(samples, crop, 150, cache_dir=False)
    assert cropped.shapes is not None and cropped.shapes.shape == (len(cropped.crops), MOUTH_SHAPE_SIZE)
    labels = [s.emotion for s in cropped.cropped_samples]
    kernel, bias = fit_shape_head(cropped.shapes[:30], labels[:30], ("happy", "neutral"))
    predicted = np.argmax(cropped.shapes[30:] @ kernel + bias, axis=1)
    truth = np.array([label == "neutral" for label in labels[30:]])
    assert np.mean(predicted == truth) > 0.75

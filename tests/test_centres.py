"""Nearest-centre identity (``edgeface recentre``): each person's centre is their faces' mean embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.core.errors import ModelError
from edgeface.train.centres import person_centres


def test_person_centres_are_unit_means_and_name_nobody_without_faces() -> None:
    embeddings = np.array([[1, 0], [0.6, 0.8], [0, 1], [1, 0]], np.float32)
    centres = person_centres(embeddings, ["ann", "bob", "cat"], ["ann", "ann", "bob", "stranger"])
    assert centres.shape == (2, 3)
    np.testing.assert_allclose(centres[:, 0], np.array([1.6, 0.8]) / np.hypot(1.6, 0.8), rtol=1e-6)
    np.testing.assert_allclose(centres[:, 1], [0, 1])
    assert not centres[:, 2].any()  # cat has no face: a zero column, never the nearest by cosine
    with pytest.raises(ModelError, match="one embedding per label"):
        person_centres(embeddings, ["ann"], ["ann"])


def test_the_centre_head_is_the_cosine_softmax_and_leaves_the_other_heads_alone(tiny_model: Path) -> None:
    from edgeface.core.modelio import read_metadata
    from edgeface.train.keras_model import load_keras_model
    from edgeface.core.preprocess import to_model_input
    from edgeface.core.spec import ModelSpec
    from edgeface.train.centres import with_centre_identity

    spec = ModelSpec.from_dict(read_metadata(tiny_model)["spec"])
    model = load_keras_model(tiny_model)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    centres = person_centres(rng.normal(size=(12, spec.embedding_size)), spec.labels["identity"],
                             [spec.labels["identity"][i % len(spec.labels["identity"])] for i in range(12)])
    new = with_centre_identity(model, centres, scale=20.0)
    before = model(to_model_input(crops, spec), training=False)
    after = new(to_model_input(crops, spec), training=False)
    for head in ("emotion", "gender", "embedding"):
        np.testing.assert_allclose(np.asarray(after[head]), np.asarray(before[head]), rtol=1e-5, atol=1e-6)
    logits = 20.0 * np.asarray(before["embedding"]) @ centres
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(after["identity"]), expected / expected.sum(1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ModelError, match="do not fit an embedding"):
        with_centre_identity(model, centres[:, :2])


def test_recentre_cli_writes_a_model_that_names_its_people(tiny_model: Path, synthetic_csv: Path,
                                                           tmp_path: Path) -> None:
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.train.keras_model import load_engine

    out = tmp_path / "centres"
    result = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "identity centres from" in result.output and f"model: {out / 'model.keras'}" in result.output
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["identity_centres"]["scale"] == 20.0 and metadata["identity_centres"]["faces"] > 100
    assert metadata["spec"] == json.loads((tiny_model.parent / "metadata.json").read_text())["spec"]
    report = evaluate_models([tiny_model, out / "model.keras"], synthetic_csv, open_engine=load_engine)
    accuracies = [model.heads["identity"].accuracy for model in report.models]
    assert accuracies[1] > 1 / 6 + 0.3  # far above chance over 6 people, on the photos the centres came from

    in_place = tmp_path / "run"  # --out may be the run itself: its model.keras is replaced whole
    in_place.mkdir()
    for name in ("model.keras", "metadata.json"):
        (in_place / name).write_bytes((tiny_model.parent / name).read_bytes())
    again = CliRunner().invoke(app, ["recentre", str(in_place), "--data", str(synthetic_csv), "--out", str(in_place)])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in in_place.iterdir()) == ["metadata.json", "model.keras"]
    assert "identity_centres" in json.loads((in_place / "metadata.json").read_text())

    bad = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                   "--out", str(out), "--scale", "0"])
    assert bad.exit_code == 2 and "scale must be above 0, got 0" in bad.output


def test_a_mirrored_model_reads_each_face_with_its_mirror_image_and_converts_to_int8(
        tiny_model: Path, synthetic_csv: Path, tmp_path: Path) -> None:
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model
    from edgeface.convert.tflite import convert_keras
    from edgeface.core.bundle import read_manifest
    from edgeface.core.modelio import read_metadata
    from edgeface.train.keras_model import load_keras_model
    from edgeface.core.preprocess import to_model_input
    from edgeface.runtime.engine import LiteRTEngine
    from edgeface.core.spec import ModelSpec
    from edgeface.train.model import compose_model, model_parts

    spec = ModelSpec.from_dict(read_metadata(tiny_model)["spec"])
    model = load_keras_model(tiny_model)
    plain = model_parts(model)
    assert plain is not None and not plain.mirrored
    mirrored = compose_model(model, plain, mirrored=True)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (3, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    x, x_mirror = to_model_input(crops, spec), to_model_input(crops[:, :, ::-1].copy(), spec)
    features = model_parts(mirrored)
    assert features is not None and features.mirrored and features.heads is plain.heads
    expected = sum(np.asarray(plain.backbone(plain.preprocess(v))) for v in (x, x_mirror)) / 2
    out, out_of_mirror = mirrored(x, training=False), mirrored(x_mirror, training=False)
    np.testing.assert_allclose(np.asarray(out["emotion"]), np.asarray(plain.heads(expected)["emotion"]),
                               rtol=1e-4, atol=1e-6)
    for head in ("identity", "emotion", "gender"):  # a face and its mirror image get the same answer
        np.testing.assert_allclose(np.asarray(out[head]), np.asarray(out_of_mirror[head]),
                                   rtol=1e-4, atol=1e-5)

    # int8: one copy of the weights (the backbone runs once, on a batch twice as large), outputs by name
    faces = rng.integers(0, 256, (32, spec.input_size, spec.input_size, 3), dtype=np.uint8)
    sizes = {name: len(convert_keras(m, "int8", spec, faces))
             for name, m in (("plain", model), ("mirrored", mirrored))}
    assert sizes["mirrored"] < 1.05 * sizes["plain"], sizes
    engine = LiteRTEngine(convert_keras(mirrored, "int8", spec, faces), spec, source="mirrored int8")
    got = engine.predict(faces[:5])
    want = mirrored(to_model_input(faces[:5], spec), training=False)
    got_of_mirror = engine.predict(faces[:5, :, ::-1].copy())
    for head in ("identity", "emotion", "gender"):
        assert got[head].shape == (5, len(spec.labels[head]))
        assert np.abs(got[head] - np.asarray(want[head])).max() < 0.25, head
        np.testing.assert_array_equal(got[head], got_of_mirror[head])  # int8 mirrors exactly too
    # REVERSE_V2, not a strided slice with step -1 (7 times slower; neither runs in XNNPACK)
    ops = {op["op_name"] for op in engine.interpreter._get_ops_details()}
    assert "REVERSE_V2" in ops and "STRIDED_SLICE" not in ops, ops

    out_dir = tmp_path / "mirror"
    result = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                      "--out", str(out_dir), "--mirror"])
    assert result.exit_code == 0, result.output
    saved = model_parts(load_keras_model(out_dir / "model.keras"))
    assert saved is not None and saved.mirrored  # survives saving; recentre again keeps the mirror
    (converted,) = convert_model(out_dir, ["float32"], tmp_path / "bundles", ConvertOptions(min_agreement=0.0),
                                 progress=False, on_log=lambda _: None)
    assert read_manifest(converted.bundle_path)["source_model"]["mirrored"] is True  # the Pi can tell


def test_within_class_whitening_evens_out_how_each_persons_faces_vary() -> None:
    from edgeface.core.gallery import unit_rows
    from edgeface.train.centres import within_class_whitening

    rng = np.random.default_rng(0)
    people = [f"p{i}" for i in range(8)]
    means = unit_rows(rng.normal(size=(8, 6)))
    labels = [people[i % 8] for i in range(800)]
    # Each person's photos vary a lot along one direction (say lighting) that says nothing about who they are.
    spread = np.diag([1.5, 0.05, 0.05, 0.05, 0.05, 0.05])
    embeddings = unit_rows(means[np.arange(800) % 8] + rng.normal(size=(800, 6)) @ spread)
    whitening = within_class_whitening(embeddings, people, labels, epsilon=0.1)
    np.testing.assert_allclose(whitening, whitening.T, atol=1e-10)
    index = np.arange(800) % 8
    exact = embeddings.astype(np.float64)  # unit_rows gives float32; the whitening works in float64
    residuals = exact - np.stack([exact[index == k].mean(0) for k in range(8)])[index]
    within = residuals.T @ residuals / 800
    ridged = within + 0.1 * np.trace(within) / 6 * np.eye(6)
    np.testing.assert_allclose(whitening @ ridged @ whitening, np.eye(6), atol=1e-8)  # (S_w + eps)^(-1/2)

    held_out = unit_rows(means[np.arange(400) % 8] + rng.normal(size=(400, 6)) @ spread)
    truth = np.arange(400) % 8

    def named_right(transform) -> float:
        centres = person_centres(transform(embeddings), people, labels)
        return float(np.mean((transform(held_out) @ centres).argmax(1) == truth))

    plain, whitened = named_right(lambda e: e), named_right(lambda e: unit_rows(e @ whitening))
    assert whitened > plain + 0.1, (plain, whitened)


def test_whitening_errors_name_what_is_wrong() -> None:
    from edgeface.train.centres import within_class_whitening

    embeddings = np.eye(3)
    with pytest.raises(ModelError, match="at least two faces of one person"):
        within_class_whitening(embeddings, ["ann", "bob"], ["ann", "bob", "stranger"])
    with pytest.raises(ModelError, match="epsilon must be above 0, got 0"):
        within_class_whitening(embeddings, ["ann"], ["ann"] * 3, epsilon=0)


def test_recentre_whiten_takes_the_cosine_in_the_whitened_space(tiny_model: Path, synthetic_csv: Path,
                                                                tmp_path: Path) -> None:
    import keras

    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.core.modelio import read_metadata
    from edgeface.train.keras_model import keras_predict, load_keras_model
    from edgeface.core.gallery import unit_rows
    from edgeface.core.spec import ModelSpec
    from edgeface.train.centres import WHITENING_NAME, unit_embeddings, within_class_whitening
    from edgeface.train.model import compose_features, model_parts

    out = tmp_path / "whitened"
    result = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                      "--out", str(out), "--whiten", "--whitening-epsilon", "0.5"])
    assert result.exit_code == 0, result.output
    assert "in the within-class-whitened space" in result.output
    recorded = json.loads((out / "metadata.json").read_text())["identity_whitening"]
    assert recorded["epsilon"] == 0.5 and recorded["faces"] > 100

    # Recomputed independently: the whitening of DATA's unit embeddings, centres and cosine in that space.
    spec = ModelSpec.from_dict(read_metadata(tiny_model)["spec"])
    source = load_keras_model(tiny_model)
    parts = model_parts(source)
    crops = crop_samples(load_dataset(synthetic_csv).samples, spec.crop, spec.input_size)
    inputs = keras.Input(tuple(source.input.shape[1:]))
    features = keras_predict(keras.Model(inputs, {"f": compose_features(parts.preprocess, parts.backbone, inputs,
                                                                        parts.mirrored)}), crops.crops, spec)["f"]
    labels = [s.identity for s in crops.cropped_samples]
    raw = unit_embeddings(parts.heads, features)
    whitening = within_class_whitening(raw, spec.labels["identity"], labels, 0.5)
    whitened = unit_rows(raw @ whitening)
    centres = person_centres(whitened, spec.labels["identity"], labels)

    model = load_keras_model(out / "model.keras")
    np.testing.assert_allclose(model.get_layer("heads").get_layer(WHITENING_NAME).get_weights()[0], whitening,
                               rtol=1e-4, atol=1e-5)
    predicted = keras_predict(model, crops.crops[:40], spec)
    np.testing.assert_allclose(predicted["embedding"], whitened[:40], atol=1e-4)  # the gallery's space too
    np.testing.assert_array_equal(predicted["identity"].argmax(1), (whitened[:40] @ centres).argmax(1))

    from edgeface.convert.options import ConvertOptions

    from edgeface.convert.pipeline import convert_model  # the extra matrix converts to int8 with the rest

    (converted,) = convert_model(out, ["int8"], tmp_path / "bundles", ConvertOptions(min_agreement=0.0),
                                 progress=False, on_log=lambda _: None)
    assert converted.bundle_path is not None and converted.embedding_cosine > 0.9, converted.embedding_cosine

    # Recentred afresh without --whiten, the whitened model gets plain centres from its raw embeddings.
    plain = tmp_path / "plain"
    again = CliRunner().invoke(app, ["recentre", str(out), "--data", str(synthetic_csv), "--out", str(plain)])
    assert again.exit_code == 0, again.output
    heads = load_keras_model(plain / "model.keras").get_layer("heads")
    assert WHITENING_NAME not in [layer.name for layer in heads.layers]
    assert json.loads((plain / "metadata.json").read_text())["identity_whitening"] is None

    bad = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                   "--out", str(out), "--whiten", "--whitening-epsilon", "0"])
    assert bad.exit_code == 2 and "whitening epsilon must be above 0, got 0" in bad.output

"""Person centres in the bundle: identity computed from the embedding in float on the device.

The bundle carries each trained person's unit centre and the cosine-softmax scale; the engine turns the
model's embedding into identity probabilities with them, so int8 no longer ties close people, and every user
of the engine (evaluate, enroll and calibrate, the daemon's pipeline, the Python API) gets the same identity.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgeface
from edgeface.core.bundle import CENTRES_MEMBER, MANIFEST_MEMBER, MODEL_MEMBER, IdentityCentres, load_bundle, write_bundle
from edgeface.core.errors import BundleError, ModelError
from edgeface.core.spec import ModelSpec
from edgeface.runtime.engine import LiteRTEngine, identity_from_centres

SPEC = ModelSpec(labels={"identity": ("ana", "ben"), "emotion": ("happy", "neutral"), "gender": ("female", "male")},
                 input_size=32, backbone="tiny", embedding_size=8)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def small_model():
    """A tiny Keras model with the nearest-centre identity head (CosineSoftmax over 2 people, 8-d embedding),
    and the random crops that calibrate it."""
    import keras

    from edgeface.core.spec import INPUT_NAME
    from edgeface.train.layers import CosineSoftmax

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name=INPUT_NAME)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(8)(x)
    outputs = {"identity": CosineSoftmax(2, scale=30.0, name="identity")(features),
               "emotion": keras.layers.Dense(2, activation="softmax", name="emotion")(x),
               "gender": keras.layers.Dense(2, activation="softmax", name="gender")(x),
               "embedding": keras.layers.UnitNormalization(name="embedding")(features)}
    model = keras.Model(inputs, outputs)
    crops = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    return model, crops


def _centres(a: np.ndarray, b: np.ndarray, scale: float = 30.0) -> IdentityCentres:
    return IdentityCentres(np.stack([a, b]).astype(np.float32), scale)


def test_int8_ties_between_close_people_are_resolved_by_the_centres(small_model, tmp_path: Path) -> None:
    """Two people whose centres are closer than one int8 step of the identity output: the model's own int8
    output ties them and names the first; the centres in the bundle, in float, name the right one."""
    from edgeface.convert.tflite import convert_keras

    model, crops = small_model
    face = crops[:1]
    first = LiteRTEngine(convert_keras(model, "int8", SPEC, representative=crops), SPEC)
    embedding = first.predict(face)["embedding"][0]  # the int8 model's own embedding of this face
    other = _unit(np.random.default_rng(1).normal(size=8))
    other = _unit(other - (other @ embedding) * embedding)  # orthogonal to the embedding
    ben = embedding  # the face is ben's: cosine 1
    ana = _unit(embedding + 0.014 * other)  # cosine 0.9999: 0.003 apart in probability, below 1/256
    model.get_layer("identity").centres.assign(np.stack([ana, ben], axis=1))
    flatbuffer = convert_keras(model, "int8", SPEC, representative=crops)

    raw = LiteRTEngine(flatbuffer, SPEC).predict(face)
    assert raw["identity"][0, 0] == raw["identity"][0, 1]  # a tie in int8...
    assert int(np.argmax(raw["identity"][0])) == 0  # ...which the first listed, ana, wins
    path = write_bundle(tmp_path / "close.edgeface", flatbuffer, SPEC, "int8", identity_centres=_centres(ana, ben))
    out = LiteRTEngine.from_bundle(path).predict(face)
    assert out["embedding"] @ ben > out["embedding"] @ ana  # the int8 embedding still knows who it is
    assert int(np.argmax(out["identity"][0])) == 1  # ben
    np.testing.assert_array_equal(out["embedding"], raw["embedding"])
    np.testing.assert_allclose(out["identity"], identity_from_centres(raw["embedding"], _centres(ana, ben)))


def test_centres_identity_is_the_keras_heads_in_float(small_model, tmp_path: Path) -> None:
    """The centres of a model's nearest-centre head, written, read back: the float32 bundle's identity is the
    Keras model's, to float rounding."""
    from edgeface.convert.tflite import convert_keras
    from edgeface.core.preprocess import to_model_input

    model, crops = small_model
    layer = model.get_layer("identity")
    layer.centres.assign(np.random.default_rng(2).normal(size=(8, 2)).astype(np.float32))
    centres = IdentityCentres(_unit(np.asarray(layer.centres).T).astype(np.float32), layer.scale)
    path = write_bundle(tmp_path / "float.edgeface", convert_keras(model, "float32", SPEC), SPEC, "float32",
                        identity_centres=centres)
    loaded = load_bundle(path)
    assert loaded.identity_centres is not None and loaded.identity_centres.scale == 30.0
    np.testing.assert_array_equal(loaded.identity_centres.centres, centres.centres)
    assert loaded.manifest["identity_centres"]["shape"] == [2, 8]
    reference = np.asarray(model(to_model_input(crops[:8], SPEC))["identity"])
    np.testing.assert_allclose(LiteRTEngine.from_bundle(loaded).predict(crops[:8])["identity"], reference, atol=1e-5)


def _rewrite(src: Path, dst: Path, manifest_change=None, centres_bytes=None, drop_centres=False) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members[MANIFEST_MEMBER])
    if manifest_change:
        manifest_change(manifest["identity_centres"])
    members[MANIFEST_MEMBER] = json.dumps(manifest).encode()
    if centres_bytes is not None:
        members[CENTRES_MEMBER] = centres_bytes
    if drop_centres:
        del members[CENTRES_MEMBER]
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


@pytest.fixture(scope="module")
def centred_bundle(small_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeface.convert.tflite import convert_keras

    model, _ = small_model
    rng = np.random.default_rng(3)
    centres = _centres(_unit(rng.normal(size=8)), _unit(rng.normal(size=8)), 25.0)
    return write_bundle(tmp_path_factory.mktemp("centred") / "b.edgeface", convert_keras(model, "float32", SPEC),
                        SPEC, "float32", identity_centres=centres)


def _resigned(manifest_entry: dict, data: bytes) -> None:
    import hashlib

    manifest_entry["sha256"] = hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(shape=[3, 8]), r"identity_centres.f32 holds 3 x 8 centres, but the model has 2 trained "
                                       r"people"),
    (lambda m: m.update(shape="2x8"), r"bad identity_centres shape in bundle.json: '2x8'"),
    (lambda m: m.update(scale=0), r"scale must be a number in \(0, 1000\], got 0"),
    (lambda m: m.update(scale="30"), r"scale must be a number in \(0, 1000\], got '30'"),
    (lambda m: m.update(sha256="0" * 64), r"identity_centres.f32 does not match its checksum"),
])
def test_bad_centres_are_refused_in_one_line(centred_bundle: Path, tmp_path: Path, change, match: str) -> None:
    bad = _rewrite(centred_bundle, tmp_path / "bad.edgeface", manifest_change=change)
    with pytest.raises(BundleError, match=match):
        load_bundle(bad)


@pytest.mark.parametrize("values, match", [
    (np.full((2, 8), np.nan, np.float32), "centres must be unit vectors"),
    (np.full((2, 8), 3.0, np.float32), "centres must be unit vectors"),
    (np.eye(3, 8, dtype=np.float32), "holds 3 x 8 centres, but the model has 2 trained people and embeddings of "
                                     "size 8"),
])
def test_centres_must_be_unit_rows_one_per_person(centred_bundle: Path, tmp_path: Path, values: np.ndarray,
                                                  match: str) -> None:
    data = values.astype("<f4").tobytes()

    def change(entry: dict) -> None:
        entry["shape"] = list(values.shape)
        _resigned(entry, data)

    bad = _rewrite(centred_bundle, tmp_path / "bad.edgeface", manifest_change=change, centres_bytes=data)
    with pytest.raises(BundleError, match=match):
        load_bundle(bad)
    missing = _rewrite(centred_bundle, tmp_path / "missing.edgeface", drop_centres=True)
    with pytest.raises(BundleError, match="identity_centres.f32 is missing from the bundle"):
        load_bundle(missing)


def test_engine_refuses_centres_that_do_not_fit_its_model(centred_bundle: Path) -> None:
    loaded = load_bundle(centred_bundle)
    wrong = IdentityCentres(np.zeros((2, 5), np.float32), 10.0)
    with pytest.raises(ModelError, match="2 x 5 identity centres for a model of 2 people with embeddings of size 8"):
        LiteRTEngine(loaded.model_bytes, loaded.spec, identity_centres=wrong)


def test_a_bundle_without_centres_keeps_the_models_identity(tiny_bundles: dict[str, Path]) -> None:
    loaded = load_bundle(tiny_bundles["int8"])
    assert loaded.identity_centres is None and "identity_centres" not in loaded.manifest
    with zipfile.ZipFile(tiny_bundles["int8"]) as archive:
        assert {MANIFEST_MEMBER, MODEL_MEMBER} <= set(archive.namelist())
        assert CENTRES_MEMBER not in archive.namelist()


# --- every user of the engine gets the same identity ------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_centred(tiny_bundles: dict[str, Path], synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny int8 bundle again, with person centres made from its own embeddings of the training photos
    (the tiny model's identity is a Dense softmax: these centres name people differently from it, so a user
    of the model's own output would give other answers). Returns (bundle path, photos, crops, expected)."""
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.centres import person_centres

    original = load_bundle(tiny_bundles["int8"])
    spec = original.spec
    samples = load_dataset(synthetic_csv).samples
    crops = crop_samples(samples, spec.crop, spec.input_size)
    raw = LiteRTEngine(original.model_bytes, spec).predict(np.asarray(crops.crops))
    people = list(spec.labels["identity"])
    labels = [s.identity for s in crops.cropped_samples]
    # each person gets the next one's centre, so the centres' answers differ from the model's own output on
    # nearly every face: whoever read the model's output instead would be caught
    own = person_centres(raw["embedding"], people, labels).T
    centres = IdentityCentres(np.roll(own, 1, axis=0).copy(), 12.0)
    extra = {k: v for k, v in original.manifest.items() if k not in ("format", "format_version", "created",
                                                                       "edgeface_version", "precision", "spec",
                                                                       "model_file", "model_sha256", "model_bytes")}
    path = write_bundle(tmp_path_factory.mktemp("tiny-centred") / "tiny-centred.edgeface", original.model_bytes,
                        spec, "int8", extra=extra, identity_centres=centres,
                        float_heads=original.float_heads)
    expected = identity_from_centres(raw["embedding"], centres)
    assert np.mean(expected.argmax(1) != raw["identity"].argmax(1)) > 0.5  # another rule: the test can tell
    return path, crops, expected


def test_evaluate_enroll_calibrate_and_the_pipeline_give_the_same_identity(tiny_centred, tmp_path: Path) -> None:
    from edgeface.core.gallery import default_gallery_path, read_gallery
    from edgeface.data.manifest import write_csv
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.people.calibrate import calibrate, choose_thresholds
    from edgeface.people.enroll import FaceEmbedder, enroll

    path, crops, expected = tiny_centred
    state_dir = tmp_path / "state"
    samples = crops.cropped_samples
    people = load_bundle(path).spec.labels["identity"]
    chosen = expected.argmax(1)

    # evaluate: its confusion matrix is the centres' answers against the truth
    csv = write_csv(samples, tmp_path / "photos.csv")
    (result,) = evaluate_models([path], csv).models
    confusion = np.zeros((len(people),) * 2, np.int64)
    np.add.at(confusion, ([people.index(s.identity) for s in samples], chosen), 1)
    np.testing.assert_array_equal(result.heads["identity"].confusion, confusion)

    # enroll and calibrate see photos through FaceEmbedder: the same probabilities, photo by photo
    photos = [s.image for s in samples[:12]]
    checks, outputs = FaceEmbedder(path).photos(photos, quality=False)
    assert all(c.ok for c in checks)
    np.testing.assert_allclose(outputs["identity"], expected[:12], atol=1e-5)
    enroll(path, "Zoe", photos[:2], state_dir=state_dir)
    calibrated = calibrate(path, photos[2:], far=0.2, state_dir=state_dir)
    sha = load_bundle(path).model_sha256
    gallery = read_gallery(default_gallery_path(sha, state_dir), sha)
    thresholds = choose_thresholds(gallery.match(outputs["embedding"][2:]).similarity, expected[2:12].max(1), 0.2)
    assert calibrated.thresholds.identity == pytest.approx(thresholds.identity, abs=1e-5)
    assert calibrated.thresholds.accepted == thresholds.accepted

    # the daemon's pipeline and the Python API: the same label and score for each face
    pipeline = edgeface.load(path, threads=1, gallery=None, identity_threshold=0.0)
    for sample, probabilities in list(zip(samples, expected))[:12]:
        (face,) = pipeline.label(sample.image)
        assert face.labels.identity.label == people[int(probabilities.argmax())]
        assert face.labels.identity.score == pytest.approx(float(probabilities.max()), abs=1e-5)
    # over frames: the arrays the per-track rule reads are the centres', and the track is named by them
    frames = list(pipeline.run([edgeface.read_image(samples[0].image)] * 6, fps=10, start=1000.0))[:6]
    np.testing.assert_allclose(frames[0].samples.outputs["identity"], expected[:1], atol=1e-5)
    assert frames[-1].faces[0].labels.identity.label == people[int(chosen[0])]

"""Float heads in the bundle: emotion and gender's last layer computed in float on the device.

The converted model also outputs the features each Dense head reads (``features_<name>``); the bundle carries
the head's kernel and bias, and the engine applies them in float, so int8 rounds the features but not the
head's decision. A bundle without them (written before, or edited) still loads and gives the model's own
outputs.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeface.core.bundle import FLOAT_HEAD_MEMBER, MANIFEST_MEMBER, FloatHead, load_bundle
from edgeface.core.errors import BundleError, ModelError
from edgeface.core.spec import FEATURES_PREFIX
from edgeface.runtime.engine import LiteRTEngine, head_from_features
from edgeface.train.keras_model import KerasEngine, load_engine

ATTRIBUTES = ("emotion", "gender")


@pytest.fixture(scope="module")
def crops(tiny_model: Path, synthetic_csv: Path) -> np.ndarray:
    """Real crops of the synthetic faces (int8 was calibrated on such crops)."""
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples

    spec = KerasEngine(tiny_model).spec
    return np.asarray(crop_samples(load_dataset(synthetic_csv).samples[::6], spec.crop, spec.input_size).crops)


def test_float_heads_are_the_keras_heads(tiny_model: Path, tiny_bundles: dict[str, Path], crops: np.ndarray) -> None:
    """float32: the bundle's float heads are the Keras Dense layers' weights, and the engine's emotion and gender
    are the Keras model's to float rounding. int8: they are the float layer applied to the int8 features."""
    keras = KerasEngine(tiny_model)
    reference = keras.predict(crops)
    bundle = load_bundle(tiny_bundles["float32"])
    assert set(bundle.float_heads) == set(ATTRIBUTES)
    assert FEATURES_PREFIX + "pooled" in bundle.manifest["io"]["outputs"]
    for head in ATTRIBUTES:
        layer = next(layer for layer in keras.model.layers[-1].layers if layer.name == head)
        np.testing.assert_array_equal(bundle.float_heads[head].kernel, np.asarray(layer.kernel))
        np.testing.assert_array_equal(bundle.float_heads[head].bias, np.asarray(layer.bias))
        assert bundle.float_heads[head].features == FEATURES_PREFIX + "pooled"
        assert bundle.manifest["head_rules"][head]["used"] == "float"
    out = LiteRTEngine.from_bundle(bundle).predict(crops)
    for head in ATTRIBUTES:
        np.testing.assert_allclose(out[head], reference[head], atol=1e-5)

    int8 = load_bundle(tiny_bundles["int8"])
    # the model's own outputs, no float heads
    raw = LiteRTEngine(int8.model_bytes, int8.spec, keep_features=True).predict(crops)
    out = load_engine(tiny_bundles["int8"]).predict(crops)  # what evaluate, the daemon and the API run
    assert set(out) == {"identity", "emotion", "gender", "embedding"}  # the features stay inside the engine
    for head in ATTRIBUTES:
        # convert keeps the float layer unless the model's own output names more verification faces right (the
        # tiny model is trained anew each run: either can happen), and the bundle says which it kept
        if int8.manifest["head_rules"][head]["used"] == "float":
            layer = int8.float_heads[head]
            np.testing.assert_allclose(out[head], head_from_features(raw[layer.features], layer), atol=1e-6)
            assert not np.array_equal(out[head], raw[head])  # not the quantized output: float probabilities
        else:
            assert head not in int8.float_heads
            np.testing.assert_array_equal(out[head], raw[head])
        assert np.abs(out[head] - reference[head]).max() < 0.15
    # the float path on int8 features, whatever convert chose: the Keras layers applied to the int8 features
    forced = LiteRTEngine(int8.model_bytes, int8.spec, float_heads=dict(bundle.float_heads)).predict(crops)
    for head in ATTRIBUTES:
        layer = bundle.float_heads[head]
        np.testing.assert_allclose(forced[head], head_from_features(raw[layer.features], layer), atol=1e-6)


def _rewrite(src: Path, dst: Path, change=None, members: dict[str, bytes | None] | None = None) -> Path:
    with zipfile.ZipFile(src) as archive:
        content = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(content[MANIFEST_MEMBER])
    if change:
        change(manifest)
    content[MANIFEST_MEMBER] = json.dumps(manifest).encode()
    for name, data in (members or {}).items():
        if data is None:
            content.pop(name, None)
        else:
            content[name] = data
    with zipfile.ZipFile(dst, "w") as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return dst


def test_a_bundle_without_float_heads_loads_and_gives_the_models_outputs(tiny_bundles: dict[str, Path],
                                                                        crops: np.ndarray, tmp_path: Path) -> None:
    """A bundle written before float heads (no manifest entry, no members) loads and runs: emotion and gender
    are the model's own outputs."""
    def forget(manifest: dict) -> None:
        del manifest["float_heads"]
        manifest.pop("head_rules", None)

    old = _rewrite(tiny_bundles["int8"], tmp_path / "old.edgeface", forget,
                   {FLOAT_HEAD_MEMBER.format(head): None for head in ATTRIBUTES})
    loaded = load_bundle(old)
    assert loaded.float_heads == {}
    with zipfile.ZipFile(old) as archive:
        assert not [name for name in archive.namelist() if name.startswith("head_")]
    out = LiteRTEngine.from_bundle(loaded).predict(crops)
    raw = LiteRTEngine(loaded.model_bytes, loaded.spec).predict(crops)
    for head in ATTRIBUTES:
        np.testing.assert_array_equal(out[head], raw[head])


def _resigned(entry: dict, data: bytes) -> None:
    entry["sha256"] = hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("change, data, match", [
    (lambda e: e.update(shape=[96, 3]), None, r"emotion is 96 x 3, but the model has 2 emotion labels"),
    (lambda e: e.update(shape="96x2"), None, r"bad emotion shape '96x2'"),
    (lambda e: e.update(features="pooled"), None, r"emotion reads 'pooled', not a features_<name> output"),
    (lambda e: e.update(sha256="0" * 64), None, r"head_emotion.f32 does not match its checksum"),
    (None, np.full(97 * 2, np.nan, "<f4").tobytes(), r"head_emotion.f32: weights must be finite numbers"),
    (None, np.zeros(5, "<f4").tobytes(), r"head_emotion.f32 inflates to 20 bytes, but bundle.json says 776"),
])
def test_bad_float_heads_are_refused_in_one_line(tiny_bundles: dict[str, Path], tmp_path: Path, change, data,
                                                 match: str) -> None:
    def edit(manifest: dict) -> None:
        entry = manifest["float_heads"]["emotion"]
        if change:
            change(entry)
        if data is not None:
            _resigned(entry, data)

    bad = _rewrite(tiny_bundles["int8"], tmp_path / "bad.edgeface", edit,
                   {FLOAT_HEAD_MEMBER.format("emotion"): data} if data is not None else None)
    with pytest.raises(BundleError, match=match):
        load_bundle(bad)


def test_engine_refuses_a_float_head_that_does_not_fit_its_model(tiny_bundles: dict[str, Path]) -> None:
    loaded = load_bundle(tiny_bundles["int8"])
    wrong = FloatHead(FEATURES_PREFIX + "pooled", np.zeros((5, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ModelError, match=r"a 5 x 2 float emotion head on features_pooled \(the model has 96 "):
        LiteRTEngine(loaded.model_bytes, loaded.spec, float_heads={"emotion": wrong})
    elsewhere = FloatHead(FEATURES_PREFIX + "nowhere", np.zeros((96, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ModelError, match="the model has no such features there"):
        LiteRTEngine(loaded.model_bytes, loaded.spec, float_heads={"gender": elsewhere})


# --- identity: the logistic regression on the embedding, when it is clearly better than nearest centre -------

def _ring(rng: np.random.Generator, count: int, angle: float) -> np.ndarray:
    """Unit 128-d embeddings at ``angle`` (radians) around the first axis, in random directions."""
    theta = rng.uniform(0, 2 * np.pi, count)
    out = np.zeros((count, 128), np.float32)
    out[:, 0], out[:, 1], out[:, 2] = np.cos(angle), np.sin(angle) * np.cos(theta), np.sin(angle) * np.sin(theta)
    return out


def _identity_choice(train: np.ndarray, val: np.ndarray, labels: list[str]):
    """A dlib-resnet-tiny model's heads with person centres from ``train``, then the identity choice made on
    ``val`` (both labelled ``labels``, a person per row). Returns (built model, its spec, choices)."""
    from types import SimpleNamespace

    from edgeface.core.spec import ModelSpec
    from edgeface.data.manifest import Sample
    from edgeface.train.choice import choose_identity_fit
    from edgeface.train.model import backbone_info, build_model, set_identity_centres

    spec = ModelSpec(labels={"identity": ("ana", "ben"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=150,
                     crop=backbone_info("dlib-resnet-tiny").crop, backbone="dlib-resnet-tiny", embedding_size=128)
    built = build_model(spec, weights="none")
    set_identity_centres(built.heads, train, labels, ["ana", "ben"], scale=30.0)
    samples = SimpleNamespace(cropped_samples=[Sample(Path(f"{i}.jpg"), person, None, None)
                                               for i, person in enumerate(labels)])
    prepared = SimpleNamespace(spec=spec, train_crops=samples, val_crops=samples)
    return built, spec, choose_identity_fit(built, prepared, train, val, {"identity": {"kept": "probe", "why": "x"}})


def test_identity_becomes_the_logistic_regression_only_when_clearly_better() -> None:
    """Ana's faces sit on the first axis, Ben's on a ring 30 degrees around it: both people's centres are
    (nearly) that axis, so nearest centre guesses, while a logistic regression tells them apart. Where the
    two people are apart, nearest centre stays."""
    from edgeface.train.model import model_float_heads, model_identity_centres

    rng = np.random.default_rng(0)
    labels = ["ana"] * 40 + ["ben"] * 40
    train = np.concatenate([_ring(rng, 40, 0.02), _ring(rng, 40, np.pi / 6)])
    val = np.concatenate([_ring(rng, 40, 0.02), _ring(rng, 40, np.pi / 6)])
    built, spec, choices = _identity_choice(train, val, labels)
    record = choices["identity"]
    assert record["fit"] == "logistic" and record["validation"]["n"] == 80, record
    assert record["validation"]["logistic"] > record["validation"]["centres"] + 0.2, record
    assert record["why"].startswith("logistic regression on the unit embeddings: it is clearly better")
    layer = built.heads.get_layer("identity")
    assert layer.linear
    # The Keras head is the regression on the unit embedding; it travels as a float head on the embedding.
    out = np.asarray(built.heads({"descriptor": 3 * val, "attributes": np.zeros(
        (len(val), int(built.heads.input["attributes"].shape[-1])), np.float32)})["identity"])
    travelling = model_float_heads(built.model, spec)["identity"]
    assert travelling.features == "embedding" and model_identity_centres(built.model) is None
    np.testing.assert_allclose(out, head_from_features(val, travelling), atol=1e-5)

    apart = np.concatenate([_ring(rng, 40, 0.02), _ring(rng, 40, 0.02)[:, [1, 0, 2, *range(3, 128)]]])
    built, _, choices = _identity_choice(apart, apart, labels)
    assert choices["identity"]["fit"] == "centres" and not built.heads.get_layer("identity").linear
    assert "the logistic regression on the same embeddings: it is not clearly better" in choices["identity"]["why"]


def test_a_logistic_identity_head_is_saved_converted_and_computed_in_float(synthetic_csv: Path,
                                                                          tmp_path: Path) -> None:
    """A model whose identity is the logistic regression, saved and loaded again (the layer keeps its mode and
    bias), converted: the bundle gives identity from the embedding in float with the regression's weights,
    the Keras model's identity to float rounding in float32, and no person centres."""
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model
    from edgeface.core.modelio import write_metadata
    from edgeface.core.spec import ModelSpec
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.keras_model import keras_predict, save_keras_model
    from edgeface.train.model import backbone_info, build_model
    from edgeface.train.probe import fit_softmax_head

    data = load_dataset(synthetic_csv)
    spec = ModelSpec(labels={h: data.labels(h) for h in ("identity", "emotion", "gender")}, input_size=150,
                     crop=backbone_info("dlib-resnet-tiny").crop, backbone="dlib-resnet-tiny", embedding_size=128)
    built = build_model(spec, weights="none")
    crops = crop_samples(data.samples[::2], spec.crop, spec.input_size)
    faces = np.asarray(crops.crops)
    embeddings = keras_predict(built.model, faces, spec)["embedding"]
    kernel, bias = fit_softmax_head(embeddings, [s.identity for s in crops.cropped_samples], spec.labels["identity"])
    built.heads.get_layer("identity").set_linear(kernel, bias)
    (tmp_path / "run").mkdir()
    model = save_keras_model(built.model, tmp_path / "run" / "model.keras")
    write_metadata(model, {"spec": spec.to_dict()})
    keras = KerasEngine(model)
    assert keras.model.layers[-1].get_layer("identity").linear  # saved and loaded in its mode
    reference = keras.predict(faces[:6])
    logits = embeddings[:6] @ kernel + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(reference["identity"], expected / expected.sum(1, keepdims=True), atol=1e-5)

    options = ConvertOptions(representative=synthetic_csv, verify_data=synthetic_csv, min_agreement=0.0,
                             representative_size=40, verify_size=40, equalize=False, bias_correction=False)
    bundles = {r.precision: load_bundle(r.bundle_path)
               for r in convert_model(model, ["float32", "int8"], tmp_path, options, progress=False,
                                      on_log=lambda _: None)}
    for precision, bundle in bundles.items():
        assert bundle.identity_centres is None and bundle.float_heads["identity"].features == "embedding"
        np.testing.assert_array_equal(bundle.float_heads["identity"].kernel, kernel)
        out = LiteRTEngine.from_bundle(bundle).predict(faces[:6])
        np.testing.assert_allclose(out["identity"], head_from_features(out["embedding"], bundle.float_heads["identity"]),
                                   atol=1e-6)
    np.testing.assert_allclose(LiteRTEngine.from_bundle(bundles["float32"]).predict(faces[:6])["identity"],
                               reference["identity"], atol=1e-4)


def test_a_nearest_centre_head_saved_before_it_had_a_bias_loads() -> None:
    """model.keras files written before the identity layer had a bias hold one variable, its centres."""
    rng = np.random.default_rng(1)
    train = np.concatenate([_ring(rng, 4, 0.02), _ring(rng, 4, 0.5)])
    built, _, _ = _identity_choice(train, train, ["ana"] * 4 + ["ben"] * 4)
    layer = built.heads.get_layer("identity")
    centres = rng.normal(size=(128, 2)).astype(np.float32)
    layer.load_own_variables({"0": centres})
    np.testing.assert_array_equal(np.asarray(layer.centres), centres)
    np.testing.assert_array_equal(np.asarray(layer.bias), np.zeros(2, np.float32))

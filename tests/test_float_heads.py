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
        layer = int8.float_heads[head]
        np.testing.assert_allclose(out[head], head_from_features(raw[layer.features], layer), atol=1e-6)
        assert np.abs(out[head] - reference[head]).max() < 0.15
        assert not np.array_equal(out[head], raw[head])  # not the quantized output: float probabilities


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

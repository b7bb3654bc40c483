"""Bundles: what the Pi receives. Loaded without TensorFlow; every kind of damage is a one-line error."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeface.core.errors import BundleError, ModelError
from edgeface.core.bundle import BUNDLE_VERSION, MANIFEST_MEMBER, MODEL_MEMBER, load_bundle, read_manifest
from edgeface.runtime.engine import LiteRTEngine, predict_batched
from helpers.no_tensorflow import run_without_tensorflow


@pytest.fixture
def bundle(tiny_bundles: dict[str, Path]) -> Path:
    return tiny_bundles["int8"]


def _rewrite(src: Path, dst: Path, manifest_change=None, model_change=None) -> Path:
    with zipfile.ZipFile(src) as archive:
        manifest = json.loads(archive.read(MANIFEST_MEMBER))
        model = archive.read(MODEL_MEMBER)
    if manifest_change:
        manifest_change(manifest)
    if model_change:
        model = model_change(model)
    with zipfile.ZipFile(dst, "w") as archive:
        archive.writestr(MANIFEST_MEMBER, json.dumps(manifest))
        archive.writestr(MODEL_MEMBER, model)
    return dst


def test_bundle_carries_what_the_runtime_needs(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    manifest = loaded.manifest
    assert loaded.precision == "int8" and manifest["format_version"] == BUNDLE_VERSION
    assert loaded.spec.input_size == 64 and loaded.spec.input_range == (0.0, 1.0)
    assert set(loaded.spec.labels) == {"identity", "emotion", "gender"}
    assert loaded.spec.labels["emotion"] == ("happy", "neutral")
    assert manifest["io"]["input"]["dtype"] == "int8" and manifest["io"]["input"]["scale"] > 0
    assert set(manifest["io"]["outputs"]) == {"identity", "emotion", "gender", "embedding", "features_pooled"}
    assert set(manifest["accuracy"]) == {"identity", "emotion", "gender"}
    assert len(manifest["source_model"]["sha256"]) == 64 and manifest["dataset_fingerprint"]
    assert read_manifest(bundle)["model_sha256"] == loaded.model_sha256


@pytest.mark.parametrize("precision", ["float32", "float16", "dynamic", "int8"])
def test_engine_reads_outputs_by_name(tiny_bundles: dict[str, Path], precision: str) -> None:
    engine = LiteRTEngine.from_bundle(tiny_bundles[precision])
    crops = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    out = engine.predict(crops)
    assert set(out) == {"identity", "emotion", "gender", "embedding"}
    assert out["identity"].shape == (3, len(engine.spec.labels["identity"])) and out["emotion"].shape == (3, 2)
    for head in ("identity", "emotion", "gender"):
        np.testing.assert_allclose(out[head].sum(1), 1.0, atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, atol=0.05)
    assert engine.predict(crops[:0])["identity"].shape[0] == 0
    # the one batched loop (evaluate, enroll, calibrate, convert): the same rows in batches, every output for none
    batched = predict_batched(engine, crops, batch_size=2)
    for name in out:
        np.testing.assert_allclose(batched[name], out[name], atol=1e-6)
    assert {name: v.shape for name, v in predict_batched(engine, crops[:0]).items()} == {
        name: (0, v.shape[1]) for name, v in out.items()}


def test_truncated_bundle(bundle: Path, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    cut = tmp_path / "cut.edgeface"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"cut.edgeface: not a readable bundle \(truncated"):
        load_bundle(cut)


def test_tampered_model_fails_its_checksum(bundle: Path, tmp_path: Path) -> None:
    bad = _rewrite(bundle, tmp_path / "bad.edgeface", model_change=lambda m: m[:-10] + bytes(10))
    with pytest.raises(BundleError, match="does not match its checksum"):
        load_bundle(bad)


def test_other_format_version_is_refused(bundle: Path, tmp_path: Path) -> None:
    future = _rewrite(bundle, tmp_path / "future.edgeface",
                      manifest_change=lambda m: m.update(format_version=BUNDLE_VERSION + 1))
    with pytest.raises(BundleError, match=f"bundle format version {BUNDLE_VERSION + 1} is not supported"):
        load_bundle(future)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="nothing.edgeface: bundle not found"):
        load_bundle(tmp_path / "nothing.edgeface")
    other = tmp_path / "other.edgeface"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(BundleError, match="no bundle.json inside"):
        load_bundle(other)


def test_truncated_tflite_is_a_model_error(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    with pytest.raises(ModelError, match="half.tflite: not a loadable TFLite model"):
        LiteRTEngine(loaded.model_bytes[: len(loaded.model_bytes) // 2], loaded.spec, source="half.tflite")


RUNTIME_SCRIPT = r"""
import json, sys
import numpy as np
from edgeface.core.bundle import load_bundle
from edgeface.runtime.engine import LiteRTEngine, predict_batched
from edgeface.runtime.labeler import Labeler
from edgeface.faces.detect import create_detector
bundle = load_bundle(sys.argv[1])
engine = LiteRTEngine.from_bundle(bundle)
detector = create_detector(bundle.spec.crop.detector)
crops = np.zeros((2, bundle.spec.input_size, bundle.spec.input_size, 3), np.uint8)
labels = Labeler(bundle.spec, bundle.identity_threshold)(engine.predict(crops))
print(json.dumps({"faces": len(labels), "tf": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_runtime_works_where_tensorflow_cannot_be_imported(bundle: Path) -> None:
    result = run_without_tensorflow(RUNTIME_SCRIPT, str(bundle))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"faces": 2, "tf": False, "keras": False}

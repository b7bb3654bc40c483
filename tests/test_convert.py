"""Conversion: four precisions, verified against Keras, named outputs, refusal below the threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.convert.options import ConvertOptions
from edgeface.convert.pipeline import TIE_MARGIN, compare, convert_model, select_representative
from edgeface.data.manifest import Sample
from edgeface.core.bundle import load_bundle
from edgeface.runtime.engine import LiteRTEngine
from edgeface.train.keras_model import KerasEngine


def test_every_precision_converts_and_agrees_with_keras(tiny_bundles: dict[str, Path], tiny_model: Path,
                                                       synthetic_csv: Path) -> None:
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples

    sizes = {p: load_bundle(b).model_size for p, b in tiny_bundles.items()}
    assert sizes["float16"] < 0.6 * sizes["float32"]
    assert sizes["int8"] < 0.4 * sizes["float32"] and sizes["dynamic"] < 0.4 * sizes["float32"]
    keras = KerasEngine(tiny_model)
    # Real face crops, as int8 was calibrated on: random pixels would sit outside the calibrated ranges.
    crops = np.asarray(crop_samples(load_dataset(synthetic_csv).samples[::8], keras.spec.crop, 64).crops)
    reference = keras.predict(crops)
    tolerance = {"float32": 1e-5, "float16": 0.02, "dynamic": 0.1, "int8": 0.15}
    for precision, path in tiny_bundles.items():
        out = LiteRTEngine.from_bundle(path).predict(crops)
        for head in ("identity", "emotion", "gender"):
            assert np.abs(out[head] - reference[head]).max() <= tolerance[precision], (precision, head)
        checks = load_bundle(path).accuracy
        assert set(checks) == {"identity", "emotion", "gender"}
        assert all(0.0 <= c["agreement"] <= 1.0 and c["n"] > 0 for c in checks.values())
    corrected = load_bundle(tiny_bundles["int8"]).manifest["conversion"]["bias_correction"]
    assert corrected["layers"] == ["embedding_dense", "emotion", "gender"] and corrected["feature_shift_norm"] > 0
    assert 0.5 <= corrected["gain_p5"] <= corrected["gain_median"] <= corrected["gain_p95"] <= 2.0
    assert load_bundle(tiny_bundles["float32"]).manifest["conversion"]["bias_correction"] is None
    equalized = load_bundle(tiny_bundles["int8"]).manifest["conversion"]["equalization"]
    assert equalized["pairs"] == 4 and equalized["scale_max"] > equalized["scale_median"] >= 1.0
    assert load_bundle(tiny_bundles["float32"]).manifest["conversion"]["equalization"] is None
    float_checks = load_bundle(tiny_bundles["float32"]).accuracy
    assert all(c["agreement"] == 1.0 and c["max_prob_diff"] < 1e-5 for c in float_checks.values())


def test_conversion_is_refused_below_the_agreement_threshold(tiny_model: Path, tmp_path: Path) -> None:
    (result,) = convert_model(tiny_model, ["dynamic"], tmp_path, ConvertOptions(min_agreement=1.01), progress=False,
                              on_log=lambda _: None)
    assert not result.accepted and result.bundle_path is None
    assert "agrees with Keras on" in result.reason and "below --min-agreement 101%" in result.reason
    assert not list(tmp_path.glob("*.edgeface"))


def test_uint8_io_on_request(tiny_model: Path, tmp_path: Path) -> None:
    options = ConvertOptions(io_type="uint8", min_agreement=0.0, representative_size=40, verify_size=40,
                             equalize=False)
    (result,) = convert_model(tiny_model, ["int8"], tmp_path / "u8.edgeface", options, progress=False,
                              on_log=lambda _: None)
    bundle = load_bundle(result.bundle_path)
    assert bundle.manifest["conversion"]["equalization"] is None  # equalize=False (--no-equalize)
    assert bundle.manifest["io"]["input"]["dtype"] == "uint8"
    engine = LiteRTEngine.from_bundle(bundle)
    assert engine.input_dtype == np.uint8
    _assert_pixels_quantized_as_the_input_says(engine)


def _assert_pixels_quantized_as_the_input_says(engine: LiteRTEngine) -> None:
    """The engine's fast pixel conversion equals the definition: scale to the model's range, then quantize."""
    from edgeface.core.preprocess import to_model_input

    size = engine.spec.input_size
    pixels = np.resize(np.arange(256, dtype=np.uint8), (2, size, size, 3))
    got = engine.input_tensor(pixels)
    real = to_model_input(pixels, engine.spec)
    if engine.input_dtype == np.float32:
        np.testing.assert_array_equal(got, real)
        return
    scale, zero_point = engine.input_details["quantization"]
    info = np.iinfo(engine.input_dtype)
    assert got.dtype == engine.input_dtype
    np.testing.assert_array_equal(got, np.clip(np.round(real / scale) + zero_point, info.min, info.max))


def test_every_precision_gets_its_input_exactly(tiny_bundles: dict[str, Path]) -> None:
    import weakref

    for path in tiny_bundles.values():
        engine = LiteRTEngine.from_bundle(path)
        _assert_pixels_quantized_as_the_input_says(engine)
        released = weakref.ref(engine)
        del engine  # no reference cycle: a daemon that swaps bundles frees the old interpreter at once
        assert released() is None


def test_agreement_ignores_ties_within_quantization_step() -> None:
    spec = type("S", (), {"labels": {"identity": ("a", "b"), "emotion": ("happy", "neutral"),
                                     "gender": ("female", "male")}})()
    keras = {h: np.array([[0.5 + TIE_MARGIN / 4, 0.5 - TIE_MARGIN / 4], [0.9, 0.1]]) for h in spec.labels}
    tflite = {h: np.array([[0.49, 0.51], [0.2, 0.8]]) for h in spec.labels}
    samples = [Sample(Path("x"), "a", "happy", "female"), Sample(Path("y"), "a", "happy", "female")]
    checks = compare(keras, tflite, samples, spec)
    assert checks["identity"].agreement == 0.5  # the tie counts as agreement, the real flip does not
    assert checks["identity"].keras_accuracy == 1.0 and checks["identity"].tflite_accuracy == 0.0


def test_representative_set_spreads_over_people_and_labels() -> None:
    samples = [Sample(Path(f"{p}{i}"), p, e, g) for p, g in (("a", "male"), ("b", "female"), ("c", "female"))
               for i, e in enumerate(["happy"] * 20 + ["neutral"] * 2)]
    picked = [samples[i] for i in select_representative(samples, 12, seed=0)]
    assert len(picked) == 12
    assert {s.identity for s in picked} == {"a", "b", "c"}
    assert sum(s.emotion == "neutral" for s in picked) >= 4  # rare label is not crowded out
    assert select_representative(samples, 12, seed=0) == select_representative(samples, 12, seed=0)


@pytest.mark.parametrize("mode", ["tf", "caffe"])
def test_backbone_preprocessing_survives_int8(mode: str) -> None:
    """The in-graph preprocessing of every backbone family quantizes like a normal layer.

    Regression: written as flip + multiply + subtract, the caffe mode (ResNet50, VGG16) became REVERSE_V2 and MUL
    ops that TFLite's int8 quantizer garbled, and a trained ResNet50 fell to chance on every head.
    """
    import keras

    from edgeface.convert.tflite import convert_keras
    from edgeface.core.preprocess import to_model_input
    from edgeface.runtime.litert import make_interpreter
    from edgeface.core.spec import ModelSpec
    from edgeface.train.layers import BackbonePreprocess

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = BackbonePreprocess(mode)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    spec = ModelSpec(labels={"identity": ("a", "b"), "emotion": ("happy", "neutral"), "gender": ("female", "male")},
                     input_size=32, backbone="tiny")
    crops = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    interpreter = make_interpreter(convert_keras(model, "int8", spec, representative=crops, io_type="float32"))
    interpreter.allocate_tensors()
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "REVERSE_V2" not in ops
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    reference = np.asarray(model(to_model_input(crops[:16], spec)))
    outputs = []
    for crop in crops[:16]:
        interpreter.set_tensor(source, to_model_input(crop[None], spec))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target)[0])
    error = np.abs(np.asarray(outputs) - reference).max()
    assert error <= 0.05 * np.ptp(reference), (mode, error, np.ptp(reference))


def test_fit_correction_recovers_each_channels_gain_and_offset() -> None:
    from edgeface.convert.bias_correction import GAIN_LIMITS, fit_correction

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 4))
    reference[:, 3] = 6.0  # a channel stuck at ReLU6's ceiling: its gain cannot be measured
    quantized = (reference - [0.3, -0.1, 0.0, 0.0]) / [1.25, 0.8, 10.0, 1.0]
    quantized[:, 3] = 5.9
    correction = fit_correction(quantized, reference)
    np.testing.assert_allclose(correction.gain, [1.25, 0.8, GAIN_LIMITS[1], 1.0], rtol=1e-5)
    np.testing.assert_allclose(correction.apply(quantized)[:, [0, 1, 3]], reference[:, [0, 1, 3]], atol=1e-5)
    np.testing.assert_allclose(correction.shift, quantized.mean(0) - reference.mean(0), atol=1e-6)
    shift_only = fit_correction(quantized, reference, gain=False)  # plain bias correction: gain 1
    np.testing.assert_array_equal(shift_only.gain, 1.0)
    np.testing.assert_allclose(shift_only.apply(quantized).mean(0), reference.mean(0), atol=1e-5)


def test_bias_correction_folds_the_int8_feature_map_into_the_heads(tiny_model: Path,
                                                                   synthetic_csv: Path) -> None:
    from edgeface.convert.bias_correction import corrected_heads, feature_correction
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples

    keras = KerasEngine(tiny_model)
    crops = np.asarray(crop_samples(load_dataset(synthetic_csv).samples[::4], keras.spec.crop, 64).crops)
    correction = feature_correction(keras.model, keras.spec, crops)
    heads = keras.model.get_layer("heads")
    channels = int(heads.inputs[0].shape[-1])  # the one "pooled" feature vector
    assert correction is not None and correction.gain.shape == correction.offset.shape == (channels,)
    assert np.abs(correction.shift).max() > 0 and np.abs(correction.gain - 1).max() > 0
    features = np.random.default_rng(0).normal(size=(5, channels)).astype(np.float32)
    before = {name: np.asarray(heads.get_layer(name)(features)) for name in ("emotion", "gender")}
    float_view = {name: np.asarray(heads.get_layer(name)(correction.apply(features))) for name in before}
    with corrected_heads(keras.model, correction) as layers:
        assert layers == ["embedding_dense", "emotion", "gender"]
        for name, expected in float_view.items():  # int8 features in, the float heads' view of them out
            np.testing.assert_allclose(heads.get_layer(name)(features), expected, rtol=1e-4, atol=1e-5)
    for name, expected in before.items():  # and the Keras model is left as it was
        np.testing.assert_array_equal(heads.get_layer(name)(features), expected)
    with corrected_heads(object(), None) as layers:  # no correction: the model is not even looked at
        assert layers == []


def test_equalization_is_exact_in_float_and_undone_afterwards(tiny_model: Path, synthetic_csv: Path) -> None:
    from edgeface.convert.equalization import equalized_backbone, find_pairs
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.model import model_parts

    keras = KerasEngine(tiny_model)
    crops = np.asarray(crop_samples(load_dataset(synthetic_csv).samples[::4], keras.spec.crop, 64).crops)
    backbone = model_parts(keras.model).backbone
    pairs = find_pairs(backbone)  # the tiny backbone: four conv -> BN -> ReLU6 -> depthwise blocks
    assert len(pairs) == 4 and all(p.ceiling == 6.0 for p in pairs)
    assert [type(p.depthwise).__name__ for p in pairs] == ["DepthwiseConv2D"] * 4
    before = keras.predict(crops)
    weights = [w.copy() for w in backbone.get_weights()]
    with equalized_backbone(keras.model, keras.spec, crops) as equalization:
        assert equalization is not None and len(equalization.scales) == 4
        assert max(float(s.max()) for s in equalization.scales) > 1.5
        inside = keras.predict(crops)
        for head in ("identity", "emotion", "gender", "embedding"):
            np.testing.assert_allclose(inside[head], before[head], rtol=1e-3, atol=1e-5)
    for restored, saved in zip(backbone.get_weights(), weights):
        np.testing.assert_array_equal(restored, saved)
    with equalized_backbone(keras.model, keras.spec, None) as equalization:  # not asked: nothing touched
        assert equalization is None


def test_range_scales_lift_weak_channels_and_leave_dead_ones() -> None:
    from edgeface.convert.equalization import MAX_SCALE, range_scales

    scales = range_scales(np.array([4.0, 2.0, 0.5, 0.0, 1e-5]), ceiling=6.0)
    np.testing.assert_allclose(scales, [1.0, 2.0, 8.0, 1.0, MAX_SCALE], rtol=1e-6)
    np.testing.assert_allclose(range_scales(np.array([8.0, 2.0]), ceiling=6.0), [1.0, 3.0])  # up to the ceiling
    np.testing.assert_array_equal(range_scales(np.zeros(3)), 1.0)


def test_equalization_gives_weak_channels_their_int8_bits_back() -> None:
    """Channels 100x weaker than their neighbours before a depthwise convolution that amplifies them again:
    int8 rounds them away, equalised it keeps them (MobileNetV2's first block, in miniature)."""
    import keras
    import tensorflow as tf

    from edgeface.convert.equalization import equalized
    from edgeface.runtime.litert import make_interpreter

    rng = np.random.default_rng(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    network = keras.Model(inputs, x)
    network.layers[1].set_weights([rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32)])
    weak = np.array([1, 1, 1, 1, 0.01, 0.01, 0.01, 0.01], np.float32)
    bn = network.layers[2]
    bn.set_weights([weak, 0.1 * weak, np.zeros(8, np.float32), np.ones(8, np.float32)])
    depthwise = network.layers[4]
    kernel = rng.normal(0, 0.3, (3, 3, 8, 1)).astype(np.float32)
    depthwise.set_weights([kernel / weak[None, None, :, None]])
    data = rng.uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    reference = network.predict(data, verbose=0)

    def int8_error() -> float:
        converter = tf.lite.TFLiteConverter.from_keras_model(network)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in data)
        runner = make_interpreter(converter.convert(), source="test network").get_signature_runner()
        out = next(iter(runner(**{runner.get_input_details().popitem()[0]: data}).values()))
        weak_channels = slice(4, 8)
        return float(np.sqrt(np.mean((out[:, weak_channels] - reference[:, weak_channels]) ** 2))
                     / np.sqrt(np.mean(reference[:, weak_channels] ** 2)))

    plain = int8_error()
    with equalized(network, data) as equalization:
        np.testing.assert_allclose(network.predict(data, verbose=0), reference, rtol=1e-4, atol=1e-5)
        assert equalization.activations == [network.layers[3].name]
        assert 50 < float(np.median(equalization.scales[0][4:])) <= 1000
        lifted = int8_error()
    assert lifted < plain / 5, (plain, lifted)  # measured: 8.1% -> 0.63% of the weak channels' RMS


def test_debug_layers_reports_where_int8_error_accumulates(tiny_bundles: dict[str, Path], tiny_model: Path,
                                                           synthetic_csv: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeface.convert.tflite import accumulated_errors
    from edgeface.cli import app
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples

    float_bundle, int8_bundle = load_bundle(tiny_bundles["float32"]), load_bundle(tiny_bundles["int8"])
    crops = np.asarray(crop_samples(load_dataset(synthetic_csv).samples[::10], float_bundle.spec.crop, 64).crops)
    rows = accumulated_errors(float_bundle.model_bytes, int8_bundle.model_bytes, crops, float_bundle.spec)
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= {row["op"] for row in rows}
    # Each head's SQNR is the one the models' named outputs give, run with the same (reference) kernels: the
    # walk over the graph measured the right tensors. (The engine re-normalises the embedding it returns.)
    reference, quantized = (LiteRTEngine(b.model_bytes, b.spec, keep_all_tensors=True).predict(crops)
                            for b in (float_bundle, int8_bundle))
    at_outputs = {row["output"]: row["sqnr_db"] for row in rows if row["output"]}
    # (features_pooled: what the float heads read, an output since they travel in the bundle)
    assert set(at_outputs) == {"identity", "emotion", "gender", "embedding", "features_pooled"}
    for head in ("identity", "emotion", "gender"):
        noise = np.sum((quantized[head] - reference[head]) ** 2)
        assert abs(10 * np.log10(np.sum(reference[head] ** 2) / noise) - at_outputs[head]) < 0.01, head
    # With float32 input and output the outputs are DEQUANTIZE ops; the int8 tensors they read are measured.
    from edgeface.convert.tflite import convert_keras

    keras = KerasEngine(tiny_model)
    float_io = convert_keras(keras.model, "int8", keras.spec, crops, io_type="float32")
    float_io_rows = accumulated_errors(float_bundle.model_bytes, float_io, crops, float_bundle.spec)
    assert {row["output"] for row in float_io_rows if row["output"]} == set(at_outputs) - {"features_pooled"}
    by_order = [row["sqnr_db"] for row in rows]
    # Error compounds from the input to the features every head reads. (Not "first > last": the last tensor is
    # a softmax, and a confident softmax hides its input's error. Between the two, this int8 model is equalised
    # and the float32 one is not, so lifted channels differ by design; --debug-layers compares like for like.)
    assert by_order[0] > at_outputs["embedding"] + 6 and all(np.isfinite(by_order))
    for row in rows:
        assert row["drop_db"] is None or np.isfinite(row["drop_db"])

    result = CliRunner().invoke(app, ["convert", str(tiny_model), "-p", "int8", "--out", str(tmp_path),
                                      "--debug-layers", "--representative-size", "40", "--verify-size", "40",
                                      "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    assert "worst int8 layers, each fed float inputs" in result.output
    assert "int8 against float, tensor by tensor" in result.output
    outputs_line = next(line for line in result.output.splitlines() if "at the outputs:" in line)
    assert all(head in outputs_line for head in ("identity", "emotion", "gender"))
    assert "dB lost ->" in result.output
    stem = tmp_path / tiny_model.parent.name
    table = Path(f"{stem}-int8-accumulated-errors.csv").read_text().splitlines()
    assert table[0].startswith("tensor,op,output,shape,sqnr_db,drop_db") and len(table) > 5
    assert Path(f"{stem}-int8-accumulated-errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(f"{stem}-layer-errors.csv").is_file()



def test_identity_rule_is_the_more_accurate_of_the_models_output_and_the_centres() -> None:
    from edgeface.convert.pipeline import choose_identity_rule
    from edgeface.core.spec import ModelSpec

    spec = ModelSpec(labels={"identity": ("ana", "ben"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=32, backbone="tiny")
    samples = [Sample(Path(f"{i}.jpg"), "ana" if i % 2 else "ben", None, None) for i in range(4)]
    right = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # ben, ana, ben, ana
    one_wrong = right.copy()
    one_wrong[0] = [1.0, 0.0]
    assert choose_identity_rule(one_wrong, right, samples, spec, right)["used"] == "centres"
    rule = choose_identity_rule(right, one_wrong, samples, spec, right)
    assert rule == {"used": "model", "measured": "accuracy", "faces": 4, "centres": 0.75, "model": 1.0}
    assert choose_identity_rule(right, right, samples, spec, right)["used"] == "centres"  # a tie: float wins
    unlabelled = [Sample(Path("x.jpg"), None, None, None)] * 4  # no identity labels: agreement with Keras
    rule = choose_identity_rule(one_wrong, right, unlabelled, spec, right)
    assert rule["used"] == "centres" and rule["measured"] == "agreement with Keras" and rule["model"] == 0.75


def test_a_centres_model_converts_with_its_centres(synthetic_csv: Path, tmp_path: Path) -> None:
    """dlib-resnet's architecture (tiny, untrained) with its nearest-centre head set from its own embeddings of
    the synthetic people: convert reads the centres and scale, measures them against the int8 model's own
    identity output, puts them in the bundle, and the engine's identity is then the centres' on its
    embedding."""
    import zipfile

    from edgeface.core.bundle import CENTRES_MEMBER
    from edgeface.core.modelio import write_metadata
    from edgeface.core.spec import ModelSpec
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.runtime.engine import identity_from_centres
    from edgeface.train.keras_model import keras_predict, save_keras_model
    from edgeface.train.model import backbone_info, build_model, model_identity_centres, set_identity_centres

    data = load_dataset(synthetic_csv)
    spec = ModelSpec(labels={h: data.labels(h) for h in ("identity", "emotion", "gender")}, input_size=150,
                     crop=backbone_info("dlib-resnet-tiny").crop, backbone="dlib-resnet-tiny", embedding_size=128)
    built = build_model(spec, weights="none")
    crops = crop_samples(data.samples[::2], spec.crop, spec.input_size)
    embeddings = keras_predict(built.model, crops.crops, spec)["embedding"]
    set_identity_centres(built.heads, embeddings, [s.identity for s in crops.cropped_samples],
                         list(spec.labels["identity"]), scale=40.0)
    (tmp_path / "run").mkdir()
    model = save_keras_model(built.model, tmp_path / "run" / "model.keras")
    write_metadata(model, {"spec": spec.to_dict()})
    logs: list[str] = []
    options = ConvertOptions(representative=synthetic_csv, verify_data=synthetic_csv, min_agreement=0.0,
                             representative_size=40, verify_size=60)
    (result,) = convert_model(model, ["int8"], tmp_path, options, progress=False, on_log=logs.append)
    bundle = load_bundle(result.bundle_path)
    rule = bundle.manifest["identity_rule"]
    assert rule["used"] == "centres" and rule["centres"] >= rule["model"] and rule["faces"] == 60, rule
    assert any(line.startswith("int8 identity: nearest person centre on the embedding, in float") for line in logs)
    expected = model_identity_centres(KerasEngine(model).model)
    np.testing.assert_allclose(bundle.identity_centres.centres, expected.centres, atol=1e-6)
    assert bundle.identity_centres.scale == 40.0 and bundle.identity_centres.centres.shape == (6, 128)
    assert CENTRES_MEMBER in zipfile.ZipFile(result.bundle_path).namelist()
    out = LiteRTEngine.from_bundle(bundle).predict(np.asarray(crops.crops[:4]))
    np.testing.assert_allclose(out["identity"], identity_from_centres(out["embedding"], bundle.identity_centres))

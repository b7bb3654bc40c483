"""Refitting a softmax head (``edgeface recentre --refit-heads``): exact, class-balanced, L2-regularised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.core.errors import ModelError
from edgeface.train.refit import fit_softmax_head


def _blobs(rng: np.random.Generator, n: int, classes: int, dims: int = 6) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(classes, dims)) * 2.0
    y = rng.integers(0, classes, n)
    # features on very different scales and offsets: the fit standardises them and folds that back
    scales = np.geomspace(0.01, 100.0, dims)
    return (centres[y] + rng.normal(size=(n, dims))) * scales + 5.0, y


@pytest.mark.parametrize("classes", [2, 3])
def test_the_refitted_head_is_the_regularised_optimum_in_raw_feature_space(classes: int) -> None:
    rng = np.random.default_rng(classes)
    x, y = _blobs(rng, 400, classes)
    names = [f"c{i}" for i in range(classes)]
    labels: list[str | None] = [names[i] for i in y]
    labels[:20] = [None] * 10 + ["stranger"] * 10  # unknown labels are left out of the fit
    kernel, bias = fit_softmax_head(x, labels, names, l2=3.0, balanced=False)
    assert kernel.shape == (6, classes) and bias.shape == (classes,)

    used = np.arange(20, 400)
    logits = x[used] @ kernel.astype(np.float64) + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(classes)[y[used]]
    std = x[used].std(0) + 1e-6
    # d/dK of sum(cross-entropy) + l2/2 |K * std|^2 (the penalty is on standardised features) vanishes
    gradient = x[used].T @ residual + 3.0 * kernel * std[:, None] ** 2
    assert np.abs(gradient).max() < 1e-3 * np.abs(x[used].T @ residual).sum() + 1e-2
    assert np.abs(residual.sum(0)).max() < 1e-3  # the (nearly unpenalised) bias makes every class's mean right

    held_out, truth = _blobs(np.random.default_rng(classes), 400, classes)  # same centres, new faces
    assert np.mean((held_out @ kernel + bias).argmax(1) == truth) > 0.9


def test_balanced_refit_does_not_ignore_the_rare_class() -> None:
    rng = np.random.default_rng(7)
    x = np.r_[rng.normal(0.0, 1.0, (380, 2)), rng.normal(1.2, 1.0, (20, 2))]
    labels = ["common"] * 380 + ["rare"] * 20
    rare_found = {}
    for balanced in (False, True):
        kernel, bias = fit_softmax_head(x, labels, ["common", "rare"], balanced=balanced)
        rare_found[balanced] = np.mean((x[380:] @ kernel + bias).argmax(1) == 1)
    assert rare_found[True] > 0.6 > rare_found[False]


def test_refit_errors_name_what_is_wrong() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ModelError, match="at least two of its classes .*happy: 4, neutral: 0"):
        fit_softmax_head(x, ["happy"] * 4, ["happy", "neutral"])
    with pytest.raises(ModelError, match="l2 must be above 0, got 0"):
        fit_softmax_head(x, ["happy", "neutral"] * 2, ["happy", "neutral"], l2=0)
    with pytest.raises(ModelError, match="one feature row per label"):
        fit_softmax_head(x, ["happy"], ["happy", "neutral"])


def test_recentre_refit_heads_fits_emotion_and_gender_on_the_mirrored_features(
        tiny_model: Path, synthetic_csv: Path, tmp_path: Path) -> None:
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.core.modelio import read_metadata
    from edgeface.train.keras_model import keras_predict, load_keras_model
    from edgeface.core.spec import ModelSpec
    from edgeface.train.model import compose_features, model_parts

    out = tmp_path / "refit"
    result = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                      "--out", str(out), "--mirror", "--refit-heads", "--l2", "2"])
    assert result.exit_code == 0, result.output
    assert "emotion head refitted on" in result.output and "gender head refitted on" in result.output
    refitted = json.loads((out / "metadata.json").read_text())["refitted_heads"]
    assert refitted["l2"] == 2.0 and refitted["mirrored"] is True and refitted["faces"]["emotion"] > 100

    # The new heads are exactly the regularised fit on the mirrored features of DATA's faces.
    import keras

    spec = ModelSpec.from_dict(read_metadata(tiny_model)["spec"])
    model = load_keras_model(out / "model.keras")
    parts = model_parts(model)
    assert parts is not None and parts.mirrored
    samples = crop_samples(load_dataset(synthetic_csv).samples, spec.crop, spec.input_size)
    inputs = keras.Input(tuple(model.input.shape[1:]))
    features = keras_predict(keras.Model(inputs, {"f": compose_features(parts.preprocess, parts.backbone, inputs,
                                                                        True)}), samples.crops, spec)["f"]
    for head in ("emotion", "gender"):
        kernel, bias = fit_softmax_head(features, [getattr(s, head) for s in samples.cropped_samples],
                                        spec.labels[head], l2=2.0)
        got_kernel, got_bias = parts.heads.get_layer(head).get_weights()
        np.testing.assert_allclose(got_kernel, kernel, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got_bias, bias, rtol=1e-3, atol=1e-4)
        truth = np.array([getattr(s, head) for s in samples.cropped_samples])
        predicted = np.array(spec.labels[head])[keras_predict(model, samples.crops, spec)[head].argmax(1)]
        assert np.mean(predicted == truth) > 0.8, head  # on the faces it was fitted to

    bad = CliRunner().invoke(app, ["recentre", str(tiny_model.parent), "--data", str(synthetic_csv),
                                   "--out", str(out), "--refit-heads", "--l2", "0"])
    assert bad.exit_code == 2 and "l2 must be above 0, got 0" in bad.output

"""The linear probe (the baseline of ``edgeface train``) and the pieces of the nearest-centre identity head."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.core.errors import ModelError
from edgeface.train.centres import fit_scale, person_centres
from edgeface.train.probe import fit_softmax_head, probe_accuracy


def _blobs(rng: np.random.Generator, n: int, classes: int, dims: int = 6) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(classes, dims)) * 2.0
    y = rng.integers(0, classes, n)
    # features on very different scales and offsets: the fit centres and scales them and folds that back
    scales = np.geomspace(0.1, 10.0, dims)
    return (centres[y] + rng.normal(size=(n, dims))) * scales + 5.0, y


@pytest.mark.parametrize("classes", [2, 3])
def test_the_probe_is_the_regularised_optimum_in_raw_feature_space(classes: int) -> None:
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
    scale = np.sqrt(np.mean((x[used] - x[used].mean(0)) ** 2))  # one overall scale, not one per feature
    # d/dK of sum(cross-entropy) + l2/2 |K * scale|^2 (the penalty is on the scaled features) vanishes
    gradient = x[used].T @ residual + 3.0 * kernel * scale ** 2
    assert np.abs(gradient).max() < 1e-3 * np.abs(x[used].T @ residual).sum() + 1e-2
    assert np.abs(residual.sum(0)).max() < 1e-3  # the (nearly unpenalised) bias makes every class's mean right

    held_out, truth = _blobs(np.random.default_rng(classes), 400, classes)  # same centres, new faces
    assert np.mean((held_out @ kernel + bias).argmax(1) == truth) > 0.9


def test_the_balanced_probe_does_not_ignore_the_rare_class() -> None:
    rng = np.random.default_rng(7)
    x = np.r_[rng.normal(0.0, 1.0, (380, 2)), rng.normal(1.2, 1.0, (20, 2))]
    labels = ["common"] * 380 + ["rare"] * 20
    rare_found = {}
    for balanced in (False, True):
        kernel, bias = fit_softmax_head(x, labels, ["common", "rare"], balanced=balanced)
        rare_found[balanced] = np.mean((x[380:] @ kernel + bias).argmax(1) == 1)
    assert rare_found[True] > 0.6 > rare_found[False]


def test_probe_errors_name_what_is_wrong() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ModelError, match="at least two of its classes .*happy: 4, neutral: 0"):
        fit_softmax_head(x, ["happy"] * 4, ["happy", "neutral"])
    with pytest.raises(ModelError, match="l2 must be above 0, got 0"):
        fit_softmax_head(x, ["happy", "neutral"] * 2, ["happy", "neutral"], l2=0)
    with pytest.raises(ModelError, match="one feature row per label"):
        fit_softmax_head(x, ["happy"], ["happy", "neutral"])

def test_many_classes_are_fitted_by_descent_to_the_same_objective() -> None:
    """Identity over many people is too large for Newton's Hessian: gradient descent on the same objective."""
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 900, 150, dims=90)
    names = [f"p{i}" for i in range(150)]
    kernel, bias = fit_softmax_head(x, [names[i] for i in y], names)
    assert kernel.shape == (90, 150)
    held_out, truth = _blobs(np.random.default_rng(3), 900, 150, dims=90)
    assert np.mean((held_out @ kernel + bias).argmax(1) == truth) > 0.8
    assert probe_accuracy(x, [names[i] for i in y], held_out, [names[i] for i in truth], names) > 0.8


def test_probe_accuracy_needs_two_classes_and_labelled_faces() -> None:
    x = np.random.default_rng(0).normal(size=(10, 3))
    assert probe_accuracy(x, ["a"] * 10, x, ["a"] * 10, ["a", "b"]) is None
    assert probe_accuracy(x, ["a", "b"] * 5, x, [None] * 10, ["a", "b"]) is None


def test_person_centres_are_unit_means_and_name_nobody_without_faces() -> None:
    embeddings = np.array([[1, 0], [0.6, 0.8], [0, 1], [1, 0]], np.float32)
    centres = person_centres(embeddings, ["ann", "bob", "cat"], ["ann", "ann", "bob", "stranger"])
    assert centres.shape == (2, 3)
    np.testing.assert_allclose(centres[:, 0], np.array([1.6, 0.8]) / np.hypot(1.6, 0.8), rtol=1e-6)
    np.testing.assert_allclose(centres[:, 1], [0, 1])
    assert not centres[:, 2].any()  # cat has no face: a zero column, never the nearest by cosine
    with pytest.raises(ModelError, match="one embedding per label"):
        person_centres(embeddings, ["ann"], ["ann"])


def test_fit_scale_is_temperature_scaling() -> None:
    """Sharper when the nearest centre is reliably right, softer when it is often wrong."""
    rng = np.random.default_rng(1)
    cosines = rng.uniform(0.2, 0.6, (400, 5))
    truth = rng.integers(0, 5, 400)
    confident = cosines.copy()
    confident[np.arange(400), truth] += 0.3
    noisy = cosines.copy()
    noisy[np.arange(400), truth] += 0.03
    assert fit_scale(confident, truth) > 2 * fit_scale(noisy, truth)
    assert fit_scale(cosines, np.full(400, -1)) > 0  # nobody labelled: a middle scale


def test_separable_classes_converge_instead_of_overshooting() -> None:
    """20 well-separated people, 11 faces each (a household's descriptors): a full Newton step from zero
    overshot and the fit named 5% of its own training faces; every step now descends."""
    rng = np.random.default_rng(1)
    people, per, dims = 20, 11, 128
    x = np.repeat(rng.normal(size=(people, dims)), per, 0) + 0.8 * rng.normal(size=(people * per, dims))
    truth = np.repeat(np.arange(people), per)
    names = [f"p{i}" for i in range(people)]
    kernel, bias = fit_softmax_head(x, [names[i] for i in truth], names)
    assert np.mean(np.argmax(x @ kernel + bias, 1) == truth) == 1.0

"""The linear probe: an L2-regularised multinomial logistic regression on a backbone's frozen features.

``edgeface train`` fits one per head on the training photos and reports its validation accuracy beside the
model's: a recipe that cannot beat a linear classifier on the features it started from is not worth its
training. Small problems are solved exactly (Newton's method on the convex objective); large ones (identity
over many people) by full-batch gradient descent on the same objective. Class-balanced like the trainer's
class weights, on centred features divided by one overall scale, folded back into the kernel. (Per-feature
standardisation would let a near-constant feature earn a huge weight: int8's per-tensor activation scale
turns such a feature into noise, and the head with it.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeface.core.errors import ModelError

# scikit-learn's LogisticRegression default (C = 1); not tuned on any test set.
DEFAULT_L2 = 1.0
# Newton's Hessian is parameters^2 doubles (128 MB here): emotion and gender on any backbone's features fit;
# identity over more than a few dozen people goes to gradient descent.
_MAX_PARAMETERS = 4_000


def fit_softmax_head(features: np.ndarray, labels: Sequence[str | None], classes: Sequence[str],
                     l2: float = DEFAULT_L2, balanced: bool = True, iterations: int = 30
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Kernel (D, K) and bias (K,) of a Dense softmax over ``classes`` fitted to ``features`` (N, D).

    Faces whose label is None or not in ``classes`` are left out. ``l2`` weighs half the squared kernel (on
    features centred and divided by their overall root-mean-square) against the summed, class-balanced
    cross-entropy.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ModelError(f"expected one feature row per label, got {features.shape} for {len(labels)} labels")
    if not l2 > 0:
        raise ModelError(f"l2 must be above 0, got {l2:g}")
    index = {label: i for i, label in enumerate(classes)}
    rows = np.array([label in index for label in labels], bool)
    y = np.array([index[label] for label in labels if label in index], np.int64)
    n, d, k = int(rows.sum()), features.shape[1], len(classes)
    present = np.bincount(y, minlength=k)
    if (present > 0).sum() < 2:
        raise ModelError(f"fitting a head needs faces of at least two of its classes ({', '.join(classes)}); "
                         f"got {', '.join(f'{c}: {m}' for c, m in zip(classes, present))}")
    x = features[rows]
    mean = x.mean(0)
    std = np.sqrt(np.mean((x - mean) ** 2)) + 1e-12  # one scale for all features (see the module's note)
    xb = np.hstack([(x - mean) / std, np.ones((n, 1))])
    weight = np.ones(n)
    if balanced:
        weight = (n / ((present > 0).sum() * np.maximum(present, 1)))[y]
    onehot = np.eye(k)[y]
    if (d + 1) * k > _MAX_PARAMETERS:
        coef = _descend(xb, onehot, weight, l2)
        kernel = (coef[:, :d] / std).T
        return kernel.astype(np.float32), (coef[:, d] - kernel.T @ mean).astype(np.float32)
    # The bias gets a tiny penalty: softmax is unchanged by adding one constant to every class's logit.
    penalty = np.tile(np.r_[np.full(d, l2), 1e-6], k)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = xb @ w.reshape(k, d + 1).T
        logits -= logits.max(1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(1))
        loss = float(np.sum(weight * (log_norm - logits[np.arange(n), y])) + 0.5 * np.sum(penalty * w * w))
        return loss, np.exp(logits - log_norm[:, None])

    w = np.zeros(k * (d + 1))
    loss, p = objective(w)
    for _ in range(iterations):
        grad = ((p - onehot) * weight[:, None]).T @ xb
        hessian = np.empty((k * (d + 1), k * (d + 1)))
        for a in range(k):
            for b in range(a, k):
                s = weight * p[:, a] * ((a == b) - p[:, b])
                block = (xb * s[:, None]).T @ xb
                hessian[a * (d + 1):(a + 1) * (d + 1), b * (d + 1):(b + 1) * (d + 1)] = block
                hessian[b * (d + 1):(b + 1) * (d + 1), a * (d + 1):(a + 1) * (d + 1)] = block.T
        hessian[np.diag_indices_from(hessian)] += penalty  # in place: no second Hessian-sized array
        gradient = grad.ravel() + penalty * w
        step = np.linalg.solve(hessian, gradient)
        # A full Newton step can overshoot where classes are (nearly) separable, as a few dozen people's faces
        # are: halve it until the objective falls enough (Armijo), so every step descends.
        size = 1.0
        while True:
            trial_loss, trial_p = objective(w - size * step)
            if trial_loss <= loss - 1e-4 * size * float(gradient @ step) or size < 1e-10:
                break
            size /= 2
        w, loss, p = w - size * step, trial_loss, trial_p
        if np.abs(size * step).max() < 1e-8:
            break
    coef = w.reshape(k, d + 1)
    kernel = (coef[:, :d] / std).T
    bias = coef[:, d] - kernel.T @ mean
    return kernel.astype(np.float32), bias.astype(np.float32)


def _descend(xb: np.ndarray, onehot: np.ndarray, weight: np.ndarray, l2: float, iterations: int = 400
             ) -> np.ndarray:
    """(K, D+1) coefficients minimising the same objective by full-batch Adam (a Newton step would need a
    Hessian of (K (D+1))^2 values)."""
    k, d1 = onehot.shape[1], xb.shape[1]
    coef = np.zeros((k, d1))
    moment, second = np.zeros_like(coef), np.zeros_like(coef)
    penalty = np.r_[np.full(d1 - 1, l2), 0.0]
    rate, beta1, beta2 = 0.05, 0.9, 0.999
    for step in range(1, iterations + 1):
        logits = xb @ coef.T
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = ((p - onehot) * weight[:, None]).T @ xb / len(xb) + coef * penalty / len(xb)
        moment = beta1 * moment + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad ** 2
        coef -= rate * (moment / (1 - beta1 ** step)) / (np.sqrt(second / (1 - beta2 ** step)) + 1e-8)
    return coef


def probe_accuracy(train_features: np.ndarray, train_labels: Sequence[str | None], val_features: np.ndarray,
                   val_labels: Sequence[str | None], classes: Sequence[str]) -> float | None:
    """Validation accuracy of a linear probe fitted on the training features (None when it cannot be fitted
    or nothing is labelled)."""
    try:
        kernel, bias = fit_softmax_head(train_features, train_labels, classes)
    except ModelError:
        return None
    predicted = np.argmax(np.asarray(val_features, np.float32) @ kernel + bias, axis=1)
    scored = [classes[p] == label for p, label in zip(predicted, val_labels) if label in classes]
    return float(np.mean(scored)) if scored else None

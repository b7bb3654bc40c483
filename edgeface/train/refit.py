"""Refit a softmax head on the features it will read: L2-regularised multinomial logistic regression.

``edgeface recentre --mirror`` changes what the heads see (the mean of each face's features and its mirror
image's), but the emotion and gender heads were trained, with dropout, on single views. Refitting them on the
features of the training photos as the new model computes them matches head and features again; the result is
a Dense softmax of the same shape, so the converted model's size and speed do not change.

The fit is exact (Newton's method on the convex objective), class-balanced like the trainer's class weights,
on standardised features with the standardisation folded back into the kernel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeface.core.errors import ModelError

# scikit-learn's LogisticRegression default (C = 1 on standardised features); not tuned on any test set.
DEFAULT_L2 = 1.0
_MAX_PARAMETERS = 12_000  # Newton's Hessian is parameters^2 doubles: 1.2 GB at this size


def fit_softmax_head(features: np.ndarray, labels: Sequence[str | None], classes: Sequence[str],
                     l2: float = DEFAULT_L2, balanced: bool = True, iterations: int = 30
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Kernel (D, K) and bias (K,) of a Dense softmax over ``classes`` fitted to ``features`` (N, D).

    Faces whose label is None or not in ``classes`` are left out. ``l2`` weighs half the squared kernel (on
    standardised features) against the summed, class-balanced cross-entropy.
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
        raise ModelError(f"refitting a head needs faces of at least two of its classes ({', '.join(classes)}); "
                         f"got {', '.join(f'{c}: {m}' for c, m in zip(classes, present))}")
    if (d + 1) * k > _MAX_PARAMETERS:
        raise ModelError(f"a head of {k} classes on {d} features is too large to refit exactly")
    x = features[rows]
    mean, std = x.mean(0), x.std(0) + 1e-6
    xb = np.hstack([(x - mean) / std, np.ones((n, 1))])
    weight = np.ones(n)
    if balanced:
        weight = (n / ((present > 0).sum() * np.maximum(present, 1)))[y]
    onehot = np.eye(k)[y]
    # The bias gets a tiny penalty: softmax is unchanged by adding one constant to every class's logit.
    penalty = np.tile(np.r_[np.full(d, l2), 1e-6], k)
    w = np.zeros(k * (d + 1))
    for _ in range(iterations):
        logits = xb @ w.reshape(k, d + 1).T
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = ((p - onehot) * weight[:, None]).T @ xb
        hessian = np.empty((k * (d + 1), k * (d + 1)))
        for a in range(k):
            for b in range(a, k):
                s = weight * p[:, a] * ((a == b) - p[:, b])
                block = (xb * s[:, None]).T @ xb
                hessian[a * (d + 1):(a + 1) * (d + 1), b * (d + 1):(b + 1) * (d + 1)] = block
                hessian[b * (d + 1):(b + 1) * (d + 1), a * (d + 1):(a + 1) * (d + 1)] = block.T
        step = np.linalg.solve(hessian + np.diag(penalty), grad.ravel() + penalty * w)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    coef = w.reshape(k, d + 1)
    kernel = (coef[:, :d] / std).T
    bias = coef[:, d] - kernel.T @ mean
    return kernel.astype(np.float32), bias.astype(np.float32)

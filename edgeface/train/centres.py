"""Nearest-centre identity: name the person whose faces' mean embedding is closest (by cosine).

A person's centre is the normalised mean of the unit embeddings of their training faces. With a dozen photos
per person, the class means are steadier than a Dense softmax fitted to them, and trained people are then
ranked by the same cosine the enrollment gallery uses for the people enrolled later. The head's softmax scale
(how sharp its probabilities are) is fitted on the validation faces.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeface.core.errors import ModelError

SCALES = tuple(float(s) for s in np.geomspace(5, 200, 33))  # the softmax scales tried, 5 to 200


def person_centres(embeddings: np.ndarray, people: Sequence[str], labels: Sequence[str | None]) -> np.ndarray:
    """(D, P) unit centres, one column per person in ``people``: the normalised mean of their unit embeddings.

    A person without any face in ``labels`` keeps a zero column (the head never names them); faces of people
    not in ``people``, or without an identity label, are ignored.
    """
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ModelError(f"expected one embedding per label, got {embeddings.shape} for {len(labels)} labels")
    index = {person: i for i, person in enumerate(people)}
    sums = np.zeros((len(people), embeddings.shape[1]), np.float64)
    for row, person in enumerate(labels):
        if person in index:
            sums[index[person]] += embeddings[row]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).T.astype(np.float32)


def fit_scale(cosines: np.ndarray, truth: np.ndarray, scales: Sequence[float] = SCALES) -> float:
    """The softmax scale (over ``scales``) with the least log loss of ``truth`` (one class index per row,
    -1 for none) given each row's ``cosines`` to the centres: temperature scaling."""
    rows = truth >= 0
    if not rows.any():
        return scales[len(scales) // 2]
    cosines, truth = np.asarray(cosines, np.float64)[rows], truth[rows]

    def log_loss(scale: float) -> float:
        logits = scale * cosines
        logits -= logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(truth)), truth]))

    return min(scales, key=log_loss)

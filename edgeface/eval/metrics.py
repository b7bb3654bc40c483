"""Per-head classification metrics, computed with numpy (no scikit-learn on the device).

A photo the model could not answer (no face found, or a true label the model was not trained on) counts as
wrong: accuracy is over every labelled photo, not only over the faces that were found. A photo without a
face still belongs to its true class, so it also lowers that class's recall (balanced accuracy, macro-F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.data.manifest import Sample


@dataclass(frozen=True)
class HeadMetrics:
    """Metrics of one head over the photos that have a label for it.

    ``n`` counts labelled photos; ``missed`` of them had no usable prediction and count as wrong, so accuracy
    is over all ``n``. ``unknown_labels`` of the misses have a true label outside the model's label list (a
    person it was not trained on); they are in no class of the confusion matrix.
    """

    labels: tuple[str, ...]
    n: int
    missed: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    confusion: np.ndarray  # (C, C): rows true label, columns predicted; misses are not in it
    unknown_labels: int = 0

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    def most_confused(self, top: int = 5) -> list[tuple[str, str, int]]:
        """The largest off-diagonal cells: (true label, predicted label, count), largest first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(-off, axis=None, kind="stable")[:top]
        rows, cols = np.unravel_index(flat, off.shape)
        return [(self.labels[r], self.labels[c], int(off[r, c])) for r, c in zip(rows, cols) if off[r, c] > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "n": self.n,
            "missed": self.missed,
            "unknown_labels": self.unknown_labels,
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
        }


def classification_metrics(true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
                           num_classes: int, labels: Sequence[str], missed: int = 0) -> HeadMetrics:
    """Metrics from class indices.

    ``predicted`` may hold -1 for a miss: counted wrong, and in its true class's support. ``missed`` adds
    misses whose true class is unknown (they count in ``n`` and accuracy only).
    """
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise EdgefaceError(f"metrics: {len(true)} true labels but {len(predicted)} predictions")
    hit = predicted >= 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true[hit], predicted[hit]), 1)
    n = len(true) + missed
    correct = int(np.trace(confusion))
    support = np.bincount(true, minlength=num_classes)  # includes this class's misses
    recall = np.divide(np.diag(confusion), support, out=np.zeros(num_classes), where=support > 0)
    present = support > 0
    balanced = float(recall[present].mean()) if present.any() else 0.0
    predicted_count = confusion.sum(0)
    precision = np.divide(np.diag(confusion), predicted_count, out=np.zeros(num_classes),
                          where=predicted_count > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    # Classes absent from the truth are left out of the mean, as scikit-learn does with labels=present ones.
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    return HeadMetrics(tuple(labels), n, missed + int((~hit).sum()), correct / n if n else 0.0, balanced, macro_f1,
                       confusion, unknown_labels=missed)


def head_metrics(samples: Sequence[Sample], probabilities: np.ndarray | None, labels: Sequence[str],
                 head: str, missed_samples: Sequence[Sample] = ()) -> HeadMetrics:
    """Metrics of ``head`` for samples with a known label; rows of ``probabilities`` follow ``samples``.

    ``missed_samples`` are photos with no prediction (no face found, unreadable): those with a label for
    ``head`` count as wrong. Labels the model does not know (a person absent from training) also count as
    wrong. ``probabilities=None`` means no prediction for any sample.
    """
    if probabilities is not None and len(probabilities) != len(samples):
        raise EdgefaceError(f"metrics: {len(samples)} samples but {len(probabilities)} rows of probabilities")
    lookup = {label: i for i, label in enumerate(labels)}
    true: list[int] = []
    predicted: list[int] = []
    unknown = 0
    rows = [(s, int(np.argmax(probabilities[i])) if probabilities is not None else -1)
            for i, s in enumerate(samples)]
    rows += [(s, -1) for s in missed_samples]
    for sample, guess in rows:
        label = sample.label(head)
        if label is None:
            continue
        if label not in lookup:
            unknown += 1  # can never be predicted: a miss outside every class
            continue
        true.append(lookup[label])
        predicted.append(guess)
    return classification_metrics(true, predicted, len(labels), labels, missed=unknown)

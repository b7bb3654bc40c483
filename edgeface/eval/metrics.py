"""Per-head classification metrics, computed with numpy (no scikit-learn on the device)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgeface.data.manifest import Sample


@dataclass(frozen=True)
class HeadMetrics:
    """Metrics of one head over the photos that have a label for it.

    ``n`` counts labelled photos; ``missed`` of them had no usable prediction (for example no face was
    detected) and count as wrong, so accuracy is over all ``n``.
    """

    labels: tuple[str, ...]
    n: int
    missed: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    confusion: np.ndarray  # (C, C): rows true label, columns predicted; misses are not in it

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "n": self.n,
            "missed": self.missed,
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
        }


def classification_metrics(true: Sequence[int], predicted: Sequence[int], num_classes: int,
                           labels: Sequence[str], missed: int = 0) -> HeadMetrics:
    """Metrics from class indices. ``predicted`` may hold -1 for a miss (counted wrong)."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    hit = predicted >= 0
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true[hit], predicted[hit]), 1)
    n = len(true) + missed
    correct = int(np.trace(confusion))
    support = np.bincount(true, minlength=num_classes) + 0  # misses of class c still count in its support
    per_class_recall = np.divide(np.diag(confusion), support, out=np.zeros(num_classes), where=support > 0)
    present = support > 0
    balanced = float(per_class_recall[present].mean()) if present.any() else 0.0
    predicted_count = confusion.sum(0)
    precision = np.divide(np.diag(confusion), predicted_count, out=np.zeros(num_classes), where=predicted_count > 0)
    f1 = np.divide(2 * precision * per_class_recall, precision + per_class_recall,
                   out=np.zeros(num_classes), where=(precision + per_class_recall) > 0)
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    return HeadMetrics(tuple(labels), n, missed + int((~hit).sum()), correct / n if n else 0.0, balanced, macro_f1,
                       confusion)


def head_metrics(samples: Sequence[Sample], probabilities: np.ndarray | None, labels: Sequence[str],
                 head: str, missed_samples: Sequence[Sample] = ()) -> HeadMetrics:
    """Metrics of ``head`` for samples with a known label; rows of ``probabilities`` follow ``samples``.

    ``missed_samples`` are labelled photos with no prediction (no face found): they count as wrong.
    Labels the model does not know (a person absent from training) also count as wrong.
    """
    lookup = {label: i for i, label in enumerate(labels)}
    true: list[int] = []
    predicted: list[int] = []
    for row, sample in enumerate(samples):
        label = sample.label(head)
        if label is None:
            continue
        if label not in lookup:
            true.append(-1)
        else:
            true.append(lookup[label])
        predicted.append(int(np.argmax(probabilities[row])) if probabilities is not None else -1)
    missed = sum(1 for s in missed_samples if s.label(head) is not None)
    true_arr = np.asarray(true, dtype=np.int64)
    pred_arr = np.asarray(predicted, dtype=np.int64)
    unknown_truth = true_arr < 0
    # A true label outside the model's vocabulary can never be predicted: count it as a miss.
    return classification_metrics(true_arr[~unknown_truth], pred_arr[~unknown_truth], len(labels), labels,
                                  missed=missed + int(unknown_truth.sum()))

"""Per-head metrics against values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.data.manifest import Sample
from edgeface.core.errors import EdgefaceError
from edgeface.eval.metrics import classification_metrics, head_metrics


def test_classification_metrics_by_hand() -> None:
    # true a a a b b c, predicted a a b b (miss) c, plus one miss whose class the model does not know.
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, -1, 2], 3, ("a", "b", "c"), missed=1)
    assert m.n == 7 and m.missed == 2 and m.unknown_labels == 1 and m.correct == 4
    assert m.accuracy == pytest.approx(4 / 7)
    # recall a 2/3, b 1/2 (its miss counts), c 1
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precision a 1, b 1/2, c 1 -> F1 a 0.8, b 0.5, c 1
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert m.confusion.tolist() == [[2, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m.most_confused() == [("a", "b", 1)]


def test_classes_absent_from_the_truth_are_left_out_of_the_means() -> None:
    m = classification_metrics([0, 0, 1], [0, 2, 1], 3, ("a", "b", "c"))
    assert m.balanced_accuracy == pytest.approx((1 / 2 + 1) / 2)
    assert m.macro_f1 == pytest.approx((2 / 3 + 1) / 2)  # a: P 1, R 1/2


def test_empty_and_mismatched_input() -> None:
    m = classification_metrics([], [], 2, ("x", "y"))
    assert (m.n, m.accuracy, m.balanced_accuracy) == (0, 0.0, 0.0)
    with pytest.raises(EdgefaceError, match="2 true labels but 1 predictions"):
        classification_metrics([0, 1], [0], 2, ("x", "y"))


def _s(name: str, **labels: str | None) -> Sample:
    return Sample(Path(f"/photos/{name}.jpg"), **labels)


def test_head_metrics_counts_missing_faces_and_unknown_people() -> None:
    labels = ("ann", "bob")
    samples = [_s("1", identity="ann", emotion="happy"), _s("2", identity="bob"), _s("3", identity="cid"),
               _s("4", emotion="happy")]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]], np.float32)
    no_face = [_s("5", identity="bob"), _s("6", emotion="neutral")]
    m = head_metrics(samples, probs, labels, "identity", missed_samples=no_face)
    # labelled: 1 (right), 2 (wrong), 3 (cid: unknown person), 5 (no face, bob): 1 of 4 right
    assert (m.n, m.missed, m.unknown_labels) == (4, 2, 1)
    assert m.accuracy == pytest.approx(1 / 4)
    assert m.confusion.tolist() == [[1, 0], [1, 0]]
    assert m.balanced_accuracy == pytest.approx((1 + 0) / 2)  # bob's recall: 0 of 2 (one wrong, one no face)

    emotion = head_metrics(samples, np.array([[0.7, 0.3]] * 4), ("happy", "neutral"), "emotion",
                           missed_samples=no_face)
    assert (emotion.n, emotion.missed, emotion.accuracy) == (3, 1, pytest.approx(2 / 3))


def test_head_metrics_without_predictions_and_row_mismatch() -> None:
    samples = [_s("1", gender="male"), _s("2", gender="female")]
    m = head_metrics(samples, None, ("female", "male"), "gender")
    assert (m.n, m.missed, m.accuracy) == (2, 2, 0.0)
    with pytest.raises(EdgefaceError, match="2 samples but 1 rows"):
        head_metrics(samples, np.zeros((1, 2)), ("female", "male"), "gender")

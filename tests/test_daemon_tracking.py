"""Face tracks across frames and the smoothing of their labels (``edgeface.daemon.tracking``)."""

from __future__ import annotations

import numpy as np


def test_tracker_keeps_ids_and_smoothing_stops_a_one_frame_flip() -> None:
    from edgeface.daemon.tracking import Tracker
    from edgeface.runtime.labeler import Labeler
    from edgeface.core.spec import ModelSpec

    spec = ModelSpec(labels={"identity": ("ana", "bo"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")})
    labeler = Labeler(spec, identity_threshold=0.5)
    tracker = Tracker(iou=0.3, max_missed=1, smoothing=0.6)

    def outputs(p_ana: float, n: int = 1) -> dict[str, np.ndarray]:
        row = {"identity": [p_ana, 1 - p_ana], "emotion": [0.9, 0.1], "gender": [0.8, 0.2]}
        return {k: np.array([v] * n, np.float32) for k, v in row.items()}

    box = np.array([[100, 100, 200, 200]], float)
    names = []
    for step, p in enumerate([0.9, 0.9, 0.9, 0.2, 0.9]):  # one bad frame in the middle
        ids, smoothed = tracker.update(box + step * 5, outputs(p))
        assert ids == [1]
        names.append(labeler(smoothed)[0].identity.label)
    assert names == ["ana"] * 5

    # A second face far away gets its own track; the first survives one missed frame, then goes.
    ids, _ = tracker.update(np.array([[400, 100, 500, 200]], float), outputs(0.9))
    assert ids == [2] and {t.id for t in tracker.tracks} == {1, 2}
    tracker.update(np.array([[400, 100, 500, 200]], float), outputs(0.9))
    assert {t.id for t in tracker.tracks} == {2}


def test_tracker_without_smoothing_follows_the_raw_outputs() -> None:
    from edgeface.daemon.tracking import Tracker

    tracker = Tracker(smoothing=0.0)
    box = np.array([[0, 0, 50, 50]], float)
    tracker.update(box, {"identity": np.array([[0.9, 0.1]], np.float32)})
    _, smoothed = tracker.update(box, {"identity": np.array([[0.2, 0.8]], np.float32)})
    np.testing.assert_allclose(smoothed["identity"], [[0.2, 0.8]])

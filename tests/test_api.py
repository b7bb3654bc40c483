"""The Python API in ``edgeface/__init__.py``: load a bundle, label an image, run a pipeline on frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeface
from edgeface.data.manifest import load_dataset


@pytest.fixture(scope="module")
def photos(synthetic_csv: Path) -> list:
    """The first photo of each of the tiny model's six synthetic people."""
    first: dict[str, object] = {}
    for sample in load_dataset(synthetic_csv).samples:
        first.setdefault(sample.identity, sample)
    return list(first.values())


def test_importing_edgeface_loads_nothing() -> None:
    code = ("import sys, edgeface; print(sorted(m for m in ('numpy', 'cv2', 'tensorflow', 'edgeface.daemon', "
            "'edgeface.runtime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_label_an_image_gives_typed_results_by_the_identity_rule(tiny_bundles: dict[str, Path], photos) -> None:
    pipeline = edgeface.load(tiny_bundles["int8"], threads=1, gallery=None)
    assert isinstance(pipeline, edgeface.FacePipeline)
    labelled = 0
    for sample in photos:
        faces = pipeline.label(sample.image)  # a path
        assert faces == pipeline.label(edgeface.read_image(sample.image))  # the same as the decoded pixels
        for face in faces:
            assert isinstance(face, edgeface.FaceResult) and isinstance(face.labels, edgeface.FaceLabels)
            assert face.track == -1 and len(face.box) == 4
            identity = face.labels.identity
            assert identity.label in (*pipeline.spec.labels["identity"], "unknown")
            # the rule: a trained person only at or above the bundle's identity threshold
            assert (identity.label == "unknown") == (identity.score < pipeline.labeler.identity_threshold)
            assert face.labels.emotion.label in pipeline.spec.labels["emotion"]
        labelled += len(faces)
    assert labelled >= len(photos) - 1  # the synthetic people are drawn to be found
    blank = np.full((240, 320, 3), 127, np.uint8)
    assert pipeline.label(blank) == ()


def test_run_on_frames_tracks_faces_like_the_daemon(tiny_bundles: dict[str, Path], photos) -> None:
    frame = edgeface.read_image(photos[0].image)
    pipeline = edgeface.load(str(tiny_bundles["float32"]), threads=1, gallery=None)
    results = list(pipeline.run([frame] * 6, fps=10, start=1000.0))
    frames, end = results[:6], results[6:]
    assert [r.index for r in frames] == list(range(6)) and [r.time for r in frames][:2] == [1000.0, 1000.1]
    assert all(isinstance(r, edgeface.FrameResult) for r in results)
    tracks = [tuple(f.track for f in r.faces) for r in frames]
    assert tracks[0] and all(t == tracks[0] for t in tracks) and min(tracks[0]) >= 0  # one track, kept
    record = json.loads(json.dumps(frames[-1].to_dict()))  # what the daemon writes as a JSON line
    assert record["faces"][0]["identity"]["label"] == frames[-1].faces[0].labels.identity.label
    # one visit: it arrives once decided (a name, or unknown after `gather` faces), and leaves at the end
    events = [(e.kind, e.visit["visit"]) for r in results for e in r.events]
    assert [kind for kind, _ in events] == ["arrived", "left"] and events[0][1] == events[1][1]
    assert len(end) == 1 and end[0].index == 6 and not end[0].faces
    assert frames[-1].faces[0].visit == events[0][1]


def test_load_names_a_bad_bundle_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(edgeface.EdgefaceError, match="nothing.edgeface: bundle not found"):
        edgeface.load(tmp_path / "nothing.edgeface")

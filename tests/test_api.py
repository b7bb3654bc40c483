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


def test_run_gives_the_daemons_labels_and_visits_on_the_same_video(tiny_bundles: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """``edgeface.load(...).run(frames)`` and ``edgeface run`` on one video: the same tracks, labels and visit
    events, frame for frame (times compared from the first frame: the daemon's clock starts when it runs)."""
    from edgeface.eval.video import read_video

    from helpers.daemon import DaemonProcess
    from helpers.video_fixtures import synthetic_video

    video = tmp_path / "visit.mp4"
    synthetic_video(video, faces=2, seconds=3, seed=3)
    bundle = tiny_bundles["int8"]
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--no-http", "--gallery", "none",
                            "--threads", "1"])
    assert daemon.finish(120) == 0, daemon.log()
    frames = list(read_video(video))
    pipeline = edgeface.load(bundle, threads=1, gallery=None, camera=daemon_camera(daemon))
    api = [json.loads(json.dumps(r.to_dict())) for r in pipeline.run(frames, fps=10, start=0.0) if r.faces]
    api_events = [e.to_dict() for r in pipeline.run([], fps=10) for e in r.events]  # nothing left open
    assert api_events == []
    pipeline = edgeface.load(bundle, threads=1, gallery=None, camera=daemon_camera(daemon))
    events = [json.loads(json.dumps(e.to_dict())) for r in pipeline.run(frames, fps=10, start=0.0)
              for e in r.events]

    def relative(records: list[dict], keys: tuple[str, ...]) -> list[dict]:
        """Times from the first record's, and visit and stranger-group ids (made from the clock) as numbers in
        order of first use."""
        start = records[0]["time"] if records else 0.0
        visits: dict[str, int] = {}
        groups: dict[str, int] = {}
        out = []
        for record in json.loads(json.dumps(records)):
            for key in keys:
                if record.get(key) is not None:
                    record[key] = round(record[key] - start, 2)
            for item in [record, *record.get("faces", [])]:
                if "visit" in item:
                    item["visit"] = visits.setdefault(item["visit"], len(visits))
            if record.get("stranger"):
                record["stranger"] = groups.setdefault(record["stranger"], len(groups))
            out.append(record)
        return out

    daemon_frames = daemon.records()
    assert len(daemon_frames) == len(api) >= 25
    assert relative(daemon_frames, ("time",)) == relative(api, ("time",))
    daemon_events = daemon.events()
    assert [e["event"] for e in events].count("arrived") >= 2
    first = daemon_frames[0]["time"]
    assert relative([{"time": first}] + daemon_events, ("time", "first_seen", "last_seen"))[1:] == \
        relative([{"time": 0.0}] + events, ("time", "first_seen", "last_seen"))[1:]


def daemon_camera(daemon) -> str:
    """The camera name the daemon gave its visits (the host name, as no device is configured)."""
    return next(e["camera"] for e in daemon.events())


def test_the_api_never_imports_the_daemon(tiny_bundles: dict[str, Path], photos) -> None:
    code = (f"import sys, edgeface; p = edgeface.load({str(tiny_bundles['float32'])!r}, gallery=None); "
            f"img = edgeface.read_image({str(photos[0].image)!r}); list(p.run([img] * 3)); p.label(img); "
            "print(sorted(m for m in sys.modules if m.startswith('edgeface.daemon') or m == 'tensorflow'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

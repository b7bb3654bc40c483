"""Frame sources and capture (``edgeface.daemon.sources``): image folders, video files, cameras that are missing,
the newest frame only."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest


def _folder_with_images(folder: Path, count: int, corrupt: int | None = None) -> Path:
    from edgeface.core.imageio import write_image

    folder.mkdir()
    for i in range(count):
        path = folder / f"frame-{i:03d}.jpg"
        if i == corrupt:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        else:
            write_image(path, np.full((48, 64, 3), i * 10, np.uint8))
    return folder


def _drain(capture, limit: float = 10.0):
    from edgeface.daemon.sources import Capture

    frames = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        item = capture.get(0.5)
        if item is Capture.END:
            return frames
        if item is not None:
            frames.append(item)
    raise AssertionError("source did not end")


def test_folder_source_skips_and_counts_a_corrupt_image(tmp_path: Path) -> None:
    from edgeface.daemon.sources import Capture, open_source

    source = open_source(str(_folder_with_images(tmp_path / "frames", 5, corrupt=2)))
    capture = Capture(source, latest_only=False)
    capture.start()
    frames = _drain(capture)
    capture.stop()
    assert [f.index for f in frames] == [0, 1, 2, 3]  # every good image, in order, none dropped
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 10, 30, 40]
    assert capture.stats.corrupt == 1 and capture.stats.dropped == 0


def test_video_file_source_ends_and_loops(tmp_path: Path) -> None:
    import cv2

    from edgeface.daemon.sources import Capture, open_source

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    capture = Capture(open_source(str(path)), latest_only=False)
    capture.start()
    frames = _drain(capture)
    capture.stop()
    assert len(frames) == 6 and frames[0].image.shape == (48, 64, 3)

    looping = Capture(open_source(str(path), loop=True), latest_only=False)
    looping.start()
    got = [looping.get(2.0) for _ in range(15)]
    looping.stop()
    assert all(f is not None and f is not Capture.END for f in got)  # past the 6 frames and still going


def test_live_capture_keeps_only_the_newest_frame(tmp_path: Path) -> None:
    from edgeface.daemon.sources import Capture, open_source

    source = open_source(str(_folder_with_images(tmp_path / "frames", 4)), loop=True)
    capture = Capture(source, latest_only=True)
    capture.start()
    taken = []
    for _ in range(5):
        time.sleep(0.05)  # a slow pipeline
        taken.append(capture.get(1.0))
    capture.stop()
    indices = [f.index for f in taken]
    assert indices == sorted(indices) and indices[-1] - indices[0] > 4  # it skipped ahead
    assert capture.stats.dropped >= indices[-1] - len(indices)  # the skipped ones were counted


@pytest.mark.parametrize("uri, message", [
    ("/no/such/clip.mp4", "no such file or folder"),
    ("ftp://camera/stream", "unsupported stream scheme"),
    ("picamera2:x", "picamera2 takes a camera number"),
])
def test_open_source_rejects_bad_sources(uri: str, message: str) -> None:
    from edgeface.daemon.sources import SourceError, open_source

    with pytest.raises(SourceError, match=message):
        open_source(uri)


def test_undecodable_video_is_a_source_error(tmp_path: Path) -> None:
    from edgeface.daemon.sources import Capture, SourceError, open_source

    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 4096)
    capture = Capture(open_source(str(path)), latest_only=False)
    capture.start()
    with pytest.raises(SourceError, match="not a video"):
        capture.get(5.0)
    capture.stop()


def test_missing_camera_is_retried_not_fatal(tmp_path: Path) -> None:
    from edgeface.daemon.sources import Capture, open_source

    capture = Capture(open_source("/dev/video-edgeface-missing"), latest_only=True, retry_max=0.2)
    capture.start()
    assert capture.get(1.0) is None  # no frame, no exception: it keeps trying
    assert not capture.stats.connected and "cannot open" in capture.stats.last_error
    capture.stop()

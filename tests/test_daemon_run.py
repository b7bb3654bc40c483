"""The real ``edgeface run`` in a subprocess: a video that ends, signals, HTTP, a stalled reader, a network
camera that vanishes and returns, corrupt frames, systemd notify. Model: the tiny int8 bundle; video: the
project's synthetic people (no shared data needed)."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.camera import MjpegCamera
from helpers.daemon import DaemonProcess, http_get, metric
from helpers.video_fixtures import synthetic_video

FRAMES = 30


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps of three synthetic people on a 640x480 frame (mp4v)."""
    path = tmp_path_factory.mktemp("daemon-video") / "three.mp4"
    synthetic_video(path, faces=3, seconds=FRAMES / 10, seed=0)
    return path


@pytest.fixture(scope="module")
def bundle(tiny_bundles: dict[str, Path]) -> Path:
    return tiny_bundles["int8"]


def video_frames(path: Path, count: int = 10) -> list[np.ndarray]:
    import itertools

    from edgeface.eval.video import read_video

    return list(itertools.islice(read_video(path), count))


def check_record(record: dict, labels: dict[str, tuple[str, ...]]) -> None:
    assert set(record) == {"time", "frame", "faces"}
    assert abs(record["time"] - time.time()) < 600 and isinstance(record["frame"], int)
    for face in record["faces"]:
        assert {"box", "track", "identity", "emotion", "gender"} <= set(face) <= {"box", "track", "identity",
                                                                                "emotion", "gender", "visit"}
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 and isinstance(face["track"], int)
        for head in ("identity", "emotion", "gender"):
            allowed = labels[head] + (("unknown",) if head == "identity" else ())
            assert face[head]["label"] in allowed and 0.0 <= face[head]["score"] <= 1.0


def test_video_file_runs_to_its_end_and_exits_0(bundle: Path, video: Path, tmp_path: Path) -> None:
    from edgeface.core.bundle import load_bundle

    labels = load_bundle(bundle).spec.labels
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--http-port", "0"], cwd=tmp_path)
    assert daemon.finish(120) == 0, daemon.log()
    records = daemon.records()
    assert len(records) >= FRAMES * 0.9  # files hand over every frame: nothing dropped
    assert [r["frame"] for r in records] == sorted({r["frame"] for r in records})
    for record in records:
        check_record(record, labels)
        assert record["faces"]
    three = [r for r in records if len(r["faces"]) == 3]
    assert len(three) >= 0.8 * len(records)
    tracks = {f["track"] for r in three for f in r["faces"]}
    assert len(tracks) <= 5, "three people drifting slowly should keep about three tracks"
    events = daemon.events()  # each visit arrives once, and leaves once, when the video ends
    arrived = [e["visit"] for e in events if e["event"] == "arrived"]
    assert 3 <= len(arrived) == len(set(arrived)) <= len(tracks)
    assert sorted(e["visit"] for e in events if e["event"] == "left") == sorted(arrived)
    assert all(e["camera"] and e["first_seen"] <= e["last_seen"] for e in events)
    assert "source ended" in "\n".join(daemon.stderr)
    assert list(tmp_path.iterdir()) == []  # privacy: nothing written without --snapshots


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_stops_within_2s_with_output_flushed(bundle: Path, video: Path, sig: int) -> None:
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--loop", "--http-port", "0"])
    try:
        daemon.wait_for(lambda: len(daemon.stdout) >= 20, 60, "20 records")
        code, elapsed = daemon.stop(sig)
    finally:
        daemon.kill()
    assert code == 0 and elapsed < 2.0, (code, elapsed, daemon.log())
    records = daemon.lines()  # every line complete JSON (frames and visit events): nothing cut off mid-line
    final = next(line for line in daemon.stderr if "stopped:" in line)
    sent = int(final.split("jsonl ")[1].split(" sent")[0])
    assert sent == len(records) and "jsonl %d sent 0 dropped" % sent in final  # all buffered records flushed


def test_http_endpoints_of_a_running_daemon(bundle: Path, video: Path) -> None:
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--loop", "--http-port", "0"])
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 60, "healthy")
        status, body = http_get(port, "/healthz")
        health = json.loads(body)
        assert health["status"] == "ok" and health["source_connected"] and health["frames"] > 0
        status, body = http_get(port, "/labels")
        latest = json.loads(body)
        assert status == 200 and latest["faces"] and {"box", "identity", "track"} <= set(latest["faces"][0])
        status, text = http_get(port, "/metrics")
        assert status == 200 and "# TYPE edgeface_frames_processed_total counter" in text
        assert metric(text, "edgeface_frames_processed_total") > 0
        assert metric(text, "edgeface_stage_seconds_sum", 'stage="infer"') > 0
        assert metric(text, "edgeface_healthy") == 1 and metric(text, "process_threads") > 1
        assert http_get(port, "/nope")[0] == 404
        code, _ = daemon.stop()
    finally:
        daemon.kill()
    assert code == 0


def test_a_stalled_stdout_reader_does_not_stall_the_pipeline(bundle: Path, video: Path, tmp_path: Path) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{bundle}"\nsource = "{video}"\n[capture]\nloop = true\n[jsonl]\nqueue = 4\n'
                      '[http]\nport = 0\n')
    daemon = DaemonProcess(["--config", str(config)], read_stdout=False)  # nobody reads: the pipe fills up
    try:
        port = daemon.http_port()

        def dropped() -> float:
            return metric(http_get(port, "/metrics")[1], "edgeface_sink_dropped_total", 'sink="jsonl"')

        daemon.wait_for(lambda: dropped() > 0, 90, "jsonl records to be dropped")
        before = metric(http_get(port, "/metrics")[1], "edgeface_frames_processed_total")
        time.sleep(1.0)
        text = http_get(port, "/metrics")[1]
        assert metric(text, "edgeface_frames_processed_total") > before + 5  # still labelling at full speed
        assert metric(text, "edgeface_sink_queued", 'sink="jsonl"') <= 4  # and the buffer stays bounded
    finally:
        daemon.kill()


def test_network_camera_absent_at_start_lost_mid_run_and_back(bundle: Path, video: Path, tmp_path: Path) -> None:
    camera = MjpegCamera(video_frames(video), fps=15)
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{bundle}"\nsource = "{camera.url}"\n[capture]\nretry_max = 0.5\n'
                      '[http]\nport = 0\nstale_after = 2.0\n[jsonl]\npath = "labels.jsonl"\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        port = daemon.http_port()
        status, body = http_get(port, "/healthz")  # no camera yet: running, but unhealthy
        assert status == 503 and json.loads(body)["source_connected"] is False
        camera.start()
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 30, "healthy once the camera is up")
        camera.stop()  # unplugged mid-run
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 503, 30, "unhealthy after the camera left")
        assert daemon.proc.poll() is None
        camera.start()
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 30, "healthy after reconnecting")
        text = http_get(port, "/metrics")[1]
        assert metric(text, "edgeface_source_reconnects_total") >= 1
        code, _ = daemon.stop()
    finally:
        camera.stop()
        daemon.kill()
    assert code == 0
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    frames = [record for record in map(json.loads, lines) if "frame" in record]  # (and visit events)
    assert frames and all(record["faces"] for record in frames)


def test_corrupt_frames_are_skipped_and_counted(bundle: Path, video: Path, tmp_path: Path) -> None:
    from edgeface.core.imageio import write_image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video_frames(video, 6)):
        write_image(folder / f"{i:02d}.jpg", frame)
    (folder / "03.jpg").write_bytes((folder / "03.jpg").read_bytes()[:500])  # truncated JPEG
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(folder), "--no-http"])
    assert daemon.finish(60) == 0, daemon.log()
    assert len(daemon.records()) == 5
    assert "1 corrupt" in next(line for line in daemon.stderr if "stopped:" in line)


def test_systemd_readiness_and_watchdog_pings(bundle: Path, video: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(30)
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--loop", "--http-port", "0"],
                           env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    try:
        messages = [server.recv(4096).decode()]
        assert messages[0].startswith("READY=1\n") and f"MAINPID={daemon.proc.pid}" in messages[0]
        pings = 0
        deadline = time.monotonic() + 5
        while pings < 3 and time.monotonic() < deadline:
            pings += server.recv(4096) == b"WATCHDOG=1"
        assert pings == 3  # every 0.2 s, half the watchdog interval
        daemon.stop()
        rest = []
        server.settimeout(2)
        try:
            while True:
                rest.append(server.recv(4096).decode())
        except socket.timeout:
            pass
        assert "STOPPING=1" in rest
    finally:
        server.close()
        daemon.kill()
    assert daemon.proc.returncode == 0


def test_snapshots_only_when_asked(bundle: Path, video: Path, tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    daemon = DaemonProcess(["--bundle", str(bundle), "--source", str(video), "--no-http", "--snapshots",
                            str(folder)], cwd=tmp_path)
    assert daemon.finish(60) == 0, daemon.log()
    # One frame with faces per 10 s by default: this 3 s video gives one JPEG and its JSON record.
    assert sorted(p.suffix for p in folder.iterdir()) == [".jpg", ".json"]
    record = json.loads(next(folder.glob("*.json")).read_text())
    assert record["faces"] and sorted(p.name for p in tmp_path.iterdir()) == ["snaps"]

"""The daemon's parts without a model: config validation, sources and capture, sinks, systemd notify."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.daemon.config import load_config
from edgeface.core.errors import ConfigError

# --- configuration -----------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_paths_resolve_against_its_folder_and_flags_override(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = write(tmp_path / "conf" / "edgeface.toml", """
bundle = "model.edgeface"
source = "clips/door.mp4"
threads = 3
[http]
port = 9000
[jsonl]
path = "logs/labels.jsonl"
[tracking]
lost_after = 0.8
""")
    settings = load_config(config, {"http.port": 9100, "threads": None})
    assert settings.bundle == tmp_path / "conf" / "model.edgeface"
    assert settings.source == str(tmp_path / "conf" / "clips" / "door.mp4")
    assert settings.jsonl.path == str(tmp_path / "conf" / "logs" / "labels.jsonl")
    assert (settings.threads, settings.http.port, settings.http.host) == (3, 9100, "127.0.0.1")
    assert settings.tracking.lost_after == 0.8
    assert settings.jsonl_on and not settings.mqtt_on  # no other sink: JSON lines


def test_config_camera_sources_are_not_paths(tmp_path: Path) -> None:
    for source, expected in ((0, "0"), ("/dev/video0", "/dev/video0"), ("rtsp://cam/1", "rtsp://cam/1"),
                             ("picamera2", "picamera2")):
        value = source if isinstance(source, int) else f'"{source}"'
        config = write(tmp_path / "c.toml", f'bundle = "b.edgeface"\nsource = {value}\n')
        assert load_config(config).source == expected


def test_config_mqtt_host_turns_stdout_off(tmp_path: Path) -> None:
    settings = load_config(None, {"bundle": "/b.edgeface", "source": "0", "mqtt.host": "broker"})
    assert settings.mqtt_on and not settings.jsonl_on
    both = load_config(None, {"bundle": "/b.edgeface", "source": "0", "mqtt.host": "broker", "jsonl.enabled": True})
    assert both.mqtt_on and both.jsonl_on


@pytest.mark.parametrize("text, message", [
    ('source = 0\n', "no bundle given"),
    ('bundle = "b"\n', "no source given"),
    ('bundle = "b"\nsource = 0\nthreds = 2\n', "unknown key 'threds'"),
    ('bundle = "b"\nsource = 0\n[http]\nprot = 1\n', "unknown key 'prot' in [http]"),
    ('bundle = "b"\nsource = 0\n[http]\nport = "x"\n', "[http] port must be an integer, got 'x'"),
    ('bundle = "b"\nsource = 0\n[http]\nport = 70000\n', "[http] port must be in [0, 65535], got 70000"),
    ('bundle = "b"\nsource = 0\n[mqtt]\nenabled = true\n', "[mqtt] is enabled but has no host"),
    ('bundle = "b"\nsource = 0\n[jsonl]\npublish = "sometimes"\n', "publish must be one of every, change"),
    ('bundle = "b"\nsource = 0\n[capture]\nloop = 1\n', "[capture] loop must be true or false, got 1"),
    ('bundle = "b"\nsource = 0\nhttp = 3\n', "[http] must be a table"),
    ('bundle = "b"\nsource = [0]\n', "source must be a camera index, a path or a URL"),
    ('bundle = "b"\nsource = 0\n[http\n', "not valid TOML"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert message in str(info.value) and str(config) in str(info.value)
    assert "\n" not in str(info.value)


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "edgeface" / "daemon" / "example.toml"
    settings = load_config(example)
    assert settings.bundle.name == "model.edgeface" and settings.http.port == 8321


def test_cli_run_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    from edgeface.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["run", "--bundle", str(tmp_path / "none.edgeface"), "--source", "0"])
    assert missing.exit_code == 2
    assert missing.output.strip().startswith("error:") and "bundle not found" in missing.output
    bad = write(tmp_path / "bad.toml", 'bundle = "b"\nsource = 0\n[http]\nport = -1\n')
    result = runner.invoke(app, ["run", "--config", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "port must be in" in result.output
    corrupt = tmp_path / "corrupt.edgeface"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    result = runner.invoke(app, ["run", "--bundle", str(corrupt), "--source", "0"])
    assert result.exit_code == 2 and "not a readable bundle" in result.output


# --- sources and capture -----------------------------------------------------------------------------------


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


# --- sinks -------------------------------------------------------------------------------------------------


def _published(index: int, faces: int = 1):
    from edgeface.core.results import FaceLabels, Prediction
    from edgeface.daemon.records import Published
    from edgeface.recognition.records import FaceResult, FrameResult

    labels = FaceLabels(Prediction("ana", 0.9), Prediction("happy", 0.8), Prediction("female", 0.7))
    result = FrameResult(time=1000.0 + index, index=index,
                         faces=tuple(FaceResult((1.0, 2.0, 3.0, 4.0), t + 1, labels) for t in range(faces)))
    return Published(result, changed=True)


def test_jsonl_file_sink_rotates_and_keeps_backups(tmp_path: Path) -> None:
    from edgeface.daemon.sinks.jsonl import JsonLinesSink

    path = tmp_path / "out" / "labels.jsonl"
    sink = JsonLinesSink(str(path), max_bytes=2000, backups=2, queue=1000)
    for i in range(60):
        sink.publish(_published(i))
    sink.close(5.0)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["labels.jsonl", "labels.jsonl.1", "labels.jsonl.2"]
    lines = [json.loads(line) for p in (path.with_name("labels.jsonl.1"), path) for line in p.read_text().splitlines()]
    assert lines[-1]["frame"] == 59 and lines[-1]["faces"][0]["identity"] == {"label": "ana", "score": 0.9}
    assert [r["frame"] for r in lines] == list(range(lines[0]["frame"], 60))  # no gaps in what was kept
    assert sink.sent == 60 and sink.dropped == 0


def test_publish_modes() -> None:
    item = _published(0, faces=0)
    assert not item.wanted("every") and item.wanted("change")  # empty frame: only a change is news
    assert _published(1).wanted("every")


def test_http_server_port_in_use_is_a_config_error() -> None:
    from edgeface.daemon.server import HttpServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            HttpServer("127.0.0.1", port)


def test_http_server_answers_only_once_started() -> None:
    """The daemon starts the server after its other sinks exist, so the first /metrics already lists them."""
    import urllib.request

    from edgeface.daemon.server import HttpServer

    server = HttpServer("127.0.0.1", 0)
    server.route("GET", "/metrics", lambda request: (200, {}, "edgeface_up 1\n"))
    try:
        url = f"http://127.0.0.1:{server.address[1]}/metrics"
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=2) as early:
            early.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            early.settimeout(0.3)
            with pytest.raises(TimeoutError):  # bound and listening, but not answering yet
                early.recv(1)
            server.start()
            early.settimeout(5)
            assert early.recv(64).startswith(b"HTTP/1.1 200")  # the waiting request is answered, not refused
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.read() == b"edgeface_up 1\n"
    finally:
        server.close(2)
    never_started = HttpServer("127.0.0.1", 0)
    never_started.close(2)  # returns at once: there is no serve loop to wait for


# --- systemd notify ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_speaks_the_notify_socket_protocol(tmp_path: Path, abstract: bool) -> None:
    from edgeface.daemon.service import SystemdNotifier

    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"edgeface-test-{os.getpid()}-{threading.get_ident()}"
        server.bind("\0" + name)
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        server.bind(address)
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000",
                                    "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval == pytest.approx(0.05)
        notifier.ready("reading camera 0")
        assert server.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=reading camera 0"]
        notifier.watchdog()  # too soon after READY: no ping
        time.sleep(0.06)
        notifier.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"
        notifier.stopping()
        assert server.recv(4096) == b"STOPPING=1"
        notifier.close()
    finally:
        server.close()


def test_notifier_is_silent_without_systemd_and_ignores_another_pids_watchdog() -> None:
    from edgeface.daemon.service import SystemdNotifier

    assert not SystemdNotifier({}).notify("READY=1")
    other = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval == 0.0
    assert not other.notify("READY=1")  # unreachable socket: no exception

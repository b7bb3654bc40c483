"""Outputs on a full disk: JSON lines whole and once (no duplicate, no cut line, lost ones counted), snapshots
whole or absent, warnings throttled, /healthz naming the failing sink; a snapshots folder that is a file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers.daemon import DaemonProcess, http_get, metric

needs_mount = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                                 reason="mounts a small tmpfs to fill it: needs root")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte; return the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@needs_mount
def test_full_disk_loses_lines_counted_never_cut_or_repeated(fault_bundle: Path, fault_video: Path, tmp_path: Path,
                                                            small_disk: Path) -> None:
    out = small_disk / "labels.jsonl"
    snapshots = small_disk / "snapshots"
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{fault_bundle}"\nsource = "{fault_video}"\n[capture]\nloop = true\nfps = 20\n'
                      f'[jsonl]\npath = "{out}"\nqueue = 20\nunhealthy_after = 1\n'
                      f'[snapshots]\ndir = "{snapshots}"\ninterval = 0.2\nmax_files = 2\n[http]\nport = 0\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: out.exists() and out.stat().st_size > 2000, 60, "lines on the small disk")
        filler = _fill(small_disk)
        time.sleep(4)  # a full disk for 4 s at 20 fps: 80 lines for a buffer of 20
        status, body = http_get(port, "/healthz")
        health = json.loads(body)
        assert status == 503 and "jsonl" in health["reason"], health
        assert health["sinks"]["jsonl"]["status"] == "failing"
        filler.unlink()  # space comes back
        daemon.wait_for(lambda: http_get(port, "/healthz")[0] == 200, 20, "healthy again once space is back")
        sent_before_stop = metric(http_get(port, "/metrics")[1], "edgeface_sink_sent_total", 'sink="jsonl"')
        assert sent_before_stop > 0
    finally:
        code, _ = daemon.stop()
    assert code == 0
    raw = out.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # every line whole JSON
    frames = [line["frame"] for line in lines if "frame" in line]  # (the others are visit events)
    assert len(frames) == len(set(frames)), "a line was written twice"
    assert frames == sorted(frames)
    summary = json.loads(next(line for line in daemon.stderr if " summary " in line).split(" summary ", 1)[1])
    counts = re.search(r"jsonl (\d+) sent (\d+) dropped", next(line for line in daemon.stderr if "stopped:" in line))
    sent, dropped = int(counts.group(1)), int(counts.group(2))
    assert sent == len(lines)
    assert dropped > 0
    # every frame of this video has faces: each processed frame and each visit event is a line on disk or
    # counted as dropped
    assert sent + dropped == summary["frames"] + sum(summary["visits"].values())
    # snapshots: whole pairs or nothing, no empty file, no leftover temporary file
    names = os.listdir(snapshots)
    assert not [n for n in names if n.endswith(".part")]
    assert all((snapshots / n).stat().st_size > 0 for n in names)
    jpegs = {n[:-4] for n in names if n.endswith(".jpg")}
    assert jpegs and jpegs == {n[:-5] for n in names if n.endswith(".json")}
    warnings = [line for line in daemon.stderr if "not written" in line or "jsonl sink:" in line]
    assert len(warnings) <= 4, warnings  # once a minute per kind, with a count, not once per frame


def test_snapshots_folder_that_is_a_file_is_one_line_exit_2(fault_bundle: Path, fault_video: Path,
                                                            tmp_path: Path) -> None:
    (tmp_path / "shots").write_text("not a folder")
    daemon = DaemonProcess(["--bundle", str(fault_bundle), "--source", str(fault_video), "--no-http",
                            "--snapshots", str(tmp_path / "shots")])
    assert daemon.finish(60) == 2
    assert daemon.stderr[-1].startswith("error: ") and "is a file, not a folder" in daemon.stderr[-1]
    assert not any("Traceback" in line for line in daemon.stderr)

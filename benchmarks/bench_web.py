"""What the web page costs the daemon: frames per second and peak RSS with the page off, on but closed, and
open, measured side by side in one run.

The real ``edgeface run`` in a subprocess (2 inference threads, HTTP on in every case, JSON lines to
/dev/null) on a 640x480 video of three synthetic people the model does not know, looping at full speed, so
every face is unknown and the page keeps crops of each (its most expensive case). The model is bench_daemon's
MobileNetV2 96x96 full int8 with untrained heads (needs ../shared for the ImageNet weights). Conditions:

* ``off``: no ``--web``;
* ``closed``: ``--web``, nobody looks: the page keeps unknown faces, encodes no frame;
* ``open``: ``--web`` and a client that does what the open live view's script does: ``/ui/api/live`` at the
  page's default 4 per second, then that frame's JPEG.

The three alternate, ``ROUNDS`` times, and the medians are reported: this 2-core machine is shared and noisy,
so only ratios measured together mean anything.

    pytest benchmarks/bench_web.py -s          # about 3 minutes; writes results/web-page.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from bench_daemon import REPO, daemon_bundle, model_cache, people_csv  # noqa: F401
from bench_daemon import pytestmark  # noqa: F401  (skipped without ../shared, as bench_daemon)
from helpers.daemon import http_get, read_summary, status_when_listening
from helpers.ports import free_port
from results import write_result

ROUNDS = 3
FRAMES = 1500
CONDITIONS = ("off", "closed", "open")
LIVE_FPS = 4.0  # [web] live_fps's default: what an open page asks for


@pytest.fixture(scope="module")
def strangers_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeface.data.synthetic import make_people
    from edgeface.eval.video import side_by_side, synthetic_actor, write_scene

    path = tmp_path_factory.mktemp("bench-web") / "three-strangers.avi"
    actors = [synthetic_actor(look, 100.0, seed=3) for look in make_people(9, seed=0)[6:9]]  # not the test model's
    write_scene(path, side_by_side(actors, seconds=10, face_width=100.0, hold=5.0, seed=3))
    return path


class LiveViewer(threading.Thread):
    """The open page's requests: the newest frame's faces LIVE_FPS times a second, then that frame's JPEG."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.jpegs = 0

    def run(self) -> None:
        shown = None
        while not self.stop.wait(1.0 / LIVE_FPS):
            try:
                status, body = http_get(self.port, "/ui/api/live")
            except OSError:  # the daemon is not listening (yet, or any more)
                continue
            if status != 200:
                continue
            frame = json.loads(body).get("frame")
            if frame is None or frame == shown:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ui/live.jpg?frame={frame}",
                                            timeout=5) as response:
                    response.read()
                self.jpegs += 1
                shown = frame
            except OSError:
                pass


def run(bundle: Path, video: Path, condition: str, state: Path) -> dict:
    port = free_port()
    args = [sys.executable, "-m", "edgeface", "run", "--bundle", str(bundle), "--source", str(video), "--loop",
            "--max-frames", str(FRAMES), "--threads", "2", "--http-port", str(port)]
    if condition != "off":
        args.append("--web")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGEFACE_STATE_DIR": str(state)}
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    viewer = None
    if condition == "open":
        deadline = time.monotonic() + 60
        while status_when_listening(port, "/healthz") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        viewer = LiveViewer(port)
        viewer.start()
    _, stderr = proc.communicate(timeout=900)
    if viewer is not None:
        viewer.stop.set()
        viewer.join(5)
    assert proc.returncode == 0, stderr[-2000:]
    summary = read_summary(stderr.splitlines())
    summary["jpegs"] = viewer.jpegs if viewer is not None else 0
    return summary


def test_web_page_cost(people_csv: Path, model_cache: Path, strangers_video: Path,  # noqa: F811
                       tmp_path: Path) -> None:
    bundle = daemon_bundle("mobilenetv2-96", people_csv, model_cache)
    results: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    for round_ in range(ROUNDS):
        for condition in CONDITIONS:
            results[condition].append(run(bundle, strangers_video, condition, tmp_path / f"state-{round_}"))
    base = statistics.median(r["fps"] for r in results["off"])
    rows = []
    for condition in CONDITIONS:
        fps = statistics.median(r["fps"] for r in results[condition])
        rss = statistics.median(r["peak_rss_bytes"] for r in results[condition]) / 2**20
        jpegs = statistics.median(r["jpegs"] for r in results[condition])
        # The page's work on the pipeline thread is in "publish" (sinks, then frame observers), per frame.
        publish = statistics.median(r["stage_ms"]["publish"] for r in results[condition])
        rows.append({"page": condition, "fps": round(fps, 1), "fps_vs_off": round(fps / base, 3),
                     "publish_ms": publish, "peak_rss_mib": round(rss, 1), "jpegs_served": jpegs})
    print(f"\nweb page cost: MobileNetV2 96 int8, 3 unknown faces per frame, {FRAMES} frames x {ROUNDS} rounds "
          "(medians)")
    print("| page | fps | vs off | publish stage | peak RSS | JPEGs served |\n| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['page']} | {row['fps']} | {row['fps_vs_off']:.2f} | {row['publish_ms']:.2f} ms | "
              f"{row['peak_rss_mib']} MiB | {row['jpegs_served']:.0f} |")
    assert all(r["jpegs"] == 0 for r in results["closed"] + results["off"])
    assert all(r["jpegs"] > 0 for r in results["open"])
    write_result("web-page", {"frames": FRAMES, "rounds": ROUNDS, "live_fps": LIVE_FPS, "rows": rows,
                              "runs": {c: [{k: r[k] for k in ("fps", "peak_rss_bytes", "jpegs", "stage_ms")}
                                           for r in results[c]] for c in CONDITIONS}})

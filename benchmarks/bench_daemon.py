"""Benchmarks of ``edgeface run``: end-to-end FPS, per-stage latency and peak RSS on 640x480 video, and a soak.

The videos composite real faces from ../shared onto 640x480 frames (1 and 3 faces; ``edgeface.eval.video``).
The models have untrained heads (latency does not depend on head weights), converted to full int8 with
``convert_model``: MobileNetV2 (the shared ImageNet weights) at 96x96 and 224x224, and dlib-resnet (dlib's
weights, the default backbone, aligned on the face mesh). The daemon runs as a real subprocess with 2
inference threads, JSON lines to /dev/null; its own end-of-run summary gives fps (first to last frame), mean
milliseconds per stage (capture runs on its own thread, in parallel), and peak RSS (VmHWM).

    pytest benchmarks -k bench_daemon -m "not slow" -s             # MobileNetV2-96 and dlib-resnet (about 4 min)
    pytest benchmarks -k "bench_daemon and throughput" -m slow -s  # MobileNetV2-224 (builds the 224 model)
    pytest benchmarks -k "bench_daemon and soak" -m slow -s        # 10 minutes at full speed (EDGEFACE_SOAK_SECONDS)

Figures go to ``results/daemon-fps-<model>.json`` and ``results/daemon-soak.json``. Built models are cached in
pytest's cache folder (``.pytest_cache``, never committed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.daemon import http_get, read_summary, status_when_listening
from helpers.ports import free_port
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA = SHARED / "data" / "celeba-299" / "labels.csv"
WEIGHTS = SHARED / "weights"

pytestmark = pytest.mark.skipif(not (CELEBA.is_file() and WEIGHTS.is_dir()),
                                reason=f"shared data and weights not found at {SHARED} (set EDGEFACE_SHARED)")

VIDEO_FRAMES = 100
RUN_FRAMES = 300


@pytest.fixture(scope="module")
def people_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 6 people with the most photos (as the tests' ``celeba_people_csv``)."""
    from edgeface.data.manifest import load_dataset, write_csv

    data = load_dataset(CELEBA)
    counts = data.counts("identity")
    people = sorted(counts, key=lambda p: (-counts[p], p))[:6]
    return write_csv([s for s in data.samples if s.identity in people], tmp_path_factory.mktemp("bench") / "six.csv")


@pytest.fixture(scope="module")
def videos(people_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from edgeface.eval.video import face_photos, photo_actor, side_by_side, write_scene

    photos = face_photos(people_csv, per_person=6)
    people = sorted(photos, key=lambda p: (-len(photos[p]), p))
    folder = tmp_path_factory.mktemp("bench-videos")
    out = {}
    for faces in (1, 3):
        out[faces] = folder / f"faces-{faces}.mp4"
        actors = [photo_actor(person, photos[person]) for person in people[:faces]]
        write_scene(out[faces], side_by_side(actors, seconds=VIDEO_FRAMES / 10, face_width=120.0, hold=2.0))
    return out


# The models measured: (backbone, input size), each a bundle built once and cached.
MODELS = {"mobilenetv2-96": ("mobilenetv2", 96), "mobilenetv2-224": ("mobilenetv2", 224),
          "dlib-resnet-150": ("dlib-resnet", 150)}


def daemon_bundle(model: str, people_csv: Path, cache: Path) -> Path:
    """``model`` (a key of MODELS) with untrained heads, full int8; built once and cached."""
    bundle = cache / f"{model}-int8.edgeface"
    if bundle.is_file():
        return bundle
    os.environ.setdefault("EDGEFACE_WEIGHTS_DIR", str(WEIGHTS))
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model
    from edgeface.train.trainer import TrainConfig, train

    backbone, size = MODELS[model]
    trained = train(TrainConfig(data=people_csv, out=cache / f"model-{model}", backbone=backbone, input_size=size,
                                frozen_epochs=0, epochs=0, embedding_size=64 if backbone == "mobilenetv2" else 128,
                                verbose=0), on_log=lambda _: None).model_path
    (result,) = convert_model(trained, ["int8"], bundle, ConvertOptions(min_agreement=0.0, representative_size=100,
                                                                            verify_size=30),
                              progress=False, on_log=lambda _: None)
    return result.bundle_path


@pytest.fixture(scope="module")
def model_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("edgeface-bench-daemon")) if cache else tmp_path_factory.mktemp("bench-models")


def run_daemon(bundle: Path, video: Path, frames: int = RUN_FRAMES, threads: int = 2) -> dict:
    """Run ``edgeface run`` over ``frames`` frames of the looping video; return its end-of-run summary."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "edgeface", "run", "--bundle", str(bundle), "--source", str(video),
                           "--loop", "--max-frames", str(frames), "--threads", str(threads), "--no-http"],
                          env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return read_summary(proc.stderr.splitlines())


@pytest.mark.parametrize("faces", [1, 3])
@pytest.mark.parametrize("model", ["mobilenetv2-96", pytest.param("mobilenetv2-224", marks=pytest.mark.slow),
                                   "dlib-resnet-150"])
def test_throughput(benchmark, model_cache: Path, people_csv: Path, videos: dict[int, Path], model: str,
                    faces: int, result_rows) -> None:
    bundle = daemon_bundle(model, people_csv, model_cache)
    summary = benchmark.pedantic(run_daemon, args=(bundle, videos[faces]), rounds=1, iterations=1)
    backbone, size = MODELS[model]
    benchmark.extra_info.update({"backbone": backbone, "input": size, "faces": faces, **summary})
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary["stage_ms"].items())
    print(f"\n{model} int8, 2 threads, {faces} face(s): {summary['fps']} fps; ms/frame: {stages}; "
          f"peak RSS {summary['peak_rss_bytes'] / 2**20:.0f} MiB; threads {summary['threads']}")
    assert summary["frames"] == RUN_FRAMES and summary["faces"] >= 0.9 * faces * RUN_FRAMES
    result_rows.add(f"daemon-fps-{model}", {"faces_per_frame": faces, **summary}, backbone=backbone,
                    input_size=size, heads="untrained", precision="int8", threads=2,
                    video=f"640x480 mp4 of real faces from ../shared, {VIDEO_FRAMES} frames looped")


@pytest.mark.slow
def test_soak(benchmark, model_cache: Path, people_csv: Path, videos: dict[int, Path], tmp_path: Path) -> None:
    """Full speed for EDGEFACE_SOAK_SECONDS (600): RSS grows under 5% after warm-up, threads and open files
    stay constant. /metrics and /healthz are scraped every 5 s, as Prometheus and a health check would."""
    from edgeface.daemon.stats import process_status

    seconds = float(os.environ.get("EDGEFACE_SOAK_SECONDS", "600"))
    warm_up = min(60.0, seconds / 5)
    bundle = daemon_bundle("mobilenetv2-96", people_csv, model_cache)
    jsonl, log = tmp_path / "labels.jsonl", tmp_path / "daemon.log"
    port = free_port()
    with log.open("w") as stderr:
        daemon = subprocess.Popen([sys.executable, "-m", "edgeface", "run", "--bundle", str(bundle), "--source",
                                   str(videos[3]), "--loop", "--threads", "2", "--http-port", str(port), "--jsonl",
                                   str(jsonl)], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    samples = []

    def soak() -> None:
        deadline = time.monotonic() + 120
        while status_when_listening(port, "/healthz") != 200:  # the model loaded and frames flow
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < seconds:
            status = process_status(daemon.pid)  # read before the scrape, so no request thread is counted
            if time.monotonic() >= next_sample:
                samples.append({"t": round(time.monotonic() - start, 1), **status})
                next_sample += 10
            assert http_get(port, "/healthz")[0] == 200
            http_get(port, "/metrics")
            time.sleep(5)
        samples.append({"t": round(time.monotonic() - start, 1), **process_status(daemon.pid)})

    try:
        benchmark.pedantic(soak, rounds=1, iterations=1)
        metrics = http_get(port, "/metrics")[1]
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert code == 0
    summary = read_summary(log.read_text().splitlines())
    base = next(s for s in samples if s["t"] >= warm_up)
    end = samples[-1]
    growth = (end["rss_bytes"] - base["rss_bytes"]) / base["rss_bytes"]
    result = {"seconds": seconds, "frames": summary["frames"], "fps": summary["fps"],
              "rss_base_mib": round(base["rss_bytes"] / 2**20, 1), "rss_end_mib": round(end["rss_bytes"] / 2**20, 1),
              "rss_growth": round(growth, 4), "peak_rss_mib": round(summary["peak_rss_bytes"] / 2**20, 1),
              "threads": (base["threads"], end["threads"]), "open_fds": (base["open_fds"], end["open_fds"]),
              "jsonl_lines": sum(1 for _ in jsonl.open())}
    benchmark.extra_info.update(result)
    print(f"\nsoak: {json.dumps(result)}\n" + "\n".join(json.dumps(s) for s in samples))
    assert "edgeface_frames_processed_total" in metrics
    assert growth < 0.05, result
    assert end["threads"] == base["threads"] and end["open_fds"] == base["open_fds"], result
    write_result("daemon-soak", {**result, "warm_up_seconds": warm_up, "samples": samples})

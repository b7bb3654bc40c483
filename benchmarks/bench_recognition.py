"""Recognition per track against every face in every frame (issue 34): the daemon's fps, faces through the
model per second and peak RSS with 1, 3 and 5 faces, side by side in one run; and how often the model still
sees a track once it is named.

The bundle is the default backbone, dlib-resnet int8, trained on the open-set split of celeba-299
(``celeba_figures.sh openset-split openset-dlib-resnet``; ``EDGEFACE_OPENSET_BUNDLE`` to use another). Five
people it never trained on are enrolled from 3 to 5 photos each and the gallery calibrated on other strangers
(``household.py``'s own household). The videos (640x480, 30 s at 10 fps) show 1, 3 or 5 of them side by side,
each switching between their other photos every 2 s.

* **before**: ``[recognition] budget = 64, refresh = 0``: every face through the face mesh, the encoder and
  the heads in every frame, the daemon's cost before issue 34;
* **after**: the defaults.

``edgeface run`` runs as a subprocess, 2 inference threads, over the whole video at full speed (a file's
frames carry the video's own times, so refreshes follow the video's clock, not the wall's); the two settings
take turns on each video, ``ROUNDS`` times, and the median fps is kept. Then, in process with the defaults,
each track's frames after the one that named it, and in how many of them its face went through the model.

    EDGEFACE_SHARED=../shared pytest benchmarks/bench_recognition.py -m slow -s      # a few minutes

Figures: ``results/recognition-throughput.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA = SHARED / "data" / "celeba-299" / "labels.csv"
BUNDLE = Path(os.environ.get("EDGEFACE_OPENSET_BUNDLE", REPO / "bundles" / "openset" /
                             "openset-dlib-resnet-int8.edgeface"))
CACHE = Path(os.environ["EDGEFACE_HOUSEHOLD_CACHE"]) if os.environ.get("EDGEFACE_HOUSEHOLD_CACHE") else None

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CELEBA.is_file(), reason=f"celeba-299 not found at {SHARED} (EDGEFACE_SHARED)"),
              pytest.mark.skipif(not BUNDLE.is_file(), reason=f"{BUNDLE} not found: build it with "
                                 "benchmarks/celeba_figures.sh openset-split openset-dlib-resnet, or set "
                                 "EDGEFACE_OPENSET_BUNDLE")]

FACES = (1, 3, 5)
SECONDS = 30.0
FPS = 10.0
ROUNDS = 3
THREADS = 2
SETTINGS = {"before": "[recognition]\nbudget = 64\nrefresh = 0.0\n", "after": ""}


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five enrolled people, the calibrated gallery, and a video of 1, 3 and 5 of them."""
    from household import Config, build_household, celeba_people, embed, find_video_photos

    from edgeface.core.bundle import load_bundle
    from edgeface.eval.video import photo_actor, side_by_side, write_scene
    from edgeface.people.enroll import FaceEmbedder

    work = tmp_path_factory.mktemp("recognition")
    bundle = load_bundle(BUNDLE)
    people = celeba_people(bundle)
    embedder = FaceEmbedder(bundle, num_threads=THREADS)
    embed(people, embedder, CACHE)  # household.py --cache's folder, when given
    find_video_photos(people, CACHE)
    home = build_household(people, Config(enrolled=max(FACES), strangers=0), 0, embedder, work)
    videos = {}
    for faces in FACES:
        actors = [photo_actor(person, [people.video[p] for p in people.photos[person]
                                       if p in people.video and p not in home.enrolled[person]])
                  for person in sorted(home.enrolled)[:faces]]
        videos[faces] = work / f"faces-{faces}.mp4"
        write_scene(videos[faces], side_by_side(actors, SECONDS, FPS, face_width=90.0, hold=2.0, seed=faces))
    configs = {}
    for name, text in SETTINGS.items():
        configs[name] = work / f"{name}.toml"
        configs[name].write_text(text)
    return {"gallery": home.gallery, "videos": videos, "configs": configs, "thresholds": home.thresholds}


def run_daemon(video: Path, config: Path, gallery: Path) -> dict[str, Any]:
    """``edgeface run`` over the whole video as fast as it can; its end-of-run summary."""
    command = [sys.executable, "-m", "edgeface", "run", "--config", str(config), "--bundle", str(BUNDLE),
               "--source", str(video), "--gallery", str(gallery), "--threads", str(THREADS), "--no-http",
               "--jsonl", os.devnull]
    proc = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stderr.splitlines() if " summary {" in line)
    return json.loads(line.split(" summary ", 1)[1])


def encoder_after_named(video: Path, gallery: Path) -> dict[str, Any]:
    """The defaults in process over the video: per track, after the frame that named it."""
    import edgeface
    from household import Run, START, encoder_duty

    from edgeface.eval.video import read_video

    pipeline = edgeface.load(BUNDLE, gallery=gallery, threads=THREADS)
    run = Run()
    frames = int(SECONDS * FPS)
    for result in pipeline.run(read_video(video), fps=FPS, start=START):
        if result.index < frames:
            run.frames.append([(f.box, f.track, f.labels.identity.label) for f in result.faces])
            run.recognised.append(list(result.samples.recognised) if result.samples is not None else [])
    return encoder_duty(run)


def test_per_track_recognition_against_every_face(household: dict[str, Any]) -> None:
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):  # the settings take turns on each video: the machine's load hits both alike
        for faces in FACES:
            for name in SETTINGS:
                runs.setdefault((faces, name), []).append(
                    run_daemon(household["videos"][faces], household["configs"][name], household["gallery"]))
    rows = []
    for faces in FACES:
        row: dict[str, Any] = {"faces": faces}
        for name in SETTINGS:
            summaries = runs[(faces, name)]
            fps = statistics.median(s["fps"] for s in summaries)
            per_frame = statistics.median(s["recognised"] / s["frames"] for s in summaries)
            row[name] = {"fps": round(fps, 2), "fps_runs": [s["fps"] for s in summaries],
                         "recognised_per_frame": round(per_frame, 3),
                         "recognised_per_second": round(per_frame * fps, 1),
                         "peak_rss_mib": round(max(s["peak_rss_bytes"] for s in summaries) / 2 ** 20, 1),
                         "stage_ms": summaries[-1]["stage_ms"], "frames": summaries[-1]["frames"]}
        row["speedup"] = round(row["after"]["fps"] / row["before"]["fps"], 2)
        row["after_named"] = encoder_after_named(household["videos"][faces], household["gallery"])
        rows.append(row)
        print(f"\n{faces} face(s): before {row['before']['fps']} fps, {row['before']['recognised_per_second']} "
              f"faces/s through the model; after {row['after']['fps']} fps, "
              f"{row['after']['recognised_per_second']} faces/s; {row['speedup']}x; named tracks: "
              f"{row['after_named']}")
    write_result("recognition-throughput", {
        "bundle": BUNDLE.name, "threads": THREADS, "rounds": ROUNDS, "video_seconds": SECONDS, "fps": FPS,
        "settings": SETTINGS, "calibration": household["thresholds"], "rows": rows},
        "pytest benchmarks/bench_recognition.py -m slow -s")
    three = next(r for r in rows if r["faces"] == 3)
    assert three["after"]["fps"] > three["before"]["fps"]  # the targets (2x, 1 in 5) are reported, not asserted

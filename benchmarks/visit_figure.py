"""The picture of docs/identity.md: how a track is named from all its faces, and a photo from one.

One scene of the household harness (``household.py``, celeba-299 people the model never trained on) runs
through the daemon's pipeline twice, as in the harness: with the defaults, and with every face recognised in
every frame. Two visits are drawn, picked by what happened: a household **member** and a **stranger** whom
the per-frame rule (before issue 34) gave a member's name in some frames. For each, against time on screen:

* each face's own similarity with the member (dots: what a photo would be judged on);
* the per-frame rule's smoothed similarity (thin line) and where it named somebody;
* the track's evidence under the per-track rule (thick line: the average of the faces the model saw, view by
  view) and where it named somebody;
* the per-face and the per-visit thresholds the gallery was calibrated to (1% of strangers).

    python benchmarks/visit_figure.py --bundle bundles/openset/openset-dlib-resnet-int8.edgeface --household 2 --scene 2

writes ``docs/img/visit-evidence.png`` (needs ../shared and matplotlib).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def trace_scene(bundle: Any, gallery: Path, video: Path, frames: int, config: Any) -> dict[str, Any]:
    """Per frame, for each face: its track, label, and (every-face run) its own similarities; (per-track run)
    its track's averaged similarities."""
    import edgeface
    from household import EVERY_FACE, NAME_NO_TRAINED, START, per_frame_rule

    from edgeface.eval.video import read_video
    from edgeface.recognition.settings import RecognitionConfig

    out: dict[str, Any] = {"per_track": [], "every_face": [], "outputs": []}
    pipeline = edgeface.load(bundle, gallery=gallery, threads=config.threads, identity_threshold=NAME_NO_TRAINED)
    for result in pipeline.run(read_video(video), fps=config.fps, start=START):
        if result.index >= frames:
            continue
        rows = []
        for face in result.faces:
            track = pipeline.tracks.get(face.track)
            average = track.combined().similarity if track is not None and track.count else None
            rows.append((face.box, face.track, face.labels.identity.label, average))
        out["per_track"].append(rows)
    every = edgeface.load(bundle, gallery=gallery, threads=config.threads, identity_threshold=NAME_NO_TRAINED,
                          recognition=RecognitionConfig(**EVERY_FACE))
    labeler = every.labeler
    for result in every.run(read_video(video), fps=config.fps, start=START):
        if result.index >= frames:
            continue
        samples = result.samples
        outputs = dict(samples.outputs) if samples is not None else {}
        own = labeler.gallery.similarities(outputs["embedding"]) if outputs else np.zeros((0, 0))
        out["every_face"].append([(f.box, f.track, own[k]) for k, f in enumerate(result.faces)])
        out["outputs"].append(([f.track for f in result.faces], outputs))
    boxes = [[box for box, _, _ in frame] for frame in out["every_face"]]
    baseline = per_frame_rule(labeler, out["outputs"], boxes)
    out["per_frame"] = baseline.frames
    out["smoothed"] = _smoothed_similarity(labeler, out["outputs"])
    out["names"] = list(labeler.enrolled)
    out["photo_threshold"] = labeler.similarity_threshold
    out["visit_threshold"] = labeler.visit_rule.similarity_threshold
    return out


def _smoothed_similarity(labeler: Any, outputs: Sequence[tuple[list[int], dict[str, np.ndarray]]]
                         ) -> list[list[np.ndarray]]:
    """The per-frame rule's smoothed embedding of each face, as similarities with each enrolled person."""
    from household import EMA, EMA_MAX_MISSED

    state: dict[int, np.ndarray] = {}
    last: dict[int, int] = {}
    out = []
    for index, (tracks, frame) in enumerate(outputs):
        rows = []
        for k, track in enumerate(tracks):
            value = np.asarray(frame["embedding"][k], np.float64)
            previous = state.get(track) if index - last.get(track, -10 ** 9) <= EMA_MAX_MISSED + 1 else None
            mixed = value if previous is None else EMA * previous + (1 - EMA) * value
            state[track], last[track] = mixed, index
            rows.append(labeler.gallery.similarities(mixed[None].astype(np.float32))[0])
        out.append(rows)
    return out


def visit_series(truth: Any, trace: dict[str, Any], visit: Any, person: int) -> dict[str, np.ndarray]:
    """The visit's frames: time on screen, each face's similarity with ``person``, the per-frame rule's and the
    track's, and the names each rule gave."""
    from edgeface.core.results import UNKNOWN

    series: dict[str, list] = {k: [] for k in ("t", "face", "smoothed", "track", "frame_named", "track_named")}
    for index in range(visit.first_frame - 5, visit.last_frame + 1):
        if index < 0 or index >= len(trace["per_track"]):
            continue
        every, smoothed, per_frame = trace["every_face"][index], trace["smoothed"][index], trace["per_frame"][index]
        per_track = trace["per_track"][index]
        mine = [k for k, m in enumerate(truth.match(index, [b for b, _, _ in every])) if m and m.visit == visit.visit]
        theirs = [k for k, m in enumerate(truth.match(index, [b for b, _, _, _ in per_track]))
                  if m and m.visit == visit.visit]
        if not mine or not theirs:
            continue
        k, j = mine[0], theirs[0]
        series["t"].append(index / truth.fps - visit.start)
        series["face"].append(every[k][2][person])
        series["smoothed"].append(smoothed[k][person])
        average = per_track[j][3]
        series["track"].append(np.nan if average is None else average[person])
        series["frame_named"].append(per_frame[k][2] != UNKNOWN)
        series["track_named"].append(per_track[j][2] != UNKNOWN)
    return {k: np.asarray(v, np.float64 if k in ("t", "face", "smoothed", "track") else bool)
            for k, v in series.items()}


def pick_visits(truth: Any, trace: dict[str, Any], enrolled: set[str]) -> tuple[Any, Any, int, int]:
    """A member named early by the per-track rule, and the stranger the per-frame rule named in the most
    frames while the per-track rule never did; with the member each is compared with."""
    from household import Run, score

    per_track = score(truth, Run([[(b, t, label) for b, t, label, _ in f] for f in trace["per_track"]]), enrolled)
    per_frame = score(truth, Run(trace["per_frame"]), enrolled)
    visits = {v.visit: v for v in truth.visits}
    keys = list(visits)
    names = trace["names"]
    stranger = max((k for k, (a, b) in enumerate(zip(per_track.visits, per_frame.visits))
                    if not a.enrolled and a.wrong == 0 and any(n in names for n in b.names)),
                   key=lambda k: per_frame.visits[k].wrong, default=None)
    member = min((k for k, v in enumerate(per_track.visits) if v.named_right and v.frames >= 20),
                 key=lambda k: per_track.visits[k].first_right, default=None)
    if stranger is None or member is None:
        raise SystemExit("error: this scene has no stranger named by the per-frame rule only, or no member named "
                         "right; try another --scene or --household")
    given = {n: c for n, c in per_frame.visits[stranger].names.items() if n in names}  # a member's name
    named = max(given, key=given.__getitem__)
    return (visits[keys[member]], visits[keys[stranger]], names.index(visits[keys[member]].identity),
            names.index(named))


def draw(series: Sequence[dict[str, np.ndarray]], titles: Sequence[str], thresholds: tuple[float, float],
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photo, visit = thresholds
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, s, title in zip(axes, series, titles):
        ax.scatter(s["t"], s["face"], s=10, color="0.6", label="each face alone")
        ax.plot(s["t"], s["smoothed"], color="tab:orange", lw=1, label="per frame: smoothed (EMA 0.6)")
        ax.plot(s["t"], s["track"], color="tab:blue", lw=2.2, drawstyle="steps-post",
                label="per track: the track's evidence")
        ax.axhline(photo, color="tab:orange", ls="--", lw=1, label=f"per-face threshold ({photo:.3f})")
        ax.axhline(visit, color="tab:blue", ls="--", lw=1, label=f"per-visit threshold ({visit:.3f})")
        low = min(np.nanmin(s["face"]), np.nanmin(s["track"]), photo) - 0.03
        for named, y, color in ((s["frame_named"], low + 0.012, "tab:orange"), (s["track_named"], low + 0.004,
                                                                              "tab:blue")):
            ax.scatter(s["t"][named], np.full(named.sum(), y), marker="|", s=60, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds since the face came on screen")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity with the member")
    axes[0].legend(fontsize=7.5, loc="lower right")
    fig.text(0.5, 0.005, "ticks at the bottom: frames in which each rule gave a name (orange per frame, blue per "
             "track)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="trained on the open-set split")
    parser.add_argument("--household", type=int, default=0)
    parser.add_argument("--scene", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="household.py's cache of the photos' outputs and faces")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "visit-evidence.png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from household import Config, build_household, celeba_people, embed, find_video_photos, household_scenes

    from edgeface.core.bundle import load_bundle
    from edgeface.eval.video import write_scene
    from edgeface.people.enroll import FaceEmbedder

    config = Config()
    bundle = load_bundle(args.bundle)
    people = celeba_people(bundle, seed=config.seed)
    embedder = FaceEmbedder(bundle, num_threads=config.threads)
    embed(people, embedder, args.cache)
    find_video_photos(people, args.cache)
    with tempfile.TemporaryDirectory(prefix="visit-figure-") as tmp:
        household = build_household(people, config, args.household, embedder, Path(tmp))
        scene = household_scenes(people, household, config)[args.scene]
        truth = write_scene(Path(tmp) / "scene.mp4", scene)
        trace = trace_scene(bundle, household.gallery, Path(tmp) / "scene.mp4", truth.frame_count, config)
    member, stranger, member_index, resembled = pick_visits(truth, trace, set(household.enrolled))
    series = [visit_series(truth, trace, member, member_index), visit_series(truth, trace, stranger, resembled)]
    draw(series, ["a household member", "a stranger who resembles a member"],
         (trace["photo_threshold"], trace["visit_threshold"]), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

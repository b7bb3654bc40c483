"""``edgeface demo``: the whole pipeline, end to end, on a synthetic face set (or on your photos)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from edgeface.cli.common import field_default, friendly_errors
from edgeface.train.config import TrainConfig

if TYPE_CHECKING:
    from edgeface.eval.video import SceneTruth

ORDER = 5


def _step(title: str) -> None:
    typer.echo(f"\n== {title}", err=False)


@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for everything the demo makes."),
    data: Optional[Path] = typer.Option(None, help="Your labelled photos (CSV or folder) instead of the synthetic "
                                                   "set; split 70/30 per person into train and test."),
    people: int = typer.Option(8, help="Synthetic people to draw (ignored with --data)."),
    photos: int = typer.Option(40, help="Synthetic photos per person (ignored with --data)."),
    backbone: str = typer.Option(field_default(TrainConfig, "backbone"),
                                 help="dlib-resnet, mobilenetv2, resnet50, vgg16 or tiny (see `edgeface train -h`)."),
    weights: Optional[str] = typer.Option(field_default(TrainConfig, "weights"),
                                          help="dlib, imagenet, none or a weights file. Default: the backbone's own."),
    input_size: Optional[int] = typer.Option(field_default(TrainConfig, "input_size"),
                                             help="Face crop size. Default: the backbone's own."),
    epochs: int = typer.Option(5, help="Fine-tuning epochs (after the heads train on frozen features)."),
    seed: int = typer.Option(0),
) -> None:
    """Run everything on an embedded default: draw a labelled synthetic face set (clearly synthetic: people
    drawn by the program, no real data), check it, train, convert to float32 and int8 bundles, evaluate
    before and after quantization, measure latency, run the labelling daemon on a synthetic video, and write
    a report. With --data the same steps run on your photos.
    """
    from edgeface.data.manifest import check_dataset, load_dataset, split_dataset, write_csv

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)

    _step("1/7 data")
    if data is None:
        from edgeface.data.synthetic import make_people, make_synthetic_dataset

        looks = make_people(people, seed)
        source = make_synthetic_dataset(out / "data" / "synthetic", people=looks, photos_per_person=photos, seed=seed,
                                        progress=True)
        typer.echo(f"drew a SYNTHETIC set: {people} people x {photos} photos -> {source}")
    else:
        looks, source = None, data
    dataset = load_dataset(source)
    report = check_dataset(dataset, progress=True)
    for problem in report.problems:
        typer.echo(f"  {problem}", err=True)
    if report.errors:
        raise typer.Exit(1)
    train_set, test_set = split_dataset(dataset, 0.3, seed)
    train_csv = write_csv(train_set.samples, out / "data" / "train.csv")
    test_csv = write_csv(test_set.samples, out / "data" / "test.csv")
    typer.echo(f"{len(dataset)} photos of {len(dataset.labels('identity'))} people, all readable; "
               f"split per person: {len(train_set)} train, {len(test_set)} test")

    _step("2/7 train")
    from edgeface.train.trainer import TrainConfig, train

    result = train(TrainConfig(data=train_csv, out=out / "model", backbone=backbone, weights=weights,
                               input_size=input_size, epochs=epochs, seed=seed, verbose=1),
                   on_log=lambda line: typer.echo(f"  {line}"))
    model_path = result.model_path
    probes = result.metadata["metrics"]["linear_probe"]
    for head, values in result.metadata["metrics"]["validation"].items():
        probe = f" (linear probe {probes[head]:.3f})" if probes.get(head) is not None else ""
        typer.echo(f"  validation {head:8s} {values['accuracy']:.3f}{probe}")

    _step("3/7 convert")
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model

    conversions = convert_model(model_path, ["float32", "int8"], out / "bundles", ConvertOptions(min_agreement=0.0),
                                progress=False,
                                on_log=lambda line: typer.echo(f"  {line}"))
    # min_agreement 0 accepts every conversion: each has its bundle
    bundles = {c.precision: c.bundle_path for c in conversions if c.bundle_path is not None}
    for c in conversions:
        agreement = ", ".join(f"{h} {k.agreement:.1%}" for h, k in c.checks.items())
        typer.echo(f"  {c.precision:8s} {c.size_bytes / 1e6:6.2f} MB  agreement with Keras: {agreement}")

    _step("4/7 evaluate on the held-out test photos")
    from edgeface.cli.evaluate import format_evaluation
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.train.keras_model import load_engine

    # ~100 test photos: one face is one point, so the demo's gate allows two (CI gates use bigger sets).
    evaluation = evaluate_models([model_path, bundles["float32"], bundles["int8"]], test_csv, max_drop=2.0,
                                 progress=True, open_engine=load_engine)
    typer.echo(format_evaluation(evaluation, confusion=False))
    failures = evaluation.gate_failures()
    typer.echo("  quantization gate (--max-drop 2): " + ("pass" if not failures else "; ".join(failures)))
    (out / "evaluation.json").write_text(json.dumps(evaluation.to_dict(), indent=2))

    _step("5/7 latency on this machine")
    from edgeface.cli.bench import format_bench
    from edgeface.eval.bench import bench_models

    bench = bench_models([bundles["float32"], bundles["int8"]], threads=(1, 2), runs=50, progress=True)
    typer.echo(format_bench(bench))
    (out / "bench.json").write_text(json.dumps(bench.to_dict(), indent=2))

    _step("6/7 the labelling daemon")
    correct, unknown, total, frames, visits = _run_daemon(out, bundles["int8"], looks, test_set, seed)
    typer.echo(f"  {frames} frames labelled; identity right on {correct}/{total} faces"
               f" ({correct / max(total, 1):.0%}), {unknown} left unknown (below the bundle's identity"
               f" threshold), {total - correct - unknown} named wrongly; JSON lines in {out / 'labels.jsonl'}")
    start = min((v["first_seen"] for v in visits), default=0.0)  # times from the video's first face
    typer.echo("  visits: " + ("; ".join(f"{v['who']} from {v['first_seen'] - start:.1f} to "
                                         f"{v['last_seen'] - start:.1f} s"
                                         + (f", named after {v['seconds_to_name']:.1f} s" if v["seconds_to_name"]
                                            is not None else "") for v in visits) or "none"))

    _step("7/7 report")
    from edgeface.report.markdown import write_report

    files = write_report([evaluation.to_dict()], [bench.to_dict()], out / "report",
                         commands=["edgeface demo" + (f" --data {data}" if data else "")])
    typer.echo(f"  {files.markdown}")
    typer.echo(f"\ndone in {time.time() - started:.0f} s. Everything is in {out}/ "
               "(model/, bundles/, report/, labels.jsonl).")


def _run_daemon(out: Path, bundle: Path, looks, test_set, seed: int
                ) -> tuple[int, int, int, int, list[dict[str, Any]]]:
    """Run the real daemon over a video (synthetic) or a folder of test photos; score its identity labels:
    (right, unknown, faces scored, frames)."""
    from edgeface.core.results import UNKNOWN
    from edgeface.daemon.config import load_config
    from edgeface.daemon.run import run_daemon

    jsonl = out / "labels.jsonl"
    jsonl.unlink(missing_ok=True)
    if looks is not None:
        from edgeface.eval.video import side_by_side, synthetic_actor, write_scene

        video = out / "video" / "demo.avi"
        video.parent.mkdir(parents=True, exist_ok=True)
        actors = [synthetic_actor(look, 100.0, seed=seed) for look in looks[:2]]
        truth = write_scene(video, side_by_side(actors, seconds=4.0, face_width=100.0, hold=2.0, seed=seed))
        source = str(video)
    else:
        folder = out / "video" / "photos"
        folder.mkdir(parents=True, exist_ok=True)
        for i, sample in enumerate(test_set.samples[:40]):
            link = folder / f"{i:04d}{sample.image.suffix}"
            link.unlink(missing_ok=True)
            link.symlink_to(sample.image.resolve())
        truth, source = None, str(folder)
    code = run_daemon(load_config(None, {"bundle": str(bundle), "source": source, "jsonl.path": str(jsonl),
                                         "http.enabled": False}))
    if code != 0:
        raise typer.Exit(code)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    records = [line for line in lines if "frame" in line]  # the others are visit events (arrived, named, left)
    visits = [line for line in lines if line.get("event") == "left"]  # each visit as it ended
    if truth is not None:
        return (*score_video(records, truth), len(records), visits)
    names = [s.identity for s in test_set.samples[:40]]
    scored = [(r["faces"][0]["identity"]["label"], names[r["frame"]]) for r in records if r["faces"]]
    return (sum(a == b for a, b in scored), sum(a == UNKNOWN for a, _ in scored), len(scored), len(records), visits)


def score_video(records: list[dict], truth: "SceneTruth") -> tuple[int, int, int]:
    """Match each labelled face to the person the video shows there: (right, unknown, faces matched)."""
    from edgeface.core.results import UNKNOWN

    correct = unknown = total = 0
    for record in records:
        if "frame" not in record:  # a visit event (arrived, named, left)
            continue
        faces = record["faces"]
        for face, true in zip(faces, truth.match(record["frame"], [f["box"] for f in faces])):
            if true is not None:
                total += 1
                correct += face["identity"]["label"] == true.identity
                unknown += face["identity"]["label"] == UNKNOWN
    return correct, unknown, total


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""``edgeface bench``: latency, size and memory of bundles on this device (runs on the Pi; no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from edgeface.cli.common import echo_err, friendly_errors, table
from edgeface.eval.text import ms, right_align

if TYPE_CHECKING:
    from edgeface.eval.bench import BenchReport

ORDER = 45


def format_bench(report: BenchReport) -> str:
    """The text report: machine, detection, then one row per bundle and thread count."""
    m = report.machine
    lines = [(f"machine: {m['cpu']} ({m['cpu_count']} cores, {m['machine']}), Python {m['python']}, "
              f"{m['runtime']} {m['runtime_version']}"),
             f"per-face latency over {report.runs} rounds (batch 1); times in ms", ""]
    if report.frames:
        rows = [[f.label, f"{f.image.shape[1]}x{f.image.shape[0]}", f.faces, detector, ms(s.p50_ms), ms(s.p95_ms)]
                for f, detector, s in report.frames]
        right_align(rows, [4, 5], ["", "", "", "", "detect p50", "detect p95"])
        lines += [table(rows, ["frame", "size", "faces found", "detector", "detect p50", "detect p95"]), ""]
    labels = [f.label for f, _, _ in report.frames]
    labels = list(dict.fromkeys(labels))
    header = ["model", "precision", "threads", "size MB", "face p50", "face p95", "face mean"]
    header += [f"frame {label} p50" for label in labels] + ["peak RSS MB", "model RSS MB"]
    rows = []
    for b in report.models:
        row = [b.name, b.model.precision, b.threads, f"{b.model.size_bytes / 1e6:.2f}", ms(b.face.p50_ms),
               ms(b.face.p95_ms), ms(b.face.mean_ms)]
        row += [ms(b.frames[label].p50_ms) if label in b.frames else "" for label in labels]
        row += ([f"{b.memory.peak_kib / 1024:.1f}", f"{b.memory.model_kib / 1024:.1f}"] if b.memory else ["", ""])
        rows.append(row)
    right_align(rows, list(range(3, len(header))), header)
    lines.append(table(rows, header))
    lines += ["", ("peak RSS: whole process that loads and runs the bundle (Python, numpy, LiteRT included); "
                   "model RSS: what loading and running the model adds")]
    return "\n".join(lines)


@friendly_errors
def bench(
    bundles: List[Path] = typer.Argument(..., help="One or more .edgeface bundles."),
    threads: List[int] = typer.Option([1, 2], "--threads", "-t", help="LiteRT thread count; repeat for several."),
    runs: int = typer.Option(100, help="Timed inferences per bundle and thread count."),
    warmup: int = typer.Option(5, help="Untimed inferences first (weight packing, page faults)."),
    frames: bool = typer.Option(True, help="Also time detection and whole frames (detect + crop + infer)."),
    image: Optional[Path] = typer.Option(None, help="Time frames on this photo instead of synthetic 640x480 "
                                                    "frames with 1 and 3 faces."),
    memory: bool = typer.Option(True, help="Measure peak memory in a fresh process per bundle."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
) -> None:
    """Latency per face (p50, p95), per frame, model size and peak memory of bundles on this device.

    Bundles and thread counts are timed round-robin, so their ratios hold on a busy machine.
    """
    from edgeface.eval.bench import bench_models

    if runs < 1:
        raise typer.BadParameter("must be 1 or more", param_hint="--runs")
    if any(t < 1 for t in threads):
        raise typer.BadParameter("must be 1 or more", param_hint="--threads")
    report = bench_models(bundles, threads=threads, runs=runs, warmup=warmup, frames=frames, memory=memory,
                          image=image, progress=True, on_log=echo_err)
    typer.echo(format_bench(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=1))
        typer.echo(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

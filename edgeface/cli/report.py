"""``edgeface report``: a Markdown report with charts, from models or from saved evaluate/bench JSON."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeface.cli.common import echo_err, friendly_errors

ORDER = 50


@friendly_errors
def report(
    inputs: List[Path] = typer.Argument(..., help="Saved `evaluate --json` / `bench --json` files, and/or models "
                                                  "and bundles to measure now."),
    out: Path = typer.Option(Path("report"), help="Folder for report.md, accuracy.png and latency.png."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Labelled photos to evaluate the models on "
                                                                   "(needed when models are given)."),
    threads: List[int] = typer.Option([1], "--threads", "-t",
                                      help="LiteRT threads for latency; repeat for several."),
    runs: int = typer.Option(100, help="Timed inferences per bundle and thread count."),
    bench: bool = typer.Option(True, help="Measure latency of the bundles given (off: accuracy only)."),
    title: Optional[str] = typer.Option(None, help="Report title."),
) -> None:
    """Accuracy per head, size and latency per precision, before and after quantization: report.md + charts.

    Models and bundles given here are evaluated on --data (the first is the reference) and benchmarked on
    this machine; their figures are saved as evaluation.json and bench.json beside the report. Saved JSON
    files (for example `edgeface bench --json` run on the Pi) are merged in, matched by model checksum.
    """
    from edgeface.eval.bench import bench_models
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.report.markdown import load_results, write_report
    from edgeface.train.keras_model import load_engine

    documents = [load_results(p) for p in inputs if p.suffix == ".json"]
    evaluations = [d for d in documents if d["format"] == "edgeface-evaluation"]
    benches = [d for d in documents if d["format"] == "edgeface-bench"]
    models = [p for p in inputs if p.suffix != ".json"]
    out.mkdir(parents=True, exist_ok=True)
    if models:
        if data is None:
            raise typer.BadParameter("models were given: say which photos to evaluate them on",
                                     param_hint="--data")
        evaluation = evaluate_models(models, data, progress=True, on_log=echo_err, open_engine=load_engine).to_dict()
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
        evaluations.append(evaluation)
        bundles = [m["path"] for m in evaluation["models"] if m["kind"] == "bundle"]
        if bench and bundles:
            measured = bench_models(bundles, threads=threads, runs=runs, frames=False, progress=True,
                                    on_log=echo_err).to_dict()
            (out / "bench.json").write_text(json.dumps(measured, indent=1))
            benches.append(measured)
    command = "edgeface " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else ""
    files = write_report(evaluations, benches, out, **({"title": title} if title else {}),
                         commands=[command] if command else [])
    for path in (files.markdown, files.accuracy_png, files.latency_png):
        if path is not None:
            typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)

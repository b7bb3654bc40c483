"""``edgeface evaluate``: accuracy of several models on the same faces, and the quantization gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from edgeface.cli.common import EXIT_CHECK_FAILED, echo_err, friendly_errors, table
from edgeface.eval.text import right_align

if TYPE_CHECKING:
    from edgeface.eval.evaluate import Evaluation

ORDER = 40
TEXT_CONFUSION_MAX = 10  # larger heads (identity) print their most confused pairs instead of a matrix


def _side_by_side(blocks: list[list[str]], gap: int = 4) -> list[str]:
    """Text blocks joined left to right (small confusion matrices take a third of the lines)."""
    height = max((len(b) for b in blocks), default=0)
    widths = [max(len(line) for line in b) for b in blocks]
    return [(" " * gap).join((b[i] if i < len(b) else "").ljust(w) for b, w in zip(blocks, widths))
            for i in range(height)]


def format_evaluation(evaluation: Evaluation, confusion: bool = True) -> str:
    """The text report: data, one summary row per model, per-head details, confusion matrices."""
    from edgeface.core.spec import HEADS

    ref = evaluation.reference
    faces = ref.faces
    lines = [(f"data: {evaluation.data}: {evaluation.photos} photos; a face in {faces['found']} "
              f"({faces['multiple']} with several: the subject's used); {faces['no_face']} without a detectable "
              f"face and {faces['unreadable']} unreadable count as misses")]
    for m in evaluation.models[1:]:
        if m.faces != faces:
            lines.append(f"  {m.name}: a face in {m.faces['found']}, {m.faces['no_face']} without "
                         f"(its own crop geometry)")
    lines.append("")
    header = ["model", "precision", "size MB"] + [f"{h} {c}" for h in HEADS for c in ("%", "vs ref")]
    rows: list[list[Any]] = []
    for i, m in enumerate(evaluation.models):
        row = [m.name, m.model.precision, f"{m.model.size_bytes / 1e6:.2f}"]
        for head in HEADS:
            change = "ref" if i == 0 else f"{-evaluation.drop(m, head) + 0.0:+.2f}"  # + 0.0: no "-0.00"
            row += [f"{100 * m.heads[head].accuracy:.2f}", change]
        rows.append(row)
    right_align(rows, list(range(2, len(header))), header)
    lines.append(table(rows, header))
    lines.append("")
    detail = []
    for head in HEADS:
        for i, m in enumerate(evaluation.models):
            h = m.heads[head]
            detail.append([head if i == 0 else "", m.name, f"{100 * h.accuracy:.2f}",
                           f"{100 * h.balanced_accuracy:.2f}", f"{100 * h.macro_f1:.2f}", h.n, h.missed])
    right_align(detail, [2, 3, 4], ["", "", "accuracy %", "balanced %", "macro-F1 %"])
    lines.append(table(detail, ["head", "model", "accuracy %", "balanced %", "macro-F1 %", "n", "missed"]))
    if confusion:
        for m in evaluation.models:
            lines.append("")
            lines.append(f"confusion of {m.name} (rows: true, columns: predicted; misses not included)")
            blocks, notes = [], []
            for head in HEADS:
                h = m.heads[head]
                if len(h.labels) <= TEXT_CONFUSION_MAX:
                    rows = [[label, *map(int, h.confusion[i])] for i, label in enumerate(h.labels)]
                    blocks.append(table(rows, [head, *h.labels]).splitlines())
                else:
                    pairs = ", ".join(f"{t} -> {p} ({n})" for t, p, n in h.most_confused(5)) or "none"
                    notes.append(f"  {head}: {len(h.labels)} classes (see --plots); most confused: {pairs}")
            lines.extend("  " + line.rstrip() for line in _side_by_side(blocks))
            lines.extend(notes)
    return "\n".join(lines)


@friendly_errors
def evaluate(
    models: List[Path] = typer.Argument(..., help="Keras models (model.keras or its folder) and .edgeface "
                                                  "bundles, in any mix; the first is the reference."),
    data: Path = typer.Option(..., "--data", "-d", help="Labelled photos: a CSV (image,identity,emotion,gender) "
                                                        "or a folder per person."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON (documented "
                                                                 "shape: see docs/benchmarks.md)."),
    max_drop: Optional[float] = typer.Option(None, help="Exit 1 when any model loses more than this many accuracy "
                                                        "points on any head against the first model."),
    plots: Optional[Path] = typer.Option(None, help="Write confusion-matrix PNGs (one per model) to this folder."),
    confusion: bool = typer.Option(True, help="Print the confusion matrices."),
    threads: Optional[int] = typer.Option(None, help="LiteRT threads for bundles (default: LiteRT's choice)."),
    detector: Optional[str] = typer.Option(
        None, help="Find faces with this detector instead of each model's own (blazeface, blazeface-full, "
                   "blazeface-fallback, haar); the crop geometry stays the model's."),
) -> None:
    """Accuracy, balanced accuracy, macro-F1 and confusion per head, for several models on the same faces.

    Photos are detected and cropped once; a photo with no detectable face counts as a miss. Bundles need no
    TensorFlow (this runs on the Pi); Keras models import it.
    """
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.train.keras_model import load_engine

    if threads is not None and threads < 1:
        raise typer.BadParameter("must be 1 or more", param_hint="--threads")
    evaluation = evaluate_models(models, data, num_threads=threads, max_drop=max_drop, detector=detector,
                                 progress=True, on_log=echo_err, open_engine=load_engine)
    typer.echo(format_evaluation(evaluation, confusion=confusion))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(evaluation.to_dict(), indent=1))
        typer.echo(f"wrote {json_path}")
    if plots is not None:
        from edgeface.report.plots import plot_confusion

        for m in evaluation.models:
            path = plot_confusion({h: (m.heads[h].labels, m.heads[h].confusion) for h in m.heads},
                                  f"{m.name} on {evaluation.data.name}",
                                  plots / f"confusion-{m.name.replace('/', '_')}.png")
            typer.echo(f"wrote {path}")
    failures = evaluation.gate_failures()
    if max_drop is not None:
        if failures:
            for line in failures:
                echo_err(f"gate failed: {line}")
            raise typer.Exit(EXIT_CHECK_FAILED)
        typer.echo(f"gate passed: no model loses more than {max_drop:g} points on any head")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

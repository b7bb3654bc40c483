"""One Markdown report with charts, from evaluation and benchmark results: what ``edgeface report`` writes.

Inputs are the JSON documents of ``edgeface evaluate --json`` and ``edgeface bench --json`` (any number of
each; ``edgeface report`` can also produce them itself). A model is matched across them by the SHA-256 of its
file, so accuracy measured on a workstation and latency measured on the Pi land in the same row.

Rows are grouped by the trained model they come from (a ``.keras`` and the bundles converted from it; a
bundle's manifest names its source), one row per precision, and each group's changes are shown against its
first row (the Keras model, or float32 when Keras was not evaluated): accuracy before and after quantization.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeface.core.errors import DataError
from edgeface.core.spec import HEADS
from edgeface.eval import bench as bench_module
from edgeface.eval import evaluate as evaluate_module
from edgeface.eval.text import ms

PRECISION_ORDER = ("keras", "float32", "float16", "dynamic", "int8")


@dataclass
class Row:
    """One model (one precision of one trained model) with everything known about it."""

    name: str
    group: str  # "mobilenetv2 224": the trained model it comes from
    precision: str
    size_bytes: int  # the TFLite flatbuffer
    file_bytes: int = 0  # the bundle file (deflated zip): what is copied to the device
    accuracy: dict[str, float] = field(default_factory=dict)  # head -> 0..1
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # head -> evaluate's per-head figures
    faces: dict[str, int] = field(default_factory=dict)
    latency: dict[int, dict[str, float]] = field(default_factory=dict)  # threads -> face STATS
    memory_kib: dict[int, int] = field(default_factory=dict)  # threads -> model RSS


def load_results(path: str | Path) -> dict[str, Any]:
    """Read an evaluate or bench JSON document, checking what it is."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None
    kinds = (evaluate_module.FORMAT, bench_module.FORMAT)
    if not isinstance(document, dict) or document.get("format") not in kinds:
        raise DataError(f"{path}: not the output of `edgeface evaluate --json` or `edgeface bench --json`")
    return document


def _group_key(model: Mapping[str, Any]) -> tuple:
    # Benchmark models made without a source .keras still group by architecture.
    return (model.get("source_sha256") or "", model.get("backbone"), model.get("input_size"))


def build_rows(evaluations: Sequence[Mapping[str, Any]], benches: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Merge evaluations and benchmarks into rows, grouped by trained model and ordered by precision."""
    rows: dict[str, Row] = {}
    keys: dict[str, tuple] = {}

    def row_for(model: Mapping[str, Any]) -> Row:
        sha = model.get("sha256") or model["path"]
        if sha not in rows:
            rows[sha] = Row(model.get("name", Path(model["path"]).stem), "", model.get("precision", "?"),
                            int(model.get("size_bytes", 0)))
            keys[sha] = _group_key(model)
        row = rows[sha]
        if not row.file_bytes and row.precision != "keras":  # older JSON files lack it: any document may have it
            row.file_bytes = int(model.get("file_bytes", 0))
        return row

    for document in evaluations:
        for model in document["models"]:
            row = row_for(model)
            row.heads = {head: dict(model["heads"][head]) for head in HEADS}
            row.accuracy = {head: float(model["heads"][head]["accuracy"]) for head in HEADS}
            row.faces = dict(model.get("faces", {}))
    for document in benches:
        for model in document["models"]:
            row = row_for(model)
            row.latency[int(model["threads"])] = dict(model["face"])
            if model.get("memory"):
                row.memory_kib[int(model["threads"])] = int(model["memory"]["model_kib"])

    # Name the groups "backbone size"; a second trained model of the same architecture gets its name added.
    labels: dict[tuple, str] = {}
    for sha, key in keys.items():
        if key not in labels:
            base = f"{key[1]} {key[2]}"
            labels[key] = base if base not in labels.values() else f"{base} ({rows[sha].name})"
    for sha, row in rows.items():
        row.group = labels[keys[sha]]
    order = {label: i for i, label in enumerate(dict.fromkeys(labels[k] for k in keys.values()))}
    rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
    return sorted(rows.values(), key=lambda r: (order[r.group], rank.get(r.precision, len(rank))))


def _reference(rows: Sequence[Row], row: Row) -> Row | None:
    """The first evaluated row of ``row``'s group."""
    return next((r for r in rows if r.group == row.group and r.accuracy), None)


def _accuracy_cell(rows: Sequence[Row], row: Row, head: str) -> str:
    if head not in row.accuracy:
        return ""
    cell = f"{100 * row.accuracy[head]:.1f}"
    ref = _reference(rows, row)
    if ref is not None and ref is not row:
        cell += f" ({100 * (row.accuracy[head] - ref.accuracy[head]) + 0.0:+.1f})"
    return cell


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    accuracy_png: Path | None
    latency_png: Path | None


def write_report(evaluations: Sequence[Mapping[str, Any]], benches: Sequence[Mapping[str, Any]], out: str | Path,
                 title: str = "edgeface: accuracy, size and latency before and after quantization",
                 commands: Sequence[str] = ()) -> ReportFiles:
    """Write ``report.md``, ``accuracy.png`` and ``latency.png`` into ``out``."""
    from edgeface.report.plots import plot_accuracy, plot_latency

    if not evaluations and not benches:
        raise DataError("nothing to report: give evaluation or benchmark results")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = build_rows(evaluations, benches)
    threads = sorted({t for r in rows for t in r.latency})

    show_file = any(r.file_bytes for r in rows)
    header = ["model", "precision"] + [f"{h} %" for h in HEADS] + ["size MB"] + (["bundle MB"] if show_file else [])
    for t in threads:
        suffix = f" ({t} thr)" if len(threads) > 1 else ""
        header += [f"p50 ms{suffix}", f"p95 ms{suffix}"]
    if any(r.memory_kib for r in rows):
        header.append("RAM MB")
    table_rows = []
    previous = None
    for r in rows:
        cells = [r.group if r.group != previous else "", r.precision]
        previous = r.group
        cells += [_accuracy_cell(rows, r, h) for h in HEADS]
        cells.append(f"{r.size_bytes / 1e6:.2f}")
        if show_file:
            cells.append(f"{r.file_bytes / 1e6:.2f}" if r.file_bytes else "")
        for t in threads:
            stats = r.latency.get(t)
            cells += [ms(stats["p50_ms"]) if stats else "", ms(stats["p95_ms"]) if stats else ""]
        if "RAM MB" in header:
            memory = r.memory_kib.get(threads[0]) if threads else None
            cells.append(f"{memory / 1024:.0f}" if memory is not None else "")
        table_rows.append(cells)

    lines = [f"# {title}", ""]
    described: set[tuple[str, int]] = set()
    for document in evaluations:
        data = document["data"]
        if (data["path"], data["photos"]) in described:  # several evaluations on the same photos: say it once
            continue
        described.add((data["path"], data["photos"]))
        faces = document["models"][0].get("faces", {})
        lines.append(f"- **Accuracy**: `{data['path']}`, {data['photos']} photos, a face found in "
                     f"{faces.get('found', '?')}. Photos without a detectable face: {faces.get('no_face', 0)}, "
                     f"unreadable: {faces.get('unreadable', 0)}; they count as misses for every head.")
    for document in benches:
        m = document["machine"]
        lines.append(f"- **Latency**: one face (batch 1) through the LiteRT engine on {m['cpu']} "
                     f"({m['cpu_count']} cores, {m['machine']}), {m['runtime']} {m['runtime_version']}; "
                     f"p50/p95 over {document['runs']} runs, all models timed round-robin in one process.")
    lines += [("- **Size**: the TFLite flatbuffer (for Keras, the `.keras` file)"
               + ("; bundle: the `.edgeface` file copied to the device (a deflated zip of the flatbuffer and its "
                  "manifest)" if show_file else "")
               + ". In brackets: the change in accuracy points against the first row of the same model (before "
               "quantization)."), ""]
    lines.append(_markdown_table(header, table_rows, right=range(2, len(header))))
    if "RAM MB" in header:
        lines += ["", ("RAM MB: peak resident memory that loading and running the model adds to a process "
                       "(measured in a fresh process, first thread count).")]
    lines.append("")

    accuracy_png = latency_png = None
    chart_rows = [{"group": r.group, "precision": r.precision, "accuracy": r.accuracy, "size_bytes": r.size_bytes,
                   "latency": r.latency} for r in rows]
    if any(r.accuracy for r in rows):
        accuracy_png = plot_accuracy([c for c in chart_rows if c["accuracy"]], HEADS, out / "accuracy.png")
        lines += ["![Accuracy per head, per model and precision](accuracy.png)", ""]
    if threads:
        latency_png = plot_latency([c for c in chart_rows if c["latency"]], out / "latency.png", threads)
        lines += ["![Per-face latency and model size, per model and precision](latency.png)", ""]

    evaluated = [r for r in rows if r.heads]
    if evaluated:
        lines += ["## Per head", "",
                  ("Balanced accuracy (mean recall over classes) and macro-F1 weigh every class equally, so a "
                   "head that always answers the majority class scores low on them."), ""]
        detail = []
        for r in evaluated:
            cells = [r.group, r.precision]
            for head in HEADS:
                h = r.heads[head]
                cells += [f"{100 * h['balanced_accuracy']:.1f}", f"{100 * h['macro_f1']:.1f}"]
            cells += [str(r.heads["identity"]["n"]), str(r.faces.get("no_face", ""))]
            detail.append(cells)
        detail_header = ["model", "precision"] + [f"{h} {m}" for h in HEADS for m in ("balanced %", "F1 %")]
        lines += [_markdown_table(detail_header + ["n", "no face"], detail, right=range(2, 10)), ""]
    if commands:
        lines += ["## How this was made", "", "```", *commands, "```", ""]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines))
    return ReportFiles(markdown, accuracy_png, latency_png)

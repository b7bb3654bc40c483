"""``edgeface data``: check, split and summarise labelled photo sets."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import typer

from edgeface.cli.common import EXIT_CHECK_FAILED, friendly_errors

ORDER = 10

data_app = typer.Typer(help="Check and split labelled photo sets (a CSV manifest or a folder per person).",
                       no_args_is_help=True)

LAYOUT_HELP = """CSV_OR_FOLDER is either a CSV with columns image,identity,emotion,gender (image paths relative to the
CSV or absolute; an empty field means the label is unknown), or a folder with one sub-folder per person,
optionally with happy/ and neutral/ sub-folders, and an optional people.csv with columns identity,gender."""


@data_app.command("check", help=f"Validate a dataset and summarise it. Exit 0 when clean, 1 otherwise.\n\n{LAYOUT_HELP}")
@friendly_errors
def check(
    dataset: Path = typer.Argument(..., help="CSV manifest or folder of per-person folders."),
    min_photos: int = typer.Option(2, help="Warn about people with fewer photos than this."),
    images: bool = typer.Option(True, "--images/--no-images", help="Decode every image (slower, finds corrupt files)."),
    strict: bool = typer.Option(False, help="Fail on warnings too (few photos, missing labels for a head)."),
    as_json: Path = typer.Option(None, "--json", help="Also write the summary as JSON to this path."),
) -> None:
    from edgeface.data.manifest import check_dataset, load_dataset

    data = load_dataset(dataset)
    report = check_dataset(data, min_photos=min_photos, read_images=images, progress=True)
    kind = "folder" if dataset.is_dir() else "CSV"
    typer.echo(f"dataset: {dataset} ({kind}), {report.rows} usable rows, "
               f"{report.readable if images else 'unchecked'} readable images")
    per_person = list(report.photos_per_person.values())
    if per_person:
        typer.echo(f"people: {len(per_person)} ({min(per_person)}-{max(per_person)} photos each, "
                   f"median {median(per_person):g})")
    for head in ("identity", "emotion", "gender"):
        counts = report.counts[head]
        total = sum(counts.values())
        unknown = report.rows - total
        if head == "identity":
            typer.echo(f"identity: {total} labelled, {unknown} unknown")
            continue
        shares = ", ".join(f"{label} {n} ({n / total:.1%})" for label, n in sorted(counts.items())) if total else "none"
        typer.echo(f"{head}: {shares}; {unknown} unknown")
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    errors = len(report.errors)
    warnings = len(report.problems) - errors
    if as_json:
        as_json.write_text(json.dumps({
            "source": str(dataset), "rows": report.rows, "readable": report.readable,
            "people": len(per_person), "counts": {h: dict(c) for h, c in report.counts.items() if h != "identity"},
            "problems": [{"level": p.level, "where": p.where, "message": p.message} for p in report.problems],
        }, indent=2))
    if errors or (strict and warnings):
        typer.echo(f"not clean: {errors} error(s), {warnings} warning(s)", err=True)
        raise typer.Exit(EXIT_CHECK_FAILED)
    typer.echo(f"clean{f' ({warnings} warning(s))' if warnings else ''}")


@data_app.command("split", help="Split a dataset per person into two CSVs (e.g. train/test), deterministically.")
@friendly_errors
def split(
    dataset: Path = typer.Argument(..., help="CSV manifest or folder."),
    out: Path = typer.Option(..., help="Folder for train.csv and test.csv."),
    fraction: float = typer.Option(0.3, help="Share of each person's photos that goes to test.csv."),
    seed: int = typer.Option(0, help="Seed of the split; the same seed gives the same split."),
) -> None:
    from edgeface.data.manifest import load_dataset, split_dataset, write_csv

    data = load_dataset(dataset)
    data.raise_for_errors()
    first, second = split_dataset(data, fraction, seed)
    write_csv(first.samples, out / "train.csv")
    write_csv(second.samples, out / "test.csv")
    typer.echo(f"{out / 'train.csv'}: {len(first)} photos; {out / 'test.csv'}: {len(second)} photos "
               f"({len(data.labels('identity'))} people, seed {seed})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

"""Figures as data: every script that measures a figure of docs/results.md writes it with ``write_result``.

One file per measurement run, ``results/<name>.json``::

    {"name": "web-page", "command": "pytest benchmarks/bench_web.py -s", "date": "2026-12-03T10:04:12+00:00",
     "commit": "52c70dc", "machine": "Linux x86_64, AMD EPYC 7B13, 2 cores", "load": [3.1, 2.8, 2.2],
     "data": {...the raw figures...}}

``commit`` is the short sha of the checkout that ran, taken when the run started (``-dirty`` when tracked
files outside results/ and docs/ had uncommitted changes); ``load`` the load average when the file was written (machines are shared: say
how busy it was). Figures measured before results were kept as data carry ``"recorded"`` instead of ``load``:
the page they were transcribed from; their date and commit are those of the commit that published them and
of its parent (the code that was measured). ``note``, when present, says what a reader must know about the
run (it is printed under the table).

The files hold aggregate figures only: never names, photos or embeddings of the people in a dataset.
``render_results.py`` turns them into the tables of docs/results.md and the README.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("name", "command", "date", "commit", "machine", "data")
OPTIONAL_FIELDS = ("load", "recorded", "note")


def results_dir() -> Path:
    """Where results are read and written: ``$EDGEFACE_RESULTS`` or the repository's ``results/``."""
    return Path(os.environ.get("EDGEFACE_RESULTS", REPO / "results"))


@dataclass(frozen=True)
class Result:
    """One results file."""

    name: str
    command: str
    date: str
    commit: str
    machine: str
    data: dict[str, Any]
    load: tuple[float, float, float] | None = None
    recorded: str | None = None
    note: str | None = None

    @classmethod
    def from_dict(cls, record: dict[str, Any], source: str = "results") -> Result:
        missing = [f for f in FIELDS if f not in record]
        unknown = sorted(set(record) - set(FIELDS) - set(OPTIONAL_FIELDS))
        if missing or unknown:
            raise ValueError(f"{source}: missing {missing}, unknown {unknown}" if unknown else
                             f"{source}: missing {missing}")
        datetime.fromisoformat(record["date"])  # raises on a date that is not ISO 8601
        load = record.get("load")
        return cls(**{**record, "load": tuple(load) if load is not None else None})

    def to_dict(self) -> dict[str, Any]:
        record = {f: getattr(self, f) for f in FIELDS}
        if self.load is not None:
            record["load"] = list(self.load)
        for optional in ("recorded", "note"):
            if getattr(self, optional) is not None:
                record[optional] = getattr(self, optional)
        return record


def machine() -> str:
    """The platform, the CPU model and the number of cores, in one line."""
    from edgeface.eval.bench import cpu_model

    return f"{platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores"


@functools.cache
def git_commit() -> str:
    """The short sha of this checkout, with ``-dirty`` when tracked files have uncommitted changes, as it was
    at the first call (below, as a measuring process imports this module: the code that ran is the code at the
    start, whatever is committed while a run lasts)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        # results/ and docs/ are what runs write, not code: runs in a row stay clean
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!docs")
        return sha + ("-dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


git_commit()


def current_command() -> str:
    """How this process was started, as a user would type it (``pytest ...`` or ``python benchmarks/x.py ...``)."""
    program = Path(sys.argv[0])
    if program.name in ("pytest", "py.test", "__main__.py") and "pytest" in sys.modules:
        head = ["pytest"]
    else:
        try:
            head = ["python", str(program.resolve().relative_to(REPO))]
        except ValueError:
            head = ["python", program.name]
    return shlex.join(head + sys.argv[1:])


def write_result(name: str, data: dict[str, Any], command: str | None = None, note: str | None = None) -> Path:
    """Write ``results/<name>.json`` (atomically) with this run's provenance; return its path."""
    result = Result(name=name, command=command or current_command(),
                    date=datetime.now(timezone.utc).isoformat(timespec="seconds"), commit=git_commit(),
                    machine=machine(), data=data, load=tuple(round(x, 2) for x in os.getloadavg()), note=note)
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    os.replace(partial, path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def read_results(folder: Path | None = None) -> dict[str, Result]:
    """Every ``<name>.json`` of the results folder, by name."""
    folder = folder or results_dir()
    out = {}
    for path in sorted(folder.glob("*.json")):
        result = Result.from_dict(json.loads(path.read_text()), source=str(path))
        if result.name != path.stem:
            raise ValueError(f"{path}: its name field says {result.name!r}")
        out[result.name] = result
    return out


# --- figures from the public CLI's JSON (benchmarks/celeba_figures.sh) --------------------------------------

def evaluation_figures(evaluation: dict[str, Any], training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The aggregate figures of ``edgeface evaluate --json`` (no labels, no confusion matrices: with a dataset
    of real people those name them), and what ``edgeface train`` measured on its validation photos."""
    models = []
    for m in evaluation["models"]:
        heads = {head: {k: v for k, v in figures.items() if k not in ("labels", "confusion")}
                 for head, figures in m["heads"].items()}
        models.append({k: m[k] for k in ("name", "kind", "precision", "backbone", "input_size", "size_bytes",
                                         "file_bytes", "faces")} | {"heads": heads})
    data: dict[str, Any] = {"photos": evaluation["data"]["photos"], "max_drop": evaluation["max_drop"],
                            "passed": evaluation["passed"], "models": models}
    if training is not None:
        data["training"] = {"validation_photos": training["dataset"]["val_photos"],
                            "validation_accuracy": {h: m["accuracy"]
                                                    for h, m in training["metrics"]["validation"].items()},
                            "linear_probe": training["metrics"]["linear_probe"],
                            "epochs_run": training["training"]["epochs_run"],
                            "seconds": training["training"]["seconds"]}
    return data


def bench_figures(bench: dict[str, Any]) -> dict[str, Any]:
    """The figures of ``edgeface bench --json`` without paths and checksums (the writer records the machine)."""
    models = [{k: v for k, v in m.items() if k not in ("path", "sha256", "source_sha256")} for m in bench["models"]]
    return {"runs": bench["runs"], "warmup": bench["warmup"], "frames": bench["frames"], "models": models}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write results/NAME.json from the JSON of `edgeface evaluate` or `edgeface bench`.")
    parser.add_argument("kind", choices=("evaluation", "bench"))
    parser.add_argument("name", help="the results file's name (results/NAME.json)")
    parser.add_argument("json", type=Path, help="the --json file the command wrote")
    parser.add_argument("--training", type=Path, help="evaluation: the metadata.json `edgeface train` wrote")
    parser.add_argument("--command", required=True, help="the command that measured the figures")
    parser.add_argument("--note", help="what a reader must know about the run (printed under its table)")
    args = parser.parse_args(argv)
    source = json.loads(args.json.read_text())
    if args.kind == "evaluation":
        training = json.loads(args.training.read_text()) if args.training else None
        data = evaluation_figures(source, training)
    else:
        data = bench_figures(source)
    write_result(args.name, data, args.command, note=args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Small households drawn from celeba-299: each head of the default recipe against its linear probe, Keras
against int8.

The product's first user trains on a handful of people with tens of photos each, and labels few of them for
emotion. This draws such sets from celeba-299 with a seed: for each size, PEOPLE people (among those with at
least ``MIN_PHOTOS`` photos), 10 to 30 of each one's photos, 30% of each person's photos held out for testing;
emotion labels are kept on ``--emotion-labels`` of the training photos only (the test photos keep all
theirs). Each set goes through the public CLI as a user would run it (``edgeface train`` with its defaults,
``edgeface convert --precision int8``, ``edgeface evaluate`` of the Keras model and the int8 bundle on the
test photos), and the linear probe is measured on the same test photos: a logistic regression fitted on the
pretrained backbone's features of the very photos the model was trained on (``edgeface train``'s own
training split), reading what each head reads. Photos without a detectable face count as wrong for every
model, the probe included.

    python benchmarks/household_sets.py                         # 5, 10 and 20 people x seeds 0, 1, 2
    python benchmarks/household_sets.py --people 5 --seeds 0     # one set
    python benchmarks/household_sets.py --run runs/celeba-dlib-resnet \\
        --bundle bundles/celeba/celeba-dlib-resnet-int8.edgeface --test splits/celeba/test.csv \\
        --name celeba-probe                                     # an existing run, beside its probe

Writes ``results/household-sets.json`` (or ``results/NAME.json``) and prints a table. Hours of CPU on 2
cores (each set trains, converts and evaluates). Splits, runs and bundles go under ``--work`` (default
``runs/household``): they derive from CelebA and are never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA_CSV = SHARED / "data" / "celeba-299" / "labels.csv"
EDGEFACE = os.environ.get("EDGEFACE", str(REPO / ".venv" / "bin" / "edgeface"))
MIN_PHOTOS, MAX_PHOTOS = 10, 30
TEST_FRACTION = 0.3
DETECTOR = "blazeface-fallback"  # photo collections: small faces too
HEADS = ("identity", "emotion", "gender")


def draw_set(people: int, seed: int, emotion_labels: float, out: Path) -> tuple[Path, Path]:
    """A household of ``people`` from celeba-299: train.csv and test.csv in ``out``."""
    from edgeface.data.manifest import Sample, load_dataset, write_csv

    data = load_dataset(CELEBA_CSV)
    by_person: dict[str, list[Sample]] = {}
    for sample in data.samples:
        by_person.setdefault(str(sample.identity), []).append(sample)
    rng = random.Random(f"household-{people}-{seed}")
    chosen = rng.sample(sorted(p for p, photos in by_person.items() if len(photos) >= MIN_PHOTOS), people)
    train: list[Sample] = []
    test: list[Sample] = []
    for person in chosen:
        photos = sorted(by_person[person], key=lambda s: str(s.image))
        rng.shuffle(photos)
        photos = photos[:rng.randint(MIN_PHOTOS, min(MAX_PHOTOS, len(photos)))]
        held = max(1, round(TEST_FRACTION * len(photos)))
        test += photos[:held]
        for sample in photos[held:]:
            emotion = sample.emotion if rng.random() < emotion_labels else None
            train.append(Sample(sample.image, sample.identity, emotion, sample.gender))
    out.mkdir(parents=True, exist_ok=True)
    return write_csv(train, out / "train.csv"), write_csv(test, out / "test.csv")


def run(*args: object) -> None:
    command = [str(a) for a in args]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)


def heldout_probe(run_dir: Path, test_csv: Path) -> dict[str, float | None]:
    """Each head's linear probe on the test photos: fitted on the pretrained backbone's features of the run's
    own training split, reading the features that head reads (None: fewer than two classes labelled)."""
    from edgeface.convert.pipeline import training_split
    from edgeface.core.errors import ModelError
    from edgeface.core.modelio import MODEL_NAME, read_metadata
    from edgeface.core.spec import ModelSpec
    from edgeface.data.manifest import load_dataset
    from edgeface.eval.metrics import head_metrics
    from edgeface.faces.crops import crop_samples
    from edgeface.train.frozen import frozen_features
    from edgeface.train.model import build_model, head_features
    from edgeface.train.probe import fit_softmax_head

    metadata = read_metadata(run_dir / MODEL_NAME)
    spec = ModelSpec.from_dict(metadata["spec"])
    train_part, _ = training_split(metadata)
    test = load_dataset(test_csv)
    built = build_model(spec, weights=metadata.get("weights"))
    crops = [crop_samples(d.samples, spec.crop, spec.input_size) for d in (train_part, test)]
    train_features, test_features = (frozen_features(built, c.crops, spec) for c in crops)
    reads = head_features(spec.backbone)
    train_samples, test_samples = crops[0].cropped_samples, crops[1].cropped_samples
    missed = [s for s, _ in crops[1].skipped()]
    accuracy: dict[str, float | None] = {}
    for head in HEADS:
        try:
            kernel, bias = fit_softmax_head(train_features[reads[head]], [s.label(head) for s in train_samples],
                                            spec.labels[head])
        except ModelError:
            accuracy[head] = None
            continue
        logits = test_features[reads[head]] @ kernel + bias
        accuracy[head] = head_metrics(test_samples, logits, spec.labels[head], head, missed_samples=missed).accuracy
    return accuracy


def measure(run_dir: Path, bundle: Path, test_csv: Path, report: Path) -> dict[str, Any]:
    """Keras and int8 on the test photos (``edgeface evaluate``), the probe beside them, what ``train`` kept for
    each head, and how the int8 bundle gives it (``device``: "float", its last layer in float from the features
    the bundle outputs; "centres", identity's nearest centre in float; "model", the model's own output)."""
    from edgeface.core.bundle import read_manifest
    from edgeface.core.modelio import MODEL_NAME, read_metadata

    run(EDGEFACE, "evaluate", run_dir, bundle, "--data", test_csv, "--json", report)
    evaluation = json.loads(report.read_text())
    keras, int8 = evaluation["models"]
    probe = heldout_probe(run_dir, test_csv)
    metadata = read_metadata(run_dir / MODEL_NAME)
    manifest = read_manifest(bundle)
    rules = {**(manifest.get("head_rules") or {}), "identity": manifest.get("identity_rule") or
             (manifest.get("head_rules") or {}).get("identity") or {}}
    heads = {}
    for head in HEADS:
        heads[head] = {"keras": keras["heads"][head]["accuracy"], "int8": int8["heads"][head]["accuracy"],
                       "probe": None if probe[head] is None else round(probe[head], 4),
                       "n": keras["heads"][head]["n"],
                       "int8_drop_points": round(100 * (keras["heads"][head]["accuracy"]
                                                        - int8["heads"][head]["accuracy"]), 2),
                       "kept": metadata.get("heads", {}).get(head, {}).get("kept"),
                       "validation": metadata.get("heads", {}).get(head, {}).get("validation"),
                       "refit": metadata.get("heads", {}).get(head, {}).get("refit"),
                       "fit": metadata.get("heads", {}).get(head, {}).get("fit"),
                       "device": rules.get(head, {}).get("used", "model")}
    dataset = metadata["dataset"]
    return {"train_photos": dataset["train_photos"], "val_photos": dataset["val_photos"],
            "test_photos": evaluation["data"]["photos"], "people": len(metadata["spec"]["labels"]["identity"]),
            "emotion_labels": sum(1 for _ in _labelled(Path(dataset["source"]), "emotion")),
            "faces_found": keras["faces"]["found"], "heads": heads}


def _labelled(csv_path: Path, head: str):
    from edgeface.data.manifest import load_dataset

    return (s for s in load_dataset(csv_path).samples if s.label(head) is not None)


def household(people: int, seed: int, emotion_labels: float, work: Path) -> dict[str, Any]:
    name = f"p{people}-s{seed}"
    train_csv, test_csv = draw_set(people, seed, emotion_labels, work / "splits" / name)
    run_dir, bundles = work / "runs" / name, work / "bundles"
    run(EDGEFACE, "train", "--data", train_csv, "--out", run_dir, "--detector", DETECTOR)
    run(EDGEFACE, "convert", run_dir, "--precision", "int8", "--out", bundles, "--min-agreement", "0")
    figures = measure(run_dir, bundles / f"{name}-int8.edgeface", test_csv, work / "reports" / f"{name}.json")
    return {"set": name, "people": people, "seed": seed, **figures}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'set':10s} {'people':>6s} {'train':>5s} {'test':>5s} " + " ".join(
        f"{h + ' keras/int8/probe (kept)':>36s}" for h in HEADS))
    for row in rows:
        cells = [f"{100 * f['keras']:6.2f}/{100 * f['int8']:6.2f}/"
                 f"{'-' if f['probe'] is None else format(100 * f['probe'], '6.2f')} ({f['kept']})"
                 for f in (row["heads"][h] for h in HEADS)]
        print(f"{row['set']:10s} {row['people']:6d} {row['train_photos']:5d} {row['test_photos']:5d} "
              + " ".join(f"{c:>36s}" for c in cells))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per head over all sets: how many meet each target, and the figures pooled over all test photos."""
    out = {}
    for head in HEADS:
        figures = [row["heads"][head] for row in rows if row["heads"][head]["probe"] is not None]
        limit = 0.2 if head == "identity" else 0.5
        n = sum(f["n"] for f in figures) or 1
        out[head] = {
            "sets": len(figures),
            "keras_at_least_probe": sum(f["keras"] >= f["probe"] for f in figures),
            "int8_drop_within_target": sum(f["int8_drop_points"] <= limit for f in figures),
            "pooled": {k: round(sum(f[k] * f["n"] for f in figures) / n, 4) for k in ("keras", "int8", "probe")},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--emotion-labels", type=float, default=0.3,
                        help="share of the training photos that keep their emotion label")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "household")
    parser.add_argument("--run", type=Path, help="measure this existing run instead of drawing sets")
    parser.add_argument("--bundle", type=Path, help="with --run: its int8 bundle")
    parser.add_argument("--test", type=Path, help="with --run: its test photos")
    parser.add_argument("--name", default="household-sets", help="results/NAME.json")
    args = parser.parse_args(argv)
    if not CELEBA_CSV.is_file() and args.run is None:
        print(f"celeba-299 not found at {CELEBA_CSV} (set EDGEFACE_SHARED)", file=sys.stderr)
        return 2
    if args.run is not None:
        if args.bundle is None or args.test is None:
            parser.error("--run needs --bundle and --test")
        row = {"set": args.run.name, **measure(args.run, args.bundle, args.test,
                                               args.work / "reports" / f"{args.name}-evaluate.json")}
        print_table([row])
        write_result(args.name, row)
        return 0
    rows = [household(people, seed, args.emotion_labels, args.work) for people in args.people for seed in args.seeds]
    print_table(rows)
    data = {"emotion_labels": args.emotion_labels, "photos_per_person": [MIN_PHOTOS, MAX_PHOTOS],
            "test_fraction": TEST_FRACTION, "detector": DETECTOR, "sets": rows, "summary": summary(rows)}
    print(json.dumps(data["summary"], indent=1))
    write_result(args.name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

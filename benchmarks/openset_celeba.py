"""Open-set identification on celeba-299: edgeface (enroll + calibrate) beside face_recognition (dlib).

The split, by person (seeded, so the lead's training run and this evaluation agree):

* **trained** (2/3 of the people): the model is trained on their photos, except about 20% of each person's
  photos (at least 1, for people with 5 or more), held out to check the trained identity head under the
  combined rule;
* **enrolled** (half of the other third, chosen among people with at least 7 photos): 5 photos each are
  offered for enrollment (photos rejected by the quality checks are not enrolled, as on the device); the rest
  are queries;
* **strangers** (the rest of that third), neither trained nor enrolled, in two halves A and B. The threshold
  is calibrated on A and the false-accept rate measured on B, then the other way round; both are reported.

Usage (the lead trains on the CSV written by the first command)::

    python benchmarks/openset_celeba.py --write-train-csv /tmp/ef/openset-train.csv
    edgeface train --data /tmp/ef/openset-train.csv --out /tmp/ef/runs/openset ...
    edgeface convert /tmp/ef/runs/openset --precision int8 --out /tmp/ef/bundles
    python benchmarks/openset_celeba.py --bundle /tmp/ef/bundles/openset-int8.edgeface --out artifacts/openset

The figures go to ``results/openset-<backbone>.json`` (``--results NAME`` for another name; a ``--limit`` run
writes none unless given one); ``--out`` keeps the report and face_recognition's encoding cache (never
committed: it holds descriptors of the photos).

``--no-dlib`` skips face_recognition (``pip install dlib-bin face-recognition-models`` and
``pip install --no-deps face_recognition`` bring it). ``docs/identity.md`` explains the rule and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA_CSV = SHARED / "data" / "celeba-299" / "labels.csv"

ENROLL_PHOTOS = 5
MIN_ENROLLED_PHOTOS = ENROLL_PHOTOS + 2  # an enrolled person keeps at least 2 query photos
TRAINED_HOLDOUT = 0.2


@dataclass
class Split:
    train: list[Any] = field(default_factory=list)  # Samples the model is trained on
    trained_queries: list[Any] = field(default_factory=list)  # held-out photos of trained people
    enroll: dict[str, list[Any]] = field(default_factory=dict)  # person -> photos offered for enrollment
    queries: list[Any] = field(default_factory=list)  # the other photos of enrolled people
    strangers: tuple[list[Any], list[Any]] = field(default_factory=lambda: ([], []))  # halves A and B

    def describe(self) -> str:
        trained = len({s.identity for s in self.train})
        a, b = self.strangers
        return (f"trained: {trained} people, {len(self.train)} training photos, "
                f"{len(self.trained_queries)} held out; enrolled: {len(self.enroll)} people x "
                f"{ENROLL_PHOTOS} offered, {len(self.queries)} queries; "
                f"strangers: {len({s.identity for s in a})} + {len({s.identity for s in b})} people, "
                f"{len(a)} + {len(b)} photos")


def split_people(samples: Sequence[Any], seed: int = 0, new_fraction: float = 1 / 3) -> Split:
    """The seeded by-person split described in the module docstring."""
    by_person: dict[str, list[Any]] = {}
    for s in samples:
        if s.identity:
            by_person.setdefault(s.identity, []).append(s)
    rng = random.Random(seed)
    people = sorted(by_person)
    rng.shuffle(people)
    for person in people:  # each person's photos in a seeded order: enrollment offers first
        photos = sorted(by_person[person], key=lambda s: str(s.image))
        rng.shuffle(photos)
        by_person[person] = photos
    new = people[:round(len(people) * new_fraction)]
    trained = people[len(new):]
    eligible = [p for p in new if len(by_person[p]) >= MIN_ENROLLED_PHOTOS]
    enrolled = eligible[:len(new) // 2]
    strangers = [p for p in new if p not in set(enrolled)]
    split = Split()
    for person in trained:
        photos = by_person[person]
        held = max(1, round(TRAINED_HOLDOUT * len(photos))) if len(photos) >= 5 else 0
        split.trained_queries += photos[:held]
        split.train += photos[held:]
    for person in enrolled:
        split.enroll[person] = by_person[person][:ENROLL_PHOTOS]
        split.queries += by_person[person][ENROLL_PHOTOS:]
    for i, person in enumerate(strangers):
        split.strangers[i % 2].extend(by_person[person])
    return split


def load_split(csv_path: Path, seed: int) -> Split:
    from edgeface.data.manifest import load_dataset

    data = load_dataset(csv_path)
    data.raise_for_errors()
    return split_people(data.samples, seed)


# --- faces and embeddings, per system -----------------------------------------------------------------------

@dataclass
class Faces:
    """One system's view of a list of photos: which have a usable face, and its embedding."""

    found: np.ndarray  # (N,) bool
    embeddings: np.ndarray  # (N, D), zeros where no face
    identity: np.ndarray | None = None  # (N, C) identity-head probabilities (edgeface only)
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # emotion/gender probabilities (edgeface)


def edgeface_faces(embedder: Any, samples: Sequence[Any], quality: bool) -> Faces:
    checks, outputs = embedder.photos([s.image for s in samples], quality=quality)
    found = np.array([c.ok for c in checks])
    n, size = len(samples), embedder.spec.embedding_size
    embeddings = np.zeros((n, size), np.float32)
    identity = np.zeros((n, len(embedder.spec.labels["identity"])), np.float32)
    embeddings[found] = outputs["embedding"]
    identity[found] = outputs["identity"]
    attributes = {}
    for head in ("emotion", "gender"):
        attributes[head] = np.zeros((n, len(embedder.spec.labels[head])), np.float32)
        attributes[head][found] = outputs[head]
    return Faces(found, embeddings, identity, attributes)


def unseen_attributes(spec: Any, sets: dict[str, Sequence[Any]], faces: dict[str, Faces]) -> dict[str, Any]:
    """Emotion and gender accuracy on the photos of the people the model was never trained on (enrolled and
    strangers: a people-disjoint test); a photo without a face counts as wrong."""
    out: dict[str, Any] = {}
    for head in ("emotion", "gender"):
        right = total = 0
        for name in ("enroll", "queries", "strangers_a", "strangers_b"):
            f = faces[name]
            predicted = np.array(spec.labels[head])[f.attributes[head].argmax(1)]
            for sample, found, label in zip(sets[name], f.found, predicted):
                truth = sample.label(head)
                if truth is not None:
                    total += 1
                    right += bool(found and label == truth)
        out[head] = right / max(total, 1)
        out[f"{head}_photos"] = total
    return out


class Dlib:
    """face_recognition with its defaults: HOG detector (upsampled once), 128-d ResNet encodings, 1 jitter."""

    def __init__(self) -> None:
        import face_recognition

        self.fr = face_recognition

    def encode(self, path: Path) -> np.ndarray | None:
        image = self.fr.load_image_file(str(path))
        boxes = self.fr.face_locations(image)
        if not boxes:
            return None
        largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        return self.fr.face_encodings(image, [largest])[0]


def dlib_faces(dlib: Dlib, samples: Sequence[Any], cache: dict[str, np.ndarray | None]) -> Faces:
    from edgeface.core.progress import progress_bar

    out = []
    for s in progress_bar(samples, desc="face_recognition", unit="img"):
        key = str(s.image)
        if key not in cache:
            cache[key] = dlib.encode(s.image)
        out.append(cache[key])
    found = np.array([e is not None for e in out])
    embeddings = np.zeros((len(out), 128), np.float32)
    for i, e in enumerate(out):
        if e is not None:
            embeddings[i] = e
    return Faces(found, embeddings)


# --- scoring -----------------------------------------------------------------------------------------------

def build_gallery(split: Split, faces: Faces, size: int, unit: bool) -> Any:
    """The gallery of enrolled people from their accepted offered photos (dlib: distances, so not unit)."""
    from edgeface.core.gallery import Gallery, Person

    people = []
    row = 0  # faces are in the order of split.enroll's photos
    for person, photos in split.enroll.items():
        ok = [r for r in range(row, row + len(photos)) if faces.found[r]]
        row += len(photos)
        if ok:
            people.append(Person(person, faces.embeddings[ok]))
    return Gallery("benchmark", size, tuple(people)) if unit else tuple(people)


def dlib_scores(people: Sequence[Any], faces: Faces) -> tuple[np.ndarray, np.ndarray]:
    """Best person (index) and minus the smallest Euclidean distance, face_recognition's measure."""
    if not len(faces.embeddings):
        return np.zeros(0, np.int64), np.zeros(0)
    dist = np.stack([np.linalg.norm(faces.embeddings[:, None, :] - p.embeddings[None], axis=2).min(1)
                     for p in people], axis=1)
    return dist.argmin(1), -dist.min(1)


def evaluate_edgeface(bundle: Any, embedder: Any, split: Split, faces: dict[str, Faces], far: float
                      ) -> dict[str, Any]:
    from edgeface.people.calibrate import choose_thresholds
    from edgeface.runtime.labeler import Labeler
    from edgeface.core.results import UNKNOWN

    spec = embedder.spec
    gallery = build_gallery(split, faces["enroll"], spec.embedding_size, unit=True)
    names = gallery.names
    truth_q = np.array([s.identity for s in split.queries])
    truth_t = np.array([s.identity for s in split.trained_queries])

    def labels(f: Faces, labeler: Labeler) -> np.ndarray:
        out = np.full(len(f.found), "(no face)", dtype=object)
        if f.found.any():
            got = labeler({"identity": f.identity[f.found], "emotion": np.ones((f.found.sum(), 2)) / 2,
                           "gender": np.ones((f.found.sum(), 2)) / 2, "embedding": f.embeddings[f.found]})
            out[f.found] = [g.identity.label for g in got]
        return out

    q = faces["queries"]
    match = gallery.match(q.embeddings[q.found])
    rank1 = np.zeros(len(truth_q), bool)
    rank1[q.found] = np.array(names)[match.index] == truth_q[q.found]
    result: dict[str, Any] = {
        "enrolled_people": len(gallery),
        "enrolled_photos": int(sum(len(p.embeddings) for p in gallery.people)),
        "offered_rejected": int((~faces["enroll"].found).sum()),
        "query_faces_found": float(q.found.mean()), "rank1": float(rank1.mean()),
    }
    for rule in ("combined", "gallery_only"):
        folds = []
        for cal, test in (("strangers_a", "strangers_b"), ("strangers_b", "strangers_a")):
            c = faces[cal]
            sim_c = gallery.match(c.embeddings[c.found]).similarity
            conf_c = c.identity[c.found].max(1) if rule == "combined" else None
            t = choose_thresholds(sim_c, conf_c, far)
            labeler = Labeler(spec, t.identity if t.identity is not None else 1.01, gallery=gallery,
                              similarity_threshold=t.similarity)
            test_labels = labels(faces[test], labeler)
            found = faces[test].found
            fold = {"similarity_threshold": t.similarity, "identity_threshold": t.identity,
                    "far_calibration": t.far,
                    "far": float(np.mean(test_labels[found] != UNKNOWN)),
                    "enrolled_accuracy": float(np.mean(labels(q, labeler) == truth_q))}
            if rule == "combined":
                fold["trained_accuracy"] = float(np.mean(labels(faces["trained"], labeler) == truth_t))
            folds.append(fold)
        result[rule] = {"folds": folds, **{k: float(np.mean([f[k] for f in folds])) for k in folds[0]
                                           if k != "identity_threshold" or folds[0][k] is not None}}
    # The trained head alone, at the bundle's own threshold: what the daemon did before galleries.
    closed = Labeler(spec, bundle.identity_threshold)
    result["trained_accuracy_head_only"] = float(np.mean(labels(faces["trained"], closed) == truth_t))
    return result


def evaluate_dlib(split: Split, faces: dict[str, Faces], far: float, tolerance: float = 0.6
                  ) -> dict[str, Any]:
    from edgeface.people.calibrate import choose_thresholds

    people = build_gallery(split, faces["enroll"], 128, unit=False)
    names = np.array([p.name for p in people])
    truth_q = np.array([s.identity for s in split.queries])
    q = faces["queries"]

    def named(f: Faces, threshold: float) -> np.ndarray:
        out = np.full(len(f.found), "", dtype=object)
        index, score = dlib_scores(people, Faces(f.found[f.found], f.embeddings[f.found]))
        out[f.found] = np.where(score >= threshold, names[index], "unknown") if len(index) else []
        return out

    index, _ = dlib_scores(people, Faces(q.found[q.found], q.embeddings[q.found]))
    rank1 = np.zeros(len(truth_q), bool)
    rank1[q.found] = names[index] == truth_q[q.found]
    result: dict[str, Any] = {
        "enrolled_people": len(people), "enrolled_photos": int(sum(len(p.embeddings) for p in people)),
        "offered_rejected": int((~faces["enroll"].found).sum()),
        "query_faces_found": float(q.found.mean()), "rank1": float(rank1.mean()),
    }
    folds = []
    for cal, test in (("strangers_a", "strangers_b"), ("strangers_b", "strangers_a")):
        c = faces[cal]
        _, score_c = dlib_scores(people, Faces(c.found[c.found], c.embeddings[c.found]))
        t = choose_thresholds(score_c, None, far)
        test_named = named(faces[test], t.similarity)
        folds.append({"distance_threshold": -t.similarity, "far_calibration": t.far,
                      "far": float(np.mean(test_named[faces[test].found] != "unknown")),
                      "enrolled_accuracy": float(np.mean(named(q, t.similarity) == truth_q))})
    result["gallery_only"] = {"folds": folds, **{k: float(np.mean([f[k] for f in folds])) for k in folds[0]}}
    strangers = [faces["strangers_a"], faces["strangers_b"]]
    stranger_names = np.concatenate([named(f, -tolerance)[f.found] for f in strangers])
    result["default_tolerance"] = {
        "distance_threshold": tolerance,
        "far": float(np.mean(stranger_names != "unknown")),
        "enrolled_accuracy": float(np.mean(named(q, -tolerance) == truth_q)),
    }
    return result


def measure_latency(embedder: Any, dlib: Dlib | None, samples: Sequence[Any], repeats: int = 1
                    ) -> dict[str, dict[str, float]]:
    """Per-face seconds of each stage, the two systems taking turns on the same photos (same machine load)."""
    from edgeface.faces.align import align_face
    from edgeface.core.imageio import read_image
    from edgeface.people.enroll import pick_face

    times: dict[str, dict[str, list[float]]] = {"edgeface": {"detect": [], "align": [], "embed": []},
                                                 "face_recognition": {"detect": [], "embed": []}}
    spec = embedder.spec
    for _ in range(repeats):
        for s in samples:
            image = read_image(s.image)
            t0 = time.perf_counter()
            face, _ = pick_face(embedder.detector.detect(image))
            t1 = time.perf_counter()
            if face is not None:
                crop = align_face(image, face, spec.crop, spec.input_size)[None]
                t2 = time.perf_counter()
                embedder.engine.predict(crop)
                t3 = time.perf_counter()
                for stage, seconds in (("detect", t1 - t0), ("align", t2 - t1), ("embed", t3 - t2)):
                    times["edgeface"][stage].append(seconds)
            if dlib is not None:
                t0 = time.perf_counter()
                boxes = dlib.fr.face_locations(image)
                t1 = time.perf_counter()
                if boxes:
                    dlib.fr.face_encodings(image, boxes[:1])
                    t2 = time.perf_counter()
                    times["face_recognition"]["detect"].append(t1 - t0)
                    times["face_recognition"]["embed"].append(t2 - t1)
    out: dict[str, dict[str, float]] = {}
    for system, stages in times.items():
        if stages["detect"]:
            out[system] = {stage: float(np.median(v)) for stage, v in stages.items()}
            out[system]["total"] = sum(out[system].values())
            out[system]["faces"] = len(stages["detect"])
    return out


# --- report ------------------------------------------------------------------------------------------------

def report(results: dict[str, Any], far: float) -> str:
    ours, theirs, latency = results["edgeface"], results.get("face_recognition"), results["latency"]
    size = results["input_size"]
    setup = (f"bundle: {results['bundle']} ({results['precision']}, {size}x{size}, {results['backbone']}); "
             f"target false-accept rate {far:.1%}, calibrated on one half of the strangers and measured on "
             "the other (mean of both ways)")
    lines = [f"# Open-set identification on celeba-299 (seed {results['seed']})", "", results["split"], "",
             setup, ""]
    header = ("| | enrolled photos | queries with a face | rank-1 (no threshold) | FAR on unseen strangers | "
              "enrolled accuracy at that threshold | trained accuracy |")
    lines += [header, "|" + "---|" * 7]

    def row(name: str, r: dict[str, Any], rule: dict[str, Any], trained: str = "") -> str:
        return (f"| {name} | {r['enrolled_photos']} | {r['query_faces_found']:.1%} | {r['rank1']:.1%} | "
                f"{rule['far']:.2%} | {rule['enrolled_accuracy']:.1%} | {trained} |")

    trained = f"{ours['combined']['trained_accuracy']:.1%}"
    lines.append(row("edgeface, combined rule", ours, ours["combined"], trained))
    lines.append(row("edgeface, gallery only", ours, ours["gallery_only"]))
    if theirs:
        lines.append(row("face_recognition (dlib), calibrated", theirs, theirs["gallery_only"]))
        tolerance = theirs["default_tolerance"]["distance_threshold"]
        lines.append(row(f"face_recognition, default tolerance {tolerance}", theirs,
                         theirs["default_tolerance"]))
    head_only = ours["trained_accuracy_head_only"]
    unseen = ours["unseen_people"]
    lines += ["", f"edgeface trained people, identity head alone at the bundle's threshold: {head_only:.1%}",
              "", f"edgeface on the people no model was trained on: emotion {unseen['emotion']:.1%} of "
                  f"{unseen['emotion_photos']} photos, gender {unseen['gender']:.1%} of {unseen['gender_photos']}",
              "",
              "Latency per face on this machine (median, one thread, the same photos, the two taking turns):",
              "",
              "| | detect | align | embed | total | faces |", "|---|---|---|---|---|---|"]
    for system, t in latency.items():
        align = f"{t['align'] * 1000:.1f} ms" if "align" in t else "(in embed)"
        lines.append(f"| {system} | {t['detect'] * 1000:.1f} ms | {align} | "
                     f"{t['embed'] * 1000:.1f} ms | {t['total'] * 1000:.1f} ms | {t['faces']} |")
    if len(latency) == 2:
        ratio = latency["face_recognition"]["total"] / latency["edgeface"]["total"]
        lines.append(f"\nface_recognition takes {ratio:.1f}x edgeface's time per face.")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, split: Split) -> dict[str, Any]:
    from edgeface.core.bundle import load_bundle
    from edgeface.people.enroll import FaceEmbedder

    bundle = load_bundle(args.bundle)
    trained = set(bundle.spec.labels["identity"])
    held_out = (set(split.enroll) | {s.identity for half in split.strangers for s in half}) & trained
    if held_out:
        raise SystemExit(f"error: {args.bundle} was trained on {len(held_out)} people this split holds out "
                         f"(e.g. {min(held_out)}): train on the CSV from --write-train-csv with --seed "
                         f"{args.seed}")
    if trained != {s.identity for s in split.train}:
        print(f"warning: {args.bundle} was trained on other people than this split's trained third",
              file=sys.stderr)
    embedder = FaceEmbedder(bundle, num_threads=1)
    sets = {"enroll": [s for photos in split.enroll.values() for s in photos], "queries": split.queries,
            "strangers_a": split.strangers[0], "strangers_b": split.strangers[1],
            "trained": split.trained_queries}
    if args.limit:
        sets = {k: v if k == "enroll" else v[:args.limit] for k, v in sets.items()}
        split = Split(split.train, sets["trained"], split.enroll, sets["queries"],
                      (sets["strangers_a"], sets["strangers_b"]))
    results: dict[str, Any] = {"seed": args.seed, "split": split.describe(), "bundle": str(args.bundle),
                               "precision": bundle.precision, "input_size": bundle.spec.input_size,
                               "backbone": bundle.spec.backbone}
    print("edgeface: embedding", sum(map(len, sets.values())), "photos", file=sys.stderr)
    ours = {k: edgeface_faces(embedder, v, quality=(k == "enroll")) for k, v in sets.items()}
    results["edgeface"] = evaluate_edgeface(bundle, embedder, split, ours, args.far)
    results["edgeface"]["unseen_people"] = unseen_attributes(bundle.spec, sets, ours)
    dlib = None
    if not args.no_dlib:
        dlib = Dlib()
        cache_path = args.out / "face_recognition-encodings.npz"
        cache: dict[str, np.ndarray | None] = {}
        if cache_path.is_file():
            stored = np.load(cache_path, allow_pickle=False)
            cache = {k: (None if not stored[k].size else stored[k]) for k in stored.files}
        theirs = {k: dlib_faces(dlib, v, cache) for k, v in sets.items()}
        np.savez(cache_path, **{k: (np.zeros(0) if v is None else v) for k, v in cache.items()})
        results["face_recognition"] = evaluate_dlib(split, theirs, args.far)
    rng = random.Random(args.seed)
    timing = rng.sample(split.queries, min(args.latency_photos, len(split.queries)))
    results["latency"] = measure_latency(embedder, dlib, timing)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CELEBA_CSV, help="labels.csv of celeba-299")
    parser.add_argument("--seed", type=int, default=0, help="seed of the by-person split")
    parser.add_argument("--write-train-csv", type=Path,
                        help="write the training CSV (trained people) and stop")
    parser.add_argument("--bundle", type=Path, help="the model trained on --write-train-csv, as a bundle")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "openset",
                        help="folder for results.json, report.md and face_recognition's encoding cache")
    parser.add_argument("--far", type=float, default=0.01, help="target false-accept rate")
    parser.add_argument("--no-dlib", action="store_true", help="skip face_recognition")
    parser.add_argument("--latency-photos", type=int, default=60, help="photos timed per system")
    parser.add_argument("--limit", type=int, default=0,
                        help="at most this many photos per query set (quick runs)")
    parser.add_argument("--results", metavar="NAME",
                        help="write the figures to results/NAME.json (default: openset-<backbone>, not for --limit)")
    args = parser.parse_args(argv)
    split = load_split(args.data, args.seed)
    print(split.describe())
    if args.write_train_csv:
        from edgeface.data.manifest import write_csv

        write_csv(split.train, args.write_train_csv)
        print(f"wrote {args.write_train_csv}")
        return 0
    if args.bundle is None:
        parser.error("give --bundle (a model trained on --write-train-csv) or --write-train-csv")
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args, split)
    text = report(results, args.far)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(text)
    print(text)
    if args.results or not args.limit:
        write_result(args.results or f"openset-{results['backbone']}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

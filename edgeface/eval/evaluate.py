"""Evaluate several models on the same faces: what ``edgeface evaluate`` runs.

Any mix of Keras models and bundles. Bundles run on LiteRT here (this runs on the Pi); a Keras model runs
through the engine opener the caller passes, ``edgeface.train.keras_model.load_engine`` on the workstation,
so this module never imports the workstation side. Each photo is detected and cropped once (by ``crop_samples``, cached on
disk) for every distinct (crop geometry, input size) among the models, so models that share them see the
very same crops. A photo with no detectable face counts as a miss for every model.

``Evaluation.to_dict()`` is the ``--json`` output. Its shape is stable (new fields may be added; none are
renamed or removed within a ``format_version``)::

    {"format": "edgeface-evaluation", "format_version": 1, "created": ISO time, "edgeface_version": ...,
     "data": {"path": CSV, "photos": N},
     "reference": 0,                         # index of the model the others are compared with
     "max_drop": POINTS or null, "passed": true/false/null,
     "models": [                             # in the order given
        {"path": ..., "name": ..., "kind": "keras" | "bundle", "precision": "keras" | "float32" | ...,
         "backbone": ..., "input_size": ..., "size_bytes": TFLite flatbuffer (.keras: the file),
         "file_bytes": the file given (a bundle is deflated), "sha256": ..., "seconds": ...,
         "faces": {"photos": N, "found": ..., "multiple": ..., "no_face": ..., "unreadable": ...},
         "heads": {"identity": {"accuracy": 0..1, "balanced_accuracy": ..., "macro_f1": ..., "n": ...,
                                "missed": ..., "unknown_labels": ..., "labels": [...],
                                "confusion": [[...]],        # rows true, columns predicted
                                "drop": points lost against the reference (negative: gained)},
                   "emotion": {...}, "gender": {...}}}]}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeface.core.errors import DataError, EdgefaceError
from edgeface.core.spec import HEADS, CropSpec
from edgeface.core.version import __version__
from edgeface.data.manifest import Sample, load_dataset
from edgeface.eval.metrics import HeadMetrics, head_metrics
from edgeface.eval.models import ModelInfo, describe_model, display_names
from edgeface.faces.crops import CropSet, crop_samples
from edgeface.faces.detect import check_detector_name
from edgeface.runtime.engine import InferenceEngine, LiteRTEngine, predict_batched

EngineOpener = Callable[[Path, int | None], InferenceEngine]  # (model path, LiteRT threads) -> engine
FORMAT = "edgeface-evaluation"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelEvaluation:
    model: ModelInfo
    name: str
    heads: dict[str, HeadMetrics]
    faces: dict[str, int]  # photos, found, multiple, no_face, unreadable
    seconds: float  # inference time over all faces (batched; not a latency figure)


@dataclass(frozen=True)
class Evaluation:
    """Every model's metrics on the same photos; ``models[0]`` is the reference."""

    data: Path
    photos: int
    models: tuple[ModelEvaluation, ...]
    max_drop: float | None = None

    @property
    def reference(self) -> ModelEvaluation:
        return self.models[0]

    def drop(self, model: ModelEvaluation, head: str) -> float:
        """Accuracy points ``model`` loses on ``head`` against the reference (negative when it gains)."""
        return 100.0 * (self.reference.heads[head].accuracy - model.heads[head].accuracy)

    def gate_failures(self, max_drop: float | None = None) -> list[str]:
        """One line per (model, head) that loses more than ``max_drop`` points; empty when all pass."""
        limit = self.max_drop if max_drop is None else max_drop
        if limit is None:
            return []
        return [f"{m.name} loses {self.drop(m, head):.2f} points of {head} accuracy against {self.reference.name} "
                f"({100 * self.reference.heads[head].accuracy:.2f}% -> {100 * m.heads[head].accuracy:.2f}%; "
                f"--max-drop {limit:g})"
                for m in self.models[1:] for head in HEADS if self.drop(m, head) > limit + 1e-9]

    def to_dict(self) -> dict[str, Any]:
        failures = self.gate_failures()
        models = []
        for m in self.models:
            heads = {}
            for head in HEADS:
                heads[head] = {**m.heads[head].to_dict(), "drop": round(self.drop(m, head), 4)}
            models.append({
                "path": str(m.model.path), "name": m.name, "kind": m.model.kind, "precision": m.model.precision,
                "backbone": m.model.backbone, "input_size": m.model.spec.input_size,
                "size_bytes": m.model.size_bytes, "file_bytes": m.model.file_bytes, "sha256": m.model.sha256,
                "source_sha256": m.model.source_sha256, "seconds": round(m.seconds, 3),
                "faces": dict(m.faces), "heads": heads,
            })
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "edgeface_version": __version__,
            "data": {"path": str(self.data), "photos": self.photos},
            "reference": 0, "max_drop": self.max_drop,
            "passed": None if self.max_drop is None else not failures,
            "models": models,
        }


def face_counts(crops: CropSet) -> dict[str, int]:
    summary = crops.summary()
    return {"photos": len(crops.samples), "found": summary.get("ok", 0) + summary.get("multiple", 0),
            "multiple": summary.get("multiple", 0), "no_face": summary.get("no_face", 0),
            "unreadable": summary.get("unreadable", 0)}


def evaluate_models(models: Sequence[str | Path], data: str | Path, num_threads: int | None = None,
                    batch_size: int = 32, max_drop: float | None = None, detector: str | None = None,
                    progress: bool = False, on_log: Callable[[str], None] = lambda _: None,
                    open_engine: EngineOpener | None = None) -> Evaluation:
    """Evaluate every model on the photos of ``data`` (a CSV manifest or a folder per person).

    ``detector`` finds the faces instead of each model's own detector (its crop geometry is kept).
    ``open_engine`` opens each model for inference; the default opens bundles only, and
    ``edgeface.train.keras_model.load_engine`` opens ``.keras`` models too (importing TensorFlow for them).
    Models are read lazily: every path is checked before any slow work.
    """
    if not models:
        raise EdgefaceError("give at least one model or bundle to evaluate")
    if max_drop is not None and max_drop < 0:
        raise EdgefaceError(f"--max-drop must be 0 or more accuracy points, got {max_drop:g}")
    infos = [describe_model(path) for path in models]  # every path checked before any slow work
    keras = [info.path for info in infos if info.kind != "bundle"]
    if open_engine is None:
        if keras:
            raise EdgefaceError(f"{keras[0]}: a Keras model; evaluating it needs the workstation's engine "
                                "opener (open_engine=edgeface.train.keras_model.load_engine)")
        open_engine = LiteRTEngine.from_bundle
    if detector is not None:
        check_detector_name(detector)
    dataset = load_dataset(data)
    dataset.raise_for_errors()
    if not dataset.samples:
        raise DataError(f"{data}: no photos to evaluate on")

    def crop_of(info: ModelInfo) -> CropSpec:
        return info.spec.crop if detector is None else replace(info.spec.crop, detector=detector)

    crop_sets: dict[tuple[Any, int], CropSet] = {}
    for info in infos:
        key = (crop_of(info), info.spec.input_size)
        if key not in crop_sets:
            crop_sets[key] = crop_samples(dataset.samples, key[0], info.spec.input_size, progress=progress)
    if len(crop_sets) > 1:
        on_log(f"note: the models use {len(crop_sets)} different crop geometries or input sizes; each photo was "
               "cropped once per kind, so not every model saw the same pixels")

    names = display_names(infos)
    results = []
    for info, name in zip(infos, names):
        crops = crop_sets[(crop_of(info), info.spec.input_size)]
        engine = open_engine(info.path, num_threads)
        started = time.perf_counter()
        outputs = predict_batched(engine, crops.crops, batch_size, desc=name, progress=progress, shapes=crops.shapes)
        seconds = time.perf_counter() - started
        samples = crops.cropped_samples
        missed: list[Sample] = [s for s, _ in crops.skipped()]
        heads = {head: head_metrics(samples, outputs[head], info.spec.labels[head], head, missed_samples=missed)
                 for head in HEADS}
        results.append(ModelEvaluation(info, name, heads, face_counts(crops), seconds))
        del engine  # a VGG16 interpreter holds hundreds of MB: one model in memory at a time
    return Evaluation(Path(data), len(dataset.samples), tuple(results), max_drop)

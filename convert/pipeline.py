"""Convert, verify against Keras, and write bundles: what ``edgeface convert`` runs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeface.core.spec import HEADS
from edgeface.data.manifest import Dataset, Sample, load_dataset, split_dataset
from edgeface.core.errors import DataError, EdgefaceError
from edgeface.faces.crops import crop_samples
from edgeface.core.bundle import SUFFIX, sha256_bytes, write_bundle
from edgeface.runtime.engine import LiteRTEngine
from edgeface.train.keras_model import KerasEngine
from edgeface.core.spec import EMBEDDING_NAME, ModelSpec

# On celeba-299 MobileNetV2, 1,000 faces passed the 1-point int8 gate on three draws out of three where 300
# passed on two (README, Results). Likely why, not measured: range equalisation lifts each channel to the
# largest value the representative faces gave it, leaving it no headroom, so those peaks had better be true.
DEFAULT_REPRESENTATIVE_SIZE = 1000
DEFAULT_VERIFY_SIZE = 600
DEFAULT_MIN_AGREEMENT = 0.90
DEBUG_FACES = 64  # verification faces the quantization debugger runs on (--debug-layers)
# ... and the accumulated-error comparison, which keeps every tensor of both models (about 30 MB per face)
ACCUMULATED_FACES = 32
# When Keras itself is torn between two classes by less than two int8 output steps, a different argmax
# after quantization is rounding, not damage: it counts as agreement.
TIE_MARGIN = 2.0 / 256


@dataclass
class HeadCheck:
    """How a converted head compares with Keras on the same held-out crops."""

    agreement: float  # fraction of faces with the same argmax (ties within TIE_MARGIN count as the same)
    max_prob_diff: float  # largest absolute difference of any class probability
    keras_accuracy: float
    tflite_accuracy: float
    n: int  # faces compared (agreement); accuracy uses the labelled ones

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class ConversionResult:
    precision: str
    size_bytes: int
    checks: dict[str, HeadCheck]
    accepted: bool
    reason: str = ""
    bundle_path: Path | None = None
    embedding_cosine: float | None = None  # mean cosine similarity of TFLite vs Keras embeddings
    layer_errors: list[dict[str, Any]] = field(default_factory=list)
    accumulated_errors: list[dict[str, Any]] = field(default_factory=list)  # int8 vs float, tensor by tensor
    debug_reports: list[Path] = field(default_factory=list)  # the CSVs and plot --debug-layers wrote


def select_representative(samples: Sequence[Sample], count: int, seed: int = 0) -> list[int]:
    """Indices of ``count`` samples spread across people and label combinations.

    Round-robin over (emotion, gender) groups and, within a group, over people, so calibration sees every
    kind of face rather than mostly the best-photographed person.
    """
    rng = random.Random(seed)
    groups: dict[tuple, dict[str | None, list[int]]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.emotion, s.gender), {}).setdefault(s.identity, []).append(i)
    queues = []
    for people in groups.values():
        for indices in people.values():
            rng.shuffle(indices)
        order = list(people)
        rng.shuffle(order)
        queues.append([people[p] for p in order])
    chosen: list[int] = []
    while len(chosen) < min(count, len(samples)):
        progressed = False
        for people in queues:
            for indices in people:
                if indices:
                    chosen.append(indices.pop())
                    progressed = True
                    break
            people.sort(key=len, reverse=True)  # next round starts with who has the most left
            if len(chosen) >= count:
                break
        if not progressed:
            break
    return sorted(chosen)


def _split_from_metadata(metadata: dict[str, Any]) -> tuple[Dataset, Dataset]:
    """Rebuild the training and validation sets a model was trained with, from its metadata."""
    info = metadata.get("dataset", {})
    config = metadata.get("training", {}).get("config", {})
    source = Path(info.get("source", ""))
    if not source.exists():
        raise DataError(f"the model's training data {source} is not here: pass --representative DATA "
                        "(and --verify-data DATA)")
    data = load_dataset(source)
    if config.get("val"):
        return data, load_dataset(config["val"])
    return split_dataset(data, float(config.get("val_fraction", 0.15)), seed=int(config.get("seed", 0)))


def _crops_for(dataset: Dataset, spec: ModelSpec, limit: int, seed: int, progress: bool):
    dataset.raise_for_errors()
    picked = select_representative(dataset.samples, limit, seed)
    samples = [dataset.samples[i] for i in picked]
    crops = crop_samples(samples, spec.crop, spec.input_size, progress=progress)
    if len(crops.crops) == 0:
        raise DataError(f"{dataset.source}: no faces found in the {len(samples)} photos used")
    return crops


def io_details(engine: LiteRTEngine) -> dict[str, Any]:
    """Input and output dtypes and quantization parameters, as the interpreter reports them."""
    def describe(details: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = details.get("quantization", (0.0, 0))
        return {"dtype": np.dtype(details["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

    return {"input": describe(engine.input_details),
            "outputs": {name: describe(d) for name, d in engine.output_details.items()}}


def compare(keras_out: dict[str, np.ndarray], tflite_out: dict[str, np.ndarray], samples: Sequence[Sample],
            spec: ModelSpec) -> dict[str, HeadCheck]:
    from edgeface.eval.metrics import head_metrics

    checks = {}
    for head in HEADS:
        k, t = keras_out[head], tflite_out[head]
        rows = np.arange(len(k))
        keras_top, tflite_top = k.argmax(1), t.argmax(1)
        same = (keras_top == tflite_top) | (k[rows, keras_top] - k[rows, tflite_top] <= TIE_MARGIN)
        checks[head] = HeadCheck(
            agreement=float(np.mean(same)) if len(k) else 1.0,
            max_prob_diff=float(np.abs(k - t).max()),
            keras_accuracy=head_metrics(samples, k, spec.labels[head], head).accuracy,
            tflite_accuracy=head_metrics(samples, t, spec.labels[head], head).accuracy,
            n=len(k),
        )
    return checks


def default_bundle_path(model_path: Path, precision: str, out: Path) -> Path:
    if out.suffix == SUFFIX:
        return out
    stem = model_path.parent.name if model_path.name == "model.keras" else model_path.stem
    return out / f"{stem}-{precision}{SUFFIX}"


def convert_model(model_path: str | Path, precisions: Sequence[str], out: str | Path,
                  representative: str | Path | None = None, verify_data: str | Path | None = None,
                  representative_size: int = DEFAULT_REPRESENTATIVE_SIZE, verify_size: int = DEFAULT_VERIFY_SIZE,
                  io_type: str = "int8", min_agreement: float = DEFAULT_MIN_AGREEMENT, debug_layers: bool = False,
                  identity_threshold: float = 0.5, seed: int = 0, bias_correction: bool = True,
                  equalize: bool = True, progress: bool = True,
                  on_log: Callable[[str], None] = print) -> list[ConversionResult]:
    """Convert a trained ``model.keras`` into one bundle per precision, each verified against Keras.

    A precision whose argmax agreement with Keras is below ``min_agreement`` on any head is refused: its
    result says why and no bundle is written. With ``bias_correction``, full int8 first fits the per-channel
    gain and offset that map the int8 backbone's features to the float one's on the representative crops, and
    folds them into the heads that read the features (``convert/bias_correction.py``). With ``equalize``, it
    first lifts every channel that feeds a depthwise convolution to its tensor's range
    (``convert/equalization.py``); the bias correction is then fitted to the equalised model.
    """
    from edgeface.convert.bias_correction import corrected_heads, feature_correction
    from edgeface.convert.equalization import equalized_backbone
    from edgeface.convert.tflite import accumulated_errors, convert_keras, layer_errors, plot_accumulated_errors
    from edgeface.eval.evaluate import predict_batched
    from edgeface.train.model import model_parts

    model_path = Path(model_path)
    if model_path.is_dir():
        model_path = model_path / "model.keras"
    if len(set(precisions)) != len(precisions) or not precisions:
        raise EdgefaceError(f"give each precision once: {', '.join(precisions) or 'none given'}")
    out = Path(out)
    if out.suffix == SUFFIX and len(precisions) > 1:
        raise EdgefaceError(f"--out {out} names one file but {len(precisions)} precisions were asked for; "
                            "give a folder")
    keras_engine = KerasEngine(model_path)
    spec = keras_engine.spec
    parts = model_parts(keras_engine.model)
    if representative is None or verify_data is None:
        train_part, val_part = _split_from_metadata(keras_engine.metadata)
    rep_set = load_dataset(representative) if representative is not None else train_part
    ver_set = load_dataset(verify_data) if verify_data is not None else val_part

    rep_what = "" if representative is not None else " (its training split)"
    ver_what = "" if verify_data is not None else " (its validation split: photos the model never trained on)"
    on_log(f"representative set: up to {representative_size} photos from {rep_set.source}{rep_what}")
    rep_crops = _crops_for(rep_set, spec, representative_size, seed, progress).crops
    ver = _crops_for(ver_set, spec, verify_size, seed + 1, progress)
    ver_samples = ver.cropped_samples
    on_log(f"verification set: {len(ver_samples)} faces from {ver_set.source}{ver_what}")
    keras_out = keras_engine.predict(np.asarray(ver.crops))
    model_bytes_hash = sha256_bytes(model_path.read_bytes())

    results = []
    float_flatbuffer: bytes | None = None  # kept for --debug-layers' int8-against-float comparison
    steps: Any = precisions
    if progress:
        from edgeface.core.progress import progress_bar
        steps = progress_bar(precisions, desc="converting", unit="model")
    for precision in steps:
        int8 = precision == "int8"
        reference_float = float_flatbuffer  # what --debug-layers compares int8 with, tensor by tensor
        with equalized_backbone(keras_engine.model, spec, rep_crops if int8 and equalize else None) as equalization:
            equalization_figures = equalization.summary() if equalization is not None else None
            if equalization_figures:
                on_log(f"range equalisation: {equalization_figures['pairs']} ReLU -> depthwise pairs, channel "
                       f"scales median {equalization_figures['scale_median']:.3g}, up to "
                       f"{equalization_figures['scale_max']:.3g} ({len(rep_crops)} faces)")
            elif int8 and equalize:
                on_log("range equalisation: skipped (no BatchNorm -> ReLU -> depthwise chain in the backbone, "
                       "or not an edgeface model)")
            correction = feature_correction(keras_engine.model, spec, rep_crops) if int8 and bias_correction else None
            if int8 and bias_correction and correction is None:
                on_log("bias correction: skipped (the model is not preprocess -> backbone -> heads)")
            if debug_layers and int8:
                # the equalised float model: its tensors are the ones int8 approximates
                if equalization is not None or reference_float is None:
                    reference_float = convert_keras(keras_engine.model, "float32", spec)
                debug_crops = np.asarray(ver.crops[:DEBUG_FACES])
                report_stem = (out if out.suffix != SUFFIX else out.parent) / model_path.parent.name
                layers_csv = Path(f"{report_stem}-layer-errors.csv")
                layer_rows = layer_errors(keras_engine.model, spec, rep_crops, debug_crops, csv_path=layers_csv)
            with corrected_heads(keras_engine.model, correction) as corrected:
                flatbuffer = convert_keras(keras_engine.model, precision, spec,
                                           rep_crops if int8 else None, io_type=io_type)
        figures = correction.summary() if corrected and correction is not None else None
        if figures:
            on_log(f"bias correction: int8 shifts the pooled features by {figures['feature_shift_norm']:.3g} "
                   f"and scales their channels by {figures['gain_p5']:.2f} to {figures['gain_p95']:.2f} "
                   f"(5th-95th percentile, {len(rep_crops)} faces); undone in {', '.join(corrected)}")
        engine = LiteRTEngine(flatbuffer, spec, source=f"{precision} model")
        tflite_out = predict_batched(engine, np.asarray(ver.crops))
        checks = compare(keras_out, tflite_out, ver_samples, spec)
        cosine = None
        if EMBEDDING_NAME in keras_out and EMBEDDING_NAME in tflite_out:
            cosine = float(np.mean(np.sum(keras_out[EMBEDDING_NAME] * tflite_out[EMBEDDING_NAME], axis=1)))
        low = [h for h, c in checks.items() if c.agreement < min_agreement]
        result = ConversionResult(precision, len(flatbuffer), checks, accepted=not low, embedding_cosine=cosine)
        if low:
            result.reason = "; ".join(f"{h} agrees with Keras on {checks[h].agreement:.1%} of faces, below "
                                      f"--min-agreement {min_agreement:.0%}" for h in low)
        if precision == "float32":
            float_flatbuffer = flatbuffer
        if debug_layers and int8:
            result.layer_errors = layer_rows
            debug_crops = debug_crops[:ACCUMULATED_FACES]
            result.accumulated_errors = accumulated_errors(reference_float, flatbuffer, debug_crops, spec)
            result.debug_reports = [
                layers_csv,
                write_rows_csv(result.accumulated_errors, Path(f"{report_stem}-int8-accumulated-errors.csv")),
                plot_accumulated_errors(result.accumulated_errors,
                                        Path(f"{report_stem}-int8-accumulated-errors.png"),
                                        title=f"{model_path.parent.name}: int8 against float, tensor by "
                                              f"tensor ({len(debug_crops)} faces)")]
        if result.accepted:
            metadata = keras_engine.metadata
            result.bundle_path = write_bundle(default_bundle_path(model_path, precision, out), flatbuffer, spec,
                                              precision, extra={
                "io": io_details(engine),
                "identity_threshold": identity_threshold,
                "source_model": {"path": str(model_path), "sha256": model_bytes_hash,
                                 "backbone": metadata.get("backbone"), "weights": metadata.get("weights"),
                                 "trained": metadata.get("created"),
                                 # each face read as the mean of itself and its mirror (recentre --mirror)
                                 "mirrored": bool(parts and parts.mirrored)},
                "dataset_fingerprint": metadata.get("dataset", {}).get("fingerprint"),
                "conversion": {"representative": str(rep_set.source), "representative_faces": len(rep_crops),
                               "seed": seed,
                               "verification": str(ver_set.source), "io_type": io_type if precision == "int8"
                               else "float32", "min_agreement": min_agreement,
                               "equalization": equalization_figures,
                               "bias_correction": {"layers": corrected, **figures} if figures else None},
                "accuracy": {head: check.to_dict() for head, check in checks.items()},
                "embedding_cosine": cosine,
            })
        results.append(result)
    return results


def write_rows_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One CSV row per dict (columns from the first row), for the debugging reports."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path

"""Convert, verify against Keras, and write bundles: what ``edgeface convert`` runs."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeface.convert.options import ConvertOptions
from edgeface.core.bundle import SUFFIX, FloatHead, IdentityCentres, sha256_bytes, write_bundle
from edgeface.core.errors import DataError, EdgefaceError
from edgeface.core.modelio import MODEL_NAME
from edgeface.core.spec import EMBEDDING_NAME, HEADS, MOUTH_SHAPE, ModelSpec
from edgeface.data.manifest import Dataset, Sample, load_dataset, split_dataset
from edgeface.faces.crops import crop_samples
from edgeface.runtime.engine import LiteRTEngine, head_from_features, identity_from_centres
from edgeface.train.keras_model import KerasEngine

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
    # How the bundle names trained people: {"used": "centres" | "model", "centres": accuracy, "model": ...,
    # "faces": n}; None for a model without person centres (its identity output is all there is).
    identity_rule: dict[str, Any] | None = None
    identity_centres: IdentityCentres | None = None  # written into the bundle when "centres" is used
    # Per attribute head, as identity_rule: {"used": "float" | "model", "float": ..., "model": ..., ...}
    head_rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    float_heads: dict[str, FloatHead] = field(default_factory=dict)  # written into the bundle where "float" is used
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
        for queue in queues:
            for indices in queue:
                if indices:
                    chosen.append(indices.pop())
                    progressed = True
                    break
            queue.sort(key=len, reverse=True)  # next round starts with who has the most left
            if len(chosen) >= count:
                break
        if not progressed:
            break
    return sorted(chosen)


def training_split(metadata: dict[str, Any]) -> tuple[Dataset, Dataset]:
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
    stem = model_path.parent.name if model_path.name == MODEL_NAME else model_path.stem
    return out / f"{stem}-{precision}{SUFFIX}"


@dataclass(frozen=True)
class ConversionSets:
    """The faces conversion works on: calibration crops, and held-out crops with Keras' outputs on them."""

    representative: np.ndarray  # uint8 crops (N, S, S, 3) that calibrate int8
    representative_source: Path
    verification: np.ndarray  # uint8 crops Keras and TFLite are compared on
    verification_samples: list[Sample]
    verification_source: Path
    keras_outputs: dict[str, np.ndarray]  # Keras on the verification crops
    verification_shapes: np.ndarray | None = None  # their mouths' shapes (edgeface.faces.geometry), if measured


def prepare_sets(keras_engine: KerasEngine, options: ConvertOptions, progress: bool = True,
                 on_log: Callable[[str], None] = print) -> ConversionSets:
    """Crop the representative and verification faces (by default the model's own training and validation
    splits), and run Keras on the verification faces once for every precision to be compared with."""
    if options.representative is None or options.verify_data is None:
        train_part, val_part = training_split(keras_engine.metadata)
    rep_set = load_dataset(options.representative) if options.representative is not None else train_part
    ver_set = load_dataset(options.verify_data) if options.verify_data is not None else val_part
    rep_what = "" if options.representative is not None else " (its training split)"
    ver_what = "" if options.verify_data is not None else " (its validation split: photos the model never trained on)"
    on_log(f"representative set: up to {options.representative_size} photos from {rep_set.source}{rep_what}")
    spec = keras_engine.spec
    rep = _crops_for(rep_set, spec, options.representative_size, options.seed, progress)
    ver = _crops_for(ver_set, spec, options.verify_size, options.seed + 1, progress)
    samples = ver.cropped_samples
    on_log(f"verification set: {len(samples)} faces from {ver_set.source}{ver_what}")
    return ConversionSets(rep.crops, rep_set.source, np.asarray(ver.crops), samples, ver_set.source,
                          keras_engine.predict(np.asarray(ver.crops), ver.shapes), ver.shapes)


@dataclass(frozen=True)
class Converted:
    """One precision's flatbuffer and what was done to the model before converting it."""

    flatbuffer: bytes
    equalization: dict[str, Any] | None  # figures of the range equalisation (int8), None when not applied
    bias_correction: dict[str, Any] | None  # the corrected layers and figures (int8), None when not applied
    float_heads: dict[str, FloatHead] = field(default_factory=dict)  # the last layers as this flatbuffer's are


def convert_precision(model: Any, spec: ModelSpec, precision: str, representative: np.ndarray,
                      options: ConvertOptions, on_log: Callable[[str], None] = print) -> Converted:
    """One TFLite flatbuffer. Full int8 first equalises channel ranges and fits the bias correction (as
    ``options`` say); every change to the Keras model is undone when this returns."""
    from edgeface.convert.bias_correction import corrected_heads, feature_correction
    from edgeface.convert.equalization import equalized_backbone
    from edgeface.convert.tflite import convert_keras
    from edgeface.train.model import model_float_heads

    int8 = precision == "int8"
    with equalized_backbone(model, spec, representative if int8 and options.equalize else None) as equalization:
        equalization_figures = equalization.summary() if equalization is not None else None
        if equalization_figures:
            on_log(f"range equalisation: {equalization_figures['pairs']} ReLU -> depthwise pairs, channel "
                   f"scales median {equalization_figures['scale_median']:.3g}, up to "
                   f"{equalization_figures['scale_max']:.3g} ({len(representative)} faces)")
        elif int8 and options.equalize:
            on_log("range equalisation: skipped (no BatchNorm -> ReLU -> depthwise chain in the backbone, "
                   "or not an edgeface model)")
        correction = feature_correction(model, spec, representative) if int8 and options.bias_correction else None
        if int8 and options.bias_correction and correction is None:
            on_log("bias correction: skipped (not preprocess -> backbone -> heads on one feature vector)")
        with corrected_heads(model, correction) as corrected:
            flatbuffer = convert_keras(model, precision, spec, representative if int8 else None,
                                       io_type=options.io_type)
            float_heads = model_float_heads(model, spec)  # bias-corrected as the flatbuffer's own heads are
    figures = correction.summary() if corrected and correction is not None else None
    if figures:
        on_log(f"bias correction: int8 shifts the pooled features by {figures['feature_shift_norm']:.3g} "
               f"and scales their channels by {figures['gain_p5']:.2f} to {figures['gain_p95']:.2f} "
               f"(5th-95th percentile, {len(representative)} faces); undone in {', '.join(corrected)}")
    return Converted(flatbuffer, equalization_figures, {"layers": corrected, **figures} if figures else None,
                     float_heads)


def choose_head_rule(head: str, model_out: np.ndarray, float_out: np.ndarray, samples: Sequence[Sample],
                     spec: ModelSpec, keras_out: np.ndarray, name: str = "float") -> dict[str, Any]:
    """Which ``head`` the bundle gives: the model's own output, or its last layer computed in float on the
    device (``name``: "centres" for identity's nearest centre, "float" for a Dense head), by accuracy on the
    labelled verification faces (by agreement with Keras where none is labelled). The float version wins ties:
    it is the Keras head's own arithmetic, where the quantized output rounds the last layer too."""
    from edgeface.eval.metrics import head_metrics

    labels = spec.labels[head]
    n = head_metrics(samples, model_out, labels, head).n
    if n:
        score = {key: head_metrics(samples, out, labels, head).accuracy
                 for key, out in (("model", model_out), (name, float_out))}
    else:
        reference = keras_out.argmax(1)
        score = {key: float(np.mean(out.argmax(1) == reference)) if len(out) else 1.0
                 for key, out in (("model", model_out), (name, float_out))}
    return {"used": "model" if score["model"] > score[name] else name,
            "measured": "accuracy" if n else "agreement with Keras", "faces": n or len(model_out),
            name: round(score[name], 4), "model": round(score["model"], 4)}


def choose_identity_rule(model_out: np.ndarray, centres_out: np.ndarray, samples: Sequence[Sample],
                         spec: ModelSpec, keras_out: np.ndarray) -> dict[str, Any]:
    """Which identity the bundle gives: the model's own output or nearest centre on its embedding in float
    (:func:`choose_head_rule`; the centres win ties: the model's int8 output ties close people)."""
    return choose_head_rule("identity", model_out, centres_out, samples, spec, keras_out, name="centres")


def verify(flatbuffer: bytes, precision: str, spec: ModelSpec, sets: ConversionSets,
           min_agreement: float, centres: IdentityCentres | None = None,
           float_heads: dict[str, FloatHead] | None = None) -> tuple[ConversionResult, LiteRTEngine]:
    """Run the flatbuffer on the verification faces and compare it with Keras; refused below ``min_agreement``.
    With the model's person ``centres``, identity is the better of its own output and the centres' (measured
    here); with ``float_heads``, each such head the better of its own output and its float last layer on the
    features output; the checks are of the heads the bundle will give."""
    from edgeface.runtime.engine import predict_batched

    engine = LiteRTEngine(flatbuffer, spec, source=f"{precision} model", keep_features=True)
    tflite_out = predict_batched(engine, sets.verification)
    keras_out = sets.keras_outputs
    rule = None
    if centres is not None and EMBEDDING_NAME in tflite_out:
        by_centres = identity_from_centres(tflite_out[EMBEDDING_NAME], centres)
        rule = choose_identity_rule(tflite_out["identity"], by_centres, sets.verification_samples, spec,
                                    keras_out["identity"])
        if rule["used"] == "centres":
            tflite_out = {**tflite_out, "identity": by_centres}
            engine.identity_centres = centres
    head_rules = {}
    for head, layer in (float_heads or {}).items():
        if layer.features == MOUTH_SHAPE and sets.verification_shapes is not None:
            tflite_out = {**tflite_out, head: head_from_features(sets.verification_shapes, layer)}
            engine.float_heads[head] = layer
            head_rules[head] = {"used": MOUTH_SHAPE}
            continue
        if layer.features not in tflite_out:
            continue
        by_float = head_from_features(tflite_out[layer.features], layer)
        head_rules[head] = choose_head_rule(head, tflite_out[head], by_float, sets.verification_samples, spec,
                                            keras_out[head])
        if head_rules[head]["used"] == "float":
            tflite_out = {**tflite_out, head: by_float}
            engine.float_heads[head] = layer
    engine.keep_features = False
    checks = compare(keras_out, tflite_out, sets.verification_samples, spec)
    cosine = None
    if EMBEDDING_NAME in keras_out and EMBEDDING_NAME in tflite_out:
        cosine = float(np.mean(np.sum(keras_out[EMBEDDING_NAME] * tflite_out[EMBEDDING_NAME], axis=1)))
    low = [h for h, c in checks.items() if c.agreement < min_agreement]
    result = ConversionResult(precision, len(flatbuffer), checks, accepted=not low, embedding_cosine=cosine,
                              identity_rule=rule, identity_centres=engine.identity_centres,
                              head_rules=head_rules, float_heads=dict(engine.float_heads))
    if low:
        result.reason = "; ".join(f"{h} agrees with Keras on {checks[h].agreement:.1%} of faces, below "
                                  f"--min-agreement {min_agreement:.0%}" for h in low)
    return result, engine


def debug_int8(model: Any, spec: ModelSpec, int8_flatbuffer: bytes, sets: ConversionSets, options: ConvertOptions,
               report_stem: Path, title: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Path]]:
    """``--debug-layers``: each int8 layer's own error (TFLite's quantization debugger, float inputs) and where
    error accumulates (int8 against float, tensor by tensor), as CSVs and a plot beside the bundles.

    Both compare with the float model int8 was made from: the range-equalised one when equalisation applies.
    Returns (layer rows, accumulated rows, files written)."""
    from edgeface.convert.equalization import equalized_backbone
    from edgeface.convert.tflite import (
        accumulated_errors,
        convert_keras,
        layer_errors,
        plot_accumulated_errors,
    )

    debug_crops = sets.verification[:DEBUG_FACES]
    layers_csv = Path(f"{report_stem}-layer-errors.csv")
    with equalized_backbone(model, spec, sets.representative if options.equalize else None):
        reference_float = convert_keras(model, "float32", spec)
        layer_rows = layer_errors(model, spec, sets.representative, debug_crops, csv_path=layers_csv)
    debug_crops = debug_crops[:ACCUMULATED_FACES]
    accumulated = accumulated_errors(reference_float, int8_flatbuffer, debug_crops, spec)
    reports = [layers_csv,
               write_rows_csv(accumulated, Path(f"{report_stem}-int8-accumulated-errors.csv")),
               plot_accumulated_errors(accumulated, Path(f"{report_stem}-int8-accumulated-errors.png"),
                                       title=f"{title}: int8 against float, tensor by tensor "
                                             f"({len(debug_crops)} faces)")]
    return layer_rows, accumulated, reports


def bundle_manifest(keras_engine: KerasEngine, model_path: Path, model_sha256: str, precision: str,
                    engine: LiteRTEngine, converted: Converted, result: ConversionResult, sets: ConversionSets,
                    options: ConvertOptions) -> dict[str, Any]:
    """What a bundle records beyond the model and its spec: I/O quantization, thresholds, where the model
    came from, how it was converted, and the agreement measured here."""
    metadata = keras_engine.metadata
    return {
        "io": io_details(engine),
        "identity_threshold": options.identity_threshold,
        "source_model": {"path": str(model_path), "sha256": model_sha256,
                         "backbone": metadata.get("backbone"), "weights": metadata.get("weights"),
                         "trained": metadata.get("created")},
        "dataset_fingerprint": metadata.get("dataset", {}).get("fingerprint"),
        "embedding": embedding_identity(metadata, model_sha256),
        "conversion": {"representative": str(sets.representative_source),
                       "representative_faces": len(sets.representative), "seed": options.seed,
                       "verification": str(sets.verification_source),
                       "io_type": options.io_type if precision == "int8" else "float32",
                       "min_agreement": options.min_agreement, "equalization": converted.equalization,
                       "bias_correction": converted.bias_correction},
        "accuracy": {head: check.to_dict() for head, check in result.checks.items()},
        "embedding_cosine": result.embedding_cosine,
        "identity_rule": result.identity_rule,
        "head_rules": result.head_rules or None,
    }


def embedding_identity(metadata: dict[str, Any], model_sha256: str) -> dict[str, str]:
    """The bundle's ``embedding``: the id training recorded (dlib's own descriptor: shared by every bundle that
    keeps it), else the source model's (its precisions share it). Devices share enrolled people by it."""
    from edgeface.core.bundle import EMBEDDING_ID, model_embedding_id

    recorded = metadata.get("embedding")
    if isinstance(recorded, dict) and EMBEDDING_ID.fullmatch(str(recorded.get("id", ""))):
        return {"id": str(recorded["id"]), "source": str(recorded.get("source", ""))}
    return {"id": model_embedding_id(model_sha256), "source": f"the model's own (model.keras sha256 {model_sha256})"}


def convert_model(model_path: str | Path, precisions: Sequence[str], out: str | Path,
                  options: ConvertOptions = ConvertOptions(), progress: bool = True,
                  on_log: Callable[[str], None] = print) -> list[ConversionResult]:
    """Convert a trained ``model.keras`` into one bundle per precision, each verified against Keras.

    A precision whose argmax agreement with Keras is below ``options.min_agreement`` on any head is refused:
    its result says why and no bundle is written. Full int8 is range-equalised and bias-corrected first (see
    ``convert_precision``); with ``options.debug_layers`` its errors are reported layer by layer (``debug_int8``).
    """
    model_path = Path(model_path)
    if model_path.is_dir():
        model_path = model_path / MODEL_NAME
    if len(set(precisions)) != len(precisions) or not precisions:
        raise EdgefaceError(f"give each precision once: {', '.join(precisions) or 'none given'}")
    out = Path(out)
    if out.suffix == SUFFIX and len(precisions) > 1:
        raise EdgefaceError(f"--out {out} names one file but {len(precisions)} precisions were asked for; "
                            "give a folder")
    from edgeface.train.model import float_head_layers, model_identity_centres, with_feature_outputs

    keras_engine = KerasEngine(model_path)
    spec = keras_engine.spec
    centres = model_identity_centres(keras_engine.model)
    # What is converted: the model with the features its Dense heads read as outputs too (the same layers).
    model = with_feature_outputs(keras_engine.model,
                                 [output for output, _ in float_head_layers(keras_engine.model, spec).values()])
    sets = prepare_sets(keras_engine, options, progress, on_log)
    model_sha256 = sha256_bytes(model_path.read_bytes())
    results = []
    steps: Any = precisions
    if progress:
        from edgeface.core.progress import progress_bar
        steps = progress_bar(precisions, desc="converting", unit="model")
    for precision in steps:
        converted = convert_precision(model, spec, precision, sets.representative, options, on_log)
        # a head train fitted on the mouth's shape is the same in every precision: it replaces the model's
        result, engine = verify(converted.flatbuffer, precision, spec, sets, options.min_agreement, centres,
                                {**converted.float_heads, **keras_engine.float_heads})
        if result.identity_rule is not None:
            on_log(identity_rule_line(precision, result.identity_rule))
        for head, head_rule in result.head_rules.items():
            on_log(head_rule_line(precision, head, head_rule))
        if options.debug_layers and precision == "int8":
            report_stem = (out if out.suffix != SUFFIX else out.parent) / model_path.parent.name
            result.layer_errors, result.accumulated_errors, result.debug_reports = debug_int8(
                model, spec, converted.flatbuffer, sets, options, report_stem, model_path.parent.name)
        if result.accepted:
            result.bundle_path = write_bundle(default_bundle_path(model_path, precision, out), converted.flatbuffer,
                                              spec, precision, extra=bundle_manifest(
                                                  keras_engine, model_path, model_sha256, precision, engine,
                                                  converted, result, sets, options),
                                              identity_centres=result.identity_centres,
                                              float_heads=result.float_heads)
        results.append(result)
    return results


def identity_rule_line(precision: str, rule: dict[str, Any]) -> str:
    """What ``convert`` says about the identity a bundle gives."""
    figures = (f"{rule['centres']:.1%} against the model's own output {rule['model']:.1%}, {rule['measured']} "
               f"on {rule['faces']} verification faces")
    if rule["used"] == "centres":
        return f"{precision} identity: nearest person centre on the embedding, in float on the device ({figures})"
    return f"{precision} identity: the model's own output, better than the person centres ({figures})"


def head_rule_line(precision: str, head: str, rule: dict[str, Any]) -> str:
    """What ``convert`` says about how a bundle gives an attribute head."""
    if rule["used"] == MOUTH_SHAPE:
        return f"{precision} {head}: fitted on the mouth's shape, in float on the device (as train chose)"
    figures = (f"{rule['float']:.1%} against the model's own output {rule['model']:.1%}, {rule['measured']} on "
               f"{rule['faces']} verification faces")
    if rule["used"] == "float":
        return f"{precision} {head}: its last layer in float on the device, from the features ({figures})"
    return f"{precision} {head}: the model's own output, better than its last layer in float ({figures})"


def write_rows_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One CSV row per dict (columns from the first row), for the debugging reports."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path

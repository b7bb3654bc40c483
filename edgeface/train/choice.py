"""Per head, after training: keep what fine-tuning made of it, or the exact fit on the frozen features (the probe).

Fine-tuning can lose to a logistic regression on the features the backbone started with: with few labels it
fits noise, and early stopping on the summed loss of all heads does not watch each one. So each head whose
features training moved is measured both ways on the validation faces, and keeps its fine-tuned version only
when that is right on clearly more faces than the exact fit: more than the square root of the faces on which
the two disagree (one standard deviation of that difference if neither were better). With fewer than
``MIN_LABELLED`` labelled validation faces nothing can be told apart, and the exact fit is kept outright.

Heads that read the same moving features go back together or not at all (they share the layers beneath), and
going back restores the backbone's pretrained weights. Heads whose features training leaves alone are exact
fits already: the nearest person centre for identity, the probe's logistic regression for the others.

A nearest-centre identity head is measured the same way against the other exact fit on the same unit
embeddings, the probe's logistic regression: it becomes that regression only when that is clearly better
(by the rule above, nearest centre standing for the exact fit), as both are computed in float on the device.

Emotion has one more exact fit to beat when the crops are aligned on the face mesh: the logistic regression on
the mouth's shape (six numbers, ``edgeface.faces.geometry``), which a handful of labels fits where hundreds of
features need many. It replaces the emotion head chosen above when clearly better on the labelled validation
faces; with fewer than ``MIN_LABELLED`` of them, the two exact fits are compared by cross-validation on every
labelled face (``CV_FOLDS`` folds), and the one with six numbers is kept unless the probe is clearly better.

A head that keeps its fine-tuned version was trained through dropout, label smoothing and augmented photos,
and stopped when the summed validation loss did: its last layer is then fitted again exactly on the features
fine-tuning left (the probe's logistic regression, its penalty chosen on the validation faces), and the refit
is kept unless the trained layer is clearly better on them (the rule above: the exact fit unless the trained
version is right on clearly more faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeface.core.spec import HEADS
from edgeface.train.batches import TrainingData
from edgeface.train.frozen import FrozenFeatures, fit_attribute_heads, frozen_features

# Below this many labelled validation faces a head's two versions cannot be told apart: the exact fit (convex,
# nothing to overfit but its one L2 penalty) is kept without comparing.
MIN_LABELLED = 30
TRAINED, PROBE = "trained", "probe"
MOUTH = "mouth_shape"  # emotion from the mouth's shape (choose_mouth_shape)
CV_FOLDS = 5
# The penalties tried when a kept fine-tuned head is fitted again on its features (refit_trained_heads).
REFIT_L2 = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


@dataclass(frozen=True)
class FrozenModel:
    """The backbone's pretrained weights and the heads as they are on them (attribute heads: the probe's exact
    fit), kept before fine-tuning so that a head can go back to them."""

    backbone: list[np.ndarray]
    heads: list[np.ndarray]
    identity_scale: float | None  # a nearest-centre head's softmax scale (a setting, not a weight)


def keep_frozen_model(built: Any, prepared: TrainingData, frozen: FrozenFeatures, heads: list[str]) -> FrozenModel:
    """The model before fine-tuning, with ``heads`` (those whose features it will move) at their exact fit;
    the heads the model goes on training with are left as they are."""
    from edgeface.train.model import ATTRIBUTE_HEADS

    trained = built.heads.get_weights()
    fit_attribute_heads(built, prepared, frozen, [head for head in heads if head in ATTRIBUTE_HEADS])
    kept = FrozenModel(built.backbone.get_weights(), built.heads.get_weights(), _identity_scale(built))
    built.heads.set_weights(trained)
    return kept


def _identity_scale(built: Any) -> float | None:
    scale = getattr(built.heads.get_layer("identity"), "scale", None)
    return None if scale is None else float(scale)


def compare(trained_right: np.ndarray, probe_right: np.ndarray) -> tuple[str, str]:
    """(TRAINED or PROBE, why) for one head from whether each labelled validation face is right both ways."""
    n = len(trained_right)
    if n < MIN_LABELLED:
        return PROBE, f"only {n} labelled validation faces, too few to compare: the exact fit"
    gained = int(np.sum(trained_right & ~probe_right))
    lost = int(np.sum(probe_right & ~trained_right))
    noise = math.sqrt(gained + lost)
    lead = f"{gained - lost:+d} faces of {n} against the probe (noise ±{noise:.1f})"
    if gained - lost > noise:
        return TRAINED, f"fine-tuned, it is clearly better: {lead}"
    return PROBE, f"fine-tuned, it is not clearly better: {lead}"


def right(probabilities: np.ndarray, samples: list, head: str, labels: tuple[str, ...]) -> np.ndarray:
    """For each validation face labelled for ``head``, whether the argmax is its label."""
    index = {label: i for i, label in enumerate(labels)}
    rows = [(i, index[s.label(head)]) for i, s in enumerate(samples) if s.label(head) in index]
    return np.array([int(np.argmax(probabilities[i])) == truth for i, truth in rows], bool)


def choose_heads(built: Any, prepared: TrainingData, frozen: FrozenFeatures, moved: set[str], fitted: list[str],
                 frozen_model: FrozenModel | None) -> dict[str, dict[str, Any]]:
    """Decide, per head, between the trained model and the frozen one (see the module's note) and go back where
    the frozen one wins. ``moved``: the backbone features training moved; ``fitted``: the heads fitted exactly
    on features it did not move; ``frozen_model``: what going back restores (None: nothing to go back to).
    Returns per head what was kept (TRAINED or PROBE), why, and the validation accuracy both ways."""
    from edgeface.train.keras_model import keras_predict
    from edgeface.train.model import head_features

    spec = prepared.spec
    reads = head_features(spec.backbone)
    samples = prepared.val_crops.cropped_samples
    choices: dict[str, dict[str, Any]] = {}
    moving = [head for head in HEADS if reads[head] in moved]
    if moving and frozen_model is None:  # trained from scratch: no pretrained features to go back to
        return {head: {"kept": TRAINED, "why": "trained from scratch"} for head in HEADS}
    for head in HEADS:
        if head in moving:
            continue
        if head == "identity" and _identity_scale(built) is not None:
            choices[head] = {"kept": PROBE, "why": f"nearest person centre on the frozen {reads[head]}"}
        elif head in fitted:
            choices[head] = {"kept": PROBE, "why": f"training does not move its features ({reads[head]}): "
                                                   "fitted exactly on them"}
        else:
            choices[head] = {"kept": TRAINED, "why": "trained on the frozen features"}
    if not moving or frozen_model is None:  # (moving heads without a frozen model returned above)
        return choices

    trained_out = keras_predict(built.model, prepared.val_crops.crops, spec)
    trained_weights = built.heads.get_weights()
    built.heads.set_weights(frozen_model.heads)
    probe_out = {name: np.asarray(value) for name, value in built.heads(frozen.val, training=False).items()}
    built.heads.set_weights(trained_weights)
    verdicts = {}
    for head in moving:
        trained_right = right(trained_out[head], samples, head, spec.labels[head])
        probe_right = right(probe_out[head], samples, head, spec.labels[head])
        kept, why = compare(trained_right, probe_right)
        accuracy = {"trained": float(trained_right.mean()) if len(trained_right) else None,
                    "probe": float(probe_right.mean()) if len(probe_right) else None, "n": len(trained_right)}
        verdicts[head] = (kept, why, accuracy)
    back, settled = settle(verdicts)
    if back:
        built.backbone.set_weights(frozen_model.backbone)
        built.heads.set_weights(frozen_model.heads)
        if frozen_model.identity_scale is not None:
            built.heads.get_layer("identity").scale = frozen_model.identity_scale
    choices.update(settled)
    return {head: choices[head] for head in HEADS}


def settle(verdicts: dict[str, tuple[str, str, dict[str, Any]]]) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Heads reading the same fine-tuned features go back together: only when each of them is better so.
    ``verdicts``: per head (kept, why, validation figures) as :func:`compare` found. Returns whether the model
    goes back to the frozen backbone, and per head what it keeps and why."""
    back = all(kept == PROBE for kept, _, _ in verdicts.values())
    better = [head for head, (kept, _, _) in verdicts.items() if kept == TRAINED]
    settled = {}
    for head, (kept, why, accuracy) in verdicts.items():
        if not back and kept == PROBE:
            kept, why = TRAINED, (f"{why}; but {' and '.join(better)} read the same fine-tuned features and "
                                  "are better trained")
        settled[head] = {"kept": kept, "why": why, "validation": accuracy}
    return back, settled


def refit_head(train_features: np.ndarray, train_labels: list[str | None], val_features: np.ndarray,
               val_labels: list[str | None], classes: tuple[str, ...], kernel: np.ndarray, bias: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """A Dense softmax head (``kernel``, ``bias``) against its exact fit on the same features: a class-balanced
    logistic regression on the training faces for each penalty of ``REFIT_L2``, the one right on most
    validation faces (the larger penalty on a tie) tried. Returns the weights to keep (the refit, unless the
    head's own are clearly better on the validation faces by :func:`compare`'s rule) and what was measured; None
    with fewer than ``MIN_LABELLED`` labelled validation faces or fewer than two classes labelled for
    training."""
    from edgeface.core.errors import ModelError
    from edgeface.train.probe import fit_softmax_head

    truth = {label: i for i, label in enumerate(classes)}
    labelled = [(i, truth[label]) for i, label in enumerate(val_labels) if label is not None and label in truth]
    if len(labelled) < MIN_LABELLED:
        return None
    rows = [i for i, _ in labelled]
    target = np.array([t for _, t in labelled])
    features = np.asarray(val_features, np.float32)[rows]

    def right_faces(k: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.argmax(features @ k + b, axis=1) == target

    def right(k: np.ndarray, b: np.ndarray) -> int:
        return int(np.sum(right_faces(k, b)))

    best: tuple[int, float, tuple[np.ndarray, np.ndarray]] | None = None
    for l2 in REFIT_L2:
        try:
            fit = fit_softmax_head(train_features, train_labels, classes, l2=l2)
        except ModelError:
            return None
        count = right(*fit)
        if best is None or count >= best[0]:
            best = (count, l2, fit)
    assert best is not None
    count, l2, fit = best
    own = right(kernel, bias)
    kept = keep_refit(right_faces(kernel, bias), right_faces(*fit))
    record = {"l2": l2, "kept": kept, "validation": {"trained": own / len(rows), "refit": count / len(rows),
                                                       "n": len(rows)}}
    return (*(fit if kept else (kernel, bias)), record)


def keep_refit(trained_right: np.ndarray, refit_right: np.ndarray) -> bool:
    """Whether a head's exact refit replaces its trained last layer, from whether each labelled validation face
    is right both ways: unless the trained layer is clearly better (:func:`compare`)."""
    return compare(trained_right, refit_right)[0] != TRAINED


def refit_trained_heads(built: Any, prepared: TrainingData, choices: dict[str, dict[str, Any]]
                        ) -> dict[str, dict[str, Any]]:
    """Each attribute head that keeps its fine-tuned version against its exact fit on the features fine-tuning
    left (:func:`refit_head`; see the module's note): the training and validation faces' features as the model
    now gives them, without augmentation or dropout. Returns ``choices`` with each such head's ``refit``."""
    from edgeface.train.model import ATTRIBUTE_HEADS, head_features

    spec = prepared.spec
    heads = [head for head in ATTRIBUTE_HEADS if choices.get(head, {}).get("kept") == TRAINED]
    if not heads:
        return choices
    reads = head_features(spec.backbone)
    train_features, val_features = (frozen_features(built, crops.crops, spec)
                                    for crops in (prepared.train_crops, prepared.val_crops))
    train_samples, val_samples = prepared.train_crops.cropped_samples, prepared.val_crops.cropped_samples
    out = dict(choices)
    for head in heads:
        layer = built.heads.get_layer(head)
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        refit = refit_head(train_features[reads[head]], [s.label(head) for s in train_samples],
                           val_features[reads[head]], [s.label(head) for s in val_samples], spec.labels[head],
                           kernel, bias)
        if refit is None:
            continue
        new_kernel, new_bias, record = refit
        layer.set_weights([new_kernel, new_bias])
        out[head] = {**choices[head], "refit": record}
    return out


def choose_identity_fit(built: Any, prepared: TrainingData, train_embeddings: np.ndarray | None,
                        val_embeddings: np.ndarray | None, choices: dict[str, dict[str, Any]]
                        ) -> dict[str, dict[str, Any]]:
    """A nearest-centre identity head against the logistic regression on the same unit embeddings (the
    probe's fit), on the labelled validation faces: the regression replaces it only when clearly better
    (:func:`compare`, nearest centre in the exact fit's place). Returns ``choices`` with identity's record
    (``fit``: "centres" or "logistic", and both validation accuracies)."""
    from edgeface.core.errors import ModelError
    from edgeface.train.layers import CosineSoftmax
    from edgeface.train.model import IDENTITY_NAME
    from edgeface.train.probe import fit_softmax_head

    layer = built.heads.get_layer(IDENTITY_NAME)
    if not isinstance(layer, CosineSoftmax) or train_embeddings is None or val_embeddings is None:
        return choices
    spec = prepared.spec
    people = spec.labels["identity"]
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    train_unit, val_unit = unit(np.asarray(train_embeddings, np.float32)), unit(np.asarray(val_embeddings, np.float32))
    try:
        kernel, bias = fit_softmax_head(train_unit, [s.identity for s in prepared.train_crops.cropped_samples],
                                        people)
    except ModelError:  # one person only
        return choices
    samples = prepared.val_crops.cropped_samples
    centres = np.asarray(layer(val_unit, training=False))
    logistic_right = right(val_unit @ kernel + bias, samples, "identity", people)
    centres_right = right(centres, samples, "identity", people)
    kept, why = compare(logistic_right, centres_right)
    accuracy = {"n": len(centres_right),
                "centres": float(centres_right.mean()) if len(centres_right) else None,
                "logistic": float(logistic_right.mean()) if len(logistic_right) else None}
    record = dict(choices.get("identity", {}))
    verdict = (why.split(", ", 1)[1] if why.startswith("fine-tuned") else why).replace(
        "the probe", "nearest centre").replace("the exact fit", "nearest centre")
    if kept == TRAINED:
        layer.set_linear(kernel, bias)
        record.update(why=f"logistic regression on the unit embeddings: {verdict}", fit="logistic")
    else:
        record.update(why=f"{record.get('why', 'nearest person centre')}; the logistic regression on the same "
                          f"embeddings: {verdict}", fit="centres")
    record["validation"] = accuracy
    return {**choices, "identity": record}


def fit_shape_head(shapes: np.ndarray, labels: list[str | None], classes: tuple[str, ...]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of the probe's logistic regression on the mouths' ``shapes``, each measure scaled to unit
    spread first (they differ in range tenfold, and the regression's penalty is one for all), then folded back
    into the weights so that they read the shapes as measured. Raises ModelError with fewer than two classes."""
    from edgeface.train.probe import fit_softmax_head

    shapes = np.asarray(shapes, np.float64)
    labelled = np.array([label in classes for label in labels], bool)
    mean = shapes[labelled].mean(0) if labelled.any() else np.zeros(shapes.shape[1])
    spread = shapes[labelled].std(0) + 1e-6 if labelled.any() else np.ones(shapes.shape[1])
    kernel, bias = fit_softmax_head((shapes - mean) / spread, labels, classes)
    kernel = kernel / spread[:, None]
    return kernel.astype(np.float32), (bias - mean @ kernel).astype(np.float32)


def _cross_validated(features: np.ndarray, labels: list[str], classes: tuple[str, ...], fit: Any,
                     seed: int = 0) -> np.ndarray:
    """Whether each labelled face is right when ``fit`` (features, labels, classes -> kernel, bias) learns from
    the other folds: ``CV_FOLDS`` folds, each class dealt round them in a seeded order."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), np.int64)
    for label in classes:
        rows = np.flatnonzero(np.array(labels) == label)
        folds[rng.permutation(rows)] = np.arange(len(rows)) % CV_FOLDS
    truth = np.array([classes.index(label) for label in labels])
    right = np.zeros(len(labels), bool)
    for fold in range(CV_FOLDS):
        held = folds == fold
        if not held.any() or len({labels[i] for i in np.flatnonzero(~held)}) < 2:
            continue
        kernel, bias = fit(features[~held], [labels[i] for i in np.flatnonzero(~held)], classes)
        right[held] = np.argmax(features[held] @ kernel + bias, axis=1) == truth[held]
    return right


def choose_mouth_shape(built: Any, prepared: TrainingData, frozen: FrozenFeatures,
                       choices: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Emotion fitted on the mouth's shape against the emotion head as chosen so far (see the module's note).
    Returns ``choices`` (emotion's record updated when the shape wins) and the float heads the model's metadata
    carries (``edgeface.core.bundle.FloatHead`` by head: empty, or emotion on the mouth's shape)."""
    from edgeface.core.bundle import FloatHead
    from edgeface.core.errors import ModelError
    from edgeface.core.spec import MOUTH_SHAPE
    from edgeface.train.keras_model import keras_predict
    from edgeface.train.model import head_features
    from edgeface.train.probe import fit_softmax_head

    head, spec = "emotion", prepared.spec
    train, val = prepared.train_crops, prepared.val_crops
    if head not in spec.labels or train.shapes is None or val.shapes is None or head not in choices:
        return choices, {}
    classes = tuple(spec.labels[head])
    train_labels = [s.label(head) for s in train.cropped_samples]
    try:
        kernel, bias = fit_shape_head(train.shapes, train_labels, classes)
    except ModelError:  # one class labelled
        return choices, {}
    val_samples = val.cropped_samples
    shape_right = right(val.shapes @ kernel + bias, val_samples, head, classes)
    if len(shape_right) >= MIN_LABELLED:
        chosen_right = right(keras_predict(built.model, val.crops, spec)[head], val_samples, head, classes)
        verdict, why = compare(shape_right, chosen_right)
        won = verdict == TRAINED
        lead = why.split(": ", 1)[1].replace("the probe", "the head chosen above")
        measured: dict[str, dict[str, Any]] = {"validation": {
            "n": len(shape_right), "mouth_shape": float(shape_right.mean()), "chosen": float(chosen_right.mean())}}
    else:
        feature = head_features(spec.backbone)[head]
        samples = train.cropped_samples + val_samples
        rows = [i for i, sample in enumerate(samples) if sample.label(head) in classes]
        labels = [str(samples[i].label(head)) for i in rows]
        shapes = np.concatenate([train.shapes, val.shapes])[rows]
        features = np.concatenate([frozen.train[feature], frozen.val[feature]])[rows].astype(np.float32)
        by_shape = _cross_validated(shapes, labels, classes, fit_shape_head)
        by_probe = _cross_validated(features, labels, classes, fit_softmax_head)
        verdict, _ = compare(by_probe, by_shape)
        won = verdict != TRAINED  # the mouth's shape unless the probe is clearly better
        lead = (f"{int(np.sum(by_shape & ~by_probe)) - int(np.sum(by_probe & ~by_shape)):+d} faces of {len(rows)} "
                f"against the probe, cross-validated on every labelled face ({len(shape_right)} labelled "
                "validation faces are too few to compare on)")
        measured = {"cross_validation": {"n": len(rows), "mouth_shape": float(by_shape.mean()) if rows else None,
                                         "probe": float(by_probe.mean()) if rows else None}}
    if won:
        record = {"kept": MOUTH, "why": f"a logistic regression on the mouth's shape: {lead}", **measured}
        return {**choices, head: record}, {head: FloatHead(MOUTH_SHAPE, kernel, bias)}
    record = {**choices[head], "mouth_shape": {"why": f"not clearly better: {lead}", **measured}}
    return {**choices, head: record}, {}


def describe(choices: dict[str, dict[str, Any]]) -> list[str]:
    """One line per head: which version it keeps and why."""
    lines = []
    for head, c in choices.items():
        kept = {TRAINED: "trained head", MOUTH: "fit on the mouth's shape"}.get(c["kept"], "exact fit")
        line = f"{head}: keeps the {kept} ({c['why']})"
        refit = c.get("refit")
        if refit:
            v = refit["validation"]
            line += (f"; its last layer {'refitted' if refit['kept'] else 'kept as trained'}: an exact fit on the "
                     f"fine-tuned features (L2 {refit['l2']:g}) is right on {v['refit']:.1%} of {v['n']} "
                     f"validation faces, as trained {v['trained']:.1%}")
        lines.append(line)
    return lines

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeface.core.spec import HEADS
from edgeface.train.batches import TrainingData
from edgeface.train.frozen import FrozenFeatures, fit_attribute_heads

# Below this many labelled validation faces a head's two versions cannot be told apart: the exact fit (convex,
# nothing to overfit but its one L2 penalty) is kept without comparing.
MIN_LABELLED = 30
TRAINED, PROBE = "trained", "probe"


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


def describe(choices: dict[str, dict[str, Any]]) -> list[str]:
    """One line per head: which version it keeps and why."""
    return [f"{head}: keeps the {'trained head' if c['kept'] == TRAINED else 'exact fit'} ({c['why']})"
            for head, c in choices.items()]

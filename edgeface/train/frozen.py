"""What training computes on the backbone's frozen features: the features themselves (once), the nearest-centre
identity head, the linear probe, the exact fit of the heads whose features do not move, and which features
fine-tuning will move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeface.core.spec import HEADS, ModelSpec
from edgeface.train.batches import TrainingData
from edgeface.train.config import TrainConfig


@dataclass(frozen=True)
class FrozenFeatures:
    """The backbone's features of the training and validation crops as it starts (pretrained, frozen)."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]


def frozen_features(built: Any, crops: np.ndarray, spec: ModelSpec, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The backbone's named, pooled features of uint8 crops (in inference mode)."""
    from edgeface.core.preprocess import to_model_input

    preprocess = built.model.get_layer("preprocess")
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(crops), batch_size):
        batch = to_model_input(np.asarray(crops[start:start + batch_size]), spec)
        for name, value in built.backbone(preprocess(batch), training=False).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def set_centres_from(built: Any, prepared: TrainingData, train_embeddings: np.ndarray | None,
                     val_embeddings: np.ndarray | None, on_log: Callable[[str], None] = print) -> None:
    """Set a nearest-centre identity head from the training faces' embeddings (or descriptors), its softmax
    scale fitted on the validation faces'; nothing for a Dense identity head."""
    from edgeface.train.centres import fit_scale, person_centres
    from edgeface.train.model import backbone_info, set_identity_centres

    if backbone_info(prepared.spec.backbone).identity_head != "centres" or train_embeddings is None:
        return
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    people = list(prepared.spec.labels["identity"])
    labels = [s.identity for s in prepared.train_crops.cropped_samples]
    index: dict[str | None, int] = {person: i for i, person in enumerate(people)}
    truth = np.array([index.get(s.identity, -1) for s in prepared.val_crops.cropped_samples])
    scale = fit_scale(unit(val_embeddings) @ person_centres(unit(train_embeddings), people, labels), truth)
    set_identity_centres(built.heads, unit(train_embeddings), labels, people, scale)
    on_log(f"identity: nearest of {len(people)} person centres, softmax over {scale:.1f} x cosine")


def linear_probe(built: Any, prepared: TrainingData, frozen: FrozenFeatures) -> dict[str, float | None]:
    """Validation accuracy per head of a logistic regression on the features that head reads, as the
    pretrained backbone gives them: the baseline the trained heads must beat."""
    from edgeface.train.model import head_features
    from edgeface.train.probe import probe_accuracy

    reads = head_features(prepared.spec.backbone)
    train_samples = prepared.train_crops.cropped_samples
    val_samples = prepared.val_crops.cropped_samples
    return {head: probe_accuracy(frozen.train[reads[head]], [s.label(head) for s in train_samples],
                                 frozen.val[reads[head]], [s.label(head) for s in val_samples],
                                 prepared.spec.labels[head])
            for head in HEADS}


def fit_attribute_heads(built: Any, prepared: TrainingData, frozen: FrozenFeatures, heads: list[str]) -> list[str]:
    """Fit these of the emotion and gender heads exactly (class-balanced L2 logistic regression, as the linear
    probe) on the frozen features each reads; returns the heads fitted (a head with one class labelled is
    left to train)."""
    from edgeface.core.errors import ModelError
    from edgeface.train.model import head_features
    from edgeface.train.probe import fit_softmax_head

    reads = head_features(prepared.spec.backbone)
    samples = prepared.train_crops.cropped_samples
    fitted = []
    for head in heads:
        try:
            kernel, bias = fit_softmax_head(frozen.train[reads[head]], [s.label(head) for s in samples],
                                            prepared.spec.labels[head])
        except ModelError:
            continue
        built.heads.get_layer(head).set_weights([kernel, bias])
        fitted.append(head)
    return fitted


def set_heads_trainable(built: Any, trainable: dict[str, bool]) -> None:
    for head, value in trainable.items():
        built.heads.get_layer(head).trainable = value


def features_fine_tuned(built: Any, config: TrainConfig, fine_tune_from: str | None, pretrained: bool) -> set[str]:
    """The backbone outputs that phase 2 changes: those with a layer it unfreezes beneath them (a fitted head
    on the others keeps its fit)."""
    import keras

    from edgeface.train.model import set_backbone_trainable

    backbone = built.backbone
    if config.epochs <= 0:
        return set()
    if not pretrained:
        return set(backbone.output)
    set_backbone_trainable(backbone, True, fine_tune_from, batchnorm=config.fine_tune_batchnorm)
    moving = {name for name in backbone.output
              if any(layer.trainable and layer.weights
                     for layer in keras.Model(backbone.input, backbone.output[name]).layers)}
    set_backbone_trainable(backbone, False, None)
    return moving

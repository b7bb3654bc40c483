"""What the model trains on: the photos' crops and targets (``TrainingData``), one-hot targets with masks
and class weights per head, and the tf.data pipeline that batches (and, for training, augments) the crops. TensorFlow is imported when a pipeline is made."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeface.core.spec import HEADS, ModelSpec
from edgeface.data.manifest import Dataset
from edgeface.faces.crops import CropSet


@dataclass(frozen=True)
class HeadArrays:
    """Per-head one-hot targets and sample weights; an unknown label is a zero row with weight 0."""

    targets: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    class_weights: dict[str, dict[str, float]]


def encode_labels(samples, spec: ModelSpec, class_weighted: tuple[str, ...] = ("emotion", "gender"),
                  reference_counts: dict[str, dict[str, int]] | None = None) -> HeadArrays:
    """One-hot targets with masks, and inverse-frequency class weights for the attribute heads."""
    targets: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    class_weights: dict[str, dict[str, float]] = {}
    for head in HEADS:
        labels = spec.labels[head]
        lookup = {label: i for i, label in enumerate(labels)}
        onehot = np.zeros((len(samples), len(labels)), dtype=np.float32)
        mask = np.zeros(len(samples), dtype=np.float32)
        for row, sample in enumerate(samples):
            label = sample.label(head)
            if label is not None and label in lookup:
                onehot[row, lookup[label]] = 1.0
                mask[row] = 1.0
        counts = onehot.sum(0) if reference_counts is None else np.array(
            [reference_counts[head].get(label, 0) for label in labels], dtype=np.float32)
        per_class = np.ones(len(labels), dtype=np.float32)
        if head in class_weighted and counts.sum() > 0:
            present = counts > 0
            per_class[present] = counts.sum() / (present.sum() * counts[present])
        class_weights[head] = {label: float(w) for label, w in zip(labels, per_class)}
        targets[head] = onehot
        weights[head] = mask * (onehot @ per_class if head in class_weighted else 1.0)
    return HeadArrays(targets, weights, class_weights)


def _augmenter(seed: int):
    import keras

    # Rotation is a fraction of a full turn: 0.04 is about +-15 degrees.
    return keras.Sequential([
        keras.layers.RandomRotation(0.04, fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom((-0.1, 0.1), fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomFlip("horizontal", seed=seed + 3),
        keras.layers.RandomContrast(0.2, seed=seed + 4),
    ], name="augment")


def make_tf_dataset(crops: np.ndarray | dict[str, np.ndarray], heads: HeadArrays, batch_size: int, training: bool,
                    seed: int = 0, augment: bool = True):
    """uint8 crops (or named float features) -> batches of (input, targets, sample weights); augmented when
    training.

    The arrays are held once, as tensors; the pipeline shuffles and batches row indices and gathers each batch,
    so memory stays near the size of the crops however large the shuffle. Images are scaled to [0, 1] floats
    here; feature vectors pass through unchanged.
    """
    import tensorflow as tf

    if isinstance(crops, dict):
        features = {name: tf.convert_to_tensor(np.asarray(v)) for name, v in crops.items()}
        count = len(next(iter(crops.values())))
    else:
        inputs = tf.convert_to_tensor(np.asarray(crops))
        count = len(crops)
    targets = {head: tf.convert_to_tensor(v) for head, v in heads.targets.items()}
    weights = {head: tf.convert_to_tensor(v) for head, v in heads.weights.items()}
    data = tf.data.Dataset.range(count)
    if training:
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    augmenter = _augmenter(seed) if (training and augment) else None

    def gather(rows):
        if isinstance(crops, dict):
            batch = {name: tf.gather(v, rows) for name, v in features.items()}
        else:
            batch = tf.cast(tf.gather(inputs, rows), tf.float32) / 255.0
            if augmenter is not None:
                batch = tf.clip_by_value(augmenter(batch, training=True), 0.0, 1.0)
        return (batch, {h: tf.gather(v, rows) for h, v in targets.items()},
                {h: tf.gather(v, rows) for h, v in weights.items()})

    return data.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclass
class TrainingData:
    """The photos, the model spec they define, and each split's crops and targets."""

    data: Dataset  # everything --data holds (its labels make the spec)
    train_set: Dataset
    val: Dataset
    spec: ModelSpec
    train_crops: CropSet
    val_crops: CropSet
    train_heads: HeadArrays
    val_heads: HeadArrays

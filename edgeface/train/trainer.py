"""Training: labelled photos -> aligned face crops -> the three-head Keras model, with its metadata.

Unknown labels are masked out of their head's loss and metrics (sample weight 0); the attribute heads are
class-weighted; augmentation (rotation, translation, zoom, flip) touches training batches only. Pretrained
backbones train in two phases: heads on a frozen backbone, then fine-tuning from a named layer (for
dlib-resnet: its attribute branch) at a lower learning rate. Both phases stop early on validation loss and keep
the best weights. A nearest-centre identity head is set from the training faces' embeddings at the end, its
softmax scale fitted on the validation faces. Then each head whose features fine-tuning moved keeps its
fine-tuned version only where the validation faces say it beats the exact fit on the frozen features
(``edgeface.train.choice``), and the last layer of a head that keeps it is fitted again exactly on the features
fine-tuning left, where the validation faces agree. A linear probe on the backbone's frozen features is fitted too, and its validation
accuracy reported beside the model's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edgeface.core.errors import DataError, ModelError
from edgeface.core.modelio import MODEL_NAME, write_metadata
from edgeface.core.progress import is_terminal
from edgeface.core.spec import EMBEDDING_NAME, HEADS, ModelSpec
from edgeface.core.version import __version__
from edgeface.data.manifest import Dataset, load_dataset, split_dataset
from edgeface.faces.crops import CropSet, crop_samples
from edgeface.report.plots import plot_history
from edgeface.runtime.engine import apply_float_heads
from edgeface.train.batches import TrainingData, encode_labels, make_tf_dataset
from edgeface.train.choice import (PROBE, FrozenModel, choose_heads, choose_identity_fit, choose_mouth_shape, describe,
                                   keep_frozen_model, refit_trained_heads)
from edgeface.train.config import TrainConfig
from edgeface.train.frozen import (FrozenFeatures, features_fine_tuned, fit_attribute_heads, frozen_features,
                                   linear_probe, set_centres_from, set_heads_trainable)
from edgeface.train.keras_model import keras_predict, save_keras_model
from edgeface.train.model import DESCRIPTOR


@dataclass
class TrainResult:
    model_path: Path
    metadata: dict[str, Any]
    history: dict[str, list[float]]


@dataclass
class Phases:
    """What the training phases did: the history, the fitting speed, the backbone features fine-tuning moved,
    the heads fitted exactly on features it did not move, and the model as it was before fine-tuning (None
    when nothing was pretrained or nothing moved)."""

    history: dict[str, list[float]]
    images_per_second: float | None
    moved: set[str]
    fitted: list[str]
    frozen_model: FrozenModel | None


def distribution_strategy():
    """MirroredStrategy over all GPUs when there is more than one; the default strategy otherwise.

    For several machines, use TensorFlow's MultiWorkerMirroredStrategy with TF_CONFIG (see docs/training.md).
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_head_weights(head_weights: dict[str, float]) -> None:
    """Loss weights name known heads and are above 0 (a zero weight would leave a head untrained)."""
    for head, weight in head_weights.items():
        if head not in HEADS:
            raise ModelError(f"head weight for unknown head {head!r}; heads are {', '.join(HEADS)}")
        if not weight > 0:
            raise ModelError(f"head weight for {head} must be above 0, got {weight:g}")


def compile_model(model, learning_rate: float, label_smoothing: float, decay_steps: int = 0,
                  head_weights: dict[str, float] | None = None) -> None:
    """Adam with per-head cross-entropy; with ``decay_steps`` the rate follows a cosine down to 1% of it.

    ``head_weights`` scales a head's loss (1 when not named): a head whose loss is small beside the others'
    gets little of the shared backbone's gradient otherwise.
    """
    import keras

    if decay_steps > 0:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.01)

    losses = {head: keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing if head == "identity"
                                                         else 0.0) for head in HEADS}
    loss_weights = {head: float((head_weights or {}).get(head, 1.0)) for head in HEADS}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=losses,
        loss_weights=loss_weights,
        weighted_metrics={head: [keras.metrics.CategoricalAccuracy(name="accuracy")] for head in HEADS},
    )


def load_crops(dataset: Dataset, spec: ModelSpec, cache_dir: Path | None, progress: bool = True) -> CropSet:
    return crop_samples(dataset.samples, spec.crop, spec.input_size, cache_dir=cache_dir, progress=progress)


def check_config(config: TrainConfig) -> None:
    """Refuse a bad backbone, weights or head weight before any face is cropped."""
    from edgeface.train.model import backbone_info, resolve_weights

    info = backbone_info(config.backbone)
    resolve_weights(config.backbone, config.weights or info.weights)
    check_head_weights(config.head_weights)


def model_spec(config: TrainConfig, labels: dict[str, tuple[str, ...]]) -> ModelSpec:
    """The spec a run trains: the backbone's input size and crop geometry (unless told otherwise), with the
    chosen detector."""
    from dataclasses import replace

    from edgeface.train.model import backbone_info, is_dlib

    info = backbone_info(config.backbone)
    return ModelSpec(labels=labels, input_size=config.input_size or info.input_size,
                     crop=replace(info.crop, detector=config.detector), backbone=config.backbone,
                     embedding_size=128 if is_dlib(config.backbone) else config.embedding_size)


def prepare_data(config: TrainConfig, on_log: Callable[[str], None] = print) -> TrainingData:
    """Load and split the photos, make the spec from their labels, crop the faces and encode the targets."""
    data = load_dataset(config.data)
    data.raise_for_errors()
    if config.val is not None:
        val = load_dataset(config.val)
        val.raise_for_errors()
        train_set = data
    else:
        train_set, val = split_dataset(data, config.val_fraction, seed=config.seed)
    if len(train_set) == 0 or len(val) == 0:
        raise DataError(f"{config.data}: need photos for both training ({len(train_set)}) and validation ({len(val)})")

    labels = {head: data.labels(head) for head in HEADS}
    if config.val is not None:
        strangers = sorted({s.identity for s in val.samples if s.identity} - set(labels["identity"]))
        if strangers:
            on_log(f"note: {len(strangers)} people in --val are not in --data (e.g. {strangers[0]!r}); "
                   "they count only for emotion and gender")
    spec = model_spec(config, labels)

    on_log(f"data: {len(train_set)} training and {len(val)} validation photos, "
           f"{len(labels['identity'])} people")
    train_crops = load_crops(train_set, spec, config.cache_dir, progress=config.verbose > 0)
    val_crops = load_crops(val, spec, config.cache_dir, progress=config.verbose > 0)
    for name, crops in (("training", train_crops), ("validation", val_crops)):
        summary = crops.summary()
        on_log(f"faces in {name} photos: {summary.get('ok', 0)} one face, {summary.get('multiple', 0)} several "
               f"(the subject's used), {summary.get('no_face', 0)} none, {summary.get('unreadable', 0)} unreadable")
    train_samples = train_crops.cropped_samples
    val_samples = val_crops.cropped_samples
    if not train_samples or not val_samples:
        raise DataError(f"{config.data}: no faces found in the training or validation photos")
    train_heads = encode_labels(train_samples, spec)
    val_heads = encode_labels(val_samples, spec, reference_counts={
        h: {k: int(v) for k, v in zip(spec.labels[h], train_heads.targets[h].sum(0))} for h in HEADS})
    return TrainingData(data, train_set, val, spec, train_crops, val_crops, train_heads, val_heads)


def train(config: TrainConfig, on_log: Callable[[str], None] = print) -> TrainResult:
    """Train and write ``model.keras``, ``metadata.json``, ``history.json`` and ``history.png`` to ``out``."""
    import keras

    from edgeface.train.model import backbone_info, build_model

    started = time.time()
    check_config(config)
    keras.utils.set_random_seed(config.seed)
    prepared = prepare_data(config, on_log)
    strategy = distribution_strategy()
    with strategy.scope():
        built = build_model(prepared.spec, weights=config.weights)
    frozen = FrozenFeatures(*(frozen_features(built, crops.crops, prepared.spec)
                              for crops in (prepared.train_crops, prepared.val_crops)))
    train_embed, val_embed = frozen.train.get(DESCRIPTOR), frozen.val.get(DESCRIPTOR)
    set_centres_from(built, prepared, train_embed, val_embed, on_log)
    phases = fit_phases(built, prepared, config, strategy, frozen, on_log)
    if DESCRIPTOR in phases.moved and backbone_info(config.backbone).identity_head == "centres":
        # the identity path moved (fine-tuned, or trained from scratch): centres from the embeddings it gives now
        train_embed, val_embed = (keras_predict(built.model, crops.crops, prepared.spec)[EMBEDDING_NAME]
                                  for crops in (prepared.train_crops, prepared.val_crops))
        set_centres_from(built, prepared, train_embed, val_embed, on_log)
    choices = choose_heads(built, prepared, frozen, phases.moved, phases.fitted, phases.frozen_model)
    choices = refit_trained_heads(built, prepared, choices)
    if not (DESCRIPTOR in phases.moved and choices.get("identity", {}).get("kept") == PROBE):
        # (a moved identity path that went back to its frozen weights has its centres from the moved one)
        choices = choose_identity_fit(built, prepared, train_embed, val_embed, choices)
    choices, float_heads = choose_mouth_shape(built, prepared, frozen, choices)
    for line in describe(choices):
        on_log(line)
    probe = linear_probe(built, prepared, frozen)
    return write_outputs(built.model, prepared, config, phases.history, phases.images_per_second, started, probe,
                         choices, embedding_source(config, descriptor_moved(config, phases.moved, choices)),
                         float_heads)


def descriptor_moved(config: TrainConfig, moved: set[str], choices: dict[str, dict[str, Any]]) -> bool:
    """Whether the model's embedding (the backbone's descriptor) is no longer the pretrained one: training moved
    it and kept it so. When every head on moved features goes back to its exact fit, the backbone's pretrained
    weights are restored (``edgeface.train.choice.choose_heads``) and the descriptor is the pretrained one."""
    from edgeface.train.choice import PROBE
    from edgeface.train.model import head_features

    if DESCRIPTOR not in moved:
        return False
    reads = head_features(config.backbone)
    return not all(choice["kept"] == PROBE for head, choice in choices.items() if reads[head] in moved)


def embedding_source(config: TrainConfig, moved: bool) -> dict[str, str] | None:
    """What the model's embedding is, when it is a known encoder's own: dlib's descriptor, with dlib's weights
    and untouched by training (``moved`` False; ``convert`` writes its id into the bundle; devices whose bundles
    share it share enrolled people). None: the embedding is this model's (trained, or another backbone)."""
    from edgeface.core.bundle import dlib_embedding_id
    from edgeface.train.dlib_resnet import file_digest
    from edgeface.train.model import backbone_info, resolve_weights

    info = backbone_info(config.backbone)
    if info.preprocess != "dlib" or info.width != 1.0 or moved:
        return None
    source = resolve_weights(config.backbone, config.weights or info.weights)
    if source is None:
        return None
    digest = file_digest(Path(source))
    return {"id": dlib_embedding_id(digest), "source": f"dlib weights {Path(source).name} sha256 {digest}"}


def fit_phases(built: Any, prepared: TrainingData, config: TrainConfig, strategy: Any, frozen: FrozenFeatures,
               on_log: Callable[[str], None] = print) -> Phases:
    """Heads on frozen backbone features (pretrained backbones), then fine-tuning or training from scratch;
    both stop early on validation loss."""
    import keras

    from edgeface.train.model import ATTRIBUTE_HEADS, backbone_info, head_features, set_backbone_trainable

    backbone = built.backbone
    train_crops, val_crops = prepared.train_crops, prepared.val_crops
    train_heads, val_heads = prepared.train_heads, prepared.val_heads
    train_samples = train_crops.cropped_samples
    history: dict[str, list[float]] = {}
    verbose = 1 if config.verbose > 0 and is_terminal(sys.stdout) else (2 if config.verbose > 0 else 0)
    pretrained = (config.weights or backbone_info(config.backbone).weights) != "none"

    def record(name: str, result) -> None:
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([name] * len(result.history["loss"]))  # type: ignore[list-item]

    def early_stopping():
        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)]

    info = backbone_info(config.backbone)
    fine_tune_from = info.fine_tune_from if config.fine_tune_from == "default" else config.fine_tune_from
    fine_tuned = features_fine_tuned(built, config, fine_tune_from, pretrained)
    fitted: list[str] = []
    frozen_model = None
    if pretrained:
        # Phase 1: the backbone is frozen, so its features never change: they were computed once. A head
        # whose features fine-tuning will not move either is fitted exactly on them (the linear probe's own
        # fit) and stays as fitted; the others train here, many epochs in seconds, and go on learning with
        # their features in phase 2. (No augmentation here; the fine-tuning phase augments.)
        set_backbone_trainable(backbone, False, None)
        reads = head_features(config.backbone)
        fitted = fit_attribute_heads(built, prepared, frozen,
                                     [head for head in ATTRIBUTE_HEADS if reads[head] not in fine_tuned])
        if fitted:
            on_log(f"phase heads: {' and '.join(fitted)} fitted exactly on the frozen features (L2 logistic "
                   "regression)")
        set_heads_trainable(built, {head: head not in fitted for head in ATTRIBUTE_HEADS})
        if config.frozen_epochs > 0 and built.heads_training.trainable_weights:
            on_log(f"phase heads: up to {config.frozen_epochs} epoch(s) at lr {config.learning_rate:g} on frozen "
                   "backbone features")
            with strategy.scope():
                compile_model(built.heads_training, config.learning_rate, config.label_smoothing,
                              head_weights=config.head_weights)
            record("heads", built.heads_training.fit(
                make_tf_dataset(frozen.train, train_heads, config.batch_size, True, config.seed, augment=False),
                validation_data=make_tf_dataset(frozen.val, val_heads, config.batch_size, False),
                epochs=config.frozen_epochs, callbacks=early_stopping(), shuffle=False, verbose=verbose))
        if fine_tuned:  # what a head goes back to if fine-tuning does not serve it (edgeface.train.choice)
            frozen_model = keep_frozen_model(built, prepared, frozen,
                                             [head for head in reads if reads[head] in fine_tuned])

    images_per_second = None
    if config.epochs > 0:
        learning_rate = config.fine_tune_learning_rate if pretrained else config.learning_rate
        name = "fine-tune" if pretrained else "train"
        with strategy.scope():
            trainable = set_backbone_trainable(backbone, True, fine_tune_from if pretrained else None,
                                               batchnorm=config.fine_tune_batchnorm or not pretrained)
            steps = -(-len(train_samples) // config.batch_size) * config.epochs
            compile_model(built.training_model, learning_rate, config.label_smoothing,
                          decay_steps=steps if config.cosine_decay else 0, head_weights=config.head_weights)
        on_log(f"phase {name}: up to {config.epochs} epoch(s) at lr {learning_rate:g}, "
               f"{trainable} backbone layers trainable, augmented")
        fit_start = time.time()
        result = built.training_model.fit(
            make_tf_dataset(train_crops.crops, train_heads, config.batch_size, True, config.seed, config.augment),
            validation_data=make_tf_dataset(val_crops.crops, val_heads, config.batch_size, False),
            epochs=config.epochs, callbacks=early_stopping(), shuffle=False, verbose=verbose)
        images_per_second = len(train_samples) * len(result.history["loss"]) / (time.time() - fit_start)
        record(name, result)
    return Phases(history, images_per_second, fine_tuned, fitted, frozen_model)


def write_outputs(model: Any, prepared: TrainingData, config: TrainConfig, history: dict[str, list[float]],
                  images_per_second: float | None, started: float,
                  probe: dict[str, float | None] | None = None,
                  choices: dict[str, dict[str, Any]] | None = None,
                  embedding: dict[str, str] | None = None, float_heads: dict[str, Any] | None = None
                  ) -> TrainResult:
    """``model.keras``, its ``metadata.json`` (spec, data, validation metrics, and ``float_heads``: heads fitted
    outside the model, ``edgeface.core.bundle.FloatHead`` by head), ``history.json`` and ``history.png`` in
    ``config.out``."""
    from edgeface.eval.metrics import head_metrics
    from edgeface.train.model import backbone_info

    spec, data, val_crops = prepared.spec, prepared.data, prepared.val_crops
    train_samples, val_samples = prepared.train_crops.cropped_samples, val_crops.cropped_samples
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_NAME
    save_keras_model(model, model_path)

    float_heads = float_heads or {}
    probabilities = apply_float_heads(keras_predict(model, val_crops.crops, spec), float_heads, val_crops.shapes)

    metrics = {head: head_metrics(val_samples, probabilities[head], spec.labels[head], head).to_dict()
               for head in HEADS}
    skipped = [{"image": str(s.image), "where": s.where, "reason": why}
               for crops in (prepared.train_crops, val_crops) for s, why in crops.skipped()]
    metadata = {
        "format": "edgeface-model",
        "format_version": 1,
        "edgeface_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_dict(),
        "backbone": config.backbone,
        "weights": config.weights or backbone_info(config.backbone).weights,
        "dataset": {
            "source": str(config.data),
            "fingerprint": data.fingerprint(),
            "validation": str(config.val) if config.val else f"split {config.val_fraction:g} per person, seed {config.seed}",
            "train_photos": len(prepared.train_set),
            "val_photos": len(prepared.val),
            "train_faces": len(train_samples),
            "val_faces": len(val_samples),
            "skipped": skipped,
        },
        "class_weights": prepared.train_heads.class_weights,
        "training": {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "epochs_run": len(history.get("loss", [])),
            "seconds": round(time.time() - started, 1),
            "images_per_second": round(images_per_second, 2) if images_per_second else None,
        },
        "metrics": {"validation": metrics, "linear_probe": probe or {}},
        "heads": choices or {},
        **({"float_heads": {head: layer.to_json() for head, layer in float_heads.items()}} if float_heads else {}),
        **({"embedding": embedding} if embedding else {}),
    }
    write_metadata(model_path, metadata)
    (out / "history.json").write_text(json.dumps(history, indent=2))
    plot_history(history, out / "history.png")
    return TrainResult(model_path, metadata, history)

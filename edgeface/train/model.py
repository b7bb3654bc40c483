"""The three-head model: a shared backbone, then Dense heads named ``identity``, ``emotion``, ``gender``.

Input is RGB in [0, 1] at ``spec.input_size``; the backbone's own preprocessing is the first layer, so
every consumer feeds the same thing. A fourth output, ``embedding``, is the L2-normalised layer under the
identity softmax: it lets the Pi enroll new people without retraining.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgeface.core.errors import ModelError
from edgeface.core.spec import EMBEDDING_NAME, INPUT_NAME, ModelSpec


@dataclass(frozen=True)
class BackboneInfo:
    keras_name: str  # attribute of keras.applications ("" for the built-in tiny CNN)
    preprocess: str  # BackbonePreprocess mode
    imagenet_files: tuple[str, ...]  # file names of local ImageNet weights, searched in $EDGEFACE_WEIGHTS_DIR
    fine_tune_from: str | None  # first layer unfrozen in the fine-tuning phase (None: the whole backbone)


BACKBONES: dict[str, BackboneInfo] = {
    "mobilenetv2": BackboneInfo("MobileNetV2", "tf", ("mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
                                                      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
                                "block_6_expand"),
    "resnet50": BackboneInfo("ResNet50", "caffe", ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",),
                             "conv4_block1_1_conv"),
    "vgg16": BackboneInfo("VGG16", "caffe", ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",), "block4_conv1"),
    # A few conv layers: for tests, benchmarks' small tier and the synthetic demo. Trains in seconds.
    "tiny": BackboneInfo("", "tf", (), None),
}


def backbone_names() -> list[str]:
    return list(BACKBONES)


def resolve_weights(backbone: str, weights: str) -> str | None:
    """``imagenet`` / ``none`` / a path -> what keras.applications takes.

    ``imagenet`` first looks for a local file in ``$EDGEFACE_WEIGHTS_DIR`` (machines without internet), then
    lets Keras download it.
    """
    info = BACKBONES[backbone]
    if weights == "none":
        return None
    if weights == "imagenet":
        if not info.keras_name:
            raise ModelError(f"backbone {backbone!r} has no ImageNet weights; use --weights none")
        local_dir = os.environ.get("EDGEFACE_WEIGHTS_DIR")
        if local_dir:
            for name in info.imagenet_files:
                if (Path(local_dir) / name).is_file():
                    return str(Path(local_dir) / name)
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"--weights {weights}: no such file (use imagenet, none or a path to a .h5 weights file)")
    return str(path)


def _tiny_backbone(input_shape: tuple[int, int, int]):
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    # Momentum 0.9: its moving statistics must settle within the few dozen steps a test trains for.
    for filters in (16, 32, 64, 96):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU(6.0)(x)
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="tiny")


def build_backbone(backbone: str, weights: str, input_size: int):
    """The feature extractor (pooled features) with weights loaded."""
    import keras

    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    info = BACKBONES[backbone]
    shape = (input_size, input_size, 3)
    if not info.keras_name:
        if weights not in ("none",):
            raise ModelError(f"backbone {backbone!r} trains from scratch: use --weights none")
        return _tiny_backbone(shape)
    source = resolve_weights(backbone, weights)
    constructor = getattr(keras.applications, info.keras_name)
    try:
        if source is None or source == "imagenet":
            return constructor(include_top=False, weights=source, input_shape=shape, pooling="avg")
        model = constructor(include_top=False, weights=None, input_shape=shape, pooling="avg")
        model.load_weights(source)
        return model
    except Exception as exc:  # Keras' download raises a bare Exception; h5py and Keras raise OSError/ValueError
        first = " ".join(str(exc).split()) or type(exc).__name__
        hint = (f" (no internet? set EDGEFACE_WEIGHTS_DIR to a folder holding {info.imagenet_files[0]}, "
                "or pass --weights PATH)" if source == "imagenet" else "")
        raise ModelError(f"cannot load {weights} weights for {backbone}: {first}{hint}") from None


@dataclass
class BuiltModel:
    """The parts of a three-head model.

    ``model`` maps image -> {identity, emotion, gender, embedding} and is what gets saved and converted;
    ``heads`` maps pooled backbone features -> the same outputs (trained alone while the backbone is frozen);
    ``training_model`` is ``model`` restricted to the three supervised heads.
    """

    model: Any
    training_model: Any
    backbone: Any
    heads: Any
    heads_training: Any


IDENTITY_HEADS = ("softmax", "cosface")
DISTILL_NAME = "distill"  # training-only output: the identity embedding projected into a teacher's space
COSINE_SCALE = 30.0  # CosFace's usual scale: softmax over 30 x cosine


def build_heads(spec: ModelSpec, feature_size: int, dropout: float = 0.3, identity_head: str = "softmax"):
    """The Dense heads on pooled features, as their own small model (shared weights with the full one).

    ``identity_head``: ``cosface`` (cosine to one centre per person, trained with a margin; ranks people by
    the same cosine as the enrollment gallery) or ``softmax`` (a plain Dense softmax on the embedding).
    """
    import keras
    from keras import layers

    from edgeface.train.layers import CosineSoftmax

    if identity_head not in IDENTITY_HEADS:
        raise ModelError(f"unknown identity head {identity_head!r}; choose one of {', '.join(IDENTITY_HEADS)}")

    features = keras.Input((feature_size,), name="features")
    x = layers.Dropout(dropout, name="dropout")(features)
    embedding = layers.Dense(spec.embedding_size, name="embedding_dense")(x)
    embedding = layers.BatchNormalization(name="embedding_bn")(embedding)
    if identity_head == "cosface":
        identity = CosineSoftmax(spec.num_classes["identity"], scale=COSINE_SCALE, name="identity")(embedding)
    else:
        identity = layers.Dense(spec.num_classes["identity"], activation="softmax", name="identity")(
            layers.Dropout(dropout / 2, name="identity_dropout")(embedding))
    outputs = {
        "identity": identity,
        "emotion": layers.Dense(spec.num_classes["emotion"], activation="softmax", name="emotion")(x),
        "gender": layers.Dense(spec.num_classes["gender"], activation="softmax", name="gender")(x),
        EMBEDDING_NAME: layers.UnitNormalization(name=EMBEDDING_NAME)(embedding),
    }
    return keras.Model(features, outputs, name="heads")


def build_model(spec: ModelSpec, weights: str = "imagenet", dropout: float = 0.3,
                identity_head: str = "softmax") -> BuiltModel:
    """The full three-head (plus embedding) Keras model and its parts."""
    import keras

    from edgeface.train.layers import BackbonePreprocess

    info = BACKBONES[spec.backbone]
    backbone = build_backbone(spec.backbone, weights, spec.input_size)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), name=INPUT_NAME)
    x = BackbonePreprocess(info.preprocess, name="preprocess")(inputs)
    # BatchNorm layers that are not trainable run in inference mode (Keras 3), so whether a pretrained
    # backbone's BatchNorm statistics move is decided by set_backbone_trainable, not here.
    features = backbone(x)
    heads = build_heads(spec, int(features.shape[-1]), dropout, identity_head)
    outputs = heads(features)
    supervised = ("identity", "emotion", "gender")
    return BuiltModel(
        model=keras.Model(inputs, outputs, name=f"edgeface_{spec.backbone}"),
        training_model=keras.Model(inputs, {head: outputs[head] for head in supervised}),
        backbone=backbone,
        heads=heads,
        heads_training=keras.Model(heads.input, {head: heads.output[head] for head in supervised}),
    )


def with_distillation(built: BuiltModel, dimensions: int) -> BuiltModel:
    """The same model with a ``distill`` output (a Dense projection of the identity embedding, before its
    normalisation) in the two training models only: ``model``, which is saved and converted, does not have it."""
    import keras

    from edgeface.core.spec import HEADS

    heads = built.heads
    projection = keras.layers.Dense(dimensions, name=DISTILL_NAME)(heads.get_layer("embedding_bn").output)
    heads_training = keras.Model(heads.input, {**{head: heads.output[head] for head in HEADS},
                                               DISTILL_NAME: projection}, name="heads_distill")
    inputs = built.model.input
    outputs = heads_training(built.backbone(built.model.get_layer("preprocess")(inputs)))
    return BuiltModel(model=built.model, training_model=keras.Model(inputs, outputs), backbone=built.backbone,
                      heads=heads, heads_training=heads_training)


class ModelParts(NamedTuple):
    """The parts of a model shaped as :func:`build_model` builds it."""

    preprocess: Any
    backbone: Any
    heads: Any
    mirrored: bool  # each face is read as the mean of itself and its mirror image (see compose_model)


MIRROR_LAYERS = ("mirror_batch", "mirror_mean")


def model_parts(model: Any) -> ModelParts | None:
    """The preprocess, backbone and heads of a model shaped as :func:`build_model` (or :func:`compose_model`)
    builds it; None otherwise."""
    names = [layer.name for layer in model.layers]
    if len(names) == 4 and names[1] == "preprocess" and names[3] == "heads":
        return ModelParts(model.layers[1], model.layers[2], model.layers[3], mirrored=False)
    if (len(names) == 6 and names[1] == "preprocess" and (names[2], names[4]) == MIRROR_LAYERS
            and names[5] == "heads"):
        return ModelParts(model.layers[1], model.layers[3], model.layers[5], mirrored=True)
    return None


def compose_features(preprocess: Any, backbone: Any, inputs: Any, mirrored: bool) -> Any:
    """The pooled backbone features of ``inputs``; with ``mirrored``, the mean of the features of each face and
    of its mirror image, computed in one backbone call on a batch twice as large."""
    from edgeface.train.layers import MirrorBatch, MirrorMean

    x = preprocess(inputs)
    if not mirrored:
        return backbone(x)
    return MirrorMean(name=MIRROR_LAYERS[1])(backbone(MirrorBatch(name=MIRROR_LAYERS[0])(x)))


def compose_model(model: Any, parts: ModelParts, heads: Any | None = None,
                  mirrored: bool | None = None) -> Any:
    """A new model from ``parts`` (their layers shared, not copied): ``heads`` replaces the heads when given,
    ``mirrored`` switches mirror averaging on or off (default: as in ``parts``)."""
    import keras

    mirrored = parts.mirrored if mirrored is None else mirrored
    inputs = keras.Input(tuple(model.input.shape[1:]), name=model.input.name)
    features = compose_features(parts.preprocess, parts.backbone, inputs, mirrored)
    return keras.Model(inputs, (heads or parts.heads)(features), name=model.name)


def set_backbone_trainable(backbone, fine_tune: bool, fine_tune_from: str | None, batchnorm: bool = False) -> int:
    """Freeze the backbone, or unfreeze it from ``fine_tune_from`` on.

    BatchNorm layers stay frozen (inference mode, ImageNet statistics) unless ``batchnorm`` is true.

    Returns how many backbone layers are trainable.
    """
    import keras

    if not fine_tune:
        backbone.trainable = False
        return 0
    backbone.trainable = True
    reached = fine_tune_from is None
    count = 0
    names = {layer.name for layer in backbone.layers}
    if fine_tune_from is not None and fine_tune_from not in names:
        raise ModelError(f"layer {fine_tune_from!r} is not in the backbone {backbone.name}")
    for layer in backbone.layers:
        if layer.name == fine_tune_from:
            reached = True
        layer.trainable = reached and (batchnorm or not isinstance(layer, keras.layers.BatchNormalization))
        count += int(layer.trainable)
    return count

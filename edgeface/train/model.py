"""The model: a backbone, then heads named ``identity``, ``emotion``, ``gender`` and an ``embedding`` output.

Input is RGB in [0, 1] at ``spec.input_size``; the backbone's own preprocessing is the first layer, so every
consumer feeds the same thing. The backbone gives named, pooled features and each head reads the one that
serves it:

* ``dlib-resnet`` (the default): dlib's face encoder (:mod:`edgeface.train.dlib_resnet`), trained on millions
  of faces to tell people apart. Its 128-d descriptor, L2-normalised, is the ``embedding`` as dlib made it
  (frozen), and identity is the nearest person centre on it; gender is read from the same descriptor. It was
  trained to ignore expression, so emotion reads an *attribute branch*: a copy of the encoder's third stage
  and of the first block of its fourth (where expression is still visible, before the network learns to
  discard it), started from dlib's weights and fine-tuned beside the frozen identity path, with the frozen
  path's pooled last stage beside it.
* ``mobilenetv2``, ``resnet50``, ``vgg16`` (ImageNet weights) and ``tiny`` (tests): one pooled feature vector
  that every head reads; the embedding is a learned Dense layer under a Dense identity softmax.

The ``embedding`` output lets the Pi enroll new people without retraining.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edgeface.core.errors import ModelError
from edgeface.core.spec import EMBEDDING_NAME, INPUT_NAME, CropSpec, ModelSpec
from edgeface.train import dlib_resnet

POOLED = "pooled"  # the one feature vector of a classification backbone
DESCRIPTOR = "descriptor"  # dlib-resnet: the identity path's 128-d descriptor
ATTRIBUTES = "attributes"  # dlib-resnet: the attribute branch's pooled features
ATTRIBUTE_PREFIX = "attributes_"  # names of the attribute branch's layers
# What the attribute branch copies: (stage, blocks) pairs, 0-based: all of the third stage and the first block
# of the fourth (1.8 M parameters, about a fifth more work per face). Copying all of the last three stages adds
# 4.7 M parameters: the int8 bundle would pass 8 MB.
ATTRIBUTE_BRANCH = ((2, 3), (3, 1))


@dataclass(frozen=True)
class BackboneInfo:
    keras_name: str  # attribute of keras.applications ("" for edgeface's own networks)
    preprocess: str  # BackbonePreprocess mode
    weight_files: tuple[str, ...]  # local pretrained weights, searched in $EDGEFACE_WEIGHTS_DIR
    fine_tune_from: str | None  # first layer (or, ending in "_", layer-name prefix) unfrozen when fine-tuning
    weights: str = "imagenet"  # what the backbone starts from unless told otherwise
    input_size: int = 224
    crop: CropSpec = field(default_factory=CropSpec)  # where the face lands in the crops it was trained on
    identity_head: str = "softmax"  # "softmax": a Dense softmax; "centres": nearest person centre
    width: float = 1.0  # dlib-resnet: channel multiplier (below 1 only for tests)


_DLIB = dict(preprocess="dlib", weight_files=(dlib_resnet.DAT_NAME,), fine_tune_from=ATTRIBUTE_PREFIX,
             weights="dlib", input_size=dlib_resnet.INPUT_SIZE, identity_head="centres",
             crop=CropSpec(landmarks=dlib_resnet.CHIP_LANDMARKS, keypoints=dlib_resnet.CHIP_KEYPOINTS))

BACKBONES: dict[str, BackboneInfo] = {
    "dlib-resnet": BackboneInfo("", **_DLIB),  # type: ignore[arg-type]
    "mobilenetv2": BackboneInfo("MobileNetV2", "tf", ("mobilenet_v2_1.0_224_imagenet_notop.weights.h5",
                                                      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
                                "block_6_expand"),
    "resnet50": BackboneInfo("ResNet50", "caffe", ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",),
                             "conv4_block1_1_conv"),
    "vgg16": BackboneInfo("VGG16", "caffe", ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",), "block4_conv1"),
    # For tests, the benchmarks' small tier and the synthetic demo: trained from scratch in seconds.
    "tiny": BackboneInfo("", "tf", (), None, weights="none"),
    "dlib-resnet-tiny": BackboneInfo("", **{**_DLIB, "weights": "none", "width": 1 / 8}),  # type: ignore[arg-type]
}


def backbone_names() -> list[str]:
    return list(BACKBONES)


def backbone_info(backbone: str) -> BackboneInfo:
    if backbone not in BACKBONES:
        raise ModelError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def is_dlib(backbone: str) -> bool:
    return backbone_info(backbone).preprocess == "dlib"


def resolve_weights(backbone: str, weights: str) -> str | None:
    """``imagenet`` / ``dlib`` / ``none`` / a path -> what the backbone loads (None: random weights).

    ``imagenet`` first looks for a local file in ``$EDGEFACE_WEIGHTS_DIR`` (machines without internet), then
    lets Keras download it; ``dlib`` finds dlib's ``.dat`` (``$EDGEFACE_WEIGHTS_DIR``, then the
    ``face-recognition-models`` package).
    """
    info = backbone_info(backbone)
    if weights == "none":
        return None
    if weights in ("imagenet", "dlib"):
        if weights != info.weights:
            raise ModelError(f"backbone {backbone!r} has no {weights} weights; use --weights "
                             f"{info.weights}")
        if weights == "dlib":
            return str(dlib_resnet.find_dat())
        local_dir = os.environ.get("EDGEFACE_WEIGHTS_DIR")
        if local_dir:
            for name in info.weight_files:
                if (Path(local_dir) / name).is_file():
                    return str(Path(local_dir) / name)
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"--weights {weights}: no such file (use {info.weights}, none or a path to a weights file)")
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
    return keras.Model(inputs, {POOLED: x}, name="tiny")


def _dlib_backbone(info: BackboneInfo, source: str | None, input_size: int):
    """The identity path (dlib's network, to its descriptor) and the attribute branch (ATTRIBUTE_BRANCH again,
    under their own names) on one shared trunk; the attributes are the branch's pooled output beside the
    identity path's pooled last stage."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = dlib_resnet.stem(inputs, width=info.width)
    first = ATTRIBUTE_BRANCH[0][0]
    for index in range(first):
        x = dlib_resnet.stage(x, index, width=info.width)
    identity, attributes = x, x
    for index in range(first, len(dlib_resnet.STAGES)):
        identity = dlib_resnet.stage(identity, index, width=info.width)
    for index, blocks in ATTRIBUTE_BRANCH:
        attributes = dlib_resnet.stage(attributes, index, prefix=ATTRIBUTE_PREFIX, width=info.width, blocks=blocks)
    pooled = dlib_resnet.pool(identity)
    attributes = layers.Concatenate(name=ATTRIBUTES)(
        [layers.GlobalAveragePooling2D(name=f"{ATTRIBUTE_PREFIX}pool")(attributes), pooled])
    outputs = {DESCRIPTOR: dlib_resnet.descriptor(pooled), ATTRIBUTES: attributes}
    model = keras.Model(inputs, outputs, name="dlib_resnet")
    if source is not None:
        pretrained = dlib_resnet.load_dlib_resnet(source, input_size=input_size, width=info.width)
        dlib_resnet.copy_weights(pretrained, model)
        dlib_resnet.copy_weights(pretrained, model, ATTRIBUTE_PREFIX)
    return model


def build_backbone(backbone: str, weights: str, input_size: int):
    """The feature extractor with weights loaded: preprocessed image -> {feature name: pooled features}."""
    import keras

    info = backbone_info(backbone)
    source = resolve_weights(backbone, weights)
    shape = (input_size, input_size, 3)
    if info.preprocess == "dlib":
        return _dlib_backbone(info, source, input_size)
    if not info.keras_name:
        if source is not None:
            raise ModelError(f"backbone {backbone!r} trains from scratch: use --weights none")
        return _tiny_backbone(shape)
    constructor = getattr(keras.applications, info.keras_name)
    try:
        if source is None or source == "imagenet":
            model = constructor(include_top=False, weights=source, input_shape=shape, pooling="avg")
        else:
            model = constructor(include_top=False, weights=None, input_shape=shape, pooling="avg")
            model.load_weights(source)
    except Exception as exc:  # Keras' download raises a bare Exception; h5py and Keras raise OSError/ValueError
        first = " ".join(str(exc).split()) or type(exc).__name__
        hint = (f" (no internet? set EDGEFACE_WEIGHTS_DIR to a folder holding {info.weight_files[0]}, "
                "or pass --weights PATH)" if source == "imagenet" else "")
        raise ModelError(f"cannot load {weights} weights for {backbone}: {first}{hint}") from None
    return keras.Model(model.input, {POOLED: model.output}, name=model.name)


@dataclass
class BuiltModel:
    """The parts of a three-head model.

    ``model`` maps image -> {identity, emotion, gender, embedding} and is what gets saved and converted;
    ``heads`` maps the backbone's pooled features -> the same outputs (trained alone while the backbone is
    frozen); ``training_model`` is ``model`` restricted to the three supervised heads.
    """

    model: Any
    training_model: Any
    backbone: Any
    heads: Any
    heads_training: Any


IDENTITY_NAME = "identity"
ATTRIBUTE_HEADS = ("emotion", "gender")


def head_features(backbone: str) -> dict[str, str]:
    """Which of the backbone's features each head reads. dlib-resnet: identity and gender its frozen
    descriptor (gender is in it; emotion was trained out of it), emotion the attribute branch."""
    if is_dlib(backbone):
        return {"identity": DESCRIPTOR, "emotion": ATTRIBUTES, "gender": DESCRIPTOR}
    return {head: POOLED for head in ("identity", "emotion", "gender")}


def build_heads(spec: ModelSpec, feature_sizes: dict[str, int], identity_head: str, dropout: float = 0.3):
    """The heads on the backbone's named features, as their own small model (sharing weights with the full
    one). With a ``descriptor`` the embedding is that descriptor, normalised; otherwise a Dense layer on the
    pooled features learns one. ``identity_head``: ``centres`` (a softmax over scaled cosines to one centre per
    person, set from the data by :func:`set_identity_centres`, not trained) or ``softmax`` (a Dense softmax).
    """
    import keras
    from keras import layers

    from edgeface.train.layers import CosineSoftmax

    inputs = {name: keras.Input((size,), name=name) for name, size in feature_sizes.items()}
    people = spec.num_classes["identity"]
    reads = head_features(spec.backbone)
    if DESCRIPTOR in inputs:
        identity_features = inputs[DESCRIPTOR]
        attributes = layers.Dropout(dropout, name="dropout")(inputs[ATTRIBUTES])
    else:
        attributes = layers.Dropout(dropout, name="dropout")(inputs[POOLED])
        identity_features = layers.Dense(spec.embedding_size, name="embedding_dense")(attributes)
        identity_features = layers.BatchNormalization(name="embedding_bn")(identity_features)
    # What emotion and gender read: the features named in head_features (through dropout where those are the
    # fine-tuned ones).
    readers = {ATTRIBUTES: attributes, POOLED: attributes, DESCRIPTOR: inputs.get(DESCRIPTOR)}
    if identity_head == "centres":
        identity_layer = CosineSoftmax(people, name=IDENTITY_NAME, trainable=False)
        identity = identity_layer(identity_features)
    elif identity_head == "softmax":
        identity = layers.Dense(people, activation="softmax", name=IDENTITY_NAME)(
            layers.Dropout(dropout / 2, name="identity_dropout")(identity_features))
    else:
        raise ModelError(f"unknown identity head {identity_head!r}; choose softmax or centres")
    outputs = {
        "identity": identity,
        "emotion": layers.Dense(spec.num_classes["emotion"], activation="softmax", name="emotion")(
            readers[reads["emotion"]]),
        "gender": layers.Dense(spec.num_classes["gender"], activation="softmax", name="gender")(
            readers[reads["gender"]]),
        EMBEDDING_NAME: layers.UnitNormalization(name=EMBEDDING_NAME)(identity_features),
    }
    return keras.Model(inputs, outputs, name="heads")


def build_model(spec: ModelSpec, weights: str | None = None, dropout: float = 0.3) -> BuiltModel:
    """The full model and its parts; ``weights`` defaults to the backbone's own (``dlib`` or ``imagenet``)."""
    import keras

    from edgeface.train.layers import BackbonePreprocess

    info = backbone_info(spec.backbone)
    backbone = build_backbone(spec.backbone, weights or info.weights, spec.input_size)
    inputs = keras.Input((spec.input_size, spec.input_size, 3), name=INPUT_NAME)
    x = BackbonePreprocess(info.preprocess, name="preprocess")(inputs)
    # BatchNorm layers that are not trainable run in inference mode (Keras 3), so whether a pretrained
    # backbone's BatchNorm statistics move is decided by set_backbone_trainable, not here.
    features = backbone(x)
    heads = build_heads(spec, {name: int(t.shape[-1]) for name, t in features.items()}, info.identity_head,
                        dropout)
    outputs = heads(features)
    supervised = ("identity", "emotion", "gender")
    return BuiltModel(
        model=keras.Model(inputs, outputs, name=f"edgeface_{spec.backbone.replace('-', '_')}"),
        training_model=keras.Model(inputs, {head: outputs[head] for head in supervised}),
        backbone=backbone,
        heads=heads,
        heads_training=keras.Model(heads.input, {head: heads.output[head] for head in supervised}),
    )


class ModelParts(NamedTuple):
    """The parts of a model shaped as :func:`build_model` builds it."""

    preprocess: Any
    backbone: Any
    heads: Any


def model_parts(model: Any) -> ModelParts | None:
    """The preprocess, backbone and heads of a model shaped as :func:`build_model` builds it; None otherwise."""
    names = [layer.name for layer in model.layers]
    if len(names) == 4 and names[1] == "preprocess" and names[3] == "heads":
        return ModelParts(model.layers[1], model.layers[2], model.layers[3])
    return None


def set_identity_centres(heads: Any, embeddings: Any, labels: Any, people: Any, scale: float) -> None:
    """Give a ``centres`` identity head one unit centre per person (the normalised mean of their unit
    embeddings) and its softmax scale."""
    from edgeface.train.centres import person_centres

    layer = heads.get_layer(IDENTITY_NAME)
    layer.centres.assign(person_centres(embeddings, people, labels))
    layer.scale = float(scale)


def model_identity_centres(model: Any) -> Any:
    """A nearest-centre identity head's unit centres (one row per person) and scale, as the device uses them
    (``edgeface.core.bundle.IdentityCentres``); None for a model whose identity is a Dense softmax."""
    import numpy as np

    from edgeface.core.bundle import IdentityCentres
    from edgeface.train.layers import CosineSoftmax

    parts = model_parts(model)
    layer = next((layer for layer in parts.heads.layers if layer.name == IDENTITY_NAME), None) if parts else None
    if not isinstance(layer, CosineSoftmax) or layer.linear:
        return None
    centres = np.asarray(layer.centres, np.float64).T
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    unit = np.where(norms > 1e-6, centres / np.maximum(norms, 1e-12), 0.0)
    return IdentityCentres(unit.astype(np.float32), float(layer.scale))


def float_head_layers(model: Any, spec: ModelSpec) -> dict[str, tuple[str, Any]]:
    """The heads of a model shaped as :func:`build_model` builds it whose last layer the device can compute in
    float from an output of the model: {head: (output name, layer)}. An attribute head that is a Dense softmax
    on one of the backbone's named features (through dropout at most, nothing at inference) reads
    ``FEATURES_PREFIX + feature``; a nearest-centre identity head made a logistic regression
    (``CosineSoftmax.set_linear``) reads the embedding. Empty for any other model."""
    import keras

    from edgeface.core.spec import FEATURES_PREFIX
    from edgeface.train.layers import CosineSoftmax

    parts = model_parts(model)
    if parts is None:
        return {}
    reads = head_features(spec.backbone)
    sizes = {name: int(tensor.shape[-1]) for name, tensor in parts.heads.input.items()} \
        if isinstance(parts.heads.input, dict) else {}
    found = {}
    for head in ATTRIBUTE_HEADS:
        layer = next((layer for layer in parts.heads.layers if layer.name == head), None)
        if (isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax
                and reads[head] in sizes and int(layer.kernel.shape[0]) == sizes[reads[head]]):
            found[head] = (FEATURES_PREFIX + reads[head], layer)
    identity = next((layer for layer in parts.heads.layers if layer.name == IDENTITY_NAME), None)
    if isinstance(identity, CosineSoftmax) and identity.linear:
        found[IDENTITY_NAME] = (EMBEDDING_NAME, identity)
    return found


def with_feature_outputs(model: Any, outputs: Any) -> Any:
    """``model`` (shaped as :func:`build_model` builds it) with the backbone's features among ``outputs``
    (names ``FEATURES_PREFIX + feature``; others are the model's own) as outputs too: the same layers, so what
    it computes is the model's own."""
    import keras

    from edgeface.core.spec import FEATURES_PREFIX

    parts = model_parts(model)
    features = sorted({name[len(FEATURES_PREFIX):] for name in outputs if name.startswith(FEATURES_PREFIX)})
    if parts is None or not features:
        return model
    inputs = model.inputs[0]
    pooled = parts.backbone(parts.preprocess(inputs))
    given = dict(parts.heads(pooled))
    given.update({FEATURES_PREFIX + name: pooled[name] for name in features})
    return keras.Model(inputs, given, name=model.name)


def model_float_heads(model: Any, spec: ModelSpec) -> dict[str, Any]:
    """Each head of :func:`float_head_layers` as the device computes it in float
    (``edgeface.core.bundle.FloatHead``), with the layer's weights as they are now."""
    import numpy as np

    from edgeface.core.bundle import FloatHead

    heads = {}
    for head, (output, layer) in float_head_layers(model, spec).items():
        kernel = layer.centres if head == IDENTITY_NAME else layer.kernel
        heads[head] = FloatHead(output, np.asarray(kernel, np.float32), np.asarray(layer.bias, np.float32))
    return heads


def set_backbone_trainable(backbone, fine_tune: bool, fine_tune_from: str | None, batchnorm: bool = False) -> int:
    """Freeze the backbone, or unfreeze it from ``fine_tune_from`` on (a name ending in ``_``: the layers whose
    names start with it; None: all of it).

    BatchNorm layers stay frozen (inference mode, ImageNet statistics) unless ``batchnorm`` is true.

    Returns how many backbone layers are trainable.
    """
    import keras

    if not fine_tune:
        backbone.trainable = False
        return 0
    backbone.trainable = True
    prefix = fine_tune_from if fine_tune_from and fine_tune_from.endswith("_") else None
    names = {layer.name for layer in backbone.layers}
    if fine_tune_from is not None and prefix is None and fine_tune_from not in names:
        raise ModelError(f"layer {fine_tune_from!r} is not in the backbone {backbone.name}")
    reached = fine_tune_from is None
    count = 0
    for layer in backbone.layers:
        if prefix is None and layer.name == fine_tune_from:
            reached = True
        selected = layer.name.startswith(prefix) if prefix is not None else reached
        layer.trainable = selected and (batchnorm or not isinstance(layer, keras.layers.BatchNormalization))
        count += int(layer.trainable and bool(layer.weights))
    return count

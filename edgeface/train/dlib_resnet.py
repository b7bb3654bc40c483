"""dlib's face encoder as a Keras backbone: a 29-layer ResNet, 150x150 aligned face in, 128-d descriptor out.

The network is the one of dlib's ``dnn_face_recognition_ex.cpp`` (the model behind ``face_recognition``,
trained by its author on about 3 million faces for face verification; its weights file is public domain):

* a 7x7/2 convolution (32) and a 3x3/2 max pool;
* five stages of residual blocks, each block two 3x3 convolutions with a ReLU between and after the sum:
  3 x 32, 4 x 64, 3 x 128, 3 x 256 and 1 x 256 channels. Every stage but the first opens with a "down" block
  whose first convolution has stride 2 and whose shortcut is a 2x2/2 average pool of its input, the two
  summed as if the smaller were padded with zeros at the end of each axis (channels at every down block, rows
  and columns too where the convolution gives 3x3 and the pool 4x4);
* a global average pool and a 128-wide fully connected layer without bias.

Strided convolutions and pools do not pad; 3x3 stride-1 convolutions pad by one. dlib follows each
convolution with an ``affine`` layer (a frozen batch norm: per-channel scale and shift); here it is folded into
the convolution's kernel and bias, which is the same function. Input: dlib subtracts the channel means from
0-255 RGB and divides by 256 (``BackbonePreprocess("dlib")`` does that to [0, 1] input).

The weights come from dlib's own ``.dat`` file (read with numpy by :mod:`edgeface.train.dlib_dat`) and are
cached as a Keras weights file in the user cache directory, keyed by the ``.dat``'s SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeface.errors import ModelError
from edgeface.train.dlib_dat import DlibNetwork, read_dlib_network

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# dlib's channel means (the .dat's input layer holds them; checked on load).
CHANNEL_MEANS = (122.782, 117.001, 104.298)


class Stage(NamedTuple):
    filters: int
    blocks: int
    down: bool  # the first block halves the rows and columns


STAGES = (Stage(32, 3, False), Stage(64, 4, True), Stage(128, 3, True), Stage(256, 3, True), Stage(256, 1, True))
STEM_FILTERS = 32
STAGE_NAMES = tuple(f"stage{i + 1}" for i in range(len(STAGES)))
DESCRIPTOR_NAME = "descriptor"


def expected_kinds() -> list[str]:
    """The layer kinds of the network, from the input up, as dlib lists them in its file."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for stage in STAGES:
        for block in range(stage.blocks):
            kinds += ["con", "affine", "relu", "con", "affine"]
            kinds += ["avg_pool", "add_prev"] if (stage.down and block == 0) else ["add_prev"]
            kinds += ["relu"]
    return kinds + ["avg_pool", "fc"]


def find_dat(explicit: str | Path | None = None) -> Path:
    """The ``.dat`` file: ``explicit``, else ``$EDGEFACE_WEIGHTS_DIR``, else the ``face-recognition-models``
    package (``pip install 'edgeface[dlib]'``)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ModelError(f"{path}: no such dlib weights file")
        return path
    local_dir = os.environ.get("EDGEFACE_WEIGHTS_DIR")
    if local_dir and (Path(local_dir) / DAT_NAME).is_file():
        return Path(local_dir) / DAT_NAME
    try:
        import face_recognition_models
    except ImportError:
        raise ModelError(f"dlib's face encoder weights ({DAT_NAME}) not found: pip install 'edgeface[dlib]' "
                         "(face-recognition-models), or put the file in $EDGEFACE_WEIGHTS_DIR") from None
    return Path(face_recognition_models.face_recognition_model_location())


def _conv_layers(filters: int, stride: int, name: str) -> Any:
    from keras import layers

    padding = "same" if stride == 1 else "valid"
    return layers.Conv2D(filters, 3, strides=stride, padding=padding, name=name)


def build_dlib_resnet(input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3), name: str = "dlib_resnet"):
    """The network with random weights: preprocessed input -> {stage1..stage5 feature maps, descriptor}.

    The outputs are the last activation of each stage (for heads that read earlier features than the
    descriptor) and the 128-d descriptor.
    """
    import keras
    from keras import layers

    from edgeface.train.layers import ZeroPadSum

    inputs = keras.Input(input_shape, name="pixels")
    x = layers.Conv2D(STEM_FILTERS, 7, strides=2, padding="valid", name="stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    outputs = {}
    for stage_name, stage in zip(STAGE_NAMES, STAGES):
        for block in range(stage.blocks):
            prefix = f"{stage_name}_block{block + 1}"
            down = stage.down and block == 0
            y = _conv_layers(stage.filters, 2 if down else 1, f"{prefix}_conv1")(x)
            y = layers.ReLU(name=f"{prefix}_relu1")(y)
            y = _conv_layers(stage.filters, 1, f"{prefix}_conv2")(y)
            shortcut = layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{prefix}_pool")(x) if down else x
            x = ZeroPadSum(name=f"{prefix}_add")([y, shortcut])
            x = layers.ReLU(name=f"{prefix}_relu2")(x)
        outputs[stage_name] = x
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs[DESCRIPTOR_NAME] = layers.Dense(DESCRIPTOR_SIZE, use_bias=False, name=DESCRIPTOR_NAME)(pooled)
    return keras.Model(inputs, outputs, name=name)


def keras_weights(network: DlibNetwork) -> list[np.ndarray]:
    """The network's parameters in the order of ``build_dlib_resnet``'s weights (each affine folded into the
    convolution before it)."""
    kinds = network.kinds()
    if kinds != expected_kinds():
        first = next((i for i, (a, b) in enumerate(zip(kinds, expected_kinds())) if a != b),
                     min(len(kinds), len(expected_kinds())))
        raise ModelError(f"not dlib's face encoder: layer {first} is {kinds[first] if first < len(kinds) else 'missing'}"
                         f", expected {expected_kinds()[first] if first < len(expected_kinds()) else 'nothing'}")
    means = np.asarray(network.input_means)
    if network.input_size not in (None, (INPUT_SIZE, INPUT_SIZE)) or not np.allclose(means, CHANNEL_MEANS, atol=1e-3):
        raise ModelError(f"not dlib's face encoder: input {network.input_size}, channel means {means.round(3).tolist()}")
    weights: list[np.ndarray] = []
    layers = list(network.layers)
    for i, layer in enumerate(layers):
        if layer.kind == "con":
            affine = layers[i + 1]
            filters = layer.arrays["filters"]  # (out, in, rows, columns)
            bias = layer.arrays.get("biases", np.zeros(filters.shape[0], np.float32))
            gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
            kernel = np.transpose(filters, (2, 3, 1, 0)) * gamma  # (rows, columns, in, out)
            weights += [kernel.astype(np.float32), (bias * gamma + beta).astype(np.float32)]
        elif layer.kind == "fc":
            weights.append(layer.arrays["weights"].astype(np.float32))
    return weights


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_weights_file(dat: Path, cache_dir: Path | None = None) -> Path:
    """The Keras weights file converted from ``dat``, made once per ``.dat`` (keyed by its SHA-256)."""
    from edgeface.faces.crops import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / "weights" / f"dlib-resnet-{file_digest(dat)[:16]}.weights.h5"
    if path.is_file():
        return path
    model = build_dlib_resnet()
    model.set_weights(keras_weights(read_dlib_network(dat)))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{os.getpid()}.{path.name}")  # Keras insists on the .weights.h5 suffix
    try:
        model.save_weights(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_dlib_resnet(weights: str | Path | None = "dlib", input_size: int = INPUT_SIZE,
                     cache_dir: Path | None = None):
    """The network with dlib's weights (``"dlib"``: found by :func:`find_dat`; a path: that ``.dat`` or a
    ``.weights.h5`` of this network) or random ones (``None``)."""
    model = build_dlib_resnet((input_size, input_size, 3))
    if weights is None:
        return model
    source = Path(weights) if weights != "dlib" else None
    if source is not None and source.name.endswith(".weights.h5"):
        path = source
    else:
        path = cached_weights_file(find_dat(source), cache_dir)
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"{path}: cannot load dlib-resnet weights ({first})") from None
    return model

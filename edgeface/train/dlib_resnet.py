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

from edgeface.core.errors import ModelError
from edgeface.train.dlib_dat import DlibNetwork, read_dlib_network

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# dlib's channel means (the .dat's input layer holds them; checked on load).
CHANNEL_MEANS = (122.782, 117.001, 104.298)
# Where the face mesh's five points (dlib's: eye corners and the bottom of the nose) land in dlib's own
# 150x150 chip (its 5-point landmarks, 25% padding), as fractions: the median over several hundred photos
# aligned by dlib. Crops fitted to them (least squares) give descriptors close to those of dlib's chips
# (benchmarks/dlib_port.py measures how close).
CHIP_LANDMARKS = "mesh5"
CHIP_KEYPOINTS = ((0.7476, 0.303), (0.5876, 0.3166), (0.2365, 0.3048), (0.3946, 0.3171), (0.4917, 0.575))


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
    package (``pip install "edgeface[train]"``)."""
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
        raise ModelError(f"dlib's face encoder weights ({DAT_NAME}) not found: pip install 'edgeface[train]' "
                         "(face-recognition-models), or put the file in $EDGEFACE_WEIGHTS_DIR") from None
    return Path(face_recognition_models.face_recognition_model_location())


def _conv(filters: int, kernel: int, stride: int, name: str) -> Any:
    from keras import layers

    # dlib pads stride-1 convolutions by half the kernel and strided ones not at all.
    return layers.Conv2D(filters, kernel, strides=stride, padding="same" if stride == 1 else "valid", name=name)


def _width(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))


def stem(x: Any, prefix: str = "", width: float = 1.0) -> Any:
    """The 7x7/2 convolution and 3x3/2 max pool that open the network. ``width`` scales every layer's
    channels (1: dlib's network; smaller: a cheap instance of the same architecture, for tests)."""
    from keras import layers

    x = _conv(_width(STEM_FILTERS, width), 7, 2, f"{prefix}stem_conv")(x)
    x = layers.ReLU(name=f"{prefix}stem_relu")(x)
    return layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{prefix}stem_pool")(x)


def stage(x: Any, index: int, prefix: str = "", width: float = 1.0, blocks: int | None = None) -> Any:
    """Stage ``index`` (0-based) of the residual stages, applied to ``x`` (its first ``blocks`` blocks only,
    when given)."""
    from keras import layers

    from edgeface.train.layers import ZeroPadSum

    spec = STAGES[index]
    filters = _width(spec.filters, width)
    for block in range(spec.blocks if blocks is None else blocks):
        name = f"{prefix}{STAGE_NAMES[index]}_block{block + 1}"
        down = spec.down and block == 0
        y = _conv(filters, 3, 2 if down else 1, f"{name}_conv1")(x)
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = _conv(filters, 3, 1, f"{name}_conv2")(y)
        shortcut = layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{name}_pool")(x) if down else x
        x = ZeroPadSum(name=f"{name}_add")([y, shortcut])
        x = layers.ReLU(name=f"{name}_relu2")(x)
    return x


def pool(x: Any, prefix: str = "") -> Any:
    """The global average pool on the last stage."""
    from keras import layers

    return layers.GlobalAveragePooling2D(name=f"{prefix}pool")(x)


def descriptor(pooled: Any, prefix: str = "") -> Any:
    """The 128-wide fully connected layer (no bias) on the pooled last stage."""
    from keras import layers

    return layers.Dense(DESCRIPTOR_SIZE, use_bias=False, name=f"{prefix}{DESCRIPTOR_NAME}")(pooled)


def build_dlib_resnet(input_shape: tuple[int, int, int] = (INPUT_SIZE, INPUT_SIZE, 3), name: str = "dlib_resnet",
                      width: float = 1.0):
    """The network with random weights: preprocessed input -> {stage1..stage5 feature maps, descriptor}.

    The outputs are the last activation of each stage (for heads that read earlier features than the
    descriptor) and the 128-d descriptor.
    """
    import keras

    inputs = keras.Input(input_shape, name="pixels")
    x = stem(inputs, width=width)
    outputs = {}
    for index, stage_name in enumerate(STAGE_NAMES):
        x = outputs[stage_name] = stage(x, index, width=width)
    outputs[DESCRIPTOR_NAME] = descriptor(pool(x))
    return keras.Model(inputs, outputs, name=name)


def dlib_layer_weights(network: DlibNetwork) -> dict[str, list[np.ndarray]]:
    """The network's parameters by the layer names of :func:`build_dlib_resnet` (without prefix), each affine
    folded into the convolution before it."""
    kinds = network.kinds()
    if kinds != expected_kinds():
        first = next((i for i, (a, b) in enumerate(zip(kinds, expected_kinds())) if a != b),
                     min(len(kinds), len(expected_kinds())))
        found = kinds[first] if first < len(kinds) else "missing"
        wanted = expected_kinds()[first] if first < len(expected_kinds()) else "nothing"
        raise ModelError(f"not dlib's face encoder: layer {first} is {found}, expected {wanted}")
    means = np.asarray(network.input_means)
    if network.input_size not in (None, (INPUT_SIZE, INPUT_SIZE)) or not np.allclose(means, CHANNEL_MEANS, atol=1e-3):
        raise ModelError(f"not dlib's face encoder: input {network.input_size}, channel means {means.round(3).tolist()}")
    names = ["stem_conv"] + [f"{STAGE_NAMES[i]}_block{b + 1}_conv{c}" for i, spec in enumerate(STAGES)
                             for b in range(spec.blocks) for c in (1, 2)]
    layers = list(network.layers)
    convolutions = [(layer, layers[i + 1]) for i, layer in enumerate(layers) if layer.kind == "con"]
    weights: dict[str, list[np.ndarray]] = {}
    for name, (layer, affine) in zip(names, convolutions):
        filters = layer.arrays["filters"]  # (out, in, rows, columns)
        bias = layer.arrays.get("biases", np.zeros(filters.shape[0], np.float32))
        gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
        kernel = np.transpose(filters, (2, 3, 1, 0)) * gamma  # (rows, columns, in, out)
        weights[name] = [kernel.astype(np.float32), (bias * gamma + beta).astype(np.float32)]
    weights[DESCRIPTOR_NAME] = [layers[-1].arrays["weights"].astype(np.float32)]
    return weights


def copy_weights(source: Any, target: Any, prefix: str = "") -> int:
    """Give ``target``'s layers named ``prefix + name`` the weights of ``source``'s layer ``name``; returns how
    many layers were set (a branch copied from the network starts where the network is)."""
    count = 0
    for layer in source.layers:
        if layer.weights:
            try:
                other = target.get_layer(f"{prefix}{layer.name}")
            except ValueError:
                continue
            other.set_weights(layer.get_weights())
            count += 1
    return count


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_weights_file(dat: Path, cache_dir: Path | None = None, width: float = 1.0) -> Path:
    """The Keras weights file converted from ``dat``, made once per ``.dat`` (keyed by its SHA-256)."""
    from edgeface.core.paths import default_cache_dir
    from edgeface.train.keras_model import save_keras_model

    path = Path(cache_dir or default_cache_dir()) / "weights" / f"dlib-resnet-{file_digest(dat)[:16]}.weights.h5"
    if path.is_file():
        return path
    model = build_dlib_resnet(width=width)
    for name, values in dlib_layer_weights(read_dlib_network(dat)).items():
        model.get_layer(name).set_weights(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_keras_model(model, path, weights_only=True)


def load_dlib_resnet(weights: str | Path | None = "dlib", input_size: int = INPUT_SIZE,
                     cache_dir: Path | None = None, width: float = 1.0):
    """The network with dlib's weights (``"dlib"``: found by :func:`find_dat`; a path: that ``.dat`` or a
    ``.weights.h5`` of this network) or random ones (``None``)."""
    model = build_dlib_resnet((input_size, input_size, 3), width=width)
    if weights is None:
        return model
    source = Path(weights) if weights != "dlib" else None
    if source is not None and source.name.endswith(".weights.h5"):
        path = source
    else:
        path = cached_weights_file(find_dat(source), cache_dir, width)
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"{path}: cannot load dlib-resnet weights ({first})") from None
    return model

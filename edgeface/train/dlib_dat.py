"""Read a dlib DNN file (``.dat``, as ``dlib::serialize(net)`` writes it) with numpy alone.

dlib writes a network as its loss layer, then the nested layer wrappers from the top down (a version number
each), then the input layer, then each layer's own settings and parameters from the input up, each followed by
the wrapper's bookkeeping (three flags and two or three tensors, empty in a trained file). Tags and skips carry
nothing but their version, so the network's wiring is not in the file: :mod:`edgeface.train.dlib_resnet`
supplies it and checks it against the layer sequence read here.

Only the layers dlib's face encoder uses are understood (``con``, ``affine``, ``relu``, ``max_pool``,
``avg_pool``, ``add_prev``, ``fc``, ``input_rgb_image[_sized]``, ``loss_metric``); anything else is refused
with its name. Sources: dlib's ``serialize.h``, ``float_details.h``, ``dnn/core.h``, ``dnn/layers.h``,
``dnn/input.h``, ``dnn/loss.h`` and ``cuda/tensor.h``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeface.core.errors import ModelError

INPUT_LAYERS = ("input_rgb_image_sized", "input_rgb_image")
# float_details' exponents for infinities and NaN (dlib/float_details.h).
_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
# A file larger than this is not one of the networks this reader is for (dlib's face encoder is 22.5 MB).
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DlibLayer:
    """One computational layer: ``kind`` is dlib's layer name without its version (``con``, ``affine``, ...)."""

    kind: str
    settings: Mapping[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNetwork:
    """A dlib network's parameters, layers listed from the input up."""

    loss: str
    loss_settings: dict[str, float]
    input_means: tuple[float, float, float]  # subtracted from 0-255 RGB pixels, which dlib then divides by 256
    input_size: tuple[int, int] | None  # (rows, columns) of ``input_rgb_image_sized``; None for any size
    layers: tuple[DlibLayer, ...]

    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.layers]


class _Reader:
    """A cursor over dlib's serialization primitives."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source
        self.at = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: not a dlib network file this reader understands ({what} at byte "
                          f"{self.at})")

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise self.fail("unexpected end of file")
        value = self.data[self.at]
        self.at += 1
        return value

    def take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def integer(self) -> int:
        """dlib's compact integer: a byte holding the length (top bit: negative), then little-endian bytes."""
        control = self.byte()
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def peek_integer(self) -> int | None:
        start = self.at
        try:
            return self.integer()
        except ModelError:
            return None
        finally:
            self.at = start

    def real(self) -> float:
        """dlib's float outside a tensor: an integer mantissa and exponent, value = mantissa * 2**exponent."""
        if self.at < len(self.data) and self.data[self.at] & 0x70:
            raise self.fail("a float in dlib's old text format")
        mantissa, exponent = self.integer(), self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        return float(np.ldexp(np.float64(mantissa), exponent))

    def text(self, limit: int = 256) -> str:
        size = self.integer()
        if not 0 <= size <= limit:
            raise self.fail(f"a string of {size} bytes")
        try:
            return self.take(size).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a string that is not ASCII") from None

    def flag(self) -> bool:
        value = self.byte()
        if value not in (ord("0"), ord("1")):
            raise self.fail(f"a flag byte 0x{value:02x}")
        return value == ord("1")

    def tensor(self) -> np.ndarray:
        """A tensor: version 2, (samples, k, rows, columns), then little-endian float32 values."""
        version = self.integer()
        if version != 2:
            raise self.fail(f"tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        if any(n < 0 for n in shape):
            raise self.fail(f"tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias tensor: a view's shape (version 1, samples, k, rows, columns), no values."""
        version = self.integer()
        if version != 1:
            raise self.fail(f"alias tensor version {version}")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]

    def at_tensor(self) -> bool:
        """Whether a tensor starts here (its version is 2; a layer's name is at least 4 characters long)."""
        return self.peek_integer() == 2


def _views(params: np.ndarray, shapes: list[tuple[int, int, int, int]], source: str) -> list[np.ndarray]:
    """Consecutive views into a layer's flat parameter tensor, as dlib's alias tensors lay them out."""
    flat = params.reshape(-1)
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        if offset + size > flat.size:
            raise ModelError(f"{source}: a layer's parameters hold {flat.size} values, its views need more")
        views.append(flat[offset:offset + size].reshape(shape))
        offset += size
    if offset != flat.size:
        raise ModelError(f"{source}: a layer's parameters hold {flat.size} values, its views {offset}")
    return views


def _read_details(reader: _Reader, name: str) -> DlibLayer:
    """One layer's own settings and parameters, after its versioned name."""
    kind = name.rstrip("0123456789").rstrip("_")
    if name in ("con_4", "con_5", "con_6"):
        params = reader.tensor()
        settings = {key: reader.integer() for key in
                    ("num_filters", "rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x")}
        filters, biases = reader.alias(), reader.alias()
        for _key in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                    "bias_weight_decay_multiplier"):
            reader.real()
        use_bias = reader.flag() if name in ("con_5", "con_6") else True
        if name == "con_6":
            reader.flag()  # use_relu: a fused relu, which the face encoder does not use
        shapes = [filters] + ([biases] if use_bias and params.size > np.prod(filters) else [])
        views = _views(params, shapes, reader.source)
        arrays = {"filters": views[0]}
        if len(views) > 1:
            arrays["biases"] = views[1].reshape(-1)
        return DlibLayer("con", settings, arrays)
    if name in ("affine_", "affine_2"):
        params = reader.tensor()
        gamma, beta = reader.alias(), reader.alias()
        settings = {"mode": reader.integer()}
        if name == "affine_2":
            settings["disabled"] = int(reader.flag())
        views = _views(params, [gamma, beta], reader.source)
        return DlibLayer("affine", settings, {"gamma": views[0].reshape(-1), "beta": views[1].reshape(-1)})
    if name in ("relu_", "relu_2"):
        return DlibLayer("relu", {"disabled": int(reader.flag())} if name == "relu_2" else {})
    if name in ("max_pool_2", "avg_pool_2"):
        settings = {key: reader.integer() for key in
                    ("rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x")}
        return DlibLayer(kind, settings)
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("fc_2", "fc_3"):
        settings = {"outputs": reader.integer(), "inputs": reader.integer()}
        params = reader.tensor()
        weights, biases = reader.alias(), reader.alias()
        settings["bias_mode"] = reader.integer()
        for _ in range(4):
            reader.real()
        use_bias = reader.flag() if name == "fc_3" else True
        has_bias = use_bias and params.size > np.prod(weights)
        views = _views(params, [weights] + ([biases] if has_bias else []), reader.source)
        arrays = {"weights": views[0].reshape(settings["inputs"], settings["outputs"])}
        if has_bias:
            arrays["biases"] = views[1].reshape(-1)
        return DlibLayer("fc", settings, arrays)
    raise reader.fail(f"layer {name!r}")


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib network file. Raises :class:`ModelError` (one line) for anything it cannot read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelError(f"{path}: {size} bytes is too large for a dlib network file")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_dlib_network(data, str(path))


def parse_dlib_network(data: bytes, source: str = "dlib network") -> DlibNetwork:
    reader = _Reader(data, source)
    if reader.integer() != 1:
        raise reader.fail("no loss layer version")
    loss = reader.text()
    if loss == "loss_metric_2":
        loss_settings = {"margin": reader.real(), "distance_threshold": reader.real()}
    elif loss == "loss_metric_":
        loss_settings = {"margin": 0.1, "distance_threshold": 0.75}
    else:
        raise reader.fail(f"loss layer {loss!r}")

    # The wrappers' versions, top down, until the input layer's name.
    versions: list[int] = []
    while True:
        versions.append(reader.integer())
        start = reader.at
        length = reader.peek_integer()
        if length in {len(name) for name in INPUT_LAYERS}:
            name = reader.text()
            if name in INPUT_LAYERS:
                break
        reader.at = start
        if len(versions) > 10_000 or versions[-1] not in (1, 2, 3):
            raise reader.fail("no input layer")
    means = (reader.real(), reader.real(), reader.real())
    input_size = (reader.integer(), reader.integer()) if name == "input_rgb_image_sized" else None

    layers = []
    first = True
    while reader.at < len(data):
        layer = _read_details(reader, reader.text())
        layers.append(layer)
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output/gradient disabled
            reader.flag()
        while reader.at < len(data) and reader.at_tensor():  # x_grad, cached output, parameter gradients
            reader.tensor()
        if first and versions[-1] >= 3:
            reader.integer()  # the input wrapper's sample expansion factor
        first = False
    return DlibNetwork(loss, loss_settings, means, input_size, tuple(layers))

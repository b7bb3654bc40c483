"""Write a network in dlib's serialization format, as ``dlib::serialize(net)`` would (``serialize.h``,
``dnn/core.h``, ``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h``, ``cuda/tensor.h``), so the reader can be
tested on files whose contents the test chose. Only the layer versions dlib's face encoder file uses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def integer(value: int) -> bytes:
    """dlib's compact integer: a control byte (length, top bit for the sign), then little-endian bytes."""
    magnitude = abs(int(value))
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def real(value: float) -> bytes:
    mantissa, exponent = math.frexp(float(value))
    return integer(int(mantissa * 2 ** 53)) + integer(exponent - 53)


def text(value: str) -> bytes:
    return integer(len(value)) + value.encode("ascii")


def tensor(values: np.ndarray, shape: Sequence[int] | None = None) -> bytes:
    values = np.asarray(values, np.float32)
    shape = tuple(shape) if shape is not None else (values.size, 1, 1, 1)
    return integer(2) + b"".join(integer(n) for n in shape) + values.astype("<f4").tobytes()


def alias(shape: Sequence[int]) -> bytes:
    return integer(1) + b"".join(integer(n) for n in shape)


EMPTY = tensor(np.zeros(0), (0, 0, 0, 0))
FLAGS = b"110"  # this_layer_setup_called, gradient_input_is_stale, output and gradient disabled


def con(filters: np.ndarray, biases: np.ndarray, stride: int, padding: int) -> bytes:
    """``con_4``: filters (out, in, rows, columns)."""
    out, channels, rows, columns = filters.shape
    body = text("con_4") + tensor(np.concatenate([filters.ravel(), biases.ravel()]))
    body += b"".join(integer(n) for n in (out, rows, columns, stride, stride, padding, padding))
    body += alias((out, channels, rows, columns)) + alias((1, out, 1, 1))
    return body + b"".join(real(1.0) for _ in range(4))


def affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    k = len(gamma)
    return text("affine_") + tensor(np.concatenate([gamma, beta])) + alias((1, k, 1, 1)) * 2 + integer(0)


def pool(kind: str, rows: int, stride: int) -> bytes:
    return text(f"{kind}_pool_2") + b"".join(integer(n) for n in (rows, rows, stride, stride, 0, 0))


def fc(weights: np.ndarray) -> bytes:
    inputs, outputs = weights.shape
    body = text("fc_2") + integer(outputs) + integer(inputs) + tensor(weights.ravel())
    body += alias((inputs, outputs, 1, 1)) + alias((0, 0, 0, 0)) + integer(1)  # bias mode 1: no bias
    return body + b"".join(real(1.0) for _ in range(4))


def network(layers: Sequence[bytes], means: Sequence[float], size: int, tags: int = 0) -> bytes:
    """The whole file: loss, the wrappers' versions (``tags`` extra tag/skip wrappers, which hold nothing but
    their version), the input layer, then each layer (input first) with its wrapper's bookkeeping."""
    head = integer(1) + text("loss_metric_2") + real(0.04) + real(0.6)
    head += integer(2) * (len(layers) - 1) + integer(1) * tags + integer(3)
    head += text("input_rgb_image_sized") + b"".join(real(m) for m in means) + integer(size) + integer(size)
    body = b""
    for i, layer in enumerate(layers):
        body += layer + FLAGS + EMPTY + EMPTY + EMPTY
        if i == 0:
            body += integer(1)  # the input wrapper's sample expansion factor (version 3)
    return head + body


def write(path: Path, layers: Sequence[bytes], means: Sequence[float], size: int, tags: int = 0) -> Path:
    path.write_bytes(network(layers, means, size, tags))
    return path

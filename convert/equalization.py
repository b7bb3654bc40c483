"""Range equalisation for full int8: give every channel that feeds a depthwise convolution the whole int8 range.

int8 gives an activation tensor one scale, set by its largest channel. In MobileNetV2 most channels after a
ReLU6 use a fraction of that range (after the first convolution of a trained model, channels peaking
anywhere between 0.01 and 4 share one scale), so rounding to 1/255 of the largest leaves the weak channels a
few steps or none, and the depthwise convolution that reads each channel alone multiplies its rounding back up. A
positive per-channel factor passes through a ReLU, and a depthwise convolution reads one channel per
kernel, so each channel can be scaled up to the tensor's range in the BatchNorm before the ReLU
(``gamma, beta *= s``) and scaled back down in the depthwise kernel (``k /= s``): the float model computes
the same function (exactly, wherever a channel stayed below the ReLU's ceiling on the representative faces),
and int8 then gives each channel up to 8 bits. This is the cross-layer equalisation of Nagel et al. (2019),
sized by activation ranges rather than weight ranges (per-channel weight quantization already handles
those). The Keras model is changed only inside :func:`equalized_backbone` and restored on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from edgeface.core.spec import ModelSpec

# A channel is scaled by at most this much; one that never rises above 1e-6 of its tensor's range on the
# representative faces is dead and left alone (scaling it would only amplify what the faces did not show).
MAX_SCALE = 1000.0
DEAD_FRACTION = 1e-6
BATCH = 16


@dataclass(frozen=True)
class EqualizationPair:
    """BatchNorm -> ReLU -> (zero padding) -> depthwise convolution, each read by nothing else."""

    batchnorm: Any
    activation: Any
    depthwise: Any
    ceiling: float | None  # the ReLU's max_value (6 for ReLU6), None when unbounded


@dataclass(frozen=True)
class Equalization:
    """What was done: the pairs and each one's per-channel scales (what the bundle records)."""

    activations: list[str]
    scales: list[np.ndarray]

    def summary(self) -> dict[str, Any]:
        every = np.concatenate(self.scales) if self.scales else np.ones(1)
        return {"pairs": len(self.activations), "first": self.activations[0] if self.activations else None,
                "scale_median": round(float(np.median(every)), 3), "scale_max": round(float(every.max()), 3)}


def _producer(layer: Any) -> Any | None:
    """The layer whose output ``layer`` reads, when it reads exactly one tensor."""
    tensor = layer.input
    if isinstance(tensor, (list, tuple)):
        return None
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def _relu_ceiling(layer: Any) -> tuple[bool, float | None]:
    """Whether ``layer`` is a plain ReLU (positively homogeneous below its ceiling), and that ceiling."""
    import keras

    if isinstance(layer, keras.layers.ReLU):
        plain = float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
        return plain, (None if layer.max_value is None else float(layer.max_value))
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        if name in ("relu", "relu6"):
            return True, 6.0 if name == "relu6" else None
    return False, None


def find_pairs(network: Any) -> list[EqualizationPair]:
    """The BatchNorm -> ReLU -> depthwise chains of a functional ``network`` that can be equalised."""
    import keras

    readers: dict[int, int] = {}
    for layer in network.layers:
        tensors = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        for tensor in tensors:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                readers[id(history.operation)] = readers.get(id(history.operation), 0) + 1
    pairs = []
    for layer in network.layers:
        if not isinstance(layer, keras.layers.DepthwiseConv2D) or int(layer.depth_multiplier) != 1:
            continue
        source = _producer(layer)
        while isinstance(source, keras.layers.ZeroPadding2D) and readers.get(id(source)) == 1:
            source = _producer(source)
        if source is None or readers.get(id(source)) != 1:
            continue
        plain, ceiling = _relu_ceiling(source)
        batchnorm = _producer(source) if plain else None
        if (isinstance(batchnorm, keras.layers.BatchNormalization) and batchnorm.scale and batchnorm.center
                and readers.get(id(batchnorm)) == 1):
            pairs.append(EqualizationPair(batchnorm, source, layer, ceiling))
    return pairs


def channel_maxima(network: Any, inputs: np.ndarray, pairs: Sequence[EqualizationPair]) -> list[np.ndarray]:
    """Each pair's per-channel maximum after the ReLU, over ``inputs`` (the network's own input)."""
    import keras

    probe = keras.Model(network.input, [pair.activation.output for pair in pairs])
    maxima: list[np.ndarray | None] = [None] * len(pairs)
    for start in range(0, len(inputs), BATCH):
        outputs = probe(inputs[start:start + BATCH], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, output in enumerate(outputs):
            peak = np.asarray(keras.ops.max(output, axis=(0, 1, 2)))
            previous = maxima[i]
            maxima[i] = peak if previous is None else np.maximum(previous, peak)
    return [m for m in maxima if m is not None]


def range_scales(maxima: np.ndarray, ceiling: float | None = None) -> np.ndarray:
    """Per-channel factors that lift each channel's maximum to the tensor's (never above the ReLU's ceiling,
    never down, at most ``MAX_SCALE``; dead channels keep 1)."""
    maxima = np.asarray(maxima, np.float64)
    top = float(maxima.max()) if maxima.size else 0.0
    if ceiling is not None:
        top = min(top, ceiling)
    if top <= 0:
        return np.ones(maxima.shape, np.float32)
    alive = maxima > DEAD_FRACTION * top
    scales = np.where(alive, top / np.where(alive, maxima, 1.0), 1.0)
    return np.clip(scales, 1.0, MAX_SCALE).astype(np.float32)


@contextmanager
def equalized(network: Any, inputs: np.ndarray) -> Iterator[Equalization]:
    """Within the block, ``network``'s equalisable pairs are scaled for ``inputs`` (see the module doc);
    restored afterwards."""
    pairs = find_pairs(network)
    maxima = channel_maxima(network, inputs, pairs) if pairs else []
    saved: list[tuple[Any, list[np.ndarray]]] = []
    scales = []
    try:
        for pair, peak in zip(pairs, maxima):
            scale = range_scales(peak, pair.ceiling)
            scales.append(scale)
            weights = pair.batchnorm.get_weights()
            saved.append((pair.batchnorm, weights))
            gamma, beta, *statistics = weights
            pair.batchnorm.set_weights([gamma * scale, beta * scale, *statistics])
            weights = pair.depthwise.get_weights()
            saved.append((pair.depthwise, weights))
            kernel, *rest = weights  # (kh, kw, channels, 1); a bias, if any, is added after: unchanged
            pair.depthwise.set_weights([kernel / scale[None, None, :, None], *rest])
        yield Equalization([pair.activation.name for pair in pairs], scales)
    finally:
        for layer, weights in reversed(saved):
            layer.set_weights(weights)


@contextmanager
def equalized_backbone(model: Any, spec: ModelSpec, crops: np.ndarray | None) -> Iterator[Equalization | None]:
    """:func:`equalized` on the backbone of an edgeface model, its ranges measured on ``crops`` as the model
    sees them (preprocessed). Yields None, changing nothing,
    when ``crops`` is None, the model is not preprocess -> backbone -> heads, or its backbone has no pair."""
    from edgeface.core.preprocess import to_model_input
    from edgeface.train.model import model_parts

    parts = model_parts(model) if crops is not None else None
    if parts is None or not find_pairs(parts.backbone):
        yield None
        return
    inputs = np.asarray(parts.preprocess(to_model_input(np.asarray(crops), spec)))
    with equalized(parts.backbone, inputs) as equalization:
        yield equalization

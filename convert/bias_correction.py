"""Empirical bias correction for full int8: undo the systematic error int8 gives the backbone's features.

int8 rounding does not only add noise to the pooled backbone features: on MobileNetV2 it also moves their
mean (by a tenth of their length, on a trained MobileNetV2) and scales each channel a little (gains of 0.8 to 1.2
between the 5th and 95th percentile), and every head reads those features, so the error biases every
decision (gender tilted towards one class). On the representative crops, each channel's float value is
regressed on its int8 value (``float ~ gain * int8 + offset``, least squares), and the map is folded into the
Dense layers that read the features (``W' = gain * W``, ``b' = b + offset @ W``) before the int8 conversion,
so the int8 model's heads see, on average, what the float model's see. This is the bias correction of Nagel
et al. (2019), data-driven, with a per-channel gain as well, at the one place where it pays here. The Keras
model is left unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from edgeface.core.spec import ModelSpec
from edgeface.runtime.engine import LiteRTEngine
from edgeface.train.keras_model import keras_predict

FEATURES = "features"
# Dense layers of the heads model that read the pooled features directly (see edgeface.train.model.build_heads).
FEATURE_READERS = ("embedding_dense", "emotion", "gender")
# A channel's fitted gain is kept within these bounds: a channel that barely varies on the representative
# faces (a ReLU6 channel stuck at 0 or 6) says nothing about its gain.
GAIN_LIMITS = (0.5, 2.0)


@dataclass(frozen=True)
class FeatureCorrection:
    """Per-channel map from the int8 model's pooled features to the float model's: ``gain * x + offset``."""

    gain: np.ndarray  # (C,)
    offset: np.ndarray  # (C,)
    shift: np.ndarray  # (C,) mean int8 - float features: the part plain bias correction removes

    def apply(self, features: np.ndarray) -> np.ndarray:
        return features * self.gain + self.offset

    def summary(self) -> dict[str, float]:
        """What the bundle records: the size of the mean shift and the spread of the gains."""
        low, median, high = np.percentile(self.gain, [5, 50, 95])
        return {"feature_shift_norm": round(float(np.linalg.norm(self.shift)), 6),
                "gain_p5": round(float(low), 4), "gain_median": round(float(median), 4),
                "gain_p95": round(float(high), 4)}


def fit_correction(quantized: np.ndarray, reference: np.ndarray, gain: bool = True) -> FeatureCorrection:
    """The per-channel least-squares map from ``quantized`` (N, C) features to ``reference`` (N, C); with
    ``gain=False`` only the mean shift (gain 1)."""
    quantized = np.asarray(quantized, np.float64)
    reference = np.asarray(reference, np.float64)
    q_mean, r_mean = quantized.mean(axis=0), reference.mean(axis=0)
    if gain:
        q_centred = quantized - q_mean
        variance = (q_centred ** 2).sum(axis=0)
        covariance = (q_centred * (reference - r_mean)).sum(axis=0)
        fitted = np.divide(covariance, variance, out=np.ones_like(variance), where=variance > 1e-12)
        gains = np.clip(fitted, *GAIN_LIMITS)
    else:
        gains = np.ones_like(q_mean)
    offset = r_mean - gains * q_mean
    return FeatureCorrection(gain=gains.astype(np.float32), offset=offset.astype(np.float32),
                             shift=(q_mean - r_mean).astype(np.float32))


def feature_correction(model: Any, spec: ModelSpec, crops: np.ndarray) -> FeatureCorrection | None:
    """The map from int8 to float pooled backbone features, fitted on ``crops``; None for a model not shaped
    as edgeface builds it (preprocess -> backbone -> heads) or whose heads read more than one feature vector
    (dlib-resnet, whose int8 features stay close to float without it)."""
    import keras

    from edgeface.convert.tflite import convert_keras
    from edgeface.runtime.engine import predict_batched
    from edgeface.train.model import POOLED, model_parts

    parts = model_parts(model)
    if parts is None or [t.name for t in parts.heads.inputs] != [POOLED]:
        return None
    inputs = keras.Input(tuple(model.input.shape[1:]), name=model.input.name)
    features = parts.backbone(parts.preprocess(inputs))
    probe = keras.Model(inputs, {**parts.heads(features), FEATURES: features[POOLED]})
    engine = LiteRTEngine(convert_keras(probe, "int8", spec, crops), spec, source="int8 probe")
    quantized = predict_batched(engine, crops)
    reference = keras_predict(probe, crops, spec)[FEATURES]
    return fit_correction(quantized[FEATURES], reference)


@contextmanager
def corrected_heads(model: Any, correction: FeatureCorrection | None) -> Iterator[list[str]]:
    """Within the block, the feature-reading Dense layers absorb ``correction`` (they read int8 features as
    the float model's); restored afterwards. Yields the names of the layers corrected (none when
    ``correction`` is None, without touching the model: every precision passes through here, and models
    ``feature_correction`` declines need not have a ``heads`` layer)."""
    if correction is None:
        yield []
        return
    heads = model.get_layer("heads")
    saved: dict[str, list[np.ndarray]] = {}
    for name in FEATURE_READERS:
        try:
            layer = heads.get_layer(name)
        except ValueError:
            continue
        weights = layer.get_weights()
        if len(weights) != 2 or weights[0].shape[0] != correction.gain.shape[0]:
            continue
        saved[name] = weights
        kernel, bias = weights
        layer.set_weights([kernel * correction.gain[:, None], bias + correction.offset @ kernel])
    try:
        yield list(saved)
    finally:
        for name, weights in saved.items():
            heads.get_layer(name).set_weights(weights)

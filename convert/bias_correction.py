"""Empirical bias correction for full int8: undo the systematic shift int8 gives the backbone's features.

int8 rounding does not only add noise to the pooled backbone features: on MobileNetV2 it also moves their mean
(by about a tenth of their length on celeba-299), and every head reads those features, so the shift biases
every decision (gender tilted towards one class). Measured on the representative crops, the shift ``delta`` is
folded into the biases of the Dense layers that read the features (``b - delta @ W``) before the int8
conversion, so the int8 model's heads see, on average, what the float model's see. This is the bias correction
of Nagel et al. (2019), data-driven, at the one place where it pays here. The Keras model is left unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from edgeface.runtime.engine import LiteRTEngine, keras_predict
from edgeface.spec import ModelSpec

FEATURES = "features"
# Dense layers of the heads model that read the pooled features directly (see edgeface.train.model.build_heads).
FEATURE_READERS = ("embedding_dense", "emotion", "gender")


def feature_shift(model: Any, spec: ModelSpec, crops: np.ndarray) -> np.ndarray | None:
    """Mean (int8 - float) pooled backbone features over ``crops``; None for a model not shaped as edgeface
    builds it (preprocess -> backbone -> heads)."""
    import keras

    from convert.tflite import convert_keras
    from edgeface.eval.evaluate import predict_batched

    from edgeface.train.model import compose_features, model_parts

    parts = model_parts(model)
    if parts is None:
        return None
    inputs = keras.Input(tuple(model.input.shape[1:]), name=model.input.name)
    features = compose_features(parts.preprocess, parts.backbone, inputs, parts.mirrored)
    probe = keras.Model(inputs, {**parts.heads(features), FEATURES: features})
    engine = LiteRTEngine(convert_keras(probe, "int8", spec, crops), spec, source="int8 probe")
    quantized = predict_batched(engine, crops)
    reference = keras_predict(probe, crops, spec)[FEATURES]
    return (quantized[FEATURES] - reference).mean(axis=0)


@contextmanager
def corrected_biases(model: Any, shift: np.ndarray | None) -> Iterator[list[str]]:
    """Within the block, the feature-reading Dense layers' biases absorb ``shift``; restored afterwards.
    Yields the names of the layers corrected (none when ``shift`` is None, without touching the model: every
    precision passes through here, and models ``feature_shift`` declines need not have a ``heads`` layer)."""
    if shift is None:
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
        if len(weights) != 2 or weights[0].shape[0] != shift.shape[0]:
            continue
        saved[name] = weights
        kernel, bias = weights
        layer.set_weights([kernel, bias - shift @ kernel])
    try:
        yield list(saved)
    finally:
        for name, weights in saved.items():
            heads.get_layer(name).set_weights(weights)

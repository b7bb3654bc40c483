"""Keras -> TFLite in four precisions, and the quantization debugger for per-layer error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeface.errors import EdgefaceError
from edgeface.runtime.engine import to_model_input
from edgeface.spec import ModelSpec

PRECISIONS = ("float32", "float16", "dynamic", "int8")
INTEGER_IO = ("int8", "uint8", "float32")


def _representative(crops: np.ndarray, spec: ModelSpec):
    """The calibration generator TFLite wants: one [0, 1] float image per step, preprocessed as on the Pi."""

    def generate() -> Iterator[list[np.ndarray]]:
        for crop in crops:
            yield [to_model_input(np.asarray(crop)[None], spec)]

    return generate


def make_converter(model: Any, precision: str, spec: ModelSpec, representative: np.ndarray | None = None,
                   io_type: str = "int8"):
    """A configured ``tf.lite.TFLiteConverter`` for one precision."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise EdgefaceError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        if representative is None or len(representative) == 0:
            raise EdgefaceError("full int8 needs a representative dataset of face crops (--representative)")
        if io_type not in INTEGER_IO:
            raise EdgefaceError(f"unknown input/output type {io_type!r}; choose one of {', '.join(INTEGER_IO)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative, spec)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # int8 by default: XNNPACK runs signed int8 natively; uint8 only for accelerators that need it.
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_type]
        converter.inference_input_type = io
        converter.inference_output_type = io
    return converter


def convert_keras(model: Any, precision: str, spec: ModelSpec, representative: np.ndarray | None = None,
                  io_type: str = "int8") -> bytes:
    """Convert a loaded Keras model; returns the flatbuffer."""
    import contextlib
    import io

    converter = make_converter(model, precision, spec, representative, io_type)
    try:
        # Keras' export prints its whole signature to stdout; keep the CLI's output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgefaceError(f"TFLite conversion to {precision} failed: {first}") from None


def layer_errors(model: Any, spec: ModelSpec, representative: np.ndarray, debug_crops: np.ndarray,
                 csv_path: Path | None = None, top: int = 10) -> list[dict[str, Any]]:
    """Per-layer quantization error from TFLite's QuantizationDebugger, worst first.

    ``rmse/scale`` near 0.29 (1/sqrt(12)) is plain rounding noise; much larger values point at a layer
    that quantizes badly (keep it in float, or widen its range).
    """
    import tensorflow as tf

    converter = make_converter(model, "int8", spec, representative, io_type="float32")
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative(debug_crops, spec))
    debugger.run()
    import csv
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        Path(csv_path).write_text(buffer.getvalue())
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row.get("scale") or 0.0)
        rmse = float(np.sqrt(float(row.get("mean_squared_error") or 0.0)))
        rows.append({"layer": row.get("tensor_name", ""), "op": row.get("op_name", ""), "rmse": rmse,
                     "rmse_over_scale": rmse / scale if scale else float("nan"),
                     "max_abs_error": float(row.get("max_abs_error") or 0.0)})
    rows.sort(key=lambda r: -np.nan_to_num(r["rmse_over_scale"], nan=-1.0))
    return rows[:top]

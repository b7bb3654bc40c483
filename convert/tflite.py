"""Keras -> TFLite in four precisions; per-layer int8 error (TFLite's quantization debugger) and where it
accumulates (int8 against float, tensor by tensor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeface.convert.options import INTEGER_IO
from edgeface.core.bundle import PRECISIONS
from edgeface.core.errors import EdgefaceError
from edgeface.core.preprocess import to_model_input
from edgeface.core.spec import SIGNATURE, ModelSpec


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


def accumulated_errors(float_model: bytes, int8_model: bytes, crops: np.ndarray, spec: ModelSpec
                       ) -> list[dict[str, Any]]:
    """Where int8 error accumulates: each int8 activation against the float model's tensor of the same name.

    Both models run on the same crops, and every intermediate tensor is kept. ``sqnr_db`` is the tensor's
    signal-to-quantization-noise ratio, 10 log10(sum float^2 / sum (int8 - float)^2): about 6 dB per bit
    that still agrees with float. ``drop_db`` is how much of it the op that made the tensor lost, against its
    noisiest input. The debugger's per-layer error (:func:`layer_errors`) feeds each layer float inputs;
    this follows the error as it compounds from the image to the heads. Rows are in execution order.
    """
    from edgeface.runtime.engine import LiteRTEngine

    def run(model: bytes, source: str) -> Any:
        engine = LiteRTEngine(model, spec, source=source, keep_all_tensors=True)
        engine.predict(np.asarray(crops))
        return engine.interpreter

    reference, quantized = run(float_model, "float32 model"), run(int8_model, "int8 model")

    def signature_outputs(interpreter: Any) -> dict[int, str]:
        details = interpreter.get_signature_runner(SIGNATURE).get_output_details()
        return {int(d["index"]): name for name, d in details.items()}

    outputs, float_outputs = signature_outputs(quantized), signature_outputs(reference)
    float_tensors = {d["name"]: d["index"] for d in reference.get_tensor_details()}
    float_output_index = {name: index for index, name in float_outputs.items()}
    ops = quantized._get_ops_details()  # execution order; no public API gives it
    # With float32 input/output the outputs are DEQUANTIZE ops: measure the int8 tensor each one reads.
    dequantized_as = {int(op["inputs"][0]): outputs[int(op["outputs"][0])] for op in ops
                      if op["op_name"] == "DEQUANTIZE" and int(op["outputs"][0]) in outputs}
    details = {d["index"]: d for d in quantized.get_tensor_details()}
    rows: list[dict[str, Any]] = []
    sqnr_of: dict[int, float] = {}
    for op in ops:
        for index in (int(i) for i in op["outputs"]):
            detail = details[index]
            scale, zero_point = detail["quantization"]
            output = outputs.get(index) or dequantized_as.get(index)
            float_index = float_output_index.get(output) if output else float_tensors.get(detail["name"])
            if detail["dtype"] not in (np.int8, np.uint8) or not scale or float_index is None:
                continue
            actual = (quantized.get_tensor(index).astype(np.float32) - zero_point) * scale
            expected = reference.get_tensor(float_index).astype(np.float32)
            if actual.shape != expected.shape:
                continue
            noise = float(np.sum((actual - expected) ** 2))
            signal = float(np.sum(expected ** 2))
            sqnr = min(10 * np.log10(signal / noise), 99.0) if noise > 0 and signal > 0 else 99.0
            inputs = [sqnr_of[int(i)] for i in op["inputs"] if int(i) in sqnr_of]
            sqnr_of[index] = sqnr
            rows.append({"tensor": detail["name"].split(";")[0], "op": op["op_name"], "output": output,
                         "shape": list(expected.shape[1:]), "sqnr_db": round(sqnr, 2),
                         "drop_db": round(min(inputs) - sqnr, 2) if inputs else None})
    return rows


def plot_accumulated_errors(rows: list[dict[str, Any]], path: Path, title: str = "", worst: int = 5) -> Path:
    """SQNR along the network with the ``worst`` drops labelled: the picture of where int8 goes wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(range(len(rows)), [r["sqnr_db"] for r in rows], marker=".", lw=1)
    drops = sorted((i for i, r in enumerate(rows) if r["drop_db"] is not None),
                   key=lambda i: -rows[i]["drop_db"])
    for i in drops[:worst]:
        ax.annotate(f"{short_tensor_name(rows[i]['tensor'])} (-{rows[i]['drop_db']:.1f} dB)",
                    (i, rows[i]["sqnr_db"]), fontsize=7, xytext=(4, -12), textcoords="offset points")
    for i, row in enumerate(rows):
        if row.get("output"):
            ax.annotate(row["output"], (i, row["sqnr_db"]), fontsize=8, color="tab:red", xytext=(0, 6),
                        textcoords="offset points", ha="center")
    ax.set_xlabel("int8 tensor, in execution order")
    ax.set_ylabel("SQNR against float (dB)")
    ax.set_title(title or "int8 error from the image to the heads (higher is better; ~6 dB per bit)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def short_tensor_name(name: str) -> str:
    """The layer in a TFLite tensor name: 'm/block_1_project_BN/batchnorm/add_1' -> 'block_1_project_BN'.

    TensorFlow op names (capitalised: Relu6, Add, MatMul) and Keras' inner ``batchnorm/add_1`` are skipped.
    """
    parts = [p for p in name.split(";")[0].split("/") if p]
    layers = [p for p in parts[:-1] if not p[0].isupper() and p not in ("batchnorm",)]
    return layers[-1] if layers else name

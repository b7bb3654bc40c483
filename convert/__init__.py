"""Workstation side: Keras model -> TFLite (float32, float16, dynamic-range, full int8) -> verified bundle.

Needs TensorFlow (``pip install 'edgeface[train]'``). The device never imports this package.

    from edgeface.convert import convert_model
    results = convert_model("runs/celeba/model.keras", ["float32", "int8"], out_dir="bundles")
"""

from edgeface.convert.pipeline import ConversionResult, convert_model

__all__ = ["ConversionResult", "convert_model"]

"""Workstation side: Keras model -> TFLite (float32, float16, dynamic-range, full int8) -> verified bundle.

Needs TensorFlow (``pip install 'edgeface[train]'``). The device never imports this package.

    from edgeface.convert import ConvertOptions, convert_model
    results = convert_model("runs/home/model.keras", ["float32", "int8"], "bundles", ConvertOptions(seed=1))

Importing the package loads nothing: ``options`` (the defaults, read by the CLI) is light, the rest loads when
``convert_model`` is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConversionResult", "ConvertOptions", "convert_model"]


def __getattr__(name: str) -> Any:
    if name == "ConvertOptions":
        from edgeface.convert.options import ConvertOptions

        return ConvertOptions
    if name in ("ConversionResult", "convert_model"):
        from edgeface.convert import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

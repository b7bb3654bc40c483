"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then TensorFlow's tf.lite.

Set ``EDGEFACE_RUNTIME`` to ``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow`` to force one.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from typing import Any

from edgeface.core.errors import DependencyError, ModelError

_CANDIDATES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}


@lru_cache(maxsize=1)
def interpreter_module() -> tuple[str, Any]:
    """(name, module) of the TFLite interpreter package in use, imported on the first call."""
    forced = os.environ.get("EDGEFACE_RUNTIME")
    names = [forced] if forced else list(_CANDIDATES)
    if forced and forced not in _CANDIDATES:
        raise DependencyError(f"EDGEFACE_RUNTIME={forced!r}: choose one of {', '.join(_CANDIDATES)}")
    for name in names:
        try:
            return name, importlib.import_module(_CANDIDATES[name])
        except ImportError:
            continue
    raise DependencyError(
        "no TFLite interpreter found: pip install ai-edge-litert (or tflite-runtime on Python <= 3.11)"
    )


def runtime_name() -> str:
    """Which interpreter package is in use: ``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow``."""
    return interpreter_module()[0]


def make_interpreter(model_content: bytes, num_threads: int | None = None, source: str = "model",
                     keep_all_tensors: bool = False) -> Any:
    """Create and allocate an interpreter for a flatbuffer held in memory.

    ``source`` names where the bytes came from, for the error message. ``keep_all_tensors`` (diagnosis
    only: slower, more memory) keeps every intermediate tensor readable after ``invoke``; the default
    delegate (XNNPACK) is left out because it computes inside itself and leaves them unwritten.
    """
    _, module = interpreter_module()
    options: dict[str, Any] = {}
    if keep_all_tensors:
        resolver = getattr(module, "OpResolverType", None) or module.experimental.OpResolverType
        options = {"experimental_preserve_all_tensors": True,
                   "experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    try:
        interpreter = module.Interpreter(model_content=model_content, num_threads=num_threads, **options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: not a loadable TFLite model ({first_line})") from None
    return interpreter

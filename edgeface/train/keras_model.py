"""A ``model.keras`` on the workstation: save, load and run it (Keras, TensorFlow: imported when used).

``KerasEngine`` runs a Keras model behind the device's engine interface, on the same uint8 crops, so that
evaluation and conversion compare the two precisions of one model and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.core.errors import ModelError
from edgeface.core.modelio import MODEL_NAME, read_metadata
from edgeface.core.preprocess import check_crops, to_model_input
from edgeface.core.spec import ModelSpec
from edgeface.core.bundle import FloatHead
from edgeface.runtime.engine import InferenceEngine, LiteRTEngine, apply_float_heads

# Keras runs eagerly here: a MobileNetV2 at 224x224 peaks near 100 MB of memory per image in a batch (twice
# that mirrored), so 16 keeps a conversion beside a training run within a workstation's memory, as fast.
KERAS_BATCH = 16


def save_keras_model(model: Any, path: str | Path, weights_only: bool = False) -> Path:
    """Save a ``model.keras`` (or with ``weights_only`` a ``.weights.h5``) through a temporary file in its folder,
    then rename: a model saved over the one it was loaded from, or a run trained again, never leaves half a
    file."""
    path = Path(path)
    temporary = path.with_name(f".{os.getpid()}.{path.name}")  # Keras insists on the .keras / .weights.h5 suffix
    try:
        if weights_only:
            model.save_weights(temporary)
        else:
            model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_keras_model(path: str | Path) -> Any:
    """Load a ``model.keras`` (imports TensorFlow/Keras)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    import keras

    import edgeface.train.layers  # noqa: F401  (registers the custom layers before loading)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load Keras model ({first})") from None


class KerasEngine:
    """A ``model.keras`` with its ``metadata.json``. Imports Keras (TensorFlow) when created."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        self.metadata = read_metadata(self.path)
        self.spec = ModelSpec.from_dict(self.metadata["spec"])
        self.model = load_keras_model(self.path)
        # heads train fitted outside the model (on the mouth's shape), which every precision gives alike
        self.float_heads = {head: FloatHead.from_json(entry)
                            for head, entry in (self.metadata.get("float_heads") or {}).items()}

    def predict(self, crops: np.ndarray, shapes: np.ndarray | None = None,
                batch_size: int = KERAS_BATCH) -> dict[str, np.ndarray]:
        check_crops(crops, self.spec)
        return apply_float_heads(keras_predict(self.model, crops, self.spec, batch_size), self.float_heads, shapes)


def keras_predict(model: Any, crops: Any, spec: ModelSpec,
                  batch_size: int = KERAS_BATCH) -> dict[str, np.ndarray]:
    """Every output of a loaded Keras model on uint8 crops, batched, in inference mode: {output name: array}
    (arrays of no rows for no crops)."""
    if len(crops) == 0:  # the outputs' names and widths, from one blank crop
        blank = np.zeros((1, spec.input_size, spec.input_size, 3), np.uint8)
        return {name: value[:0] for name, value in keras_predict(model, blank, spec).items()}
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(crops), batch_size):
        result = model(to_model_input(np.asarray(crops[start:start + batch_size]), spec), training=False)
        for name, value in result.items():
            outputs.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def load_engine(path: str | Path, num_threads: int | None = None) -> InferenceEngine:
    """An engine for a bundle (``.edgeface``) or a Keras model (``.keras``, or a training output folder)."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_NAME).is_file():
        path = path / MODEL_NAME
    if path.suffix == ".keras":
        return KerasEngine(path)
    return LiteRTEngine.from_bundle(path, num_threads=num_threads)

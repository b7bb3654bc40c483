"""``model.keras`` and its ``metadata.json``: how trained models are stored and found."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeface.core.errors import ModelError

METADATA_NAME = "metadata.json"
MODEL_NAME = "model.keras"


def metadata_path(model_path: str | Path) -> Path:
    return Path(model_path).with_name(METADATA_NAME)


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """The metadata written beside a ``model.keras`` by ``edgeface train``."""
    path = metadata_path(model_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; a model.keras needs the metadata.json that `edgeface train` "
                         "writes beside it") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable metadata ({exc})") from None
    if "spec" not in data:
        raise ModelError(f"{path}: no 'spec' in metadata")
    return data


def write_metadata(model_path: str | Path, metadata: dict[str, Any]) -> Path:
    path = metadata_path(model_path)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return path


def save_keras_model(model: Any, path: str | Path) -> Path:
    """Save a ``model.keras`` through a temporary file in its folder, then rename: a model saved over the one it
    was loaded from (``edgeface recentre --out`` the run itself), or a run trained again, never leaves half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.keras")  # Keras insists on the .keras suffix
    try:
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
    import edgeface.train.layers  # noqa: F401  (registers the custom layers before loading)
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load Keras model ({first})") from None

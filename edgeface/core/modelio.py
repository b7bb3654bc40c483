"""``model.keras`` and its ``metadata.json``: how trained models are stored and found, read without Keras."""

from __future__ import annotations

import json
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

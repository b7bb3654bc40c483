"""From aligned uint8 crops to what a model takes: the one definition of input scaling and crop shape."""

from __future__ import annotations

import numpy as np

from edgeface.core.errors import ModelError
from edgeface.core.spec import ModelSpec


def to_model_input(crops: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 pixels -> the float range the model was trained on (the one definition of scaling)."""
    low, high = spec.input_range
    return crops.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)


def check_crops(crops: np.ndarray, spec: ModelSpec) -> None:
    size = spec.input_size
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ModelError(f"expected uint8 crops of shape (N, {size}, {size}, 3), got {crops.dtype} {crops.shape}")

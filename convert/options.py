"""What ``edgeface convert`` can be told, with its defaults, in one place (no TensorFlow here: the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeface.core.bundle import DEFAULT_IDENTITY_THRESHOLD

INTEGER_IO = ("int8", "uint8", "float32")


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert and verify. ``None`` sets default to the model's own training and validation splits."""

    representative: Path | None = None  # photos that calibrate int8
    verify_data: Path | None = None  # held-out photos Keras and TFLite are compared on
    # Faces that calibrate int8: range equalisation lifts each channel to the largest value these faces give
    # it, so a larger, varied set makes those peaks (and the int8 result) steadier, at some conversion time.
    representative_size: int = 1000
    verify_size: int = 600
    seed: int = 0  # which faces are drawn for calibration and verification
    io_type: str = "int8"  # the int8 model's input and output type
    min_agreement: float = 0.90  # refuse a precision whose argmax agrees with Keras less often on any head
    identity_threshold: float = DEFAULT_IDENTITY_THRESHOLD  # written into the bundle
    bias_correction: bool = True  # int8: undo the per-channel gain and shift int8 gives the features
    equalize: bool = True  # int8: lift weak channels before calibrating (depthwise backbones)
    debug_layers: bool = False  # int8: per-layer and accumulated error reports beside the bundles

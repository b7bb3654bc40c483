"""edgeface: a three-head face model (identity, emotion, gender) from workstation to Raspberry Pi.

Importing this package does no work: models, detectors and TensorFlow load only when asked for.
"""

__version__ = "0.1.0"

HEADS: tuple[str, ...] = ("identity", "emotion", "gender")

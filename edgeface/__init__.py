"""edgeface: a three-head face model (identity, emotion, gender) from workstation to Raspberry Pi.

Importing this package does no work: models, detectors and TensorFlow load only when asked for.
"""

from edgeface.core.spec import HEADS
from edgeface.core.version import __version__

__all__ = ["HEADS", "__version__"]

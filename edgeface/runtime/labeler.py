"""From a batch's model outputs to labels per face: the one place the identity rule lives.

The softmax identity head always names somebody; below ``identity_threshold`` the face is ``unknown``.
(Enrolled people and open-set matching plug in here, so the daemon, ``evaluate`` and ``enroll`` agree.)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgeface.runtime.results import FaceLabels, decode_outputs
from edgeface.spec import ModelSpec


class Labeler:
    """Turns model outputs (N faces) into ``FaceLabels``."""

    def __init__(self, spec: ModelSpec, identity_threshold: float = 0.5) -> None:
        self.spec = spec
        self.identity_threshold = identity_threshold

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> list[FaceLabels]:
        return decode_outputs(outputs, self.spec, self.identity_threshold)

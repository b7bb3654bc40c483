"""Typed per-face results. Raw tensors stay inside the engine; everything after it sees these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgeface.core.spec import ModelSpec

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """One head's answer for one face."""

    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(float(self.score), 4)}


@dataclass(frozen=True)
class FaceLabels:
    identity: Prediction
    emotion: Prediction
    gender: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity.to_dict(), "emotion": self.emotion.to_dict(),
                "gender": self.gender.to_dict()}


def decode_outputs(outputs: Mapping[str, np.ndarray], spec: ModelSpec,
                   identity_threshold: float = 0.0) -> list[FaceLabels]:
    """Turn per-head probabilities (N, C) into labels. Identity below the threshold becomes ``unknown``."""
    count = len(next(iter(outputs.values()))) if outputs else 0
    results: list[FaceLabels] = []
    for i in range(count):
        per_head = {}
        for head in ("identity", "emotion", "gender"):
            probs = outputs[head][i]
            best = int(np.argmax(probs))
            label = spec.labels[head][best]
            score = float(probs[best])
            if head == "identity" and score < identity_threshold:
                label = UNKNOWN
            per_head[head] = Prediction(label, score)
        results.append(FaceLabels(**per_head))
    return results

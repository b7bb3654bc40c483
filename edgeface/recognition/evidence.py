"""A track's evidence: the faces of it the model saw, weighed by how good each view was, and what they say.

Identity: each face's evidence (``edgeface.runtime.identity.Evidence``: similarity with each enrolled person,
probability of each trained person, nearness to faces said not to be them) is averaged over the track's
**views**, and the identity rule decides on the average: a name only once the track has ``min_observations``
faces and the average is strong and clear, kept while it holds.

A view is what the camera shows of a face at one time: the same pose, light and expression recognised again in
the next frames adds no evidence about who it is, so successive faces that embed alike (``SAME_VIEW``) are one
view. Each view weighs as its best face's quality to the power ``QUALITY_POWER`` (a face coming into the frame
weighs little beside a full view), and less as newer views come (``DECAY`` per newer view, so that evidence that
has turned can take a name back). ``calibrate`` takes each stranger photo as one view, so the per-visit threshold
means the same false-accept rate for a track seen in one view as in several.

Emotion follows the latest faces (``EMOTION_DECAY``: it changes within a visit); gender takes all of them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np

from edgeface.core.results import UNKNOWN, Prediction
from edgeface.core.spec import EMBEDDING_NAME
from edgeface.runtime.identity import Evidence, IdentityRule, combine

if TYPE_CHECKING:
    from edgeface.core.spec import ModelSpec
    from edgeface.runtime.labeler import Labeler

DECAY = 0.85  # a view's weight against the next newer one
# Cosine between a track's successive faces above which they are one view. On the household videos
# (benchmarks/household.py) the same photo in successive frames embeds at 0.99 and more (10% below 0.97 five
# frames apart), another photo of the same person at 0.93-0.96.
SAME_VIEW = 0.97
EMOTION_DECAY = 0.5
MAX_OBSERVATIONS = 16  # faces a track keeps (older ones weigh little by then)
# A view weighs as its best face's quality to this power. A face coming into the frame (half out of it, small)
# embeds noisily and far from its person, and each such face looks like a new view: weighed by its quality alone,
# a few of them outweighed the full view that followed. On the household video (benchmarks/household.py, 20
# households, 1%) 2 named 381 of 397 members' visits right against 376, with the same 10 strangers' visits named;
# 3 and 4 named 378.
QUALITY_POWER = 2.0
NOT_SEEN = Prediction(UNKNOWN, 0.0)


@dataclass
class Observation:
    """One recognised face of a track: when, how good the view, and the model's outputs for it."""

    time: float
    quality: float
    outputs: Mapping[str, np.ndarray] = field(repr=False)  # head -> (C,), "embedding" -> (D,)
    crop: np.ndarray | None = field(default=None, repr=False)  # the aligned crop, kept for the best view only

    @property
    def embedding(self) -> np.ndarray | None:
        return self.outputs.get(EMBEDDING_NAME)


class TrackEvidence:
    """Everything recognised of one track, and the labels it gives."""

    def __init__(self) -> None:
        self.observations: collections.deque[Observation] = collections.deque(maxlen=MAX_OBSERVATIONS)
        self.count = 0  # faces recognised in all
        self.best: Observation | None = None  # the best view so far (its crop is kept)
        self.last_time = -np.inf  # when it was last recognised
        self.identity = NOT_SEEN
        self._evidence: collections.deque[Evidence] = collections.deque(maxlen=MAX_OBSERVATIONS)
        self._views: collections.deque[int] = collections.deque(maxlen=MAX_OBSERVATIONS)  # each face's view
        self.views = 0  # views seen in all
        self._version = -1  # the labeler's gallery version the evidence was computed against

    @property
    def name(self) -> str:
        """The name given ("" while unknown)."""
        return "" if self.identity.label == UNKNOWN else self.identity.label

    @property
    def best_quality(self) -> float:
        return self.best.quality if self.best is not None else 0.0

    def add(self, observation: Observation, evidence: Evidence, version: int) -> None:
        """A newly recognised face; ``evidence``: its own (``Labeler.evidence``), against gallery ``version``."""
        if self.best is None or observation.quality > self.best.quality:
            if self.best is not None:
                self.best.crop = None  # only the best view's crop is kept
            self.best = observation
        elif observation is not self.best:
            observation.crop = None
        self._version = version if not self._evidence or self._version == version else -1  # -1: recompute
        if not self._same_view(observation):
            self.views += 1
        self._views.append(self.views)
        self.observations.append(observation)
        self._evidence.append(evidence)
        self.count += 1
        self.last_time = observation.time

    def decide(self, labeler: "Labeler", rule: IdentityRule) -> Prediction:
        """The track's identity now, by ``rule`` on all its evidence; kept in ``identity``."""
        if not self.observations:
            return self.identity
        if self._version != labeler.version:  # the people changed: weigh the same faces against them
            self._evidence = collections.deque(labeler.evidence(self._stacked()), maxlen=MAX_OBSERVATIONS)
            self._version = labeler.version
        self.identity = labeler.decide(self.combined(), rule, current=self.name)
        return self.identity

    def combined(self) -> Evidence:
        """The track's faces' evidence taken together, view by view, as the rule weighs it (against the gallery
        version of the last ``decide``)."""
        combined = combine(list(self._evidence), self._view_weights())
        return Evidence(combined.similarity, combined.against, combined.probability, combined.against_trained,
                        observations=self.count)

    def attributes(self, spec: "ModelSpec") -> tuple[Prediction, Prediction]:
        """(emotion, gender): emotion from the latest faces, gender from all of them."""
        if not self.observations:
            return NOT_SEEN, NOT_SEEN
        return self._head(spec, "emotion", EMOTION_DECAY), self._head(spec, "gender", 1.0)

    def embedding(self) -> np.ndarray | None:
        """The track's faces' embeddings averaged (weighted as the identity evidence), unit length."""
        rows = [o.embedding for o in self.observations if o.embedding is not None]
        if len(rows) < len(self.observations) or not rows:
            return None
        mean = self._view_weights() @ np.stack(rows).astype(np.float64)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def _same_view(self, observation: Observation) -> bool:
        """Whether ``observation`` shows the track's latest face again (embeddings at ``SAME_VIEW`` or more)."""
        if not self.observations:
            return False
        new, last = observation.embedding, self.observations[-1].embedding
        if new is None or last is None:
            return False
        new, last = np.asarray(new, np.float64), np.asarray(last, np.float64)
        cosine = float(new @ last) / max(float(np.linalg.norm(new) * np.linalg.norm(last)), 1e-12)
        return cosine >= SAME_VIEW

    def _view_weights(self) -> np.ndarray:
        """Each face's weight in the identity evidence: each view weighs as its best face's quality to the power
        ``QUALITY_POWER``, ``DECAY`` less per newer view; a view's faces share its weight likewise."""
        views = np.array(self._views)
        quality = np.array([max(o.quality, 1e-3) for o in self.observations]) ** QUALITY_POWER
        weights = np.zeros(len(views))
        for view in np.unique(views):
            faces = views == view
            weights[faces] = quality[faces] / quality[faces].sum() * quality[faces].max() * \
                DECAY ** float(views[-1] - view)
        return weights / weights.sum()

    def _weights(self, decay: float) -> np.ndarray:
        n = len(self.observations)
        recency = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
        weights = np.array([max(o.quality, 1e-3) for o in self.observations]) * recency
        return weights / weights.sum()

    def _stacked(self) -> dict[str, np.ndarray]:
        heads = self.observations[0].outputs.keys()
        return {name: np.stack([np.asarray(o.outputs[name]) for o in self.observations]) for name in heads}

    def _head(self, spec: "ModelSpec", head: str, decay: float) -> Prediction:
        if head not in self.observations[0].outputs:
            return NOT_SEEN
        probs = self._weights(decay) @ np.stack([np.asarray(o.outputs[head], np.float64)
                                                 for o in self.observations])
        best = int(np.argmax(probs))
        return Prediction(spec.labels[head][best], float(probs[best]))

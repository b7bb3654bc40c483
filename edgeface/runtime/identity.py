"""The identity rule: from the evidence about a face, or about a track's faces over a visit, to a name.

This is the one place the decision is made. A photo is decided on its own evidence (``edgeface identify``,
``edgeface.load(...).label``, ``calibrate``'s per-face figure); a track on the evidence of all its faces so far
(``edgeface.recognition``, the daemon), which only adds up the same ``Evidence`` over the faces it saw.

Evidence, per face or aggregated over a track:

* ``similarity`` (P,): similarity with each enrolled person (``Gallery.similarities``: half best photo, half centre);
* ``probability`` (C,): the identity head's probability of each trained person;
* ``against`` (P,) and ``against_trained`` (C,): similarity with the nearest face said *not* to be that person
  (their "not X" faces and every stranger's face kept in the gallery), -1 where there is none.

The rule (docs/identity.md):

1. **enrolled person** ``p``, the most similar, when its similarity reaches ``similarity_threshold``, is clear of
   the second-best person by ``margin``, and is not nearer a face said not to be ``p`` than ``p``'s own faces;
2. else **trained person** ``c``, the most probable, when its probability reaches ``identity_threshold`` and the
   face is not as near a face said not to be ``c`` as an enrolled match would need (``similarity_threshold``);
3. else **unknown**.

A track that already has a name keeps it while its evidence still supports it a little below the threshold
(``KEEP_MARGIN``), and nobody else clearly wins: one turned-away face does not take a name back, evidence that
has turned does. Below ``min_observations`` faces a track is not named yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgeface.core.results import UNKNOWN, Prediction

if TYPE_CHECKING:
    from edgeface.core.gallery import Gallery

# Cosine: a face between two enrolled people, this close, is neither yet. On the household video
# (benchmarks/household.py, 20 households, 1% per visit) 0.01 named 376 of 397 members' visits right against 374
# at 0.02, with the same 10 of 792 strangers' visits named.
DEFAULT_MARGIN = 0.01
KEEP_MARGIN = 0.04  # cosine below the threshold a track keeps its enrolled name
KEEP_PROBABILITY = 0.10  # the same for a trained person's probability


@dataclass(frozen=True)
class IdentityRule:
    """Thresholds of the rule. ``min_observations``: faces a track needs before it is named (1 for photos)."""

    similarity_threshold: float
    identity_threshold: float
    margin: float = DEFAULT_MARGIN
    min_observations: int = 1


@dataclass(frozen=True)
class Evidence:
    """What is known about one face, or one track's faces taken together (see the module docstring)."""

    similarity: np.ndarray  # (P,)
    against: np.ndarray  # (P,)
    probability: np.ndarray  # (C,)
    against_trained: np.ndarray  # (C,)
    observations: int = 1


def decide(evidence: Evidence, rule: IdentityRule, enrolled: Sequence[str], trained: Sequence[str],
           current: str = "") -> Prediction:
    """The rule applied to ``evidence``: a name with its score, or ``unknown`` with the best score it had.

    ``enrolled``/``trained``: the names behind ``similarity``/``probability``. ``current``: the track's name so
    far ("" for none), which it keeps while the evidence still supports it."""
    sims, probs = evidence.similarity, evidence.probability
    order = np.argsort(-sims, kind="stable") if len(sims) else np.zeros(0, np.int64)
    best_sim = float(sims[order[0]]) if len(order) else -1.0
    if evidence.observations < rule.min_observations and not current:
        return Prediction(UNKNOWN, _best(probs, best_sim))

    def supported(p: int, floor: float) -> bool:
        """Enrolled person ``p`` at ``floor`` or above, not vetoed by a face said not to be them, and clear of
        the others: by ``margin`` when naming; when keeping, only a rival that could be named itself and is
        better by ``margin`` takes the name."""
        s = float(sims[p])
        if s < floor or float(evidence.against[p]) >= s:
            return False
        rivals = np.delete(sims, p)
        if not len(rivals):
            return True
        rival = float(rivals.max())
        if floor >= rule.similarity_threshold:
            return s - rival >= rule.margin
        return not (rival >= rule.similarity_threshold and rival - s >= rule.margin)

    names = [n.casefold() for n in enrolled]
    key = current.casefold()
    if current and key in names:  # keep an enrolled name while it holds
        p = names.index(key)
        if supported(p, rule.similarity_threshold - KEEP_MARGIN):
            return Prediction(enrolled[p], float(sims[p]))
    if len(order) and supported(int(order[0]), rule.similarity_threshold):
        return Prediction(enrolled[int(order[0])], best_sim)

    if len(probs):
        c = int(np.argmax(probs))
        prob = float(probs[c])
        vetoed = float(evidence.against_trained[c]) >= rule.similarity_threshold
        keep = bool(current) and trained[c].casefold() == key and prob >= rule.identity_threshold - KEEP_PROBABILITY
        if not vetoed and (prob >= rule.identity_threshold or keep):
            return Prediction(trained[c], prob)
    return Prediction(UNKNOWN, _best(probs, best_sim))


def _best(probs: np.ndarray, best_sim: float) -> float:
    """The score an unknown face reports: the identity head's top probability (as before the gallery), or the
    best similarity when there is no identity head output."""
    return float(probs.max()) if len(probs) else best_sim


def face_evidence(embeddings: np.ndarray | None, probabilities: np.ndarray | None, gallery: Gallery | None,
                  trained: Sequence[str]) -> list[Evidence]:
    """Each face's own evidence: ``embeddings`` (N, D) or None, ``probabilities`` (N, C) of the identity head or
    None, against ``gallery`` (an ``edgeface.core.gallery.Gallery`` or None)."""
    count = len(embeddings) if embeddings is not None else len(probabilities) if probabilities is not None else 0
    probs = (np.asarray(probabilities, np.float32).reshape(count, -1) if probabilities is not None
             else np.zeros((count, 0), np.float32))
    if gallery is not None and embeddings is not None and len(gallery):
        sims = gallery.similarities(embeddings)
        against = gallery.negative_similarities(embeddings, gallery.names)
    else:
        sims = against = np.zeros((count, 0), np.float32)
    if gallery is not None and embeddings is not None and gallery.negatives:
        against_trained = gallery.negative_similarities(embeddings, trained)
    else:
        against_trained = np.full((count, probs.shape[1]), -1.0, np.float32)
    return [Evidence(sims[i], against[i], probs[i], against_trained[i]) for i in range(count)]


def combine(evidence: Sequence[Evidence], weights: Sequence[float] | np.ndarray) -> Evidence:
    """Several faces' evidence as one: each score the weighted mean over the faces (weights: how good each view
    was), ``observations`` their count."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum() if len(w) and w.sum() > 0 else np.full(len(evidence), 1.0 / max(len(evidence), 1))

    def mean(field: str) -> np.ndarray:
        rows = np.stack([getattr(e, field) for e in evidence])
        return (w @ rows).astype(np.float32)

    return Evidence(mean("similarity"), mean("against"), mean("probability"), mean("against_trained"),
                    observations=len(evidence))


def naming_scores(evidence: Evidence, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """The lowest thresholds at which the rule names this evidence: (by the gallery, by the identity head);
    -1 where it never would (no enrolled person, a rival closer than ``margin``, a veto; no identity head).
    ``calibrate`` picks thresholds on these scores of strangers' faces and visits."""
    sims = evidence.similarity
    by_gallery = -1.0
    if len(sims):
        p = int(np.argmax(sims))
        s = float(sims[p])
        rival = float(np.delete(sims, p).max()) if len(sims) > 1 else -np.inf
        if s - rival >= margin and float(evidence.against[p]) < s:
            by_gallery = s
    by_head = float(evidence.probability.max()) if len(evidence.probability) else -1.0
    return by_gallery, by_head

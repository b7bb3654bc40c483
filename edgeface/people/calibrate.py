"""Calibrate the open-set thresholds on photos of strangers: how sure the device must be before it names anyone.

The identity rule (``edgeface.runtime.identity``) names a face by the gallery (similarity) or by the identity
head (confidence); ``calibrate`` picks both thresholds so that at most a chosen share of strangers is named, and
stores them in the gallery, twice:

* **per face**, for photos (``identify``, ``label``): at most ``far`` of the strangers' faces are named;
* **per visit**, for the daemon's tracks: the strangers' photos are taken as visits (a person's photos in a row,
  ``VISIT_FACES`` at a time: the rows of one person in a CSV, the photos of one folder), each photo one view,
  added up view after view as a track adds up its views (``edgeface.recognition.evidence``), and at most
  ``far`` of those visits are named at any point, from their first view on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeface.core.errors import DataError
from edgeface.core.gallery import Gallery, GalleryError, locked
from edgeface.core.spec import EMBEDDING_NAME
from edgeface.people.enroll import FaceEmbedder, expand_photos, gallery_for
from edgeface.recognition.evidence import DECAY, MAX_OBSERVATIONS
from edgeface.runtime.identity import DEFAULT_MARGIN, combine, face_evidence, naming_scores

VISIT_FACES = 5  # stranger photos taken as one visit (a track gathers about this many faces before deciding)


@dataclass(frozen=True)
class Thresholds:
    similarity: float
    identity: float | None  # None when only the gallery was calibrated
    accepted: int  # calibration faces the combined rule accepts at these thresholds
    total: int

    @property
    def far(self) -> float:
        return self.accepted / self.total if self.total else 0.0


# Above the highest stranger by more than the float rounding that scoring the same face again, in another batch,
# can bring (~1e-7), and far less than any real gap (int8 probabilities step by 1/256).
ABOVE_ALL_MARGIN = 1e-5


def _above(sorted_desc: np.ndarray, k: int) -> float:
    """A threshold that accepts the ``k`` highest scores and not the next: halfway between them (``k`` 0: just
    above the highest, by ``ABOVE_ALL_MARGIN``)."""
    if k >= len(sorted_desc):
        return float(sorted_desc[-1])
    if k == 0:
        return float(sorted_desc[0]) + ABOVE_ALL_MARGIN
    return float((sorted_desc[k - 1] + sorted_desc[k]) / 2)


def allowed_strangers(far: float, total: int) -> int:
    """How many of ``total`` stranger faces a false-accept rate ``far`` lets the rule accept."""
    return int(np.floor(far * total + 1e-9))


def choose_thresholds(similarity: np.ndarray, confidence: np.ndarray | None, far: float) -> Thresholds:
    """Thresholds at which the combined rule accepts at most ``far`` of these strangers' faces.

    ``similarity``: each stranger face's best gallery similarity; ``confidence``: its top identity-head
    probability (None to calibrate the gallery alone). The two paths take turns: each lets in one more
    stranger while their union stays within the target, so they get the same share, unless one path cannot
    move by one (its next scores are tied: an int8 head gives many strangers its top probability, 255/256),
    and then the other goes on alone rather than both stopping.
    """
    similarity = np.asarray(similarity, np.float64)
    total = len(similarity)
    if total == 0:
        raise DataError("no stranger faces to calibrate on")
    allowed = allowed_strangers(far, total)
    s_sorted = np.sort(similarity)[::-1]
    p_sorted = None if confidence is None else np.sort(np.asarray(confidence, np.float64))[::-1]

    def at(k_similarity: int, k_identity: int) -> Thresholds:
        t_s = _above(s_sorted, k_similarity)
        accepted = similarity >= t_s
        t_p = None
        if p_sorted is not None:
            t_p = _above(p_sorted, k_identity)
            accepted |= np.asarray(confidence) >= t_p
        return Thresholds(t_s, t_p, int(accepted.sum()), total)

    k_s = k_p = 0
    best = at(0, 0)
    steps = ((1, 1), (1, 0), (0, 1)) if p_sorted is not None else ((1, 0),)
    while True:  # accepted grows with either k, so this ends within 2 * allowed steps
        for d_s, d_p in steps:
            if max(k_s + d_s, k_p + d_p) > total:  # every stranger already in (far near 1)
                continue
            candidate = at(k_s + d_s, k_p + d_p)
            if candidate.accepted <= allowed:
                k_s, k_p, best = k_s + d_s, k_p + d_p, candidate
                break
        else:
            return best


def calibration_warnings(confidence: np.ndarray | None, thresholds: Thresholds, far: float) -> list[str]:
    """What the user should know about a calibration: too few strangers, or an identity path that names nobody."""
    faces = thresholds.total
    warnings = []
    top = float(np.max(confidence)) if confidence is not None and len(confidence) else None
    tied = 0 if top is None else int(np.sum(np.asarray(confidence) == top))
    allowed = allowed_strangers(far, faces)
    if top is not None and thresholds.identity is not None and thresholds.identity > top and 0 < allowed < tied:
        # shut by a tie wider than the budget, not by the gallery taking it all
        warnings.append(f"the identity head gives {tied} of the {faces} stranger faces its highest confidence "
                        f"({top:.4f}), so at {far:.2%} it names nobody: only enrolled people will be named "
                        "(enroll the trained people too, or train with the softmax identity head)")
    if faces * far < 5:
        warnings.append(f"{faces} stranger faces measure a false-accept rate of {far:.2%} poorly "
                        f"(at least {int(np.ceil(5 / max(far, 1e-9)))} faces advised)")
    return warnings


@dataclass(frozen=True)
class CalibrationResult:
    thresholds: Thresholds
    visit_thresholds: Thresholds
    far_target: float
    gallery: Gallery
    path: Path
    photos: int
    faces: int
    skipped: tuple[str, ...]  # why photos were not used (no face, enrolled or trained person, unreadable)
    gallery_far: float  # strangers accepted by the gallery path alone
    model_far: float | None  # ... by the identity head alone
    warnings: tuple[str, ...] = ()


def read_impostors(items: Sequence[str | Path], exclude: Sequence[str]
                   ) -> tuple[list[Path], list[str], list[str]]:
    """Photos of strangers from files, folders and CSV manifests, each with whose photos they are (a CSV row's
    identity, else the photo's folder; one photo given alone is its own); CSV rows of excluded people
    (enrolled or trained, compared without case) are skipped, with the reason."""
    from edgeface.data.manifest import load_dataset

    excluded = {n.casefold() for n in exclude}
    paths: list[Path] = []
    owners: list[str] = []
    skipped: list[str] = []
    for n, item in enumerate(items):
        item = Path(item)
        if item.suffix.lower() == ".csv":
            data = load_dataset(item)
            data.raise_for_errors()
            for sample in data.samples:
                if sample.identity and sample.identity.casefold() in excluded:
                    skipped.append(f"{sample.where}: {sample.identity} is enrolled or trained, not a "
                                   "stranger")
                else:
                    paths.append(sample.image)
                    owners.append(f"{item}:{sample.identity or sample.image}")
        elif item.is_dir():
            found = expand_photos([item])
            paths.extend(found)
            owners.extend(str(p.parent) for p in found)
        else:
            paths.append(item)
            owners.append(f"{n}:{item}")
    return paths, owners, skipped


def visits_of(owners: Sequence[str], faces: int = VISIT_FACES) -> list[int]:
    """A visit number for each face: each owner's faces in order, ``faces`` at a time."""
    seen: dict[str, int] = {}
    numbers: dict[tuple[str, int], int] = {}
    out = []
    for owner in owners:
        k = seen.get(owner, 0)
        seen[owner] = k + 1
        out.append(numbers.setdefault((owner, k // faces), len(numbers)))
    return out


def calibrate(bundle: Any, impostors: Sequence[str | Path], far: float = 0.01,
              gallery_path: str | Path | None = None, state_dir: str | Path | None = None,
              calibrate_identity: bool = True, embedder: FaceEmbedder | None = None) -> CalibrationResult:
    """Pick the thresholds for a false-accept rate ``far`` on photos of people who are neither enrolled nor
    trained, and store them in the gallery (the daemon and ``Labeler.for_bundle`` use them)."""
    _check_far(far)
    embedder = embedder or FaceEmbedder(bundle)
    gallery, path = _enrolled_gallery(embedder.bundle, gallery_path, state_dir)
    trained = embedder.spec.labels["identity"]
    paths, owners, skipped = read_impostors(impostors, list(gallery.names) + list(trained))
    if not paths:
        raise DataError("no stranger photos left to calibrate on" + (f" ({skipped[0]})" if skipped else ""))
    checks, outputs = embedder.photos(paths, quality=False)
    skipped += [c.message for c in checks if not c.ok]
    if len(outputs[EMBEDDING_NAME]) == 0:
        raise DataError(f"no face found in any of the {len(paths)} stranger photos")
    identity = outputs["identity"] if calibrate_identity else None
    visits = visits_of([owner for owner, check in zip(owners, checks) if check.ok])
    return calibrate_faces(embedder.bundle, outputs[EMBEDDING_NAME], identity, far, path, photos=len(paths),
                           skipped=skipped, visits=visits)


def stranger_scores(gallery: Gallery, embeddings: np.ndarray, identity: np.ndarray | None,
                    trained: Sequence[str], visits: Sequence[int]) -> tuple[np.ndarray, ...]:
    """The scores at which the rule would name each stranger's face, and each visit at its worst moment:
    (face by gallery, face by head, visit by gallery, visit by head); head scores are empty without
    ``identity``. ``identity``: (N, C) probabilities, or (N,) top probabilities (the web page keeps those)."""
    probs = None if identity is None else np.asarray(identity, np.float32).reshape(len(embeddings), -1)
    evidence = face_evidence(embeddings, probs, gallery, trained)
    face = np.array([naming_scores(e, DEFAULT_MARGIN) for e in evidence]).reshape(-1, 2)
    groups: dict[int, list[int]] = {}
    for i, v in enumerate(visits):
        groups.setdefault(v, []).append(i)
    visit = np.full((len(groups), 2), -1.0)
    for g, members in enumerate(groups.values()):
        for k in range(len(members)):  # the visit as its track adds it up, view after view, from the first
            seen = members[max(0, k + 1 - MAX_OBSERVATIONS):k + 1]
            weights = DECAY ** np.arange(len(seen) - 1, -1, -1, dtype=np.float64)
            visit[g] = np.maximum(visit[g], naming_scores(combine([evidence[i] for i in seen], weights)))
    if probs is None:
        return face[:, 0], np.zeros(0), visit[:, 0], np.zeros(0)
    return face[:, 0], face[:, 1], visit[:, 0], visit[:, 1]


def calibrate_faces(bundle: Any, embeddings: np.ndarray, identity: np.ndarray | None, far: float = 0.01,
                    gallery_path: str | Path | None = None, state_dir: str | Path | None = None,
                    photos: int | None = None, skipped: Sequence[str] = (),
                    visits: Sequence[int] | None = None, negatives_among: Sequence[str] = ()) -> CalibrationResult:
    """``calibrate`` on stranger faces already embedded: ``embeddings`` (N, D); ``identity``: the identity head's
    probabilities (N, C) or each face's top probability (N,), None to keep the bundle's identity threshold;
    ``visits``: each face's visit number (faces of one visit in order; default: each face alone). The web page
    calibrates on the strangers' faces it stored this way. ``negatives_among``: the ids of the gallery's
    negatives that are these very faces (the web page keeps its strangers' faces as both): they are left out
    of the scoring, else each face would veto itself and the thresholds would fall to their lowest."""
    _check_far(far)
    embeddings = np.asarray(embeddings, np.float32)
    faces = len(embeddings)
    if faces == 0:
        raise DataError("no stranger faces to calibrate on")
    visits = list(range(faces)) if visits is None else list(visits)
    if len(visits) != faces:
        raise DataError(f"{len(visits)} visit numbers for {faces} faces")
    gallery, path = _enrolled_gallery(bundle, gallery_path, state_dir)
    trained = bundle.spec.labels["identity"]
    face_sim, face_head, visit_sim, visit_head = stranger_scores(gallery.without_negatives(negatives_among),
                                                                 embeddings, identity, trained, visits)
    with_head = identity is not None
    thresholds = _in_range(choose_thresholds(face_sim, face_head if with_head else None, far))
    per_visit = _in_range(choose_thresholds(visit_sim, visit_head if with_head else None, far))
    warnings = calibration_warnings(face_head if with_head else None, thresholds, far)
    if len(visit_sim) * far < 1 and len(visit_sim) < faces:
        warnings.append(f"{len(visit_sim)} stranger visits measure a per-visit false-accept rate of {far:.2%} "
                        "poorly: give more strangers, several photos each (a folder or CSV identity per person)")
    gallery_far = float(np.mean(face_sim >= thresholds.similarity))
    model_far = None if not with_head else float(np.mean(face_head >= thresholds.identity))
    photos = faces if photos is None else photos
    details: dict[str, Any] = {"far_target": far, "far_measured": thresholds.far, "faces": faces,
                               "photos": photos, "gallery_far": gallery_far, "model_far": model_far,
                               "visits": len(visit_sim), "visit_far_measured": per_visit.far}
    with locked(path):
        current, _ = gallery_for(bundle, path)
        if current.names != gallery.names:
            raise GalleryError(f"{path}: the people enrolled changed while calibrating; run calibrate again")
        gallery = current.calibrated(thresholds.similarity, thresholds.identity, details, per_visit.similarity,
                                     per_visit.identity)
        gallery.save(path)
    return CalibrationResult(thresholds, per_visit, far, gallery, path, photos, faces, tuple(skipped),
                             gallery_far, model_far, tuple(warnings))


def _in_range(thresholds: Thresholds) -> Thresholds:
    """Thresholds the gallery accepts: when no stranger could be named at all (-1 scores), the lowest allowed."""
    from dataclasses import replace

    from edgeface.core.gallery import THRESHOLD_RANGES

    low = THRESHOLD_RANGES["similarity_threshold"][0]
    return replace(thresholds, similarity=max(low, thresholds.similarity))


def _check_far(far: float) -> None:
    if not 0.0 <= far < 1.0:
        raise DataError(f"--far must be in [0, 1), got {far}")


def _enrolled_gallery(bundle: Any, gallery_path: str | Path | None, state_dir: str | Path | None
                      ) -> tuple[Gallery, Path]:
    gallery, path = gallery_for(bundle, gallery_path, state_dir)
    if not len(gallery):
        raise GalleryError(f"{path}: nobody is enrolled for this bundle; enroll people first (the threshold "
                           "depends on who is enrolled)")
    return gallery, path

"""Calibrate the open-set thresholds on photos of strangers: how sure the device must be before it names anyone.

The identity rule (``edgeface.runtime.labeler``) names a face by the gallery (similarity) or by the identity
head (confidence); ``calibrate`` picks both thresholds so that at most a chosen share of strangers' faces is
named, and stores them in the gallery.
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
    far_target: float
    gallery: Gallery
    path: Path
    photos: int
    faces: int
    skipped: tuple[str, ...]  # why photos were not used (no face, enrolled or trained person, unreadable)
    gallery_far: float  # strangers accepted by the gallery path alone
    model_far: float | None  # ... by the identity head alone
    warnings: tuple[str, ...] = ()


def read_impostors(items: Sequence[str | Path], exclude: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Photos of strangers from files, folders and CSV manifests; CSV rows of excluded people (enrolled or
    trained, compared without case) are skipped, with the reason."""
    from edgeface.data.manifest import load_dataset

    excluded = {n.casefold() for n in exclude}
    paths: list[Path] = []
    skipped: list[str] = []
    for item in items:
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
        else:
            paths.extend(expand_photos([item]))
    return paths, skipped


def calibrate(bundle: Any, impostors: Sequence[str | Path], far: float = 0.01,
              gallery_path: str | Path | None = None, state_dir: str | Path | None = None,
              calibrate_identity: bool = True, embedder: FaceEmbedder | None = None) -> CalibrationResult:
    """Pick the thresholds for a false-accept rate ``far`` on photos of people who are neither enrolled nor
    trained, and store them in the gallery (the daemon and ``Labeler.for_bundle`` use them)."""
    _check_far(far)
    embedder = embedder or FaceEmbedder(bundle)
    gallery, path = _enrolled_gallery(embedder.bundle, gallery_path, state_dir)
    trained = embedder.spec.labels["identity"]
    paths, skipped = read_impostors(impostors, list(gallery.names) + list(trained))
    if not paths:
        raise DataError("no stranger photos left to calibrate on" + (f" ({skipped[0]})" if skipped else ""))
    checks, outputs = embedder.photos(paths, quality=False)
    skipped += [c.message for c in checks if not c.ok]
    if len(outputs[EMBEDDING_NAME]) == 0:
        raise DataError(f"no face found in any of the {len(paths)} stranger photos")
    confidence = outputs["identity"].max(1) if calibrate_identity else None
    return calibrate_faces(embedder.bundle, outputs[EMBEDDING_NAME], confidence, far, path, photos=len(paths),
                           skipped=skipped)


def calibrate_faces(bundle: Any, embeddings: np.ndarray, confidence: np.ndarray | None, far: float = 0.01,
                    gallery_path: str | Path | None = None, state_dir: str | Path | None = None,
                    photos: int | None = None, skipped: Sequence[str] = ()) -> CalibrationResult:
    """``calibrate`` on stranger faces already embedded: ``embeddings`` (N, D) and each face's top identity
    probability ``confidence`` (N,), None to keep the bundle's identity threshold. The web page calibrates on
    the strangers' faces it stored this way."""
    _check_far(far)
    embeddings = np.asarray(embeddings, np.float32)
    faces = len(embeddings)
    if faces == 0:
        raise DataError("no stranger faces to calibrate on")
    gallery, path = _enrolled_gallery(bundle, gallery_path, state_dir)
    similarity = gallery.match(embeddings).similarity
    thresholds = choose_thresholds(similarity, confidence, far)
    warnings = calibration_warnings(confidence, thresholds, far)
    gallery_far = float(np.mean(similarity >= thresholds.similarity))
    model_far = None if confidence is None else float(np.mean(confidence >= thresholds.identity))
    photos = faces if photos is None else photos
    details: dict[str, Any] = {"far_target": far, "far_measured": thresholds.far, "faces": faces,
                               "photos": photos, "gallery_far": gallery_far, "model_far": model_far}
    with locked(path):
        current, _ = gallery_for(bundle, path)
        if current.names != gallery.names:
            raise GalleryError(f"{path}: the people enrolled changed while calibrating; run calibrate again")
        gallery = current.calibrated(thresholds.similarity, thresholds.identity, details)
        gallery.save(path)
    return CalibrationResult(thresholds, far, gallery, path, photos, faces, tuple(skipped), gallery_far,
                             model_far, tuple(warnings))


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

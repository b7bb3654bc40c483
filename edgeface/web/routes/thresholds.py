"""Thresholds: the two in use and where each comes from; recalibration on this camera's strangers' faces, grouped
by the visit each was seen in; and the faces kept as negative evidence ("a stranger", "not X"), each with why,
each can be forgotten."""

from __future__ import annotations

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import Gallery
from edgeface.daemon.http import Reply, Request
from edgeface.people.calibrate import calibrate_faces
from edgeface.web import pages
from edgeface.web.routes.base import Resource
from edgeface.web.state import PREFIX
from edgeface.web.store import StrangerFace

HERE = f"{PREFIX}/thresholds"
DEFAULT_FAR = 0.01  # the share of strangers' faces the form proposes to let through


class Thresholds(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery, labeler = s.gallery(), s.labeler
        kept = s.store.strangers() if s.store is not None else []
        rule = labeler.visit_rule
        view = pages.ThresholdsView(
            labeler.similarity_threshold, labeler.similarity_from, labeler.identity_threshold, labeler.identity_from,
            rule.similarity_threshold, rule.identity_threshold,
            dict(gallery.calibration) if gallery is not None and gallery.calibration else None,
            bool(gallery is not None and gallery.calibration_is_stale), negative_views(gallery, kept), len(kept),
            len(gallery) if gallery is not None else 0)
        far = float((gallery.calibration or {}).get("far_target", DEFAULT_FAR)) if gallery is not None else DEFAULT_FAR
        return Reply.html(pages.thresholds_page(s.frame(request, gallery), view, far, s.config.max_strangers,
                                                s.note(request)))

    def crop(self, face_id: str) -> bytes | None:
        """A stranger's face."""
        path = self.state.store.stranger_crop(face_id) if self.state.store is not None else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def act(self, request: Request) -> Reply:
        """``action``: recalibrate (``far``, percent) or remove_stranger (``face``)."""
        s = self.state
        if s.store is None:
            return s.back(HERE, "error", s.cannot_name)
        action = request.field("action")
        if action == "remove_stranger":
            try:
                s.forget_negative(request.field("face"))
            except EdgefaceError as exc:
                return s.back(HERE, "error", str(exc))
            return s.back(HERE, "ok", "That face was forgotten.")
        if action != "recalibrate":
            return s.back(HERE, "error", f"Unknown action {action[:20]!r}.")
        try:
            far = float(request.field("far", "1")) / 100
        except ValueError:
            far = -1.0
        if not 0.0 <= far <= 0.5:
            return s.back(HERE, "error", "The share of strangers named must be between 0 and 50 percent.")
        kept = s.store.strangers()
        embeddings, confidence, visits = calibration_set(kept, s.bundle.spec.embedding_size)
        try:
            result = calibrate_faces(s.bundle, embeddings, confidence, far, s.gallery_path, visits=visits,
                                     negatives_among=[face.sample.id for face in kept])
        except EdgefaceError as exc:
            return s.back(HERE, "error", str(exc))
        s.gallery_changed()
        t, v = result.thresholds, result.visit_thresholds
        text = (f"Calibrated on {result.faces} strangers' faces from {pages.count(v.total, 'visit')}: similarity "
                f"{t.similarity:.3f}" + (f", identity {t.identity:.3f}" if t.identity is not None else "")
                + f" per face, {v.similarity:.3f}" + (f" and {v.identity:.3f}" if v.identity is not None else "")
                + f" per visit; {t.far:.2%} of the faces and {v.far:.2%} of the visits would be named "
                f"(target {far:.2%}).")
        for warning in result.warnings:
            text += f" Note: {warning}."
        return s.back(HERE, "ok", text)


def calibration_set(kept: list[StrangerFace], size: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """This camera's strangers' faces as ``calibrate_faces`` takes them: embeddings, identity confidences and
    visit numbers, the faces of one visit together and in the order they were seen (a face kept without its
    visit, by an earlier edgeface, is a visit of its own)."""
    ordered = sorted(kept, key=lambda f: (f.sample.visit or f.sample.id, f.sample.time))
    numbers: dict[str, int] = {}
    visits = [numbers.setdefault(f.sample.visit or f.sample.id, len(numbers)) for f in ordered]
    embeddings = (np.stack([f.sample.embedding for f in ordered]) if ordered else np.zeros((0, size), np.float32))
    return embeddings, np.array([f.sample.confidence for f in ordered], np.float32), visits


def negative_views(gallery: Gallery | None, kept: list[StrangerFace]) -> list[pages.NegativeView]:
    """The faces kept as negative evidence (the gallery's) and for calibration (this camera's), newest first:
    a face the page kept is usually both; one shared by another device has no crop here; one whose person was
    removed counts for calibration only."""
    from datetime import datetime

    negatives = {n.id: n for n in gallery.negatives} if gallery is not None else {}
    views = []
    for face in kept:
        negative = negatives.pop(face.sample.id, None)
        views.append(pages.NegativeView(face.sample.id, face.reason, face.sample.time, True, negative is not None,
                                        True))
    for negative in negatives.values():
        try:
            when = datetime.fromisoformat(negative.added).timestamp()
        except ValueError:
            when = 0.0
        views.append(pages.NegativeView(negative.id, negative.reason or (f"not {negative.of}" if negative.of else
                                                                         "a stranger"), when, False, True, False))
    return sorted(views, key=lambda v: -v.time)

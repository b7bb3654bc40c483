"""Thresholds: the two in use and where each comes from, recalibration on the strangers' faces kept, and
those faces (each can be forgotten)."""

from __future__ import annotations

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.daemon.http import Reply, Request
from edgeface.people.calibrate import calibrate_faces
from edgeface.web import pages
from edgeface.web.routes.base import Resource
from edgeface.web.state import PREFIX

HERE = f"{PREFIX}/thresholds"
DEFAULT_FAR = 0.01  # the share of strangers' faces the form proposes to let through


class Thresholds(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery, labeler = s.gallery(), s.labeler
        view = pages.ThresholdsView(
            labeler.similarity_threshold, labeler.similarity_from, labeler.identity_threshold, labeler.identity_from,
            dict(gallery.calibration) if gallery is not None and gallery.calibration else None,
            bool(gallery is not None and gallery.calibration_is_stale),
            s.store.strangers() if s.store is not None else [], len(gallery) if gallery is not None else 0)
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
            s.store.delete_stranger(request.field("face"))
            return s.back(HERE, "ok", "That face was forgotten.")
        if action != "recalibrate":
            return s.back(HERE, "error", f"Unknown action {action[:20]!r}.")
        try:
            far = float(request.field("far", "1")) / 100
        except ValueError:
            far = -1.0
        if not 0.0 <= far <= 0.5:
            return s.back(HERE, "error", "The share of strangers named must be between 0 and 50 percent.")
        strangers = [sample for sample, _ in s.store.strangers()]
        size = s.bundle.spec.embedding_size
        try:
            result = calibrate_faces(s.bundle, np.stack([x.embedding for x in strangers]) if strangers else
                                     np.zeros((0, size), np.float32),
                                     np.array([x.confidence for x in strangers], np.float32), far, s.gallery_path)
        except EdgefaceError as exc:
            return s.back(HERE, "error", str(exc))
        s.gallery_changed()
        t = result.thresholds
        text = (f"Calibrated on {result.faces} strangers' faces: similarity {t.similarity:.3f}"
                + (f", identity {t.identity:.3f}" if t.identity is not None else "")
                + f"; {t.far:.2%} of them would be named (target {far:.2%}).")
        for warning in result.warnings:
            text += f" Note: {warning}."
        return s.back(HERE, "ok", text)

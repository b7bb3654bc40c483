"""Unknown: the faces the daemon could not name, one card per group (``state.unknowns``); a group is named
(its ticked faces enrolled), kept as a stranger's (for calibration) or ignored."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.daemon.http import Reply, Request
from edgeface.people.enroll import enroll_faces
from edgeface.web import pages
from edgeface.web.routes.base import Resource
from edgeface.web.state import PREFIX

HERE = f"{PREFIX}/unknown"


class Unknown(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery = s.gallery()
        names = gallery.names if gallery is not None else ()
        retention = f"Kept {s.config.keep_days:g} days, at most {s.config.max_visits} visits."
        return Reply.html(pages.unknown_page(s.frame(request, gallery), s.unknowns.groups(), names, time.time(),
                                             retention, s.cannot_name, request.arg("name")[:64], s.note(request)))

    def act(self, request: Request) -> Reply:
        """``action``: name (``name``, the ticked ``face`` fields), stranger (the ticked faces) or ignore."""
        s, unknowns = self.state, self.state.unknowns
        action = request.field("action")
        with unknowns.lock:
            group = unknowns.group(request.field("visit"))
            if group is None:
                return s.back(HERE, "error", "That visit is no longer kept (named, ignored or expired).")
            if action == "ignore":
                unknowns.drop(group.id)
                return s.back(HERE, "ok", "Ignored: its faces were deleted.")
            faces = unknowns.faces(group, set(request.form.get("face", [])))
            if not faces:
                return s.back(HERE, "error", "Tick at least one face first.")
            if action == "stranger" and s.store is not None:
                s.store.add_strangers(faces, "marked as a stranger")
                unknowns.drop(group.id)
                return s.back(HERE, "ok", f"Kept {len(faces)} faces as a stranger's, for calibration (Thresholds).")
            if action != "name":
                return s.back(HERE, "error", f"Unknown action {action[:20]!r}.")
            if s.cannot_name:
                return s.back(HERE, "error", s.cannot_name)
            name = request.field("name")
            when = datetime.fromtimestamp(group.last, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            records = [{"file": f"camera {when}", "sha256": hashlib.sha256(data).hexdigest(), "visit": group.id}
                       for _, data in faces]
            try:
                gallery = enroll_faces(s.bundle, name, np.stack([sample.embedding for sample, _ in faces]),
                                       [data for _, data in faces], records, s.gallery_path)
            except EdgefaceError as exc:
                return s.back(HERE, "error", str(exc))
            unknowns.drop(group.id)
        s.gallery_changed()
        person = gallery.get(name)
        total = len(person.embeddings) if person is not None else len(faces)
        text = (f"{person.name if person else name}: {len(faces)} faces added ({total} in all). The daemon names "
                "them from the next frame on.")
        if gallery.calibration is not None:
            text += " The people changed since the last calibration: recalibrate (Thresholds)."
        return s.back(HERE, "ok", text)

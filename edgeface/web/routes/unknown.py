"""Unknown: the strangers the camera saw, one card per stranger group (``state.unknowns``: the same unknown
person's visits, grouped by face); a group is named (its ticked faces, from all its visits, enrolled), marked
"a stranger" (its faces kept as negative evidence for everyone and for calibration) or ignored."""

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
STRANGER = "a stranger"  # the reason a face marked so is kept under


class Unknown(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery = s.gallery()
        names = gallery.names if gallery is not None else ()
        retention = (f"Faces are kept {s.config.keep_days:g} days, from at most {s.config.max_visits} visits.")
        return Reply.html(pages.unknown_page(s.frame(request, gallery), s.unknowns.groups(), names, time.time(),
                                             retention, s.cannot_name, request.arg("name")[:64], s.note(request)))

    def act(self, request: Request) -> Reply:
        """``action``: name (``name``, the ticked ``face`` fields), stranger (the ticked faces) or ignore, on the
        card ``group``."""
        s, unknowns = self.state, self.state.unknowns
        action = request.field("action")
        with unknowns.lock:
            group = unknowns.group(request.field("group"))
            if group is None:
                return s.back(HERE, "error", "That group is no longer kept (named, ignored or expired).")
            if action == "ignore":
                unknowns.drop(group.id)
                return s.back(HERE, "ok", "Ignored: its faces were deleted.")
            if action not in ("name", "stranger"):
                return s.back(HERE, "error", f"Unknown action {action[:20]!r}.")
            if s.cannot_name:
                return s.back(HERE, "error", s.cannot_name)
            faces = unknowns.faces(group, set(request.form.get("face", [])))
            if not faces:
                return s.back(HERE, "error", "Tick at least one face first.")
            if action == "stranger":
                try:
                    s.keep_negatives("", faces, STRANGER)
                except EdgefaceError as exc:
                    return s.back(HERE, "error", str(exc))
                unknowns.mark(group.id)
                return s.back(HERE, "ok", f"Kept {pages.count(len(faces), 'face')} as a stranger's: faces like "
                              "these are named after nobody, and they count when you recalibrate (Thresholds). "
                              "This person's next visits make no new card.")
            name = request.field("name")
            records = [{"file": f"camera {_utc(sample.time)}", "sha256": hashlib.sha256(data).hexdigest(),
                        "visit": sample.visit, "stranger": group.id} for sample, data in faces]
            try:
                gallery = enroll_faces(s.bundle, name, np.stack([sample.embedding for sample, _ in faces]),
                                       [data for _, data in faces], records, s.gallery_path)
            except EdgefaceError as exc:
                return s.back(HERE, "error", str(exc))
            unknowns.drop(group.id)
        s.gallery_changed()
        person = gallery.get(name)
        total = len(person.embeddings) if person is not None else len(faces)
        visits = len({sample.visit for sample, _ in faces})
        text = (f"{person.name if person else name}: {pages.count(len(faces), 'face')} from "
                f"{pages.count(visits, 'visit')} added ({total} in all). The daemon names them from the next "
                "frame on.")
        if gallery.calibration is not None:
            text += " The people changed since the last calibration: recalibrate (Thresholds)."
        return s.back(HERE, "ok", text)


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

"""Recent: the last faces the daemon named (memory only), and "Not X": that face is kept as negative evidence of
X in the gallery (the identity rule no longer names it, or a lookalike nearer it than X's own faces, X) and as
a stranger's for calibration; if X was named on this page from the card this visit was on (or from this very
visit), that naming is taken back."""

from __future__ import annotations

import time

from edgeface.core.errors import EdgefaceError
from edgeface.daemon.http import Reply, Request
from edgeface.web import pages
from edgeface.web.routes.base import Resource
from edgeface.web.routes.signin import local_path
from edgeface.web.state import PREFIX

HERE = f"{PREFIX}/recent"


class Recent(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        now = time.time()
        items = [pages.RecognitionView(r.id, r.name, r.score, r.emotion, r.gender, now - r.last, r.sample.best,
                                       r.sample.similarity) for r in self.state.watcher.recognitions()]
        return Reply.html(pages.recent_page(self.state.frame(request), items, self.state.note(request)))

    def crop(self, face_id: str) -> bytes | None:
        found = next((r for r in self.state.watcher.recognitions() if r.id == face_id), None)
        return found.jpeg if found is not None else None

    def act(self, request: Request) -> Reply:
        """"Not X" (``recognition``; ``back``: the page to return to, Recent or Live)."""
        s = self.state
        here = local_path(request.field("back"), HERE)
        found = s.watcher.take_recognition(request.field("recognition"))
        if found is None:
            return s.back(here, "error", "That face is no longer kept; pick it again from Recent.")
        if s.store is None:
            return s.back(here, "error", s.cannot_name)
        faces = list(found.faces)
        try:
            removed = s.keep_negatives(found.name, faces, f"not {found.name}", take_back=(found.visit, found.stranger))
        except EdgefaceError as exc:
            return s.back(here, "error", str(exc))
        text = (f"Kept {pages.count(len(faces), 'face')} of this visit as not {found.name}'s: from the next frame "
                f"on, the daemon does not name {found.name} faces nearer these than {found.name}'s own, and they "
                "count as a stranger's when you recalibrate (Thresholds).")
        if removed:
            text += (f" The {pages.count(removed, 'face')} enrolled from this person's card were taken out of "
                     f"{found.name}'s photos.")
        return s.back(here, "ok", text)

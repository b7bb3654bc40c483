"""Recent: the last faces the daemon named (memory only), and "Not X", which keeps such a face as a
stranger's and takes back the naming of its visit if it was done on this page."""

from __future__ import annotations

import time

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import Gallery
from edgeface.daemon.http import Reply, Request
from edgeface.people.enroll import change_gallery
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
        removed = 0
        if found.visit and not s.cannot_name:
            def without_visit(gallery: Gallery) -> Gallery:
                nonlocal removed
                person = gallery.get(found.name)
                for photo in list(person.photos) if person is not None else []:
                    if photo.get("visit") == found.visit:
                        gallery = gallery.without_photo(found.name, str(photo["sha256"]))
                        removed += 1
                return gallery

            try:
                change_gallery(s.bundle, without_visit, s.gallery_path)
            except EdgefaceError as exc:
                return s.back(here, "error", str(exc))
            s.gallery_changed()
        if s.store is not None:
            s.store.add_strangers([(found.sample, found.jpeg)], f"not {found.name}")
        text = f"Kept as a stranger's face, not {found.name}'s."
        if removed:
            text += f" The {removed} faces of this visit were taken out of {found.name}'s photos."
        text += " Recalibrate (Thresholds) so that faces like it are not named."
        return s.back(here, "ok", text)

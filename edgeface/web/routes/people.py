"""People: everyone enrolled, with the face of each enrolled photo; remove a photo, rename, remove."""

from __future__ import annotations

from edgeface.core.errors import EdgefaceError
from edgeface.daemon.http import Reply, Request
from edgeface.people.album import crop_path
from edgeface.people.enroll import remove_person, remove_photo, rename_person
from edgeface.web import pages
from edgeface.web.routes.base import Resource
from edgeface.web.state import PREFIX

HERE = f"{PREFIX}/people"


class People(Resource):
    path = HERE

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery = s.gallery()
        people = []
        for person in gallery.people if gallery is not None else ():
            photos = []
            for photo in person.photos:
                sha = str(photo.get("sha256", ""))
                path = crop_path(s.gallery_path, sha) if s.gallery_path else None
                photos.append((sha, str(photo.get("file", "")), bool(path and path.is_file())))
            people.append(pages.PersonView(person.name, person.added, photos))
        return Reply.html(pages.people_page(s.frame(request, gallery), people, str(s.gallery_path or "none"),
                                            s.cannot_name, s.note(request)))

    def crop(self, face_id: str) -> bytes | None:
        """The face of the enrolled photo ``face_id`` (its sha256)."""
        path = crop_path(self.state.gallery_path, face_id) if self.state.gallery_path is not None else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def act(self, request: Request) -> Reply:
        """``action``: remove (``person``), remove_photo (``person``, ``photo``) or rename (``person``, ``name``)."""
        s = self.state
        if s.cannot_name:
            return s.back(HERE, "error", s.cannot_name)
        action, person = request.field("action"), request.field("person")
        try:
            if action == "remove":
                remove_person(s.bundle, person, s.gallery_path)
                text = f"{person} was removed, with their photos."
            elif action == "remove_photo":
                remove_photo(s.bundle, person, request.field("photo"), s.gallery_path)
                text = f"One photo of {person} was removed."
            elif action == "rename":
                new = request.field("name")
                rename_person(s.bundle, person, new, s.gallery_path)
                text = f"{person} is now {new.strip()}."
            else:
                return s.back(HERE, "error", f"Unknown action {action[:20]!r}.")
        except EdgefaceError as exc:
            return s.back(HERE, "error", str(exc))
        s.gallery_changed()
        return s.back(HERE, "ok", text)

"""The page's files: face crops (``/ui/face.jpg?of=...&id=...``, each from the resource that keeps it) and
its style sheet and script."""

from __future__ import annotations

from importlib import resources
from typing import Callable, Mapping, Sequence

from edgeface.daemon.http import Reply, Request
from edgeface.web.routes.base import PageRoute
from edgeface.web.state import PREFIX, PageState

STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}


class Assets:
    def __init__(self, state: PageState, crops: Mapping[str, Callable[[str], bytes | None]]) -> None:
        """``crops``: for each kind of face (``of``: person, stranger, recent), the function that finds one by
        its id; unknown faces come from ``state.unknowns``."""
        self.state = state
        self.crops = crops

    def routes(self) -> Sequence[PageRoute]:
        return (PageRoute("GET", f"{PREFIX}/face.jpg", self.face),
                *(PageRoute("GET", f"{PREFIX}/static/{name}", self.static, public=True) for name in STATIC))

    def face(self, request: Request) -> Reply:
        """``?of=unknown|person|stranger|recent&id=...`` (``&group=...`` for unknown faces)."""
        of, face_id = request.arg("of"), request.arg("id")
        if of == "unknown":
            data = self.state.unknowns.crop(request.arg("group"), face_id)
        else:
            find = self.crops.get(of)
            data = find(face_id) if find is not None else None
        if data is None:
            return Reply.text("no such face", 404)
        return Reply.jpeg(data, cache=of != "recent")  # a recognition's face changes under the same id

    def static(self, request: Request) -> Reply:
        name = request.path.rsplit("/", 1)[-1]
        data = (resources.files("edgeface.web") / "static" / name).read_bytes()  # joinpath takes one name on 3.10
        return Reply(200, data, STATIC[name], {"Cache-Control": "max-age=300"})

"""Live: the newest frame with a box on each face, refreshed a few times a second by page.js; what the page
costs (``/ui/api/stats``). ``/`` and ``/ui`` lead here."""

from __future__ import annotations

from typing import Any, Sequence

from edgeface.daemon.http import Reply, Request
from edgeface.web import pages
from edgeface.web.routes.base import PageRoute, Resource
from edgeface.web.state import PREFIX


class Live(Resource):
    def routes(self) -> Sequence[PageRoute]:
        to_page = lambda request: Reply.redirect(f"{PREFIX}/")  # noqa: E731
        return (PageRoute("GET", "/", to_page, html=True), PageRoute("GET", PREFIX, to_page, html=True),
                PageRoute("GET", f"{PREFIX}/", self.page, html=True),
                PageRoute("GET", f"{PREFIX}/api/live", self.api),
                PageRoute("GET", f"{PREFIX}/live.jpg", self.jpeg),
                PageRoute("GET", f"{PREFIX}/api/stats", self.stats))

    def page(self, request: Request) -> Reply:
        s = self.state
        return Reply.html(pages.live_page(s.frame(request), self._faces(), s.config.live_fps, s.note(request)))

    def _faces(self) -> dict[str, Any] | None:
        """The live frame's state, each face with its recognition (for "Not X") or its stranger group's card."""
        state = self.state.live.state()
        if state is not None:
            for face in state["faces"]:
                face["recognition"] = self.state.watcher.recognition_of(face["track"])
                face["group"] = self.state.watcher.card_of(face.get("visit", ""))
        return state

    def api(self, request: Request) -> Reply:
        state = self._faces()
        if state is not None:
            state["rows"] = pages.face_list(self.state.csrf, state["faces"])
        return Reply.json(state or {"frame": None, "faces": [], "rows": pages.face_list("", [])})

    def jpeg(self, request: Request) -> Reply:
        try:
            index = int(request.arg("frame", "-1"))
        except ValueError:
            index = -1
        data = self.state.live.jpeg(index)
        return Reply.jpeg(data) if data is not None else Reply.text("no frame yet", 503)

    def stats(self, request: Request) -> Reply:
        """What the page costs and keeps: frames encoded for live views, crops kept, strangers' cards."""
        watcher = self.state.watcher
        return Reply.json({"live_frames_encoded": self.state.live.encoded, "crops_kept": watcher.kept,
                           "unknown_groups": self.state.unknowns.count(),
                           "recognitions": len(watcher.recognitions())})

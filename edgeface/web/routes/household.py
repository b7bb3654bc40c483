"""Household: the people every device of the household knows, and which camera saw each of them last (from the
presence reports the MQTT sink follows, ``edgeface.daemon.presence``)."""

from __future__ import annotations

import time
from typing import Sequence

from edgeface.daemon.http import Reply, Request
from edgeface.daemon.sinks.mqtt import person_id
from edgeface.web import pages
from edgeface.web.routes.base import PageRoute, Resource
from edgeface.web.state import PREFIX


class Household(Resource):
    path = f"{PREFIX}/household"

    def routes(self) -> Sequence[PageRoute]:
        return (PageRoute("GET", self.path, self.page, html=True),)

    def page(self, request: Request) -> Reply:
        s = self.state
        gallery = s.gallery()
        seen = s.presence() if s.presence is not None else {}
        enrolled = {person_id(p.name): p.name for p in gallery.people} if gallery is not None else {}
        now = time.time()
        rows = []
        for key in sorted(set(enrolled) | set(seen), key=lambda k: str(seen.get(k, {}).get("name")
                                                                        or enrolled.get(k, "")).casefold()):
            report = seen.get(key, {})
            last = report.get("last_seen")
            rows.append(pages.HouseholdRow(enrolled.get(key) or str(report.get("name", "")),
                                           report.get("state") == "home", str(report.get("camera", "")),
                                           now - last if isinstance(last, (int, float)) else None, key in enrolled))
        return Reply.html(pages.household_page(s.frame(request, gallery), rows, s.shared, s.presence is not None,
                                               s.note(request)))

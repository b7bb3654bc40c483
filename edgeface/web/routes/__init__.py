"""The page's routes, grouped by resource, each a small class over the page's state (``PageState``):

* ``live``        ``/ui/`` the live view, ``/ui/api/live``, ``/ui/live.jpg``, ``/ui/api/stats``;
* ``unknown``     ``/ui/unknown``: the faces nobody could name; name them, keep them as a stranger's, ignore;
* ``people``      ``/ui/people``: the people enrolled; remove a photo, rename, remove;
* ``recent``      ``/ui/recent``: the last recognitions; "Not X";
* ``thresholds``  ``/ui/thresholds``: the thresholds, recalibration, strangers' faces;
* ``signin``      ``/ui/login``, ``/ui/logout``;
* ``assets``      ``/ui/face.jpg`` (each face from its resource), ``/ui/static/``.

``mount`` adds them all to the server's router, each behind the page's guard and with its security headers.
"""

from __future__ import annotations

from typing import Sequence

from edgeface.daemon.server import MAX_FORM_BYTES, Handler, Reply, Request, Router
from edgeface.web.guard import SECURITY_HEADERS, Guard
from edgeface.web.routes.assets import Assets
from edgeface.web.routes.base import PageRoute
from edgeface.web.routes.live import Live
from edgeface.web.routes.people import People
from edgeface.web.routes.recent import Recent
from edgeface.web.routes.signin import SignIn
from edgeface.web.routes.thresholds import Thresholds
from edgeface.web.routes.unknown import Unknown
from edgeface.web.state import PageState


def page_routes(state: PageState, guard: Guard) -> list[PageRoute]:
    """Every route of the page."""
    people, recent, thresholds = People(state), Recent(state), Thresholds(state)
    assets = Assets(state, {"person": people.crop, "stranger": thresholds.crop, "recent": recent.crop})
    resources = (Live(state), Unknown(state), people, recent, thresholds, SignIn(guard), assets)
    return [route for resource in resources for route in resource.routes()]


def mount(router: Router, state: PageState, guard: Guard) -> Sequence[PageRoute]:
    """Add the page's routes to ``router``; returns them."""
    routes = page_routes(state, guard)
    guard.public = tuple(route.path for route in routes if route.public)
    for route in routes:
        router.route(route.method, route.path, guarded(route.handler, guard), public=True)
    return routes


def guarded(handler: Handler, guard: Guard) -> Handler:
    def answer(request: Request) -> Reply:
        if len(request.body) > MAX_FORM_BYTES:
            reply = Reply.text("request body too large", 413)
        else:
            reply = guard.check(request) or handler(request)
        return reply.with_headers({**SECURITY_HEADERS, **reply.headers})

    return answer

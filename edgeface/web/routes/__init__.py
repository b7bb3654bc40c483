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

from edgeface.daemon.http import Handler, Reply, Request
from edgeface.daemon.server import Router
from edgeface.web.guard import SECURITY_HEADERS, check_form
from edgeface.web.routes.assets import Assets
from edgeface.web.routes.base import PageRoute
from edgeface.web.routes.live import Live
from edgeface.web.routes.people import People
from edgeface.web.routes.recent import Recent
from edgeface.web.routes.signin import SignIn, sign_in_first
from edgeface.web.routes.thresholds import Thresholds
from edgeface.web.routes.unknown import Unknown
from edgeface.web.state import PageState


def page_routes(state: PageState, router: Router) -> list[PageRoute]:
    """Every route of the page."""
    people, recent, thresholds = People(state), Recent(state), Thresholds(state)
    assets = Assets(state, {"person": people.crop, "stranger": thresholds.crop, "recent": recent.crop})
    resources = (Live(state), Unknown(state), people, recent, thresholds, SignIn(router.access), assets)
    return [route for resource in resources for route in resource.routes()]


def mount(router: Router, state: PageState) -> list[PageRoute]:
    """Add the page's routes to ``router`` (whose access check comes first, as for every route); returns them."""
    routes = page_routes(state, router)
    for route in routes:
        handler = route.handler if route.public or route.method != "POST" else from_the_page(route.handler, state)
        router.route(route.method, route.path, with_headers(handler), public=route.public,
                     on_unauthorized=with_headers(sign_in_first) if route.html else None)
    return routes


def from_the_page(handler: Handler, state: PageState) -> Handler:
    """``handler`` for forms posted from the page only (its form token, its origin)."""
    def answer(request: Request) -> Reply:
        return check_form(request, state.csrf) or handler(request)

    return answer


def with_headers(handler: Handler) -> Handler:
    def answer(request: Request) -> Reply:
        reply = handler(request)
        return reply.with_headers({**SECURITY_HEADERS, **reply.headers})

    return answer

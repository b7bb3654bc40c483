"""What a resource of the page is: a small class over the page's state that answers a few routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edgeface.daemon.http import Handler, Reply, Request
from edgeface.web.state import PageState


@dataclass(frozen=True)
class PageRoute:
    method: str
    path: str  # the whole path, /ui/... (the server matches exact paths; variable parts go in the query)
    handler: Handler
    public: bool = False  # answered without signing in (the sign-in form, the style sheet and script)
    html: bool = False  # a page a browser opens: without a token, it is led to the sign-in form


class Resource:
    """One page of the site over the page's state: ``page`` answers GET at ``path``, ``act`` its forms' POST
    (both then answered with a redirect back to ``path``, which shows how it went)."""

    path = ""

    def __init__(self, state: PageState) -> None:
        self.state = state

    def routes(self) -> Sequence[PageRoute]:
        return PageRoute("GET", self.path, self.page, html=True), PageRoute("POST", self.path, self.act)

    def page(self, request: Request) -> Reply:
        raise NotImplementedError

    def act(self, request: Request) -> Reply:
        raise NotImplementedError

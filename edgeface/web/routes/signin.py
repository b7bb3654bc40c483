"""Signing in and out, when the daemon's HTTP server has a token: the sign-in form, and the cookie it sets."""

from __future__ import annotations

import time
from typing import Sequence

from edgeface.daemon.server import Reply, Request
from edgeface.web import pages
from edgeface.web.guard import Guard
from edgeface.web.routes.base import PageRoute
from edgeface.web.state import PREFIX

FAILED_SIGN_IN_DELAY = 1.0  # seconds: guessing the token stays slow


def local_path(path: str, default: str = f"{PREFIX}/") -> str:
    """A page of this site to go back to, never another site's."""
    return path if path.startswith(f"{PREFIX}/") and "//" not in path and "\\" not in path else default


class SignIn:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def routes(self) -> Sequence[PageRoute]:
        return (PageRoute("GET", f"{PREFIX}/login", self.page, public=True),
                PageRoute("POST", f"{PREFIX}/login", self.sign_in, public=True),
                PageRoute("POST", f"{PREFIX}/logout", self.sign_out))

    def page(self, request: Request) -> Reply:
        if not self.guard.has_token:
            return Reply.redirect(f"{PREFIX}/")
        return Reply.html(pages.login_page(local_path(request.arg("next"))))

    def sign_in(self, request: Request) -> Reply:
        cookie = self.guard.sign_in(request.field("token"))
        if cookie is None:
            time.sleep(FAILED_SIGN_IN_DELAY)
            return Reply.html(pages.login_page(local_path(request.field("next")), "Wrong token."), 401)
        return Reply.redirect(local_path(request.field("next"))).with_headers({"Set-Cookie": cookie})

    def sign_out(self, request: Request) -> Reply:
        return Reply.redirect(f"{PREFIX}/login").with_headers({"Set-Cookie": self.guard.sign_out()})

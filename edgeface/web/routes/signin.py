"""Signing in and out, when the daemon's HTTP server has a token: the sign-in form trades the token for a
session (``edgeface.daemon.access``: a random id in a cookie for the page's paths, never the token itself);
signing out revokes it. Wrong tokens are limited per client by the same rule as the ``Authorization``
header's: 429 with ``Retry-After``, and no request ever waits."""

from __future__ import annotations

import re
from typing import Sequence

from edgeface.daemon.access import Access
from edgeface.daemon.http import Reply, Request
from edgeface.web import pages
from edgeface.web.routes.base import PageRoute
from edgeface.web.state import PREFIX

# A path of this site to go back to after signing in or a form: no scheme, no host, no "//", no backslash,
# nothing but the characters of the page's own addresses (a redirect never leads to another site).
_LOCAL = re.compile(rf"{re.escape(PREFIX)}/(?!/)[A-Za-z0-9/_.\-]*(\?[A-Za-z0-9=&_.\-%]*)?(#[A-Za-z0-9_\-]*)?")


def local_path(path: str, default: str = f"{PREFIX}/") -> str:
    """``path`` if it is a page of this site, else ``default``."""
    return path if len(path) <= 512 and _LOCAL.fullmatch(path) and "//" not in path else default


def sign_in_first(request: Request) -> Reply:
    """What a browser gets for a page without a session: the sign-in form, then back to that page."""
    return Reply.redirect(f"{PREFIX}/login?next={local_path(request.path)}")


class SignIn:
    def __init__(self, access: Access) -> None:
        self.access = access

    def routes(self) -> Sequence[PageRoute]:
        return (PageRoute("GET", f"{PREFIX}/login", self.page, public=True),
                PageRoute("POST", f"{PREFIX}/login", self.sign_in, public=True),
                PageRoute("POST", f"{PREFIX}/logout", self.sign_out))

    def page(self, request: Request) -> Reply:
        if not self.access.has_token:
            return Reply.redirect(f"{PREFIX}/")
        return Reply.html(pages.login_page(local_path(request.arg("next"))))

    def sign_in(self, request: Request) -> Reply:
        back = local_path(request.field("next"))
        if not self.access.has_token:
            return Reply.redirect(back)
        verdict = self.access.sign_in(request, request.field("token"))
        if verdict.status == 429:
            return Reply.html(pages.login_page(back, f"Too many wrong tokens: try again in {verdict.retry_after} s."),
                              429).with_headers({"Retry-After": str(verdict.retry_after)})
        if verdict.status:
            return Reply.html(pages.login_page(back, "Wrong token."), 401)
        return Reply.redirect(back).with_headers({"Set-Cookie": self.access.cookie(verdict.session, f"{PREFIX}/")})

    def sign_out(self, request: Request) -> Reply:
        self.access.sign_out(request.session)
        expired = self.access.expired_cookie(f"{PREFIX}/")
        return Reply.redirect(f"{PREFIX}/login").with_headers({"Set-Cookie": expired})

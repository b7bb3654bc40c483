"""Who may use the page: the API's token (from a header or the page's login cookie), the host it is asked for
under, and forms posted from the page itself only.

* **Token**: when the daemon's HTTP API has a token, every page but the sign-in form needs it, either as
  ``Authorization: Bearer <token>`` (scripts) or in the cookie the sign-in form sets: HttpOnly (no script
  reads it) and SameSite=Strict (no other site's link or form sends it), for the page's paths only.
* **Host**: requests must name the device by an IP address, ``localhost``, this machine's host name, or a
  name in ``[web] hosts``. A web site that points its own name at the device (DNS rebinding) is refused, so it
  cannot read the page even where there is no token (localhost).
* **CSRF**: every POST must carry the page's form token (random, made at start, so a form from before a
  restart is refused with a request to reload) and, when the browser says where it comes from (``Origin``),
  come from the page's own origin.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from typing import Callable
from urllib.parse import urlsplit

from edgeface.daemon.server import Reply, Request

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Only the page's own files: no inline script, nothing fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
SESSION_COOKIE = "edgeface_session"
SESSION_DAYS = 30


class Guard:
    """Checks every request to the page; ``check`` returns a refusal, or None to let it through."""

    def __init__(self, prefix: str, check_token: Callable[[str], bool], has_token: bool, csrf: str, hosts: str = "",
                 public: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.check_token = check_token
        self.has_token = has_token
        self.csrf = csrf
        name = socket.gethostname().split(".")[0].lower()
        self.hosts = {"localhost", name, f"{name}.local"} | {h.strip().lower() for h in hosts.split(",") if h.strip()}
        self.public = public

    def check(self, request: Request) -> Reply | None:
        if not self.host_allowed(request.headers.get("host", "")):
            return Reply.text("this page answers to the device's IP address or host name only "
                                 "(add other names to [web] hosts)", 421)
        public = self.is_public(request.path)
        if not public and not self.signed_in(request):
            if request.method in ("GET", "HEAD") and not request.path.startswith(f"{self.prefix}/api/"):
                return Reply.redirect(f"{self.prefix}/login?next={request.path}")
            return Reply.text("sign in first: this page needs the daemon's token", 401)
        if request.method == "POST":
            if not self.same_origin(request):
                return Reply.text("refused: the form was sent from another site", 403)
            if not public and not hmac.compare_digest(request.field("csrf"), self.csrf):
                return Reply.text("refused: the page was out of date (the daemon restarted?); reload it and "
                                     "try again", 403)
        return None

    def is_public(self, path: str) -> bool:
        """The sign-in form and the style sheet and script (``public`` entries ending in / are folders)."""
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.public)

    def host_allowed(self, host: str) -> bool:
        name = urlsplit(f"//{host}").hostname or ""
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    @staticmethod
    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:  # older browsers send none on same-origin posts; the form token still applies
            return True
        return urlsplit(origin).netloc == request.headers.get("host", "")

    def signed_in(self, request: Request) -> bool:
        if not self.has_token:
            return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.check_token(presented):
            return True
        try:
            presented = base64.urlsafe_b64decode(request.cookies.get(SESSION_COOKIE, "")).decode("utf-8")
        except (binascii.Error, ValueError):
            return False
        return bool(presented) and self.check_token(presented)

    def sign_in(self, given: str) -> str | None:
        """The Set-Cookie value for the right token, None for a wrong one."""
        if not self.has_token or not given.strip() or not self.check_token(given):
            return None
        value = base64.urlsafe_b64encode(given.strip().encode("utf-8")).decode("ascii")  # any token, cookie-safe
        return (f"{SESSION_COOKIE}={value}; Path={self.prefix}/; HttpOnly; SameSite=Strict; "
                f"Max-Age={SESSION_DAYS * 86400}")

    def sign_out(self) -> str:
        return f"{SESSION_COOKIE}=; Path={self.prefix}/; HttpOnly; SameSite=Strict; Max-Age=0"

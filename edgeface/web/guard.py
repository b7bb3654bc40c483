"""What the page adds to the server's own checks (``edgeface.daemon.access``: host name, token or sign-in
session, for every route): forms posted from the page itself only, and headers that keep a browser from
misusing its answers.

* **CSRF**: every POST but the sign-in form's must carry the page's form token (random, made at start, so a form
  from before a restart is refused with a request to reload) and, when the browser says where it comes from
  (``Origin``), come from the page's own origin.
* **Headers**: no caching, no MIME sniffing, no framing by another site, and a Content-Security-Policy that
  allows the page's own files only.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from edgeface.daemon.http import Reply, Request

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Only the page's own files: no inline script, nothing fetched from elsewhere.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def check_form(request: Request, csrf: str) -> Reply | None:
    """A refusal (403) for a POST that is not the page's own form, else None."""
    if not same_origin(request):
        return Reply.text("refused: the form was sent from another site", 403)
    if not hmac.compare_digest(request.field("csrf").encode("utf-8", "replace"), csrf.encode()):
        return Reply.text("refused: the page was out of date (the daemon restarted?); reload it and try again", 403)
    return None


def same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # older browsers send none on same-origin posts; the form token still applies
        return True
    try:
        return urlsplit(origin).netloc == request.headers.get("host", "")
    except ValueError:  # not a URL
        return False

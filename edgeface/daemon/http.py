"""What the daemon's HTTP server and its routes pass each other: a ``Request`` (complete, read and bounded by the
server), a ``Reply`` (the one answer type of the daemon's routes and the web page's), and ``HttpError``, which
any step of answering raises to refuse a malformed request with a 4xx and one line saying why.

Everything a request carries is bounded and parsed strictly here, once: a form is at most ``MAX_FORM_BYTES``
of ``application/x-www-form-urlencoded`` UTF-8 with at most ``MAX_FIELDS`` fields, the query at most
``MAX_FIELDS`` parameters; anything else is a 4xx, never a traceback. A redirect's ``Location`` is
percent-encoded, so no value from a request can split a header.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field, replace
from functools import cached_property
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable, Mapping

MAX_FORM_BYTES = 64 * 1024  # a page's forms send a few hundred bytes
MAX_FIELDS = 256  # form fields or query parameters (a card of unknown faces sends about 12)
FORM_TYPE = "application/x-www-form-urlencoded"
LOCATION_SAFE = "/?&=%#:;@!$'()*+,~-._"  # kept as they are in a redirect; anything else is percent-encoded


class HttpError(Exception):
    """A request refused with ``status`` (a 4xx) and ``message`` (one line, nothing secret in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def reply(self) -> "Reply":
        return Reply.json({"error": self.message}, self.status)


def parse_query(text: str) -> dict[str, list[str]]:
    """A query string or a form body as ``{name: [values]}`` (``HttpError`` 400 when it is not one)."""
    try:
        return urllib.parse.parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise HttpError(400, "a field is not UTF-8 once percent-decoded") from None
    except ValueError:
        raise HttpError(400, f"more than {MAX_FIELDS} fields") from None


@dataclass(frozen=True)
class Request:
    """One complete HTTP request as a route handler sees it. Header names are lower case. ``session``: the
    sign-in session that let it through, if one did (set by the server's access check)."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    remote: str = ""
    session: str = ""

    def arg(self, name: str, default: str = "") -> str:
        """The first value of the query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    @cached_property
    def form(self) -> dict[str, list[str]]:
        """The body as a form: 413 past ``MAX_FORM_BYTES``, 415 for another content type, 400 when it does not
        parse (not UTF-8, too many fields)."""
        if not self.body:
            return {}
        if len(self.body) > MAX_FORM_BYTES:
            raise HttpError(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
        kind = self.headers.get("content-type", FORM_TYPE).split(";", 1)[0].strip().lower()
        if kind != FORM_TYPE:
            raise HttpError(415, f"a form must be sent as {FORM_TYPE}")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the form is not UTF-8") from None
        return parse_query(text)

    def field(self, name: str, default: str = "") -> str:
        """The first value of the form field ``name``."""
        values = self.form.get(name)
        return values[0] if values else default

    @cached_property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: the daemon's routes and the web page's alike. ``headers`` come on top of the
    ``Content-Type`` (and may replace the server's ``Cache-Control: no-store``)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Reply":
        return cls(status, text.encode("utf-8"))

    @classmethod
    def html(cls, text: str, status: int = 200) -> "Reply":
        return cls(status, text.encode("utf-8"), "text/html; charset=utf-8")

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "Reply":
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    @classmethod
    def jpeg(cls, data: bytes, cache: bool = False) -> "Reply":
        """A face crop or frame; ``cache`` for images named by their content (or an id never reused)."""
        return cls(200, data, "image/jpeg", {"Cache-Control": "private, max-age=86400"} if cache else {})

    @classmethod
    def redirect(cls, location: str) -> "Reply":
        """303 See Other: after a form's POST the browser asks for ``location`` with GET (no resubmission)."""
        return cls(303, b"", "text/plain", {"Location": urllib.parse.quote(location, safe=LOCATION_SAFE)})

    def with_headers(self, headers: Mapping[str, str]) -> "Reply":
        """This reply with ``headers`` added (or replacing those of the same name)."""
        return replace(self, headers={**self.headers, **headers})


Handler = Callable[[Request], Reply]

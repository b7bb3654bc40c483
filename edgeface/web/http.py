"""The page's side of the daemon's HTTP server: answers, form fields and cookies, and routes added with a guard.

The server (``edgeface.daemon.server``) matches exact paths, so every variable part of a page's address is in
its query (``/ui/face.jpg?of=person&id=...``). The page's routes are added as ``public``: the server lets them
through without its bearer-token check and ``Guard`` (``edgeface.web.guard``) checks every request instead,
accepting the token from the page's sign-in cookie as well as from the header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from edgeface.daemon.server import HttpServer, Reply, Request

MAX_FORM_BYTES = 64 * 1024  # the page's forms send a few hundred bytes


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def html(cls, text: str, status: int = 200) -> "Response":
        return cls(status, text.encode("utf-8"))

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "Response":
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    @classmethod
    def text(cls, text: str, status: int) -> "Response":
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    @classmethod
    def jpeg(cls, data: bytes, cache: bool = False) -> "Response":
        # Faces are named by their content (or an id never reused), so the browser may keep them.
        return cls(200, data, "image/jpeg", {"Cache-Control": "private, max-age=86400"} if cache else {})

    @classmethod
    def redirect(cls, location: str) -> "Response":
        """303 See Other: after a form's POST the browser asks for ``location`` with GET (no resubmission)."""
        return cls(303, b"", "text/plain", {"Location": location})


def arg(request: "Request", name: str, default: str = "") -> str:
    values = request.query.get(name)
    return values[0] if values else default


def form(request: "Request") -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (the page's forms send nothing else)."""
    return parse_qs(request.body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)


def field_of(request: "Request", name: str, default: str = "") -> str:
    values = form(request).get(name)
    return values[0] if values else default


def cookies(request: "Request") -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(request.headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


Handler = Callable[["Request"], Response]


def add_routes(server: "HttpServer", routes: Mapping[tuple[str, str], Handler],
               guard: Callable[["Request"], Response | None], headers: Iterable[tuple[str, str]] = ()) -> None:
    """Add ``routes`` ((method, path) -> handler) to the server, each behind ``guard`` (which may answer
    instead: sign-in, host and CSRF checks), with ``headers`` on every answer."""
    common = dict(headers)

    def wrap(handler: Handler) -> Callable[["Request"], "Reply"]:
        def answer(request: "Request") -> "Reply":
            if len(request.body) > MAX_FORM_BYTES:
                response = Response.text("request body too large", 413)
            else:
                response = guard(request) or handler(request)
            return response.status, {**common, "Content-Type": response.content_type, **response.headers}, \
                response.body

        return answer

    for (method, path), handler in routes.items():
        server.route(method, path, wrap(handler), public=True)

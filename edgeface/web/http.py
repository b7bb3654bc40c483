"""The page's side of the daemon's HTTP server: form fields and cookies, and routes added with a guard. The page
answers with the server's own ``Reply``.

The server (``edgeface.daemon.server``) matches exact paths, so every variable part of a page's address is in
its query (``/ui/face.jpg?of=person&id=...``). The page's routes are added as ``public``: the server lets them
through without its bearer-token check and ``Guard`` (``edgeface.web.guard``) checks every request instead,
accepting the token from the page's sign-in cookie as well as from the header.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Callable, Iterable, Mapping
from urllib.parse import parse_qs

from edgeface.daemon.server import Reply

if TYPE_CHECKING:
    from edgeface.daemon.server import HttpServer, Request

MAX_FORM_BYTES = 64 * 1024  # the page's forms send a few hundred bytes


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


Handler = Callable[["Request"], Reply]


def add_routes(server: "HttpServer", routes: Mapping[tuple[str, str], Handler],
               guard: Callable[["Request"], Reply | None], headers: Iterable[tuple[str, str]] = ()) -> None:
    """Add ``routes`` ((method, path) -> handler) to the server, each behind ``guard`` (which may answer
    instead: sign-in, host and CSRF checks), with ``headers`` on every answer."""
    common = dict(headers)

    def wrap(handler: Handler) -> Handler:
        def answer(request: "Request") -> Reply:
            if len(request.body) > MAX_FORM_BYTES:
                reply = Reply.text("request body too large", 413)
            else:
                reply = guard(request) or handler(request)
            return reply.with_headers({**common, **reply.headers})

        return answer

    for (method, path), handler in routes.items():
        server.route(method, path, wrap(handler), public=True)

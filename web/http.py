"""What a page handler sees and returns: a parsed request and a response, both frozen.

The server (web/server.py) builds the :class:`Request` from the wire, refusing what it will not
parse (bodies that are not ``application/x-www-form-urlencoded``, too large, chunked); handlers
never see raw sockets or headers they did not ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import parse_qs, quote, urlencode

HTML: Final = "text/html; charset=utf-8"

Fields = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request: method, path, query and form fields, cookies, headers (lower-case names)."""

    method: str
    path: str
    query: Fields = field(default_factory=dict)
    form: Fields = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The CN of a client certificate that chained to the bus CA (TLS with ``ca_file``), or None.
    certificate_user: str | None = None
    #: The client's address (the TCP peer; behind a proxy, the proxy's).
    peer: str = ""
    #: ``https://host:port`` or ``http://host:port``: what this console's pages are served as.
    origin: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name`` (``default`` when absent)."""
        values = self.query.get(name)
        return values[0] if values else default

    def field(self, name: str, default: str | None = None) -> str | None:
        """The first value of form field ``name`` (``default`` when absent)."""
        values = self.form.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Response:
    """What goes back: status, body, its type, and extra headers (``Set-Cookie`` among them)."""

    status: int
    body: bytes
    content_type: str = HTML
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, *extra: tuple[str, str]) -> Response:
        return Response(self.status, self.body, self.content_type, (*self.headers, *extra))


#: What stays as it is in a Location: a URL's reserved and unreserved characters, and ``%``
#: (a path already percent-encoded keeps its escapes).
_LOCATION_SAFE: Final = "/?&=%#:;@!$'()*+,~-._"


def redirect(location: str, *extra: tuple[str, str]) -> Response:
    """A 303 See Other to a path of this console (after a POST, the browser GETs it).

    Characters outside ASCII are percent-encoded: a header goes out as Latin-1, and the server
    drops the connection on any other character, so a ``next=/€`` in a link sent to an analyst
    would make their sign-in end in a broken connection.
    """
    return Response(303, b"", HTML, (("Location", quote(location, safe=_LOCATION_SAFE)), *extra))


def parse_fields(text: str) -> dict[str, tuple[str, ...]]:
    """Query or form fields; blank values kept (an emptied field is an answer too).

    Raises:
        ValueError: not ``name=value&...`` text.
    """
    parsed = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=2000)
    return {k: tuple(v) for k, v in parsed.items()}


def parse_cookies(header: str | None) -> dict[str, str]:
    """The cookies of a ``Cookie`` header (a broken header gives none, not an error)."""
    if not header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path of this console, else ``default``: a ``next=`` parameter must
    never send a person who just signed in to another site (``//host``, ``/\\host``, a scheme)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(c in target for c in "\\\r\n\t")
        or not target.isprintable()
    ):
        return default
    return target


def with_query(path: str, **params: str | None) -> str:
    """``path`` with the non-empty ``params`` as its query string."""
    kept = {k: v for k, v in params.items() if v}
    return f"{quote(path)}?{urlencode(kept)}" if kept else quote(path)

"""The console on HTTP(S): the standard library's threading HTTP server, and ``ssl``.

Per request, in this order: the ``Host`` header must name this console (DNS rebinding); only GET
and POST are served; a POST body must be a form (``application/x-www-form-urlencoded``) of at
most :data:`MAX_BODY` bytes with a ``Content-Length`` (never chunked: a body this server did not
read must not become the next request); then :meth:`web.app.Console.handle` answers. Every
answer carries the console's security headers (:meth:`web.app.Console.security_headers`); an
unexpected error is a 500 page and a log line naming its type, never a traceback.

TLS reuses the TAXII server's context (TLS 1.2+, client certificates from the bus CA optional);
handshakes run in the connection's own thread with a timeout, so a slow client cannot hold the
listener; connections are bounded in all and per client address (intelbus/httpserve.py).
"""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from intelbus.httpserve import IDLE_TIMEOUT, GuardedServer, handshake, printable
from intelbus.interop.taxii_server import certificate_user
from intelbus.log import get_logger
from web.http import Request, Response, parse_cookies, parse_fields

if TYPE_CHECKING:
    from web.app import Console

log = get_logger("web.server")

MAX_BODY: Final = 256 * 1024
_MAX_URL: Final = 8192
_FORM: Final = "application/x-www-form-urlencoded"


class WebServer(GuardedServer):
    """The console's listener; the console rides on it for the handlers."""

    name = "web"

    def __init__(
        self, address: tuple[str, int], console: Console, context: ssl.SSLContext | None
    ) -> None:
        self.console = console
        super().__init__(address, _Handler, context)

    @property
    def url(self) -> str:
        return self.base_url


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"
    server_version = "intelbus-web"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        try:
            handshake(self.connection, "web.handshake_refused")
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
        # http.server's lines hold the raw request line (a query can hold a search term).
        return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a malformed request line, headers too long): the console's
        # plain page, never the request line quoted back.
        self.close_connection = True
        self._send(self.server.console.plain_error(code), user=None)

    def _send(self, response: Response, *, user: str | None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in self.server.console.security_headers(
            tls=self.server.context is not None
        ):
            self.send_header(name, value)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)
        log.info(
            "web.request",
            method=getattr(self, "command", None),
            path=printable(urlsplit(getattr(self, "path", "")).path[:200]),
            status=response.status,
            user=user,
        )

    def _refuse(self, code: int) -> None:
        self.close_connection = True
        self._send(self.server.console.plain_error(code), user=None)

    def _body(self) -> bytes | None:
        """The form body, or None having refused the request."""
        if "Transfer-Encoding" in self.headers:
            self._refuse(411)
            return None
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit() or len(length_text) > 9:
            self._refuse(400)
            return None
        length = int(length_text)
        if length > MAX_BODY:
            self._refuse(413)
            return None
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if length and kind != _FORM:
            self._refuse(415)
            return None
        return self.rfile.read(length) if length else b""

    def _request(self, method: str, body: bytes) -> Request | None:
        console = self.server.console
        host = self.headers.get("Host", "")
        if not console.host_allowed(host):
            self._refuse(421)
            return None
        split = urlsplit(self.path)
        try:
            query = parse_fields(split.query)
            form = parse_fields(body.decode("utf-8")) if body else {}
        except (ValueError, UnicodeDecodeError):
            self._refuse(400)
            return None
        cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = certificate_user(self.connection.getpeercert())
        scheme = "https" if self.server.context is not None else "http"
        return Request(
            method=method,
            path=split.path,
            query=query,
            form=form,
            cookies=parse_cookies(self.headers.get("Cookie")),
            headers={k.lower(): v for k, v in self.headers.items()},
            certificate_user=cert,
            peer=str(self.client_address[0]),
            origin=f"{scheme}://{host}",
        )

    def _answer(self, method: str) -> None:
        if len(self.path) > _MAX_URL:
            self._refuse(414)
            return
        body = b""
        if method == "POST":
            got = self._body()
            if got is None:
                return
            body = got
        elif self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body this server never reads: not the next request
        request = self._request(method, body)
        if request is None:
            return
        response, user = self.server.console.handle(request)
        self._send(response, user=user)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._send(
            self.server.console.plain_error(405).with_headers(("Allow", "GET, POST")), user=None
        )

    do_PUT = _not_allowed  # noqa: N815
    do_DELETE = _not_allowed  # noqa: N815
    do_PATCH = _not_allowed  # noqa: N815
    do_HEAD = _not_allowed  # noqa: N815
    do_OPTIONS = _not_allowed  # noqa: N815
    do_TRACE = _not_allowed  # noqa: N815

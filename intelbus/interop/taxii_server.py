"""The TAXII service on HTTP(S): the standard library's threading HTTP server, and ``ssl``.

Per request, in this order: only GET is served (anything else 405, after authentication); the
client is authenticated (401 with ``WWW-Authenticate: Basic`` without or with wrong credentials,
403 for a certificate whose CN is no user); ``Accept`` must allow
``application/taxii+json;version=2.1`` (406 otherwise); then :class:`TaxiiService` answers. Every
answer is a TAXII JSON body with that media type; an unexpected error is a 500 TAXII error and a
log line naming its type, never a traceback or record contents.

TLS: with ``cert_file``/``key_file`` the server speaks HTTPS only (TLS 1.2 or later); with
``ca_file`` as well, a client may present a certificate, which must chain to that CA (the bus
CA), or the handshake fails. The listener (intelbus/httpserve.py, shared with the web console)
runs handshakes in the connection's own thread with a timeout, so a slow client cannot hold it,
and bounds connections in all and per client address.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from intelbus.errors import ConfigError, IntelbusError
from intelbus.files import check_private
from intelbus.httpserve import IDLE_TIMEOUT, GuardedServer, handshake, printable
from intelbus.interop.taxii import TAXII_MEDIA_TYPE, Response, TaxiiError, TaxiiService
from intelbus.interop.taxii_auth import Authenticator, AuthFailed, Principal
from intelbus.log import get_logger

log = get_logger("intelbus.interop.taxii_server")

#: Seconds a connection may stay silent (the handshake, a request line, keep-alive).
_MAX_URL: Final = 8192
_REALM: Final = 'Basic realm="intelbus TAXII", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server's certificate chain and key, and the CA its clients' certificates chain to."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """The HTTPS context: TLS 1.2+, the server's identity, client certificates from ``ca_file``.

    Raises:
        ConfigError: the files cannot be loaded.
        InsecureFileError: the key file is open to group or others (a local user could read it
            and pose as this server), as the bus's own TLS key files are refused.
    """
    check_private(tls.key_file, what="TAXII server TLS key file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file is not None:
            ctx.load_verify_locations(tls.ca_file)
            # Optional: Basic users come without one; a certificate that is sent must verify.
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TAXII server's TLS files: {e}") from None
    return ctx


def accepts_taxii(accept: str | None) -> bool:
    """Whether an ``Accept`` header allows TAXII 2.1 JSON (no version parameter means 2.1)."""
    if not accept:
        return False
    for media_range in accept.split(","):
        kind, *params = (p.strip() for p in media_range.split(";"))
        if kind.lower() != "application/taxii+json":
            continue
        version = [
            p.partition("=")[2].strip('"') for p in params if p.lower().startswith("version=")
        ]
        if not version or version == ["2.1"]:
            return True
    return False


def certificate_user(peer: dict[str, Any] | None) -> str | None:
    """The CN of a verified client certificate (``getpeercert()``), or None."""
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TaxiiHttpServer(GuardedServer):
    """The listener; the service and authenticator ride on it for the handlers."""

    name = "taxii"

    def __init__(
        self,
        address: tuple[str, int],
        service: TaxiiService,
        auth: Authenticator,
        context: ssl.SSLContext | None,
    ) -> None:
        self.service = service
        self.auth = auth
        super().__init__(address, _Handler, context)

    @property
    def url(self) -> str:
        return self.base_url + "taxii2/"


class _Handler(BaseHTTPRequestHandler):
    server: TaxiiHttpServer
    protocol_version = "HTTP/1.1"
    # A request line too broken to name a version still gets headers (HTTP/0.9 would get none).
    default_request_version = "HTTP/1.1"
    server_version = "intelbus-taxii"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        try:
            handshake(self.connection, "taxii.handshake_refused")
        except (ssl.SSLError, OSError):
            # A stranger's certificate, no TLS at all, a timeout: drop the connection.
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
        # http.server's own lines hold the raw request line (a query can name an object):
        # requests are logged once, in _send, without the query string.
        return

    def _send(self, response: Response, *, user: str | None) -> None:
        body = json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", TAXII_MEDIA_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)
        log.info(
            "taxii.request",
            method=getattr(self, "command", None),
            path=printable(urlsplit(getattr(self, "path", "")).path[:200]),
            status=response.status,
            user=user,
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a malformed request line, headers too long): a TAXII error
        # message too, not its HTML page.
        # Its message can quote the request line back: the status phrase only.
        self.close_connection = True
        try:
            title = HTTPStatus(code).phrase
        except ValueError:
            title = "error"
        self._send(TaxiiError(code, title).response(), user=None)

    def _certificate_user(self) -> str | None:
        if isinstance(self.connection, ssl.SSLSocket):
            return certificate_user(self.connection.getpeercert())
        return None

    def _principal(self) -> Principal:
        return self.server.auth.authenticate(
            self.headers.get("Authorization"), self._certificate_user()
        )

    def _answer(self, *, read: bool) -> None:
        who: Principal | None = None
        body = self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers
        if not read or body:
            # A request body this server never reads: left on a kept-alive connection, a chunked
            # one would be read as the next request (smuggled past whatever fronts the server).
            self.close_connection = True
        try:
            if len(self.path) > _MAX_URL:
                raise TaxiiError(414, "the URL is too long")
            try:
                who = self._principal()
            except AuthFailed as e:
                headers = (("WWW-Authenticate", _REALM),) if e.status == 401 else ()
                self._send(TaxiiError(e.status, str(e)).response(headers), user=None)
                return
            if not read:
                raise TaxiiError(405, "this server is read-only")
            if not accepts_taxii(self.headers.get("Accept")):
                raise TaxiiError(406, f"Accept must allow {TAXII_MEDIA_TYPE}")
            split = urlsplit(self.path)
            try:
                params = parse_qs(split.query, keep_blank_values=True, strict_parsing=False)
            except ValueError:
                raise TaxiiError(400, "the query string cannot be read") from None
            response = self.server.service.get(split.path, params, who)
        except TaxiiError as e:
            response = e.response((("Allow", "GET"),) if e.status == 405 else ())
        except (IntelbusError, OSError) as e:
            log.warning("taxii.request_failed", error=type(e).__name__)
            response = TaxiiError(500, "the server could not answer").response()
        except Exception as e:  # noqa: BLE001 - a defect: still no traceback to the client
            log.warning("taxii.defect", error=type(e).__name__)
            response = TaxiiError(500, "the server could not answer").response()
        self._send(response, user=None if who is None else who.user)

    def do_GET(self) -> None:
        self._answer(read=True)

    def do_POST(self) -> None:
        self._answer(read=False)

    do_PUT = do_POST  # noqa: N815
    do_DELETE = do_POST  # noqa: N815
    do_PATCH = do_POST  # noqa: N815
    do_HEAD = do_POST  # noqa: N815

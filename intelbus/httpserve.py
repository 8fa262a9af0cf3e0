"""The HTTP(S) listener the TAXII server and the web console share: the standard library's
threading server, bounded and careful about what it does before a request is understood.

* At most ``max_connections`` connections are served at once, and at most ``max_per_address``
  from one client address: one client opening idle connections (each waits ``IDLE_TIMEOUT`` for
  its request) must not lock everyone else out. More are closed at once, not queued. (Clients
  behind one address, or many addresses, can still fill the slots: a bound, not a cure; a server
  on a network belongs behind a proxy with its own limits.)
* Binding never looks the host's name up (``HTTPServer.server_bind`` would: a DNS query that can
  hang).
* With a TLS context, the handshake runs later, in the connection's own thread
  (:func:`handshake`, from the handler's ``setup``), with the handler's timeout, so a slow or
  silent client cannot hold the listener.
* A connection that fails logs one line naming the error's type, never a traceback.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from intelbus.log import get_logger

log = get_logger("intelbus.httpserve")

#: Seconds a connection may stay silent (the handshake, a request line, keep-alive).
IDLE_TIMEOUT: Final = 30.0
MAX_CONNECTIONS: Final = 64
MAX_PER_ADDRESS: Final = 16


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped: a request line may carry an escape
    sequence (ESC is not whitespace to http.server), and the console log renders strings raw, so
    an unauthenticated client could otherwise drive the operator's terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def handshake(connection: socket.socket, event: str) -> None:
    """Finish a TLS handshake in the connection's own thread (a no-op for plain HTTP).

    Raises:
        ssl.SSLError, OSError: a stranger's certificate, no TLS at all, a timeout (logged as
            ``event``; the connection is dropped).
    """
    if isinstance(connection, ssl.SSLSocket):
        try:
            connection.do_handshake()
        except (ssl.SSLError, OSError) as e:
            log.info(event, reason=type(e).__name__)
            raise


class GuardedServer(ThreadingHTTPServer):
    """A bounded threading HTTP(S) listener (module docstring)."""

    daemon_threads = True
    request_queue_size = 64
    #: The log event of a connection refused for want of a slot, and of a failed one.
    name = "http"
    max_connections = MAX_CONNECTIONS
    max_per_address = MAX_PER_ADDRESS

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext | None,
    ) -> None:
        self.context = context
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._per_address: dict[str, int] = {}
        self._count_lock = threading.Lock()
        # Event names: "taxii.too_many_connections", "web.connection_failed"...
        self._full_event = self.name + ".too_many_connections"
        self._failed_event = self.name + ".connection_failed"
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        peer = str(client_address[0])
        with self._count_lock:
            held = self._per_address.get(peer, 0)
            refused = held >= self.max_per_address
            if not refused:
                self._per_address[peer] = held + 1
        if refused:
            log.warning(self._full_event, scope="address")
            self.shutdown_request(request)
            return
        if not self._slots.acquire(blocking=False):
            self._release(peer)
            log.warning(self._full_event)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _release(self, peer: str) -> None:
        with self._count_lock:
            left = self._per_address.get(peer, 1) - 1
            if left > 0:
                self._per_address[peer] = left
            else:
                self._per_address.pop(peer, None)

    def process_request_thread(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._release(str(client_address[0]))

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.context is not None:
            # The handshake runs later, in the handler's thread (handshake()).
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        # socketserver would print a traceback to stderr: one line, with the type only.
        log.warning(self._failed_event, error=type(sys.exc_info()[1]).__name__)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        """``scheme://host:port/`` of the listener."""
        host = str(self.server_address[0])
        scheme = "https" if self.context is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{self.port}/"

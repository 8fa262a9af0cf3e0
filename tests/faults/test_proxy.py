"""The fault proxy on a local echo server: each mode does what the fault suite relies on."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.faults.proxy import Mode, TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    p = TcpProxy(lambda: ("127.0.0.1", port))
    p.start()
    try:
        yield p
    finally:
        p.stop()
        server.shutdown()
        server.server_close()


def _connect(p: TcpProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.settimeout(5)
    return s


def _roundtrip(s: socket.socket, payload: bytes) -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("mode", [Mode.PASS, Mode.DELAY, Mode.TRICKLE])
def test_forwarding_modes_deliver_every_byte_in_order(proxy: TcpProxy, mode: Mode) -> None:
    proxy.set_mode(mode, delay_s=0.01, rate_bytes_per_s=400_000)
    payload = bytes(range(256)) * 200
    with _connect(proxy) as s:
        assert _roundtrip(s, payload) == payload
    assert proxy.stats.forwarded_bytes >= 2 * len(payload)


def test_blackhole_silences_open_connections_and_leaving_it_resets_them(proxy: TcpProxy) -> None:
    with _connect(proxy) as s:
        assert _roundtrip(s, b"hello") == b"hello"
        proxy.set_mode(Mode.BLACKHOLE)
        s.sendall(b"into the void")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)
        proxy.set_mode(Mode.PASS)
        s.settimeout(5)
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    assert proxy.stats.dropped_bytes >= len(b"into the void")
    with _connect(proxy) as s2:
        assert _roundtrip(s2, b"again") == b"again"


def _refused(p: TcpProxy) -> bool:
    """True when the proxy's side resets (or closes) the connection instead of echoing."""
    try:
        with _connect(p) as s:
            s.sendall(b"x")
            return s.recv(10) != b"x"
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_reset_mode_resets_new_connections(proxy: TcpProxy) -> None:
    assert not _refused(proxy)
    proxy.set_mode(Mode.RESET)
    assert _refused(proxy)
    assert proxy.stats.resets >= 1

"""A small userspace TCP proxy to put in front of a broker: pass, delay, blackhole, reset, trickle.

There is no ``netem`` or ``iptables`` here (SECURITY.md), so network faults come from this proxy.
The broker must advertise the proxy's port (``LocalKafka(advertised_ports=...)``), so that clients
*and the other brokers' replica fetchers* reach it through the proxy: blackholing a broker's proxy
cuts it off from its clients and from the followers that fetch from it, while its controller
connection (a separate listener) stays up, like a partition of its data network.

Modes:

* ``pass``: forward bytes both ways.
* ``delay``: hold every chunk ``delay_s`` before forwarding it (order kept per direction).
* ``trickle``: forward at most ``rate_bytes_per_s`` per direction.
* ``blackhole``: open connections go silent (bytes are read and dropped, nothing is closed); new
  connections are accepted and then ignored. Leaving blackhole resets the silenced connections,
  since bytes dropped mid-stream leave them unusable (clients reconnect, as after a real partition).
* ``reset``: every open connection is reset (RST), and new ones are reset on accept.

The proxy runs its own asyncio loop in a daemon thread; :meth:`TcpProxy.set_mode` may be called
from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

CHUNK = 64 * 1024


class Mode(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a proxy mode, not a password
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    TRICKLE = "trickle"


@dataclass(frozen=True, slots=True)
class Settings:
    """The proxy's current behaviour."""

    mode: Mode = Mode.PASS
    delay_s: float = 0.05
    rate_bytes_per_s: int = 64 * 1024


@dataclass(slots=True)
class ProxyStats:
    """Counters, for the report card and for tests that check the proxy was actually in the path."""

    connections: int = 0
    forwarded_bytes: int = 0
    dropped_bytes: int = 0
    resets: int = 0


@dataclass(eq=False, slots=True)
class _Conn:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    silenced: bool = False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not a polite FIN: the peer sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Listens on ``host:port`` (0: any free port) and forwards to ``upstream()``.

    ``upstream`` is called per connection, so the proxy can be started before the broker it fronts
    has chosen its port.
    """

    def __init__(
        self, upstream: Callable[[], tuple[str, int]], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._upstream = upstream
        self._host = host
        self._want_port = port
        self.port = 0
        self.stats = ProxyStats()
        self._settings = Settings()
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Start listening; returns the port."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self._host, self._want_port)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"proxy-{self._want_port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self.port

    def stop(self) -> None:
        """Reset every connection, stop listening and end the loop's thread."""
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                for w in conn.writers:
                    _reset(w)
            self._conns.clear()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._settings.mode

    def set_mode(
        self, mode: Mode, *, delay_s: float | None = None, rate_bytes_per_s: int | None = None
    ) -> None:
        """Switch mode now (from any thread); applies to open connections too."""
        if self._loop is None:
            raise RuntimeError("the proxy is not running")
        new = Settings(
            mode,
            self._settings.delay_s if delay_s is None else delay_s,
            self._settings.rate_bytes_per_s if rate_bytes_per_s is None else rate_bytes_per_s,
        )

        async def apply() -> None:
            old = self._settings
            self._settings = new
            if mode is Mode.BLACKHOLE:
                for conn in self._conns:
                    conn.silenced = True
            elif mode is Mode.RESET or old.mode is Mode.BLACKHOLE:
                for conn in [c for c in self._conns if mode is Mode.RESET or c.silenced]:
                    self._drop(conn)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    # -- data path ---------------------------------------------------------------------------------

    def _drop(self, conn: _Conn) -> None:
        for w in conn.writers:
            _reset(w)
        self.stats.resets += 1
        self._conns.discard(conn)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        conn = _Conn([writer])
        if self._settings.mode is Mode.RESET:
            _reset(writer)
            self.stats.resets += 1
            return
        self._conns.add(conn)
        try:
            if self._settings.mode is Mode.BLACKHOLE:
                conn.silenced = True
                await self._sink(reader, conn)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._upstream())
            except OSError:
                _reset(writer)  # the broker is down: the client sees a refused/reset connection
                return
            conn.writers.append(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, conn), self._pipe(up_reader, writer, conn)
            )
        finally:
            self._conns.discard(conn)
            for w in conn.writers:
                with contextlib.suppress(Exception):
                    w.close()

    async def _sink(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while conn in self._conns:
            data = await reader.read(CHUNK)
            if not data:
                return
            self.stats.dropped_bytes += len(data)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                s = self._settings
                if conn.silenced:
                    self.stats.dropped_bytes += len(data)
                    continue
                self.stats.forwarded_bytes += len(data)
                if s.mode is Mode.DELAY:
                    await asyncio.sleep(s.delay_s)
                if s.mode is Mode.TRICKLE:
                    step = max(1, s.rate_bytes_per_s // 20)
                    for i in range(0, len(data), step):
                        dst.write(data[i : i + step])
                        await dst.drain()
                        await asyncio.sleep(0.05)
                else:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side closed: close the other (unless silenced: a blackhole never says goodbye).
            if not conn.silenced:
                for w in conn.writers:
                    with contextlib.suppress(Exception):
                        w.close()

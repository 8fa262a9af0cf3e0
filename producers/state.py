"""A producer's durable stream state: sequence numbers, the hash chain, and unacknowledged sends.

The rule that keeps a producer's chain linear across crashes: a sealed record is written here
(``reserve``) *before* it is sent, in the same transaction that advances the stream's sequence and
last digest. So after any crash:

* a sequence number is never reused (it was reserved durably before the send), and the chain
  never forks (the next record chains to the last *reserved* one, sent or not);
* a record whose send was never acknowledged is still here as ``pending`` and is resent
  **byte for byte** (same record id, same signature) by :meth:`ProducerState.pending`, never
  re-sealed; consumers treat a copy they already hold as a replay, which is harmless.

SQLite with ``journal_mode=WAL`` and ``synchronous=FULL``: a reservation is on disk when
``reserve`` returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intelbus.chain import GENESIS_DIGEST

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    last_digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sends (
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    record_id TEXT NOT NULL UNIQUE,
    sealed BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'acked')),
    partition INTEGER,
    offset INTEGER,
    PRIMARY KEY (stream, sequence)
);
"""


@dataclass(frozen=True, slots=True)
class StreamHead:
    """Where a stream stands: the next record gets ``last_sequence + 1`` and chains to ``last_digest``."""

    stream: str
    last_sequence: int
    last_digest: bytes

    @property
    def next_sequence(self) -> int:
        return self.last_sequence + 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A sealed record to reserve as the next record of ``head.stream``."""

    head: StreamHead  # the stream's head before this record
    record_id: str
    digest: bytes
    sealed: bytes


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A sealed record reserved but not yet acknowledged by the broker."""

    stream: str
    sequence: int
    record_id: str
    sealed: bytes


class ProducerState:
    """The durable state of one producer (one file per producer identity and environment)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def head(self, stream: str) -> StreamHead:
        """The stream's head (an empty stream starts at -1 with the genesis digest)."""
        row = self._db.execute(
            "SELECT last_sequence, last_digest FROM streams WHERE stream = ?", (stream,)
        ).fetchone()
        if row is None:
            return StreamHead(stream, -1, GENESIS_DIGEST)
        return StreamHead(stream, int(row[0]), bytes(row[1]))

    def heads(self) -> list[StreamHead]:
        """Every stream's head (for heartbeats)."""
        rows = self._db.execute(
            "SELECT stream, last_sequence, last_digest FROM streams ORDER BY stream"
        )
        return [StreamHead(r[0], int(r[1]), bytes(r[2])) for r in rows]

    def reserve(self, head: StreamHead, *, record_id: str, digest: bytes, sealed: bytes) -> None:
        """Durably record a sealed record as the stream's next one, before it is sent.

        Raises:
            RuntimeError: ``head`` is stale (another writer advanced the stream): never fork.
        """
        self.reserve_many([Reservation(head, record_id, digest, sealed)])

    def reserve_many(self, reservations: Sequence[Reservation]) -> None:
        """Durably record several sealed records, in order, in one transaction (one fsync).

        Each reservation's ``head`` must be where its stream stands once the reservations before
        it are applied: the first of a stream matches the stored head, each later one continues
        the one before it (its sequence and digest).

        Raises:
            RuntimeError: a head is stale or the reservations do not chain: nothing is written.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            heads: dict[str, StreamHead] = {}
            for r in reservations:
                current = heads.get(r.head.stream) or self.head(r.head.stream)
                if current != r.head:
                    raise RuntimeError(
                        f"stream {r.head.stream} moved on from sequence {r.head.last_sequence}"
                    )
                self._db.execute(
                    "INSERT INTO sends (stream, sequence, record_id, sealed, status) "
                    "VALUES (?, ?, ?, ?, 'pending')",
                    (r.head.stream, r.head.next_sequence, r.record_id, r.sealed),
                )
                heads[r.head.stream] = StreamHead(r.head.stream, r.head.next_sequence, r.digest)
            for head in heads.values():
                self._db.execute(
                    "INSERT INTO streams (stream, last_sequence, last_digest) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET last_sequence = excluded.last_sequence, "
                    "last_digest = excluded.last_digest",
                    (head.stream, head.last_sequence, head.last_digest),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def acknowledge(self, record_id: str, partition: int, offset: int) -> None:
        """Mark a send acknowledged by the broker (acks=all)."""
        self.acknowledge_many([(record_id, partition, offset)])

    def acknowledge_many(self, acks: Sequence[tuple[str, int, int]]) -> None:
        """Mark several sends (record id, partition, offset) acknowledged, in one transaction."""
        if not acks:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "UPDATE sends SET status = 'acked', partition = ?, offset = ?, sealed = x'' "
                "WHERE record_id = ?",
                [(partition, offset, record_id) for record_id, partition, offset in acks],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def pending(self) -> list[PendingSend]:
        """Reserved but unacknowledged records, in stream and sequence order: resend them first."""
        rows = self._db.execute(
            "SELECT stream, sequence, record_id, sealed FROM sends WHERE status = 'pending' "
            "ORDER BY stream, sequence"
        )
        return [PendingSend(r[0], int(r[1]), r[2], bytes(r[3])) for r in rows]

    def acked_count(self) -> int:
        """How many sends the broker acknowledged."""
        row = self._db.execute("SELECT count(*) FROM sends WHERE status = 'acked'").fetchone()
        return int(row[0])

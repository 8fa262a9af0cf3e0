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
from intelbus.files import ensure_private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    last_digest BLOB NOT NULL,
    kafka_partition INTEGER NOT NULL DEFAULT -1,
    epoch TEXT NOT NULL DEFAULT 'v1'
);
CREATE TABLE IF NOT EXISTS sends (
    stream TEXT NOT NULL,
    epoch TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    record_id TEXT NOT NULL UNIQUE,
    sealed BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'acked')),
    partition INTEGER,
    offset INTEGER,
    PRIMARY KEY (stream, epoch, sequence)
)
"""
# Version 1 (no user_version) had no partition or epoch: its streams were format v1 streams.
_UPGRADE_1 = (
    "ALTER TABLE streams ADD COLUMN kafka_partition INTEGER NOT NULL DEFAULT -1",
    "ALTER TABLE streams ADD COLUMN epoch TEXT NOT NULL DEFAULT 'v1'",
    "ALTER TABLE sends RENAME TO sends_v1",
    _SCHEMA.split(";")[1],
    "INSERT INTO sends (stream, epoch, sequence, record_id, sealed, status, partition, offset) "
    "SELECT stream, 'v1', sequence, record_id, sealed, status, partition, offset FROM sends_v1",
    "DROP TABLE sends_v1",
)
STATE_VERSION = 2
UNBOUND = -1  # a stream whose partition is not chosen yet (or a format v1 stream)


@dataclass(frozen=True, slots=True)
class StreamHead:
    """Where a stream stands: the next record gets ``last_sequence + 1`` and chains to ``last_digest``.

    ``partition`` is the Kafka partition the stream is bound to (chosen once, kept when partitions
    are added); ``epoch`` the key id (hex) the stream's records are signed with: a new key starts
    a new epoch at sequence 0, linked to the last record of the previous one.
    """

    stream: str
    last_sequence: int
    last_digest: bytes
    partition: int = UNBOUND
    epoch: str = "v1"

    @property
    def next_sequence(self) -> int:
        return self.last_sequence + 1

    def continues(self, stored: StreamHead) -> bool:
        """Whether this head may follow ``stored``: the same one, or the start of a new epoch
        linked to the stored head's last record."""
        if self == stored:
            return True
        return (
            self.epoch != stored.epoch
            and self.last_sequence == -1
            and self.last_digest == stored.last_digest
        )


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
    partition: int | None = None  # the partition it is bound to (None: any, format v1)


class ProducerState:
    """The durable state of one producer (one file per producer identity and environment)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        ensure_private_file(path, what="producer state file")
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version >= STATE_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            has_streams = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'streams'"
            ).fetchone()
            if has_streams is None:
                for statement in _SCHEMA.split(";"):
                    self._db.execute(statement)
            else:
                for statement in _UPGRADE_1:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={STATE_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def head(self, stream: str) -> StreamHead:
        """The stream's head (an empty stream starts at -1 with the genesis digest, unbound)."""
        row = self._db.execute(
            "SELECT last_sequence, last_digest, kafka_partition, epoch FROM streams "
            "WHERE stream = ?",
            (stream,),
        ).fetchone()
        if row is None:
            return StreamHead(stream, -1, GENESIS_DIGEST)
        return StreamHead(stream, int(row[0]), bytes(row[1]), int(row[2]), str(row[3]))

    def heads(self) -> list[StreamHead]:
        """Every stream's head (for heartbeats)."""
        rows = self._db.execute(
            "SELECT stream, last_sequence, last_digest, kafka_partition, epoch FROM streams "
            "ORDER BY stream"
        )
        return [StreamHead(r[0], int(r[1]), bytes(r[2]), int(r[3]), str(r[4])) for r in rows]

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
                h = r.head
                current = heads.get(h.stream) or self.head(h.stream)
                if not h.continues(current):
                    raise RuntimeError(
                        f"stream {h.stream} moved on from sequence {h.last_sequence}"
                    )
                bound = None if h.partition == UNBOUND else h.partition
                self._db.execute(
                    "INSERT INTO sends (stream, epoch, sequence, record_id, sealed, status, "
                    "partition) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (h.stream, h.epoch, h.next_sequence, r.record_id, r.sealed, bound),
                )
                heads[h.stream] = StreamHead(
                    h.stream, h.next_sequence, r.digest, h.partition, h.epoch
                )
            for head in heads.values():
                self._db.execute(
                    "INSERT INTO streams (stream, last_sequence, last_digest, kafka_partition, "
                    "epoch) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET last_sequence = excluded.last_sequence, "
                    "last_digest = excluded.last_digest, "
                    "kafka_partition = excluded.kafka_partition, epoch = excluded.epoch",
                    (head.stream, head.last_sequence, head.last_digest, head.partition, head.epoch),
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
            "SELECT stream, sequence, record_id, sealed, partition FROM sends "
            "WHERE status = 'pending' ORDER BY stream, rowid"
        )
        return [
            PendingSend(r[0], int(r[1]), r[2], bytes(r[3]), None if r[4] is None else int(r[4]))
            for r in rows
        ]

    def acked_count(self) -> int:
        """How many sends the broker acknowledged."""
        row = self._db.execute("SELECT count(*) FROM sends WHERE status = 'acked'").fetchone()
        return int(row[0])

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
from datetime import UTC, datetime
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
# Version 3: a note beside each send (when it was reserved, a digest of its contents, the last
# error it met, whether a person abandoned it), so a file can be published again safely and what
# is pending can be shown with its reason.
_NOTES = """
CREATE TABLE IF NOT EXISTS send_notes (
    record_id TEXT PRIMARY KEY,
    reserved_at TEXT NOT NULL,
    content_digest BLOB,
    last_error TEXT,
    abandoned_at TEXT
)
"""
# Version 4: the web console's copy of each record it published (the JSON its form produced), so
# the officer can correct or retract it later from the record's page. It holds personal data, so
# ``forget`` (an erasure) deletes it with the sealed bytes.
_COPIES = """
CREATE TABLE IF NOT EXISTS console_copies (
    record_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at TEXT NOT NULL
)
"""
STATE_VERSION = 4
_UPSERT_HEAD = (
    "INSERT INTO streams (stream, last_sequence, last_digest, kafka_partition, epoch) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
    "last_sequence = excluded.last_sequence, last_digest = excluded.last_digest, "
    "kafka_partition = excluded.kafka_partition, epoch = excluded.epoch"
)
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
    content: bytes = b""  # a digest of the record's encoded contents (to recognise a re-publish)


@dataclass(frozen=True, slots=True)
class PriorSend:
    """What this state knows of a record id: published (acked), pending, or abandoned."""

    record_id: str
    stream: str
    sequence: int
    status: str  # "acked", "pending" or "abandoned"
    partition: int | None
    offset: int | None
    content: bytes | None  # None: reserved before version 3 kept contents' digests
    reserved_at: str | None
    last_error: str | None


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
        # check_same_thread=False: the web console (a threaded server) and the heartbeat thread
        # use one state from several threads; they serialise their calls (the publisher's lock,
        # the console desk's lock), which is what sqlite3's check would otherwise enforce.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
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
            elif version < 2:
                for statement in _UPGRADE_1:
                    self._db.execute(statement)
            self._db.execute(_NOTES)
            self._db.execute(_COPIES)
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

    def reserve(
        self,
        head: StreamHead,
        *,
        record_id: str,
        digest: bytes,
        sealed: bytes,
        content: bytes = b"",
    ) -> None:
        """Durably record a sealed record as the stream's next one, before it is sent.

        Raises:
            RuntimeError: ``head`` is stale (another writer advanced the stream): never fork.
        """
        self.reserve_many([Reservation(head, record_id, digest, sealed, content)])

    def reserve_many(self, reservations: Sequence[Reservation]) -> None:
        """Durably record several sealed records, in order, in one transaction (one fsync).

        Each reservation's ``head`` must be where its stream stands once the reservations before
        it are applied: the first of a stream matches the stored head, each later one continues
        the one before it (its sequence and digest).

        Raises:
            RuntimeError: a head is stale or the reservations do not chain: nothing is written.
        """
        # The chain is checked in Python and the rows written with two executemany calls: one
        # transaction (one fsync) and no per-record round trip into SQLite.
        now = _now()
        sends: list[tuple[str, str, int, str, bytes, int | None]] = []
        notes: list[tuple[str, str, bytes | None]] = []
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
                sends.append((h.stream, h.epoch, h.next_sequence, r.record_id, r.sealed, bound))
                notes.append((r.record_id, now, r.content or None))
                heads[h.stream] = StreamHead(
                    h.stream, h.next_sequence, r.digest, h.partition, h.epoch
                )
            self._db.executemany(
                "INSERT INTO sends (stream, epoch, sequence, record_id, sealed, status, "
                "partition) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                sends,
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO send_notes (record_id, reserved_at, content_digest) "
                "VALUES (?, ?, ?)",
                notes,
            )
            for head in heads.values():
                self._db.execute(
                    _UPSERT_HEAD,
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

    def prior(self, record_id: str) -> PriorSend | None:
        """What this state holds of ``record_id``, or None if it never reserved it."""
        row = self._db.execute(
            "SELECT s.stream, s.sequence, s.status, s.partition, s.offset, n.content_digest, "
            "n.reserved_at, n.last_error, n.abandoned_at FROM sends s "
            "LEFT JOIN send_notes n ON n.record_id = s.record_id WHERE s.record_id = ?",
            (record_id,),
        ).fetchone()
        if row is None:
            return None
        status = "abandoned" if row[8] is not None else str(row[2])
        return PriorSend(
            record_id,
            str(row[0]),
            int(row[1]),
            status,
            None if row[3] is None else int(row[3]),
            None if row[4] is None else int(row[4]),
            None if row[5] is None else bytes(row[5]),
            None if row[6] is None else str(row[6]),
            None if row[7] is None else str(row[7]),
        )

    def unsettled(self) -> list[PriorSend]:
        """Every pending send with its note (for ``intelbus publish pending``)."""
        rows = self._db.execute(
            "SELECT record_id FROM sends WHERE status = 'pending' ORDER BY stream, rowid"
        ).fetchall()
        found = (self.prior(str(r[0])) for r in rows)
        return [p for p in found if p is not None and p.status == "pending"]

    def note_failure(self, record_id: str, error: str) -> None:
        """Keep the last reason a send failed (no record contents: an error type and topic)."""
        self._db.execute(
            "INSERT INTO send_notes (record_id, reserved_at, last_error) VALUES (?, ?, ?) "
            "ON CONFLICT (record_id) DO UPDATE SET last_error = excluded.last_error",
            (record_id, _now(), error[:500]),
        )

    def abandon(self, record_id: str) -> bool:
        """Give up a pending send: it is never resent, and its id is never published again.

        Its sequence number stays spent, so consumers report that one record missing (a gap):
        the honest record of a send that may or may not have reached the broker. Returns False
        if ``record_id`` is not pending.
        """
        prior = self.prior(record_id)
        if prior is None or prior.status != "pending":
            return False
        self._db.execute(
            "INSERT INTO send_notes (record_id, reserved_at, abandoned_at) VALUES (?, ?, ?) "
            "ON CONFLICT (record_id) DO UPDATE SET abandoned_at = excluded.abandoned_at",
            (record_id, _now(), _now()),
        )
        return True

    def forget(self, record_id: str) -> str | None:
        """An erasure of ``record_id`` was published: drop the sealed copy this state keeps of it,
        and give it up if it is still pending (never resent). Returns what it was: "pending",
        "acked", "abandoned", or None if this state never published it.

        The sealed bytes are ciphertext the producer cannot open, but the recipients can until
        their encryption epoch is destroyed, so a copy kept here for a resend must not outlive the
        erasure (issue 16, "any pending export of it").
        """
        prior = self.prior(record_id)
        if prior is None:
            return None
        if prior.status == "pending":
            self.abandon(record_id)
        self._db.execute("UPDATE sends SET sealed = ? WHERE record_id = ?", (b"", record_id))
        self._db.execute("DELETE FROM console_copies WHERE record_id = ?", (record_id,))
        return prior.status

    def keep_copy(self, record_id: str, kind: str, payload_json: str) -> None:
        """Keep (or replace) the console's copy of a record it published: the JSON its form
        produced, so a correction can start from it. ``forget`` deletes it."""
        self._db.execute(
            "INSERT INTO console_copies (record_id, kind, payload, published_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET kind = excluded.kind, "
            "payload = excluded.payload, published_at = excluded.published_at",
            (record_id, kind, payload_json, _now()),
        )

    def copy(self, record_id: str) -> tuple[str, str] | None:
        """The console's copy of ``record_id`` as (kind, payload JSON), or None."""
        row = self._db.execute(
            "SELECT kind, payload FROM console_copies WHERE record_id = ?", (record_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def sends(self, *, limit: int, offset: int = 0, exclude: Sequence[str] = ()) -> list[PriorSend]:
        """Every send this state reserved, newest first (``exclude``: streams left out, such as
        the heartbeats'), a page of ``limit`` from ``offset``."""
        marks = ", ".join("?" for _ in exclude)
        where = f"WHERE stream NOT IN ({marks})" if exclude else ""
        rows = self._db.execute(
            f"SELECT record_id FROM sends {where} ORDER BY rowid DESC LIMIT ? OFFSET ?",  # noqa: S608 - placeholders only
            (*exclude, limit, offset),
        ).fetchall()
        found = (self.prior(str(r[0])) for r in rows)
        return [p for p in found if p is not None]

    def send_count(self, *, exclude: Sequence[str] = ()) -> int:
        """How many sends :meth:`sends` pages through."""
        marks = ", ".join("?" for _ in exclude)
        where = f"WHERE stream NOT IN ({marks})" if exclude else ""
        row = self._db.execute(
            f"SELECT count(*) FROM sends {where}",  # noqa: S608 - placeholders only
            tuple(exclude),
        ).fetchone()
        return int(row[0])

    def pending(self) -> list[PendingSend]:
        """Reserved but unacknowledged records, in stream and sequence order: resend them first.
        An abandoned send is not among them."""
        rows = self._db.execute(
            "SELECT s.stream, s.sequence, s.record_id, s.sealed, s.partition FROM sends s "
            "LEFT JOIN send_notes n ON n.record_id = s.record_id "
            "WHERE s.status = 'pending' AND n.abandoned_at IS NULL ORDER BY s.stream, s.rowid"
        )
        return [
            PendingSend(r[0], int(r[1]), r[2], bytes(r[3]), None if r[4] is None else int(r[4]))
            for r in rows
        ]

    def acked_offset(self, stream: str) -> int | None:
        """The newest offset the broker acknowledged for ``stream`` (None: nothing acknowledged)."""
        row = self._db.execute(
            "SELECT max(offset) FROM sends WHERE stream = ? AND status = 'acked'", (stream,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def adopt(self, head: StreamHead, records: Sequence[tuple[str, int, str, int, int]]) -> None:
        """Resynchronise from the topic: ``head`` becomes the stream's head, and the records found
        there (record id, sequence, epoch, partition, offset) are kept as acknowledged, so that
        publishing one of them again is reported as already published."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for record_id, sequence, epoch, partition, offset in records:
                self._db.execute(
                    "INSERT OR IGNORE INTO sends (stream, epoch, sequence, record_id, sealed, "
                    "status, partition, offset) VALUES (?, ?, ?, ?, x'', 'acked', ?, ?)",
                    (head.stream, epoch, sequence, record_id, partition, offset),
                )
            self._db.execute(
                _UPSERT_HEAD,
                (head.stream, head.last_sequence, head.last_digest, head.partition, head.epoch),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def acked_count(self) -> int:
        """How many sends the broker acknowledged."""
        row = self._db.execute("SELECT count(*) FROM sends WHERE status = 'acked'").fetchone()
        return int(row[0])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

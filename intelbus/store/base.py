"""The consumer-side store: it persists what the judge decided, and reads back what analysts see.

This module owns

* the :class:`Store` protocol every backend implements, and the views it reads back
  (:class:`StoredRecordView`, :class:`HistoryEntry`, :class:`QuarantineEntry`);
* :class:`SqlStore`, the backend-neutral commit and query logic over a DB-API connection, so that
  SQLite (:mod:`intelbus.store.sqlite`) and PostgreSQL (:mod:`intelbus.store.postgres`) behave the
  same way; the backends supply the schema, the connection, value encodings and the few statements
  whose SQL differs.

It makes no trust decision. The values it writes are the judge's (:mod:`intelbus.trust.model`:
a :class:`~intelbus.trust.model.Batch` of new records, versions, amendments, quarantine rows,
stream heads, heartbeats and offsets); the one derivation it performs, a record's current state
from its versions, is the judge package's pure :func:`~intelbus.trust.versions.fold`.

The contract (SECURITY.md, "Durability settings"):

* :meth:`Store.judge_and_commit` opens one transaction, takes its locks, reads the
  :class:`~intelbus.trust.model.Snapshot` the batch is judged against, lets the caller judge, and
  writes the batch with the next offsets, durable when it returns. The state a decision was made
  against is the state it is committed over, even with several consumer instances on one
  PostgreSQL store. If anything fails, nothing of the batch is kept and :class:`StoreError` is
  raised.
* Identity is (producer, record id): two producers' records with one id are two records.
* Every version of a record is kept (``record_versions``); the ``records`` row is their fold.
  :meth:`Store.withdraw` marks what a compromised key signed after a time as withdrawn and
  re-folds: kept as evidence, out of lists, searches and exports.
* A quarantine row keeps a bounded prefix of the refused bytes, their size and BLAKE2b-256 digest
  (the whole record stays on Kafka, at the offset the row names).
* Offsets only move forward; a stream head moves forward or fills a gap, and moves back only when
  a withdrawal rolls it back to the last record that stands.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

from intelbus.chain import ChainState, StreamKey
from intelbus.errors import StoreError, StoreOwnerMismatch
from intelbus.kinds import KIND_BY_LABEL, RecordKind
from intelbus.log import get_logger
from intelbus.store.search import matches
from intelbus.trust.model import (
    SHREDDED_EPOCH_META,
    AmendmentStatus,
    Batch,
    Change,
    FeedBeat,
    HeldAmendment,
    HeldRecord,
    Labels,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    PendingAmendment,
    Quarantined,
    RecordStatus,
    Snapshot,
    SnapshotKeys,
    VersionDecision,
    VersionSource,
    VouchedHead,
)
from intelbus.trust.versions import VersionRow, fold

log = get_logger("intelbus.store")

#: A DB-API cursor (sqlite3's or psycopg's); the drivers' types differ, the calls used do not.
Cursor: TypeAlias = Any

# 2: the feeds table; 3: versions, (producer, record id), streams per partition; 4: tombstones
SCHEMA_VERSION = 4
DIGEST_SIZE = 32
#: Rows per page when :meth:`Store.iter_records` streams an export.
EXPORT_PAGE = 500
#: Ids per ``IN (...)`` list (SQLite's historical limit on parameters is 999).
_IN_CHUNK = 400
#: Statuses an analyst's lists, searches and exports show (with content held).
VISIBLE = (RecordStatus.LIVE.value, RecordStatus.RETRACTED.value)
#: The ``meta`` key naming the agency a store belongs to (written with the schema; never by a batch).
OWNER_META_KEY = "owner"
#: The canonical JSON of payloads and lists: exactly what ``json.dumps`` with these options makes
#: (it builds this very encoder on every call; building it once saves that per payload).
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, allow_nan=False)


# --- What comes out. ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One earlier version of a record: what it held and how it came about."""

    version: int
    change: str  # original | correction | retraction
    payload: dict[str, object] | None
    amendment_record_id: str
    outcome: str
    at: datetime
    reason: str
    withdrawn: bool = False
    #: When this store recorded the version (its clock, not the producer's): what a feed polling
    #: "added after" must go by. Bookkeeping, not content: left out of comparisons.
    recorded_at: datetime | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        """The amendment kind that made this version (the original's is ``original``)."""
        return self.change


@dataclass(frozen=True, slots=True)
class StoredRecordView:
    """A record as an analyst sees it: current payload (None when not held), status, history."""

    record_id: str
    topic: str
    partition: int
    offset: int
    producer_id: str
    kind: str
    sequence: int
    digest: bytes
    created_at: datetime
    appended_at: datetime
    policy_hash: str
    rule_id: str
    action: str
    redacted_fields: tuple[str, ...]
    tlp: str | None
    classification: str | None
    force_area: str | None
    occurred_at: datetime | None
    payload: dict[str, object] | None
    version: int
    status: str
    key_id: bytes | None = None
    history: tuple[HistoryEntry, ...] = ()
    #: When this store stored the record (its clock; see HistoryEntry.recorded_at).
    stored_at: datetime | None = field(default=None, compare=False)

    @property
    def retracted(self) -> bool:
        return self.status == RecordStatus.RETRACTED.value

    @property
    def superseded(self) -> bool:
        """A later version of it is not for this agency (withheld or quarantined by policy)."""
        return self.version > 1 and self.status in (
            RecordStatus.WITHHELD.value,
            RecordStatus.QUARANTINED.value,
        )

    @property
    def visible(self) -> bool:
        """Shown in lists, searches and exports: content held, live or retracted."""
        return self.payload is not None and self.status in VISIBLE


#: A quarantine row as a store returns it: the judge's own record of the refusal.
QuarantineEntry = Quarantined


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What withdrawing one key's records since a time changed."""

    key_id: str
    since: datetime
    versions: int
    amendments: int
    records: int
    streams: int
    already_done: bool = False


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What stays of a record whose contents went (issue 16): enough to prove it existed.

    Its ids, producer, place in the topic and digest (so chains, digests and audits still account
    for it), its dates, and why: ``erasure`` (by its producer's signed erasure record, with the
    legal basis stated) or ``retention`` (this agency's policy rule). The erasure's free-text
    reason stays in the store (the erasure's version and the tombstone row's ``note``) for the
    data protection officer; it is not part of this view and never logged.
    """

    producer_id: str
    record_id: str
    kind: str
    topic: str
    partition: int
    offset: int
    sequence: int
    digest: bytes
    created_at: datetime
    appended_at: datetime
    reason: str  # erasure | retention
    rule_id: str
    legal_basis: str
    erasure_record_id: str | None
    effective_at: datetime
    tombstoned_at: datetime


@dataclass(frozen=True, slots=True)
class RetentionCandidate:
    """A record whose contents a store still holds, with what a retention rule matches on."""

    producer_id: str
    record_id: str
    kind: str
    tlp: str | None
    classification: str | None
    force_area: str | None
    handling_code: str | None
    event_at: datetime
    stored_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class Expiry:
    """One record to prune: which, under which retention rule, expired since when."""

    producer_id: str
    record_id: str
    rule_id: str
    expired_at: datetime


@dataclass(frozen=True, slots=True)
class HeldPosition:
    """Where a record a store holds (or keeps a tombstone of) was read, and what it was."""

    partition: int
    offset: int
    producer_id: str
    record_id: str
    digest: bytes
    status: str


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a store holds of one topic, by position: its records (tombstones included), the
    positions of the amendments and refused records it registered, and where it has read to."""

    rows: tuple[HeldPosition, ...]
    amendments: frozenset[tuple[int, int]]
    quarantined: frozenset[tuple[int, int]]
    #: partition -> the next offset the store's consumer group(s) will read (the furthest).
    read_to: dict[int, int]
    #: The agency the store belongs to, and the encryption epochs it found destroyed (records
    #: sealed to it with those leave no row: crypto-shredded).
    owner: str | None = None
    shredded_epochs: frozenset[str] = frozenset()
    #: partition -> the first offset the store read (stores since schema 4; else unknown).
    read_from: dict[int, int] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """An agency's durable store. See the module docstring for the contract."""

    def judge_and_commit(self, keys: SnapshotKeys, decide: Callable[[Snapshot], Batch]) -> Batch:
        """Read the snapshot for ``keys``, judge with ``decide``, write its batch: one transaction."""
        ...

    def commit(self, batch: Batch) -> None:
        """Write an already judged batch in one transaction (idempotent); durable when it returns."""
        ...

    def snapshot(self, keys: SnapshotKeys) -> Snapshot:
        """The trusted state for ``keys`` as committed now (read-only)."""
        ...

    def withdraw(self, key_id: str, since: datetime) -> Withdrawal:
        """Withdraw what ``key_id`` signed that the broker appended at or after ``since``."""
        ...

    def rejudged(self) -> list[tuple[str, datetime]]:
        """Every (key id, since) withdrawal already applied."""
        ...

    def prune(self, expired: Sequence[Expiry]) -> int:
        """Tombstone every record of ``expired`` not already one (retention); returns how many."""
        ...

    def tombstones(self, reason: str | None = None, limit: int = 1000) -> list[Tombstone]:
        """Tombstones, oldest first (``reason``: erasure or retention, or both)."""
        ...

    def retention_candidates(self) -> Iterator[RetentionCandidate]:
        """Every record that is not a tombstone, for a retention check."""
        ...

    def coverage(self, topic: str) -> Coverage:
        """What the store holds of ``topic``, by position (:class:`Coverage`)."""
        ...

    def meta(self, key: str) -> str | None:
        """A value kept with a batch, or None."""
        ...

    def load_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """partition -> next offset to read, for this consumer group and topic."""
        ...

    def load_chain(self) -> dict[StreamKey, ChainState]:
        """Every stream head."""
        ...

    def get(self, record_id: str, producer_id: str | None = None) -> StoredRecordView | None:
        """The record with this id (of ``producer_id``, or the first producer holding one)."""
        ...

    def get_all(self, record_id: str) -> list[StoredRecordView]:
        """Every producer's record with this id, with history, whatever its status."""
        ...

    def feeds(self) -> list[FeedBeat]:
        """The newest heartbeat of each (producer, topic) ever seen, by producer then topic."""
        ...

    def count_by_action(self) -> dict[str, int]:
        """action ("store", "redact") -> number of live or retracted records with content."""
        ...

    def summary(self) -> dict[str, int]:
        """Counts by status and amendment status, and ``quarantined:<reason>``."""
        ...

    def list_records(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        force_area: str | None = None,
        tlp: str | None = None,
        limit: int = 100,
    ) -> list[StoredRecordView]:
        """Visible records, newest event first, filtered; times compare to occurred_at else created_at."""
        ...

    def search(self, text: str, limit: int = 100) -> list[StoredRecordView]:
        """Visible records with ``text`` in one of their current payload's values (never in a
        field name), newest event first (:func:`intelbus.store.search.matches`)."""
        ...

    def quarantine_entries(self, limit: int = 100) -> list[QuarantineEntry]:
        """Quarantined records, by (topic, partition, offset)."""
        ...

    def iter_records(self) -> Iterator[StoredRecordView]:
        """Every visible record with its history, by (topic, partition, offset), for export."""
        ...

    def check_writer(self) -> None:
        """Raise :class:`~intelbus.errors.StoreLocked` if this writer no longer holds the store's
        writer lock (SQLite); a no-op where several writers are allowed (PostgreSQL)."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...


# --- SQL shared by both backends. ---------------------------------------------------------------------
# Statements use "?" placeholders; the PostgreSQL backend rewrites them to "%s". Column names avoid
# "partition"/"offset", keywords in one or both dialects.

RECORD_COLUMNS = """record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence,
    digest, created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp,
    classification, force_area, occurred_at, payload, version, status, key_id, stored_at"""

_INSERT_RECORDS = """
INSERT INTO records (producer_id, record_id, kind, topic, kafka_partition, kafka_offset, sequence,
    digest, key_id, created_at, appended_at, status, version, content_version, policy_hash,
    rule_id, action, redacted_fields, tlp, classification, force_area, occurred_at, event_at,
    payload, stored_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (producer_id, record_id) DO NOTHING
"""

_INSERT_VERSION = """
INSERT INTO record_versions (producer_id, record_id, version, change, source_record_id, key_id,
    sequence, digest, topic, kafka_partition, kafka_offset, created_at, appended_at, amended_at,
    reason, outcome, rule_id, policy_hash, redacted_fields, tlp, classification, force_area,
    occurred_at, payload, withdrawn, recorded_at, legal_basis)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (producer_id, record_id, version) DO NOTHING
"""

# A never-amended record's first version, copied from its row (see _materialise_originals).
_MATERIALISE_ORIGINALS = """
INSERT INTO record_versions (producer_id, record_id, version, change, source_record_id, key_id,
    sequence, digest, topic, kafka_partition, kafka_offset, created_at, appended_at, amended_at,
    reason, outcome, rule_id, policy_hash, redacted_fields, tlp, classification, force_area,
    occurred_at, payload, withdrawn, recorded_at)
SELECT producer_id, record_id, 1, 'original', record_id, key_id, sequence, digest, topic,
    kafka_partition, kafka_offset, created_at, appended_at, NULL, '', action, rule_id,
    policy_hash, redacted_fields, tlp, classification, force_area, occurred_at, payload,
    ?, stored_at
FROM records r
WHERE version = 1 AND {where}
  AND NOT EXISTS (SELECT 1 FROM record_versions v
                  WHERE v.producer_id = r.producer_id AND v.record_id = r.record_id)
"""

_VERSION_OF_SOURCE = """
SELECT version FROM record_versions
WHERE producer_id = ? AND record_id = ? AND source_record_id = ?
"""

_INSERT_AMENDMENT = """
INSERT INTO amendments (producer_id, amendment_record_id, kind, target_record_id, status, key_id,
    sequence, digest, topic, kafka_partition, kafka_offset, created_at, appended_at, amended_at,
    reason, replacement_kind, outcome, rule_id, policy_hash, redacted_fields, tlp,
    classification, force_area, occurred_at, payload, received_at, legal_basis)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (producer_id, amendment_record_id) DO NOTHING
"""

_SET_AMENDMENT_STATUS = """
UPDATE amendments SET status = ?, applied_at = ?
WHERE producer_id = ? AND amendment_record_id = ? AND status = 'pending'
"""

_INSERT_QUARANTINE = """
INSERT INTO quarantine (topic, kafka_partition, kafka_offset, raw_prefix, raw_size, raw_digest,
    reason, message, record_id, producer_id, authentic, quarantined_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING
"""

# Forward, or filling a gap at the same head; never back (a withdrawal rolls back explicitly).
_UPSERT_CHAIN = """
INSERT INTO chain (producer_id, topic, kafka_partition, epoch, last_sequence, last_digest, gaps,
    updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (producer_id, topic, kafka_partition, epoch) DO UPDATE
SET last_sequence = excluded.last_sequence, last_digest = excluded.last_digest,
    gaps = excluded.gaps, updated_at = excluded.updated_at
WHERE excluded.last_sequence >= chain.last_sequence
"""

_UPSERT_FEED = """
INSERT INTO feeds (producer_id, topic, last_heartbeat_at, interval_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (producer_id, topic) DO UPDATE
SET last_heartbeat_at = excluded.last_heartbeat_at, interval_ms = excluded.interval_ms
WHERE excluded.last_heartbeat_at > feeds.last_heartbeat_at
"""

_UPSERT_META = """
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""

_HEAD = """
SELECT last_sequence, last_digest, gaps FROM chain
WHERE producer_id = ? AND topic = ? AND kafka_partition = ? AND epoch = ?
"""
_LOAD_CHAIN = """
SELECT producer_id, topic, kafka_partition, epoch, last_sequence, last_digest, gaps FROM chain
ORDER BY producer_id, topic, kafka_partition, epoch
"""
_LOAD_FEEDS = (
    "SELECT producer_id, topic, last_heartbeat_at, interval_ms FROM feeds "
    "ORDER BY producer_id, topic"
)
_VOUCHED_PREFIX = "vouched|"
#: Where a store began reading a partition: ``read_from|<topic>|<partition>`` -> offset, kept once.
_READ_FROM_PREFIX = "read_from|"
_INSERT_META_ONCE = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
_META_LIKE = "SELECT key, value FROM meta WHERE key LIKE ?"
_LOAD_OFFSETS = (
    "SELECT kafka_partition, next_offset FROM offsets WHERE group_id = ? AND topic = ? "
    "ORDER BY kafka_partition"
)

_VERSIONS_OF = """
SELECT version, change, outcome, rule_id, policy_hash, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, withdrawn
FROM record_versions WHERE producer_id = ? AND record_id = ? ORDER BY version
"""
_CREATED_OF = "SELECT created_at FROM records WHERE producer_id = ? AND record_id = ?"
_UPDATE_CURRENT = """
UPDATE records SET status = ?, version = ?, content_version = ?, policy_hash = ?, rule_id = ?,
    action = ?, redacted_fields = ?, tlp = ?, classification = ?, force_area = ?, occurred_at = ?,
    event_at = ?, payload = ?, updated_at = ?
WHERE producer_id = ? AND record_id = ?
"""
_HISTORY = """
SELECT version, change, payload, source_record_id, outcome, amended_at, appended_at, reason,
    withdrawn, recorded_at
FROM record_versions WHERE producer_id = ? AND record_id = ? ORDER BY version
"""

_COUNT_STATUS = (
    "SELECT status, action, payload IS NOT NULL, COUNT(*) FROM records "
    "GROUP BY status, action, payload IS NOT NULL"
)
_COUNT_QUARANTINE = "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason"
_COUNT_AMENDMENTS = "SELECT status, COUNT(*) FROM amendments GROUP BY status ORDER BY status"
VISIBLE_SQL = "status IN ('live', 'retracted') AND payload IS NOT NULL"
# Each filter is "(<flag: not filtering> OR <condition>)" so the statement is one constant.
_LIST = f"""
SELECT {RECORD_COLUMNS}
FROM records
WHERE {VISIBLE_SQL} AND (? OR kind = ?) AND (? OR event_at >= ?) AND (? OR event_at < ?)
  AND (? OR force_area = ?) AND (? OR tlp = ?)
ORDER BY event_at DESC, record_id, producer_id LIMIT ?
"""
_QUARANTINE = """
SELECT topic, kafka_partition, kafka_offset, raw_prefix, raw_size, raw_digest, reason, message,
    record_id, producer_id, authentic, quarantined_at
FROM quarantine ORDER BY topic, kafka_partition, kafka_offset LIMIT ?
"""
_EXPORT_PAGE = f"""
SELECT {RECORD_COLUMNS}
FROM records
WHERE {VISIBLE_SQL} AND (topic, kafka_partition, kafka_offset, record_id, producer_id)
    > (?, ?, ?, ?, ?)
ORDER BY topic, kafka_partition, kafka_offset, record_id, producer_id LIMIT ?
"""
_GET = f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id = ? ORDER BY producer_id"

# --- Tombstones (issue 16): what stays of a record erased or pruned past retention. -----------------
_TOMBSTONE_REASON = "SELECT reason FROM tombstones WHERE producer_id = ? AND record_id = ?"
# An erasure's tombstone replaces a retention one (it says more: who erased, on what basis).
_INSERT_TOMBSTONE = """
INSERT INTO tombstones (producer_id, record_id, reason, rule_id, legal_basis, erasure_record_id,
    note, effective_at, tombstoned_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (producer_id, record_id) DO UPDATE
SET reason = excluded.reason, rule_id = excluded.rule_id, legal_basis = excluded.legal_basis,
    erasure_record_id = excluded.erasure_record_id, note = excluded.note,
    effective_at = excluded.effective_at
WHERE tombstones.reason = 'retention' AND excluded.reason = 'erasure'
"""
# Every copy of a record's contents a store holds: its versions (an erasure's own version keeps
# its reason, for the data protection officer), the amendments naming it (a waiting correction
# holds a whole replacement), and the bytes kept of a refused copy (sealed, but this agency's key
# opens them until its epoch is destroyed).
_WIPE_VERSIONS = """
UPDATE record_versions SET payload = NULL,
    reason = CASE WHEN change = 'erasure' THEN reason ELSE '' END
WHERE producer_id = ? AND record_id = ?
"""
_WIPE_AMENDMENTS = """
UPDATE amendments SET payload = NULL, reason = CASE WHEN kind = 'erasure' THEN reason ELSE '' END
WHERE producer_id = ? AND target_record_id = ?
"""
_WIPE_QUARANTINE = "UPDATE quarantine SET raw_prefix = ? WHERE producer_id = ? AND record_id = ?"
_PRUNE_RECORD = """
UPDATE records SET status = 'pruned', payload = NULL, redacted_fields = ?, updated_at = ?
WHERE producer_id = ? AND record_id = ? AND status NOT IN ('erased', 'pruned')
"""
_TOMBSTONES = """
SELECT t.producer_id, t.record_id, r.kind, r.topic, r.kafka_partition, r.kafka_offset,
    r.sequence, r.digest, r.created_at, r.appended_at, t.reason, t.rule_id, t.legal_basis,
    t.erasure_record_id, t.effective_at, t.tombstoned_at
FROM tombstones t JOIN records r ON r.producer_id = t.producer_id AND r.record_id = t.record_id
WHERE (? OR t.reason = ?)
ORDER BY t.tombstoned_at, t.producer_id, t.record_id LIMIT ?
"""
_RETENTION_CANDIDATES = """
SELECT producer_id, record_id, kind, tlp, classification, force_area, event_at, stored_at,
    status, payload
FROM records WHERE status NOT IN ('erased', 'pruned') AND (producer_id, record_id) > (?, ?)
ORDER BY producer_id, record_id LIMIT ?
"""

_AMENDMENT_POSITIONS = "SELECT kafka_partition, kafka_offset FROM amendments WHERE topic = ?"
_QUARANTINE_POSITIONS = "SELECT kafka_partition, kafka_offset FROM quarantine WHERE topic = ?"
_READ_TO = (
    "SELECT kafka_partition, max(next_offset) FROM offsets WHERE topic = ? GROUP BY kafka_partition"
)
_POSITIONS = """
SELECT kafka_partition, kafka_offset, producer_id, record_id, digest, status FROM records
WHERE topic = ? ORDER BY kafka_partition, kafka_offset
"""

_REJUDGED = "SELECT 1 FROM rejudged WHERE key_id = ? AND since = ?"
_INSERT_REJUDGED = """
INSERT INTO rejudged (key_id, since, versions, amendments, records, streams, applied_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


class SqlStore(abc.ABC):
    """The commit algorithm and queries, shared by the SQLite and PostgreSQL backends.

    Subclasses provide the connection, value encodings, the transaction brackets and the
    statements whose SQL differs between the dialects.
    """

    #: Upsert of (group_id, topic, kafka_partition, next_offset) that keeps the larger offset.
    _UPSERT_OFFSET: str

    _closed = False

    # -- backend hooks ------------------------------------------------------------------------------

    @abc.abstractmethod
    def _cursor(self) -> Any:  # noqa: ANN401 - a DB-API cursor (sqlite3 or psycopg)
        """A new cursor on the store's connection."""

    @abc.abstractmethod
    def _sql(self, statement: str) -> str:
        """The statement in this backend's placeholder style."""

    @abc.abstractmethod
    def _transaction(self, work: Any) -> None:  # noqa: ANN401 - a callable taking a cursor
        """Run ``work(cursor)`` in one durable write transaction; roll back and raise on failure."""

    @abc.abstractmethod
    def _enc_time(self, value: datetime | None) -> object: ...

    @abc.abstractmethod
    def _dec_time(self, value: Any) -> datetime: ...  # noqa: ANN401 - driver value

    @abc.abstractmethod
    def _enc_json(self, value: object) -> object: ...

    @abc.abstractmethod
    def _dec_json(self, value: Any) -> Any: ...  # noqa: ANN401 - driver value

    @abc.abstractmethod
    def _close_connection(self) -> None: ...

    def _lock(self, cur: Cursor, keys: Iterable[str]) -> None:
        """Serialise concurrent writers touching the same keys (no-op where writers already are)."""
        del cur, keys

    @abc.abstractmethod
    def _now(self) -> datetime: ...

    # -- helpers ------------------------------------------------------------------------------------

    def _exec(self, cur: Cursor, statement: str, params: Sequence[object] = ()) -> Any:  # noqa: ANN401
        cur.execute(self._sql(statement), tuple(params))
        return cur

    def _query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self._check_open()
        try:
            cur = self._cursor()
            try:
                rows: list[tuple[Any, ...]] = list(self._exec(cur, statement, params).fetchall())
            finally:
                cur.close()
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"store query failed: {type(e).__name__}") from e
        return rows

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    @staticmethod
    def _json_text(value: object) -> str:
        """Canonical JSON text for a payload or list; the same checks on every backend."""
        try:
            text = _JSON_ENCODER.encode(value)
        except (TypeError, ValueError) as e:
            raise StoreError(f"value is not JSON-serialisable: {type(e).__name__}") from e
        # PostgreSQL's jsonb cannot hold U+0000; refuse it on every backend so both behave alike.
        if "\\u0000" in text:
            raise StoreError("value contains U+0000, which the store cannot hold")
        return text

    def _opt_json(self, value: object | None) -> object | None:
        return None if value is None else self._enc_json(value)

    def _bind_owner(self, cur: Cursor, owner: str, *, created: bool) -> None:
        """Bind the store to ``owner`` inside the opening transaction (the schema's, for a new
        store), or refuse a store bound to another agency: the transaction then rolls back and
        nothing is written. A store made before owners were recorded is bound now, and logged."""
        row = self._exec(cur, "SELECT value FROM meta WHERE key = ?", (OWNER_META_KEY,)).fetchone()
        if row is None:
            self._exec(cur, _UPSERT_META, (OWNER_META_KEY, owner))
            if not created:
                log.warning("store.owner_bound", owner=owner, reason="store_had_no_owner")
            return
        if str(row[0]) != owner:
            raise StoreOwnerMismatch(
                f"this store belongs to {row[0]}, not {owner}: a consumer writes only its own "
                "agency's store (check `store` in the config); nothing was written"
            )

    def check_writer(self) -> None:
        """See :meth:`Store.check_writer` (several writers are fine here)."""
        return  # overridden where a store has one writer (SQLite)

    # -- the transaction ----------------------------------------------------------------------------

    def judge_and_commit(self, keys: SnapshotKeys, decide: Callable[[Snapshot], Batch]) -> Batch:
        """See :meth:`Store.judge_and_commit`."""
        self._check_open()
        out: list[Batch] = []

        def work(cur: Cursor) -> None:
            out.clear()  # a retried transaction judges again, against the state it then reads
            self._lock(cur, _lock_keys(keys.record_ids, keys.streams))
            batch = decide(self._snapshot(cur, keys))
            self._lock(cur, _batch_lock_keys(batch))
            self._write(cur, batch)
            out.append(batch)

        self._transaction(work)
        batch = out[0]
        log.debug(
            "store.committed",
            group=batch.group_id,
            records=len(batch.records),
            versions=len(batch.versions),
            amendments=len(batch.amendments),
            quarantined=len(batch.quarantined),
        )
        return batch

    def commit(self, batch: Batch) -> None:
        """See :meth:`Store.commit`."""
        self._check_open()

        def work(cur: Cursor) -> None:
            self._lock(cur, _batch_lock_keys(batch))
            self._write(cur, batch)

        self._transaction(work)

    def snapshot(self, keys: SnapshotKeys) -> Snapshot:
        """See :meth:`Store.snapshot`."""
        self._check_open()
        out: list[Snapshot] = []
        cur = self._cursor()
        try:
            out.append(self._snapshot(cur, keys))
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"store query failed: {type(e).__name__}") from e
        finally:
            cur.close()
        return out[0]

    # -- reading the snapshot -----------------------------------------------------------------------

    def _snapshot(self, cur: Cursor, keys: SnapshotKeys) -> Snapshot:
        heads: dict[StreamKey, ChainState] = {}
        for key in sorted(keys.streams):
            row = self._exec(
                cur, _HEAD, (key.producer_id, key.topic, key.partition, key.epoch)
            ).fetchone()
            if row is not None:
                heads[key] = ChainState(
                    key, int(row[0]), bytes(row[1]), _gaps(self._dec_json(row[2]))
                )
        records: dict[tuple[str, str], HeldRecord] = {}
        amendments: dict[tuple[str, str], HeldAmendment] = {}
        pending: dict[tuple[str, str], list[PendingAmendment]] = {}
        ids = sorted(keys.record_ids)
        for part in _chunks(ids):
            marks = _placeholders(len(part))
            for row in self._exec(
                cur,
                "SELECT producer_id, record_id, kind, topic, digest, status, version FROM records "
                f"WHERE record_id IN ({marks})",
                part,
            ).fetchall():
                producer, rid = str(row[0]), str(row[1])
                records[(producer, rid)] = HeldRecord(
                    producer,
                    rid,
                    KIND_BY_LABEL[str(row[2])],
                    str(row[3]),
                    bytes(row[4]),
                    RecordStatus(str(row[5])),
                    int(row[6]),
                )
            for row in self._exec(
                cur,
                "SELECT producer_id, amendment_record_id, digest, status FROM amendments "
                f"WHERE amendment_record_id IN ({marks})",
                part,
            ).fetchall():
                producer, rid = str(row[0]), str(row[1])
                # An amendment migrated from schema 2 has no known digest (NULL).
                digest = b"" if row[2] is None else bytes(row[2])
                amendments[(producer, rid)] = HeldAmendment(
                    producer, rid, digest, AmendmentStatus(str(row[3]))
                )
            for row in self._exec(
                cur,
                f"SELECT {_PENDING_COLUMNS} FROM amendments "
                f"WHERE status = 'pending' AND target_record_id IN ({marks}) ORDER BY arrival",
                part,
            ).fetchall():
                p = self._pending_from_row(row)
                pending.setdefault((p.producer_id, p.target_record_id), []).append(p)
        return Snapshot(
            heads=heads,
            records=records,
            amendments=amendments,
            pending={k: tuple(v) for k, v in pending.items()},
        )

    def _pending_from_row(self, row: Sequence[Any]) -> PendingAmendment:
        (
            producer,
            rid,
            kind,
            target,
            key_id,
            sequence,
            digest,
            topic,
            partition,
            offset,
            created_at,
            appended_at,
            amended_at,
            reason,
            replacement_kind,
        ) = row[:15]
        # Amendments migrated from schema 2 lack where and by which key they came: "unknown".
        source = VersionSource(
            record_id=str(rid),
            key_id=b"" if key_id is None else bytes(key_id),
            sequence=-1 if sequence is None else int(sequence),
            digest=b"" if digest is None else bytes(digest),
            topic="" if topic is None else str(topic),
            partition=-1 if partition is None else int(partition),
            offset=-1 if offset is None else int(offset),
            created_at=self._dec_time(created_at),
            appended_at=self._dec_time(appended_at),
            reason=str(reason),
            amended_at=None if amended_at is None else self._dec_time(amended_at),
            legal_basis=str(row[24]),
        )
        return PendingAmendment(
            producer_id=str(producer),
            record_id=str(rid),
            target_record_id=str(target),
            kind=KIND_BY_LABEL[str(kind)],
            replacement_kind=None if replacement_kind is None else KIND_BY_LABEL[replacement_kind],
            topic=source.topic,
            decision=self._decision_from(row[15:24]),
            source=source,
        )

    def _decision_from(self, row: Sequence[Any]) -> VersionDecision:
        """outcome, rule_id, policy_hash, redacted_fields, tlp, classification, force_area,
        occurred_at, payload."""
        outcome, rule_id, policy_hash, redacted, tlp, classification, force_area, occ, payload = row
        labels = None
        if tlp is not None and classification is not None:
            labels = Labels(
                str(tlp),
                str(classification),
                None if force_area is None else str(force_area),
                None if occ is None else self._dec_time(occ),
            )
        return VersionDecision(
            outcome=Outcome(str(outcome)),
            rule_id=str(rule_id),
            policy_hash=str(policy_hash),
            payload=None if payload is None else self._dec_json(payload),
            redacted_fields=tuple(self._dec_json(redacted)),
            labels=labels,
        )

    # -- writing a batch ----------------------------------------------------------------------------

    def _write(self, cur: Cursor, batch: Batch) -> None:
        now = self._enc_time(self._now())
        touched: dict[tuple[str, str], None] = {}
        self._insert_records(cur, batch.records, now)
        for a in batch.amendments:
            self._insert_amendment(cur, a, now)
        for v in batch.versions:
            if self._insert_version(cur, v, now):
                touched[(v.producer_id, v.record_id)] = None
        for producer, rid, status in batch.applied:
            self._exec(cur, _SET_AMENDMENT_STATUS, (status, now, producer, rid))
        for v in batch.versions:
            if v.change is Change.ERASURE and (v.producer_id, v.record_id) in touched:
                self._erase(cur, v, now)
        for key in touched:
            self._refold(cur, *key, now)
        for q in sorted(batch.quarantined, key=lambda q: (q.topic, q.partition, q.offset)):
            self._exec(
                cur,
                _INSERT_QUARANTINE,
                (
                    q.topic,
                    q.partition,
                    q.offset,
                    bytes(q.raw_prefix),
                    q.raw_size,
                    bytes(q.raw_digest),
                    q.reason,
                    q.message,
                    q.record_id,
                    q.producer_id,
                    q.authentic,
                    now,
                ),
            )
        for c in sorted(batch.chain, key=lambda c: c.stream):
            s = c.stream
            self._exec(
                cur,
                _UPSERT_CHAIN,
                (
                    s.producer_id,
                    s.topic,
                    s.partition,
                    s.epoch,
                    c.last_sequence,
                    bytes(c.last_digest),
                    self._enc_json([list(g) for g in c.gaps]),
                    now,
                ),
            )
        self._write_beats(cur, batch.beats)
        self._write_meta(cur, batch.meta)
        for (topic, partition), next_offset in sorted(batch.offsets.items()):
            self._exec(cur, self._UPSERT_OFFSET, (batch.group_id, topic, partition, next_offset))

    def _write_meta(self, cur: Cursor, meta: dict[str, str]) -> None:
        if OWNER_META_KEY in meta:
            raise StoreError("a batch may not change the store's owner")
        for meta_key, value in sorted(meta.items()):
            # Where the store began reading a partition is kept once; every other value is newest.
            once = meta_key.startswith(_READ_FROM_PREFIX)
            self._exec(cur, _INSERT_META_ONCE if once else _UPSERT_META, (meta_key, value))

    def _decision_params(self, d: VersionDecision) -> tuple[object, ...]:
        labels = d.labels
        return (
            d.outcome.value,
            d.rule_id,
            d.policy_hash,
            self._enc_json(list(d.redacted_fields)),
            None if labels is None else labels.tlp,
            None if labels is None else labels.classification,
            None if labels is None else labels.force_area,
            self._enc_time(None if labels is None else labels.occurred_at),
            self._opt_json(d.payload),
        )

    def _source_params(self, s: VersionSource) -> tuple[object, ...]:
        known = s.sequence >= 0  # else a legacy source (schema 2): where it came from is unknown
        return (
            bytes(s.key_id) if s.key_id else None,
            s.sequence if known else None,
            bytes(s.digest) if s.digest else None,
            s.topic or None,
            s.partition if known else None,
            s.offset if known else None,
            self._enc_time(s.created_at),
            self._enc_time(s.appended_at),
            self._enc_time(s.amended_at),
            s.reason,
        )

    def _insert_records(self, cur: Cursor, records: Sequence[NewRecord], now: object) -> None:
        """New records, one ``executemany`` for the whole batch.

        A record's first version lives in its ``records`` row until a second version (or a
        withdrawal) needs it in ``record_versions`` (:meth:`_materialise_originals`): most
        records are never amended, and a row less per record is a third of the write. A record
        already held (another member committed it first, or the batch is delivered again) is
        left as it is.
        """
        record_rows: list[tuple[object, ...]] = []
        # Per batch, what most records share: the empty list of redacted fields, and the status
        # a lone original version folds to for each outcome (an auditor's ledger writes tens of
        # thousands of rows per commit; both were a tenth of its write).
        no_redactions = self._enc_json([])
        status_of: dict[Outcome, RecordStatus] = {}
        for r in records:
            if r.kind not in (RecordKind.SIGHTING, RecordKind.INCIDENT):
                raise StoreError(f"record {r.record_id}: {r.kind.label} is not a content kind")
            if len(r.source.digest) != DIGEST_SIZE:
                raise StoreError(f"record {r.record_id}: digest is {len(r.source.digest)} bytes")
            d = r.decision
            if d.payload is not None and not isinstance(d.payload, dict):
                raise StoreError(f"record {r.record_id}: payload must be a JSON object")
            s = r.source
            labels = d.labels
            occurred = labels.occurred_at if labels is not None else None
            tlp = None if labels is None else labels.tlp
            classification = None if labels is None else labels.classification
            area = None if labels is None else labels.force_area
            created = self._enc_time(s.created_at)
            appended = self._enc_time(s.appended_at)
            occurred_enc = self._enc_time(occurred)
            event_enc = occurred_enc if occurred is not None else created
            redacted = (
                self._enc_json(list(d.redacted_fields)) if d.redacted_fields else no_redactions
            )
            payload = self._opt_json(d.payload)
            digest, key_id = bytes(s.digest), bytes(s.key_id) if s.key_id else None
            status = status_of.get(d.outcome)
            if status is None:
                status = status_of[d.outcome] = fold([VersionRow(1, Change.ORIGINAL, d)]).status
            record_rows.append(
                (
                    r.producer_id,
                    r.record_id,
                    r.kind.label,
                    s.topic,
                    s.partition,
                    s.offset,
                    s.sequence,
                    digest,
                    key_id,
                    created,
                    appended,
                    status.value,
                    d.policy_hash,
                    d.rule_id,
                    d.outcome.value,
                    redacted,
                    tlp,
                    classification,
                    area,
                    occurred_enc,
                    event_enc,
                    payload,
                    now,
                    now,
                )
            )
        if record_rows:
            cur.executemany(self._sql(_INSERT_RECORDS), record_rows)

    def _insert_version(self, cur: Cursor, v: NewVersion, now: object) -> bool:
        """Append a version (its number is the store's: the next after the newest). False if the
        same amendment already made a version of this record (a redelivery)."""
        key = (v.producer_id, v.record_id)
        if self._exec(cur, _VERSION_OF_SOURCE, (*key, v.source.record_id)).fetchone() is not None:
            return False
        self._materialise_originals(cur, "producer_id = ? AND record_id = ?", key)
        row = self._exec(
            cur,
            "SELECT max(version) FROM record_versions WHERE producer_id = ? AND record_id = ?",
            key,
        ).fetchone()
        if row is None or row[0] is None:
            raise StoreError(f"record {v.record_id} of {v.producer_id} is not held: cannot amend")
        self._exec(
            cur,
            _INSERT_VERSION,
            (
                *key,
                int(row[0]) + 1,
                v.change.value,
                v.source.record_id,
                *self._source_params(v.source),
                *self._decision_params(v.decision),
                False,
                now,
                v.source.legal_basis,
            ),
        )
        return True

    def _materialise_originals(self, cur: Cursor, where: str, params: Sequence[object]) -> None:
        """Write the first version of the records matching ``where`` (over ``records``) into
        ``record_versions``, for those that have none there yet: from their row, which holds it
        until a record is first amended or withdrawn."""
        self._exec(cur, _MATERIALISE_ORIGINALS.format(where=where), (False, *params))

    def _insert_amendment(self, cur: Cursor, a: NewAmendment, now: object) -> None:
        p = a.pending
        decision = p.decision if p is not None else None
        params: tuple[object, ...]
        if decision is not None:
            params = self._decision_params(decision)
        else:
            params = (
                _AMENDMENT_OUTCOME.get(a.kind, "none"),
                "",
                "",
                self._enc_json([]),
                None,
                None,
                None,
                None,
                None,
            )
        self._exec(
            cur,
            _INSERT_AMENDMENT,
            (
                a.producer_id,
                a.record_id,
                a.kind.label,
                a.target_record_id,
                a.status.value,
                *self._source_params(a.source),
                None if p is None or p.replacement_kind is None else p.replacement_kind.label,
                *params,
                now,
                a.source.legal_basis,
            ),
        )

    def _refold(self, cur: Cursor, producer: str, rid: str, now: object) -> None:
        """Recompute a record's current row from its versions."""
        rows = self._exec(cur, _VERSIONS_OF, (producer, rid)).fetchall()
        versions = [
            VersionRow(
                int(r[0]),
                Change(str(r[1])),
                self._decision_from(r[2:11]),
                bool(r[11]),
            )
            for r in rows
        ]
        current = fold(versions)
        d = current.decision
        status = current.status
        tomb = self._exec(cur, _TOMBSTONE_REASON, (producer, rid)).fetchone()
        if tomb is not None:
            # A tombstone outlives every refold (a withdrawal, a later correction): its record's
            # contents are gone for good.
            status = RecordStatus.ERASED if tomb[0] == "erasure" else RecordStatus.PRUNED
        if status.tombstone:
            d = replace(d, payload=None, redacted_fields=())
        labels = d.labels
        created = self._exec(cur, _CREATED_OF, (producer, rid)).fetchone()
        occurred = labels.occurred_at if labels is not None else None
        event_at = occurred if occurred is not None else self._dec_time(created[0])
        self._exec(
            cur,
            _UPDATE_CURRENT,
            (
                status.value,
                current.version,
                current.content_version,
                d.policy_hash,
                d.rule_id,
                d.outcome.value,
                self._enc_json(list(d.redacted_fields)),
                None if labels is None else labels.tlp,
                None if labels is None else labels.classification,
                None if labels is None else labels.force_area,
                self._enc_time(occurred),
                self._enc_time(event_at),
                self._opt_json(d.payload),
                now,
                producer,
                rid,
            ),
        )

    def _write_beats(self, cur: Cursor, beats: Sequence[FeedBeat]) -> None:
        newest: dict[tuple[str, str], FeedBeat] = {}
        for b in beats:
            seen = newest.get((b.producer_id, b.topic))
            if seen is None or b.at > seen.at:
                newest[(b.producer_id, b.topic)] = b
        for (producer_id, topic), b in sorted(newest.items()):
            self._exec(cur, _UPSERT_FEED, (producer_id, topic, self._enc_time(b.at), b.interval_ms))
            # The streams the newest heartbeat vouches for, kept beside its feed (in the meta
            # table: one row per feed, replaced by each heartbeat that moves the producer's
            # heartbeat chain forward, so always the newest promise).
            vouched = {
                "at": b.at.isoformat(),
                "heads": [[h.topic, h.partition, h.epoch, h.last_sequence] for h in b.heads],
            }
            self._exec(cur, _UPSERT_META, (_vouched_key(producer_id, topic), json.dumps(vouched)))

    # -- re-judging what a compromised key signed ---------------------------------------------------

    def withdraw(self, key_id: str, since: datetime) -> Withdrawal:
        """See :meth:`Store.withdraw`. Idempotent: a second call for the same key and time is a
        no-op reported as ``already_done``."""
        self._check_open()
        out: list[Withdrawal] = []
        kid = bytes.fromhex(key_id)

        def work(cur: Cursor) -> None:
            out.clear()
            self._lock(cur, [f"withdraw:{key_id}"])
            t = self._enc_time(since)
            if self._exec(cur, _REJUDGED, (key_id, t)).fetchone() is not None:
                out.append(Withdrawal(key_id, since, 0, 0, 0, 0, already_done=True))
                return
            now = self._enc_time(self._now())
            self._materialise_originals(cur, "key_id = ? AND appended_at >= ?", (kid, t))
            affected = self._exec(
                cur,
                "SELECT DISTINCT producer_id, record_id FROM record_versions "
                "WHERE key_id = ? AND appended_at >= ? AND withdrawn = ?",
                (kid, t, False),
            ).fetchall()
            versions = self._exec(
                cur,
                "UPDATE record_versions SET withdrawn = ? "
                "WHERE key_id = ? AND appended_at >= ? AND withdrawn = ?",
                (True, kid, t, False),
            ).rowcount
            amendments = self._exec(
                cur,
                "UPDATE amendments SET status = 'withdrawn', applied_at = ? "
                "WHERE key_id = ? AND appended_at >= ? AND status <> 'withdrawn'",
                (now, kid, t),
            ).rowcount
            for producer, rid in affected:
                self._refold(cur, str(producer), str(rid), now)
            streams = self._roll_back_streams(cur, key_id, kid, t, now)
            self._exec(
                cur,
                _INSERT_REJUDGED,
                (key_id, t, versions, amendments, len(affected), streams, now),
            )
            out.append(Withdrawal(key_id, since, versions, amendments, len(affected), streams))

        self._transaction(work)
        w = out[0]
        if not w.already_done:
            log.warning(
                "store.withdrawn",
                key_id=key_id,
                since=since.isoformat(),
                versions=w.versions,
                amendments=w.amendments,
                records=w.records,
            )
        return w

    def _roll_back_streams(
        self,
        cur: Cursor,
        key_id: str,
        kid: bytes,
        t: object,
        now: object,
    ) -> int:
        """Each stream of this key goes back to its last record the broker appended before ``t``."""
        rows = self._exec(
            cur,
            "SELECT producer_id, topic, kafka_partition FROM chain WHERE epoch = ?",
            (key_id,),
        ).fetchall()
        for producer, topic, partition in rows:
            good = self._exec(
                cur,
                "SELECT sequence, digest FROM ("
                " SELECT sequence, digest FROM records WHERE key_id = ? AND topic = ?"
                "  AND kafka_partition = ? AND appended_at < ?"
                " UNION ALL SELECT sequence, digest FROM record_versions WHERE key_id = ?"
                "  AND topic = ? AND kafka_partition = ? AND appended_at < ?"
                " UNION ALL SELECT sequence, digest FROM amendments WHERE key_id = ? AND topic = ?"
                "  AND kafka_partition = ? AND appended_at < ?"
                ") AS kept ORDER BY sequence DESC LIMIT 1",
                (kid, topic, partition, t) * 3,
            ).fetchone()
            where = (producer, topic, partition, key_id)
            if good is None:
                self._exec(
                    cur,
                    "DELETE FROM chain WHERE producer_id = ? AND topic = ? "
                    "AND kafka_partition = ? AND epoch = ?",
                    where,
                )
            else:
                self._exec(
                    cur,
                    "UPDATE chain SET last_sequence = ?, last_digest = ?, gaps = ?, updated_at = ? "
                    "WHERE producer_id = ? AND topic = ? AND kafka_partition = ? AND epoch = ?",
                    (int(good[0]), bytes(good[1]), self._enc_json([]), now, *where),
                )
        return len(rows)

    def meta(self, key: str) -> str | None:
        """A value kept with a batch (:attr:`~intelbus.trust.model.Batch.meta`), or None."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    # -- tombstones (issue 16) ----------------------------------------------------------------------

    def _wipe(self, cur: Cursor, producer: str, rid: str) -> None:
        """Delete every copy of a record's contents this store holds (the ``records`` row is
        re-folded or pruned by the caller, in the same transaction)."""
        self._exec(cur, _WIPE_VERSIONS, (producer, rid))
        self._exec(cur, _WIPE_AMENDMENTS, (producer, rid))
        self._exec(cur, _WIPE_QUARANTINE, (b"", producer, rid))

    def _erase(self, cur: Cursor, v: NewVersion, now: object) -> None:
        """Apply an erasure version just written: wipe the contents, keep a tombstone."""
        self._wipe(cur, v.producer_id, v.record_id)
        s = v.source
        self._exec(
            cur,
            _INSERT_TOMBSTONE,
            (
                v.producer_id,
                v.record_id,
                "erasure",
                "erasure",
                s.legal_basis,
                s.record_id,
                s.reason,
                self._enc_time(s.amended_at or s.appended_at),
                now,
            ),
        )
        log.info(
            "record.erased", producer=v.producer_id, record_id=v.record_id, erasure=s.record_id
        )

    def prune(self, expired: Sequence[Expiry]) -> int:
        """See :meth:`Store.prune`. One transaction: all of ``expired`` or none."""
        self._check_open()
        done = [0]

        def work(cur: Cursor) -> None:
            # The same record locks a consumer's batch takes (PostgreSQL): a correction being
            # judged for one of these records waits, and sees the tombstone when it goes on.
            self._lock(cur, sorted(set(_lock_keys((e.record_id for e in expired), ()))))
            now = self._enc_time(self._now())
            empty = self._enc_json([])
            for e in sorted(expired, key=lambda e: (e.producer_id, e.record_id)):
                key = (e.producer_id, e.record_id)
                if self._exec(cur, _PRUNE_RECORD, (empty, now, *key)).rowcount != 1:
                    continue  # not held (or a tombstone already): nothing to prune
                self._wipe(cur, *key)
                self._exec(
                    cur,
                    _INSERT_TOMBSTONE,
                    (*key, "retention", e.rule_id, "", None, "", self._enc_time(e.expired_at), now),
                )
                done[0] += 1

        self._transaction(work)
        if done[0]:
            log.info("store.pruned", records=done[0])
        return done[0]

    def tombstones(self, reason: str | None = None, limit: int = 1000) -> list[Tombstone]:
        """See :meth:`Store.tombstones`."""
        self._check_open()
        if reason not in (None, "erasure", "retention"):
            raise ValueError(f"unknown tombstone reason {reason!r}")
        rows = self._query(_TOMBSTONES, (reason is None, reason or "", limit))
        return [
            Tombstone(
                producer_id=str(r[0]),
                record_id=str(r[1]),
                kind=str(r[2]),
                topic=str(r[3]),
                partition=int(r[4]),
                offset=int(r[5]),
                sequence=int(r[6]),
                digest=bytes(r[7]),
                created_at=self._dec_time(r[8]),
                appended_at=self._dec_time(r[9]),
                reason=str(r[10]),
                rule_id=str(r[11]),
                legal_basis=str(r[12]),
                erasure_record_id=None if r[13] is None else str(r[13]),
                effective_at=self._dec_time(r[14]),
                tombstoned_at=self._dec_time(r[15]),
            )
            for r in rows
        ]

    def coverage(self, topic: str) -> Coverage:
        """See :meth:`Store.coverage`."""
        self._check_open()
        rows = tuple(
            HeldPosition(int(r[0]), int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), str(r[5]))
            for r in self._query(_POSITIONS, (topic,))
        )
        amendments = frozenset(
            (int(r[0]), int(r[1]))
            for r in self._query(_AMENDMENT_POSITIONS, (topic,))
            if r[0] is not None and r[1] is not None
        )
        quarantined = frozenset(
            (int(r[0]), int(r[1])) for r in self._query(_QUARANTINE_POSITIONS, (topic,))
        )
        read_to = {int(r[0]): int(r[1]) for r in self._query(_READ_TO, (topic,))}
        epochs = frozenset(
            str(r[0]).removeprefix(SHREDDED_EPOCH_META)
            for r in self._query(_META_LIKE, (SHREDDED_EPOCH_META + "%",))
        )
        prefix = f"{_READ_FROM_PREFIX}{topic}|"
        read_from = {
            int(str(r[0]).removeprefix(prefix)): int(r[1])
            for r in self._query(_META_LIKE, (prefix + "%",))
        }
        owner = self.meta(OWNER_META_KEY)
        return Coverage(rows, amendments, quarantined, read_to, owner, epochs, read_from)

    def retention_candidates(self) -> Iterator[RetentionCandidate]:
        """See :meth:`Store.retention_candidates`: streamed in pages, in key order."""
        self._check_open()
        after = ("", "")
        while True:
            rows = self._query(_RETENTION_CANDIDATES, (*after, EXPORT_PAGE))
            for r in rows:
                payload = None if r[9] is None else self._dec_json(r[9])
                grading = payload.get("grading") if isinstance(payload, dict) else None
                code = grading.get("handling_code") if isinstance(grading, dict) else None
                yield RetentionCandidate(
                    producer_id=str(r[0]),
                    record_id=str(r[1]),
                    kind=str(r[2]),
                    tlp=None if r[3] is None else str(r[3]),
                    classification=None if r[4] is None else str(r[4]),
                    force_area=None if r[5] is None else str(r[5]),
                    handling_code=None if code is None else str(code),
                    event_at=self._dec_time(r[6]),
                    stored_at=self._dec_time(r[7]),
                    status=str(r[8]),
                )
            if len(rows) < EXPORT_PAGE:
                return
            after = (str(rows[-1][0]), str(rows[-1][1]))

    def rejudged(self) -> list[tuple[str, datetime]]:
        """Every (key id, since) withdrawal already applied to this store."""
        return [
            (str(k), self._dec_time(s))
            for k, s in self._query("SELECT key_id, since FROM rejudged ORDER BY key_id, since")
        ]

    # -- reads --------------------------------------------------------------------------------------

    def load_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """See :meth:`Store.load_offsets`."""
        return {int(p): int(o) for p, o in self._query(_LOAD_OFFSETS, (group_id, topic))}

    def feeds(self) -> list[FeedBeat]:
        """See :meth:`Store.feeds`."""
        vouched = {str(k): str(v) for k, v in self._query(_META_LIKE, (f"{_VOUCHED_PREFIX}%",))}
        out: list[FeedBeat] = []
        for p, t, at, interval in self._query(_LOAD_FEEDS):
            raw = vouched.get(_vouched_key(str(p), str(t)))
            heads = _heads(raw) if raw is not None else ()
            out.append(FeedBeat(str(p), str(t), self._dec_time(at), int(interval), heads))
        return out

    def load_chain(self) -> dict[StreamKey, ChainState]:
        """See :meth:`Store.load_chain`."""
        out: dict[StreamKey, ChainState] = {}
        for p, t, part, epoch, seq, d, gaps in self._query(_LOAD_CHAIN):
            key = StreamKey(str(p), str(t), int(part), str(epoch))
            out[key] = ChainState(key, int(seq), bytes(d), _gaps(self._dec_json(gaps)))
        return out

    def _view(self, row: Sequence[Any], history: tuple[HistoryEntry, ...]) -> StoredRecordView:
        return StoredRecordView(
            record_id=str(row[0]),
            topic=str(row[1]),
            partition=int(row[2]),
            offset=int(row[3]),
            producer_id=str(row[4]),
            kind=str(row[5]),
            sequence=int(row[6]),
            digest=bytes(row[7]),
            created_at=self._dec_time(row[8]),
            appended_at=self._dec_time(row[9]),
            policy_hash=str(row[10]),
            rule_id=str(row[11]),
            action=str(row[12]),
            redacted_fields=tuple(self._dec_json(row[13])),
            tlp=None if row[14] is None else str(row[14]),
            classification=None if row[15] is None else str(row[15]),
            force_area=None if row[16] is None else str(row[16]),
            occurred_at=None if row[17] is None else self._dec_time(row[17]),
            payload=None if row[18] is None else self._dec_json(row[18]),
            version=int(row[19]),
            status=str(row[20]),
            key_id=None if row[21] is None else bytes(row[21]),
            history=history,
            stored_at=self._dec_time(row[22]),
        )

    def _history(self, producer: str, record_id: str) -> tuple[HistoryEntry, ...]:
        """Every version of the record, oldest first (the current one included)."""
        out = []
        for (
            v,
            change,
            payload,
            source,
            outcome,
            amended,
            appended,
            reason,
            withdrawn,
            recorded,
        ) in self._query(_HISTORY, (producer, record_id)):
            at = amended if amended is not None else appended
            out.append(
                HistoryEntry(
                    version=int(v),
                    change=str(change),
                    payload=None if payload is None else self._dec_json(payload),
                    amendment_record_id=str(source),
                    outcome=str(outcome),
                    at=self._dec_time(at),
                    reason=str(reason),
                    withdrawn=bool(withdrawn),
                    recorded_at=self._dec_time(recorded),
                )
            )
        return tuple(out)

    def _views(
        self, rows: list[tuple[Any, ...]], *, history: bool = True
    ) -> list[StoredRecordView]:
        # Only amended records (version > 1) have a history worth a query.
        return [
            self._view(r, self._history(r[4], r[0]) if history and int(r[19]) > 1 else ())
            for r in rows
        ]

    def get(self, record_id: str, producer_id: str | None = None) -> StoredRecordView | None:
        """See :meth:`Store.get`."""
        found = [
            v
            for v in self.get_all(record_id)
            if producer_id is None or v.producer_id == producer_id
        ]
        return found[0] if found else None

    def get_all(self, record_id: str) -> list[StoredRecordView]:
        """See :meth:`Store.get_all`."""
        return self._views(self._query(_GET, (record_id,)))

    def count_by_action(self) -> dict[str, int]:
        """See :meth:`Store.count_by_action`."""
        counts = {"store": 0, "redact": 0}
        for status, action, held, n in self._query(_COUNT_STATUS):
            if held and str(status) in VISIBLE and str(action) in counts:
                counts[str(action)] += int(n)
        return counts

    def summary(self) -> dict[str, int]:
        """See :meth:`Store.summary`. Quarantine counts are ``quarantined:<reason>`` keys only."""
        result = {
            "stored": 0,
            "redacted": 0,
            "withheld": 0,
            "retracted": 0,
            "policy_quarantined": 0,
            "withdrawn": 0,
            "erased": 0,
            "pruned": 0,
        }
        by_status = {
            RecordStatus.ERASED.value: "erased",
            RecordStatus.PRUNED.value: "pruned",
            RecordStatus.RETRACTED.value: "retracted",
            RecordStatus.WITHHELD.value: "withheld",
            RecordStatus.QUARANTINED.value: "policy_quarantined",
            RecordStatus.WITHDRAWN.value: "withdrawn",
        }
        for status, action, _held, n in self._query(_COUNT_STATUS):
            if str(status) == RecordStatus.LIVE.value:
                result["redacted" if str(action) == "redact" else "stored"] += int(n)
            elif str(status) in by_status:
                result[by_status[str(status)]] += int(n)
        amendments = {str(s): int(n) for s, n in self._query(_COUNT_AMENDMENTS)}
        for status in AmendmentStatus:
            result[f"amendments_{status.value}"] = amendments.get(status.value, 0)
        for reason, n in self._query(_COUNT_QUARANTINE):
            result[f"quarantined:{reason}"] = int(n)
        return result

    def list_records(
        self,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        force_area: str | None = None,
        tlp: str | None = None,
        limit: int = 100,
    ) -> list[StoredRecordView]:
        """See :meth:`Store.list_records`. ``since`` is inclusive, ``until`` exclusive."""
        _aware("since", since)
        _aware("until", until)
        params = (
            kind is None,
            kind,
            since is None,
            self._enc_time(since),
            until is None,
            self._enc_time(until),
            force_area is None,
            force_area,
            tlp is None,
            tlp,
            max(0, limit),
        )
        return self._views(self._query(_LIST, params))

    def search(self, text: str, limit: int = 100) -> list[StoredRecordView]:
        """See :meth:`Store.search`. Matched in Python over the visible records: a value match
        that ignores spaces and hyphens (registrations) is not a SQL substring test."""
        found = [v for v in self.iter_records() if matches(v.payload, text)]
        found.sort(key=lambda v: v.occurred_at or v.created_at, reverse=True)
        return found[: max(0, limit)]

    def quarantine_entries(self, limit: int = 100) -> list[QuarantineEntry]:
        """See :meth:`Store.quarantine_entries`."""
        return [
            QuarantineEntry(
                str(t),
                int(p),
                int(o),
                bytes(raw),
                int(size),
                bytes(digest),
                str(reason),
                str(msg),
                None if rid is None else str(rid),
                None if pid is None else str(pid),
                bool(authentic),
                self._dec_time(at),
            )
            for t, p, o, raw, size, digest, reason, msg, rid, pid, authentic, at in self._query(
                _QUARANTINE, (max(0, limit),)
            )
        ]

    def iter_records(self) -> Iterator[StoredRecordView]:
        """See :meth:`Store.iter_records`. Pages by key, so no cursor stays open between pages."""
        key: tuple[str, int, int, str, str] = ("", -1, -1, "", "")
        while True:
            rows = self._query(_EXPORT_PAGE, (*key, EXPORT_PAGE))
            yield from self._views(rows)
            if len(rows) < EXPORT_PAGE:
                return
            last = rows[-1]
            key = (last[1], int(last[2]), int(last[3]), last[0], last[4])

    def close(self) -> None:
        """See :meth:`Store.close`."""
        if not self._closed:
            self._closed = True
            self._close_connection()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The outcome column of an amendment registered without a decision (applied or unreadable).
_AMENDMENT_OUTCOME = {
    RecordKind.RETRACTION: Outcome.RETRACT.value,
    RecordKind.ERASURE: Outcome.ERASE.value,
}

_PENDING_COLUMNS = """producer_id, amendment_record_id, kind, target_record_id, key_id, sequence,
    digest, topic, kafka_partition, kafka_offset, created_at, appended_at, amended_at, reason,
    replacement_kind, outcome, rule_id, policy_hash, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, legal_basis"""


def _gaps(value: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        return ()
    return tuple((int(a), int(b)) for a, b in value)


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise StoreError(f"{name} must be a timezone-aware datetime")


def _lock_keys(record_ids: Iterable[str], streams: Iterable[StreamKey]) -> list[str]:
    """Lock names for record ids and streams (the PostgreSQL backend hashes them)."""
    return [f"id:{r}" for r in record_ids] + [
        f"stream:{s.producer_id}/{s.topic}/{s.partition}/{s.epoch}" for s in streams
    ]


def _batch_lock_keys(batch: Batch) -> list[str]:
    ids = [r.record_id for r in batch.records]
    ids += [v.record_id for v in batch.versions]
    ids += [a.record_id for a in batch.amendments]
    ids += [a.target_record_id for a in batch.amendments if a.target_record_id is not None]
    return _lock_keys(ids, [c.stream for c in batch.chain])


def read_from_key(topic: str, partition: int) -> str:
    """The ``meta`` key of where a store began reading ``topic``'s ``partition``."""
    return f"{_READ_FROM_PREFIX}{topic}|{partition}"


def _vouched_key(producer_id: str, topic: str) -> str:
    return f"{_VOUCHED_PREFIX}{producer_id}|{topic}"


def _heads(raw: str) -> tuple[VouchedHead, ...]:
    """The vouched heads kept with a feed.

    Raises:
        StoreError: the row does not read back (edited by hand: the store never writes one).
    """
    try:
        value = json.loads(raw)
        return tuple(
            VouchedHead(str(t), int(part), str(epoch), int(seq))
            for t, part, epoch, seq in value["heads"]
        )
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(
            f"a feed's vouched stream heads do not read back: {type(e).__name__}"
        ) from e

"""The consumer-side store: what goes in, what comes out, and the one commit algorithm.

This module owns

* the frozen values a consumer hands to the store (:class:`StoredRecord`, :class:`WithheldReceipt`,
  :class:`QuarantineEntry`, :class:`Amendment`, :class:`ChainState`, :class:`FeedBeat`, gathered
  in a :class:`Batch`), and the views it reads back (:class:`StoredRecordView`,
  :class:`HistoryEntry`; :meth:`Store.feeds` reads back :class:`FeedBeat` too);
* the :class:`Store` protocol every backend implements;
* :class:`SqlStore`, the backend-neutral commit and query logic over a DB-API connection, so that
  SQLite (:mod:`intelbus.store.sqlite`) and PostgreSQL (:mod:`intelbus.store.postgres`) behave the
  same way; the backends supply the schema, the connection, value encodings and the few statements
  whose SQL differs.

The contract (SECURITY.md, "Durability settings"):

* :meth:`Store.commit` writes everything of a batch (records, receipts, quarantine rows, amendments,
  chain states and the next offsets) in **one** transaction, durable when it returns. If anything
  fails, nothing of the batch is kept and :class:`StoreError` is raised.
* It is idempotent, because delivery is at least once: a record id, receipt or amendment id already
  stored is left unchanged; a quarantine row at an already-quarantined (topic, partition, offset)
  is left unchanged; offsets and chain high-water marks only move forward.

Amendments. A correction replaces the stored payload; a retraction marks the record withdrawn and
keeps its payload. Both add one to the record's ``version`` and write a history row holding the
payload as it was before. A correction whose new content this agency's policy withholds
(``new_payload is None``) keeps the old payload but marks the record ``superseded``. An amendment
whose target is not (yet) stored is kept **pending** and applied, in arrival order, when the
target arrives in a later batch; a target that was withheld never arrives, so its amendments stay
pending (they are counted in :meth:`Store.summary`). A pending amendment whose target turns out
to belong to another producer is refused (status ``refused``), never applied; so is one whose
target arrives later in the same batch (from another partition, so the pipeline could not know
its producer yet). An amendment of a record stored by an earlier batch by another producer makes
:meth:`Store.commit` raise: the pipeline must have quarantined it (``foreign_target``).

Feeds. The newest heartbeat seen from each producer on each topic (broker append time, promised
interval), kept so a frozen feed can be noticed across consumer restarts (consumers/liveness.py).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from intelbus.errors import InfraError
from intelbus.log import get_logger

log = get_logger("intelbus.store")

SCHEMA_VERSION = 2  # 2: the feeds table
DIGEST_SIZE = 32
#: Rows per page when :meth:`Store.iter_records` streams an export.
EXPORT_PAGE = 500

RecordKind = Literal["sighting", "incident"]
StoreAction = Literal["store", "redact"]
AmendmentKind = Literal["correction", "retraction"]


class StoreError(InfraError):
    """The store could not commit or read. Nothing of a failed batch was kept; retry the batch."""


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise StoreError(f"{name} must be a timezone-aware datetime")


# --- What goes in. ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record this agency may hold: the decoded (possibly redacted) payload and where it came from."""

    record_id: str
    topic: str
    partition: int
    offset: int
    producer_id: str
    kind: RecordKind | str
    sequence: int
    digest: bytes
    created_at: datetime  # claimed by the producer
    appended_at: datetime  # the broker's LogAppendTime
    policy_hash: str
    rule_id: str
    action: StoreAction | str
    redacted_fields: tuple[str, ...]
    tlp: str
    classification: str
    force_area: str | None
    occurred_at: datetime | None  # when the sighting was observed / the incident occurred
    payload: dict[str, object]

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_SIZE:
            raise StoreError(f"record {self.record_id}: digest is {len(self.digest)} bytes")
        if self.kind not in {"sighting", "incident"}:
            raise StoreError(f"record {self.record_id}: unknown kind")
        if self.action not in {"store", "redact"}:
            raise StoreError(f"record {self.record_id}: unknown action")
        _aware("created_at", self.created_at)
        _aware("appended_at", self.appended_at)
        _aware("occurred_at", self.occurred_at)


@dataclass(frozen=True, slots=True)
class WithheldReceipt:
    """Proof that a record arrived and was withheld by policy (or not addressed to this agency)."""

    record_id: str
    topic: str
    partition: int
    offset: int
    producer_id: str
    digest: bytes
    rule_id: str
    policy_hash: str


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A rejected Kafka record, kept byte for byte with its stable reason code."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    reason: str
    message: str
    record_id: str | None
    producer_id: str | None


@dataclass(frozen=True, slots=True)
class Amendment:
    """A correction (``new_payload`` set, or None when withheld by policy) or a retraction."""

    kind: AmendmentKind | str
    amendment_record_id: str
    target_record_id: str
    producer_id: str
    at: datetime
    reason: str
    new_payload: dict[str, object] | None = None

    def __post_init__(self) -> None:
        if self.kind not in {"correction", "retraction"}:
            raise StoreError(f"amendment {self.amendment_record_id}: unknown kind")
        _aware("at", self.at)


@dataclass(frozen=True, slots=True)
class ChainState:
    """The high-water mark of one producer's hash chain on one stream (topic)."""

    producer_id: str
    stream: str
    last_sequence: int
    last_digest: bytes


@dataclass(frozen=True, slots=True)
class FeedBeat:
    """A heartbeat seen: ``producer_id`` was alive at ``at`` on ``topic`` and promised another
    within ``interval_ms``. ``at`` is the broker's append time where known."""

    producer_id: str
    topic: str
    at: datetime
    interval_ms: int

    def __post_init__(self) -> None:
        _aware("at", self.at)
        if self.interval_ms <= 0:
            raise StoreError(f"heartbeat of {self.producer_id}: interval must be positive")


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one poll produced; committed in one transaction together with the offsets."""

    group_id: str
    records: Sequence[StoredRecord] = ()
    withheld: Sequence[WithheldReceipt] = ()
    quarantined: Sequence[QuarantineEntry] = ()
    amendments: Sequence[Amendment] = ()
    chain: Sequence[ChainState] = ()
    beats: Sequence[FeedBeat] = ()
    #: (topic, partition) -> the next offset to read.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


# --- What comes out. ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """The payload a record had before one amendment was applied."""

    version: int  # the version the payload had
    payload: dict[str, object]
    amendment_record_id: str
    kind: str
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class StoredRecordView:
    """A stored record as an analyst sees it: current payload, version, retraction and history."""

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
    tlp: str
    classification: str
    force_area: str | None
    occurred_at: datetime | None
    payload: dict[str, object]
    version: int
    retracted: bool
    superseded: bool
    history: tuple[HistoryEntry, ...] = ()


@runtime_checkable
class Store(Protocol):
    """An agency's durable store. See the module docstring for the contract."""

    def commit(self, batch: Batch) -> None:
        """Write the whole batch in one transaction (idempotent); durable when it returns."""
        ...

    def load_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """partition -> next offset to read, for this consumer group and topic."""
        ...

    def load_chain(self) -> dict[tuple[str, str], ChainState]:
        """(producer_id, stream) -> the stored chain high-water mark."""
        ...

    def get(self, record_id: str) -> StoredRecordView | None:
        """The stored record with its history, or None (never stored, or only a withheld receipt)."""
        ...

    def feeds(self) -> list[FeedBeat]:
        """The newest heartbeat of each (producer, topic) ever seen, by producer then topic."""
        ...

    def producer_of(self, record_id: str) -> str | None:
        """The producer of a stored record **or** a withheld receipt, else None."""
        ...

    def count_by_action(self) -> dict[str, int]:
        """action ("store", "redact") -> number of stored records."""
        ...

    def summary(self) -> dict[str, int]:
        """Counts: stored, redacted, withheld, retracted, amendments, ``quarantined:<reason>``."""
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
        """Stored records, newest event first, filtered; times compare to occurred_at else created_at."""
        ...

    def search(self, text: str, limit: int = 100) -> list[StoredRecordView]:
        """Stored records whose payload JSON contains ``text`` (case-insensitive substring)."""
        ...

    def quarantine_entries(self, limit: int = 100) -> list[QuarantineEntry]:
        """Quarantined records, by (topic, partition, offset)."""
        ...

    def iter_records(self) -> Iterator[StoredRecordView]:
        """Every stored record with its history, by (topic, partition, offset), for export."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...


# --- The shared SQL implementation. -------------------------------------------------------------------

# Statements are written once with "?" placeholders; the PostgreSQL backend rewrites them to "%s".
# Every SELECT of records lists its columns in the order _view() reads them.
# Column names avoid "partition"/"offset", which are keywords in one or both dialects.

_INSERT_RECORD = """
INSERT INTO records (record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence,
    digest, created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp,
    classification, force_area, occurred_at, event_at, payload, version, retracted, superseded,
    stored_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (record_id) DO NOTHING
RETURNING record_id
"""

_INSERT_WITHHELD = """
INSERT INTO withheld (record_id, topic, kafka_partition, kafka_offset, producer_id, digest, rule_id,
    policy_hash, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (record_id) DO NOTHING
"""

_INSERT_QUARANTINE = """
INSERT INTO quarantine (topic, kafka_partition, kafka_offset, raw, reason, message, record_id,
    producer_id, quarantined_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING
"""

_INSERT_AMENDMENT = """
INSERT INTO amendments (amendment_record_id, kind, target_record_id, producer_id, at, reason,
    new_payload, status, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)
ON CONFLICT (amendment_record_id) DO NOTHING
RETURNING amendment_record_id
"""

_PENDING_FOR = """
SELECT amendment_record_id, kind, target_record_id, producer_id, at, reason, new_payload
FROM amendments WHERE target_record_id = ? AND status = 'pending' ORDER BY arrival
"""

_SET_AMENDMENT_STATUS = (
    "UPDATE amendments SET status = ?, applied_at = ? WHERE amendment_record_id = ?"
)

_CURRENT = "SELECT producer_id, payload, version FROM records WHERE record_id = ?"

_INSERT_HISTORY = """
INSERT INTO record_history (record_id, version, payload, amendment_record_id, kind, at, reason,
    applied_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (record_id, version) DO NOTHING
"""

_CORRECT = "UPDATE records SET payload = ?, version = version + 1 WHERE record_id = ?"
_SUPERSEDE = "UPDATE records SET superseded = ?, version = version + 1 WHERE record_id = ?"
_RETRACT = "UPDATE records SET retracted = ?, version = version + 1 WHERE record_id = ?"

# A chain high-water mark never moves backwards, whatever order concurrent members commit in.
_UPSERT_CHAIN = """
INSERT INTO chain (producer_id, stream, last_sequence, last_digest) VALUES (?, ?, ?, ?)
ON CONFLICT (producer_id, stream) DO UPDATE
SET last_sequence = excluded.last_sequence, last_digest = excluded.last_digest
WHERE excluded.last_sequence > chain.last_sequence
"""

_UPSERT_FEED = """
INSERT INTO feeds (producer_id, topic, last_heartbeat_at, interval_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (producer_id, topic) DO UPDATE
SET last_heartbeat_at = excluded.last_heartbeat_at, interval_ms = excluded.interval_ms
WHERE excluded.last_heartbeat_at > feeds.last_heartbeat_at
"""

_LOAD_FEEDS = "SELECT producer_id, topic, last_heartbeat_at, interval_ms FROM feeds ORDER BY producer_id, topic"

_LOAD_OFFSETS = (
    "SELECT kafka_partition, next_offset FROM offsets WHERE group_id = ? AND topic = ? "
    "ORDER BY kafka_partition"
)
_LOAD_CHAIN = "SELECT producer_id, stream, last_sequence, last_digest FROM chain"
_GET = """
SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence, digest,
    created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, version, retracted, superseded
FROM records WHERE record_id = ?
"""
_HISTORY = """
SELECT version, payload, amendment_record_id, kind, at, reason FROM record_history
WHERE record_id = ? ORDER BY version
"""
_PRODUCER_OF = """
SELECT producer_id FROM records WHERE record_id = ?
UNION ALL SELECT producer_id FROM withheld WHERE record_id = ?
"""
_COUNT_BY_ACTION = "SELECT action, COUNT(*) FROM records GROUP BY action ORDER BY action"
_COUNT_WITHHELD = "SELECT COUNT(*) FROM withheld"
_COUNT_RETRACTED = "SELECT COUNT(*) FROM records WHERE retracted = ?"
_COUNT_QUARANTINE = "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason"
_COUNT_AMENDMENTS = "SELECT status, COUNT(*) FROM amendments GROUP BY status ORDER BY status"
# Each filter is "(<flag: not filtering> OR <condition>)" so the statement is one constant.
_LIST = """
SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence, digest,
    created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, version, retracted, superseded
FROM records
WHERE (? OR kind = ?) AND (? OR event_at >= ?) AND (? OR event_at < ?)
  AND (? OR force_area = ?) AND (? OR tlp = ?)
ORDER BY event_at DESC, record_id LIMIT ?
"""
_QUARANTINE = """
SELECT topic, kafka_partition, kafka_offset, raw, reason, message, record_id, producer_id
FROM quarantine ORDER BY topic, kafka_partition, kafka_offset LIMIT ?
"""
_EXPORT_PAGE = """
SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence, digest,
    created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, version, retracted, superseded
FROM records
WHERE (topic, kafka_partition, kafka_offset, record_id) > (?, ?, ?, ?)
ORDER BY topic, kafka_partition, kafka_offset, record_id LIMIT ?
"""


class SqlStore(abc.ABC):
    """The commit algorithm and queries, shared by the SQLite and PostgreSQL backends.

    Subclasses provide the connection (``_conn``), value encodings, the transaction brackets and the
    statements whose SQL differs between the dialects.
    """

    #: Upsert of (group_id, topic, kafka_partition, next_offset) that keeps the larger offset.
    _UPSERT_OFFSET: str
    #: Stored records whose payload contains the parameter (lower-cased), newest first, then LIMIT.
    _SEARCH: str

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

    def _lock_ids(self, cur: Any, ids: Iterable[str]) -> None:  # noqa: ANN401 - DB-API cursor
        """Serialise concurrent writers touching the same record ids (no-op where writers already are)."""
        del cur, ids

    @abc.abstractmethod
    def _now(self) -> datetime: ...

    # -- helpers ------------------------------------------------------------------------------------

    def _exec(self, cur: Any, statement: str, params: Sequence[object] = ()) -> Any:  # noqa: ANN401
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
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise StoreError(f"value is not JSON-serialisable: {type(e).__name__}") from e
        # PostgreSQL's jsonb cannot hold U+0000; refuse it on every backend so both behave alike.
        if "\\u0000" in text:
            raise StoreError("value contains U+0000, which the store cannot hold")
        return text

    # -- the commit ---------------------------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        """See :meth:`Store.commit`."""
        self._check_open()
        self._transaction(lambda cur: self._write(cur, batch))
        log.debug(
            "store.committed",
            group=batch.group_id,
            records=len(batch.records),
            withheld=len(batch.withheld),
            quarantined=len(batch.quarantined),
            amendments=len(batch.amendments),
        )

    def _write(self, cur: Any, batch: Batch) -> None:  # noqa: ANN401 - DB-API cursor
        now = self._enc_time(self._now())
        # Every write below takes its locks in one global order (ids, then sorted keys), so two
        # members of one consumer group committing overlapping batches cannot deadlock.
        self._lock_ids(
            cur,
            [r.record_id for r in batch.records]
            + [w.record_id for w in batch.withheld]
            + [a.target_record_id for a in batch.amendments]
            + [a.amendment_record_id for a in batch.amendments],
        )
        new_ids: list[str] = []
        for r in sorted(batch.records, key=lambda r: r.record_id):
            if not isinstance(r.payload, dict):
                raise StoreError(f"record {r.record_id}: payload must be a JSON object")
            event_at = r.occurred_at if r.occurred_at is not None else r.created_at
            row = self._exec(
                cur,
                _INSERT_RECORD,
                (
                    r.record_id,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.producer_id,
                    r.kind,
                    r.sequence,
                    bytes(r.digest),
                    self._enc_time(r.created_at),
                    self._enc_time(r.appended_at),
                    r.policy_hash,
                    r.rule_id,
                    r.action,
                    self._enc_json(list(r.redacted_fields)),
                    r.tlp,
                    r.classification,
                    r.force_area,
                    self._enc_time(r.occurred_at),
                    self._enc_time(event_at),
                    self._enc_json(r.payload),
                    False,
                    False,
                    now,
                ),
            ).fetchone()
            if row is not None:
                new_ids.append(r.record_id)
        for w in sorted(batch.withheld, key=lambda w: w.record_id):
            self._exec(
                cur,
                _INSERT_WITHHELD,
                (
                    w.record_id,
                    w.topic,
                    w.partition,
                    w.offset,
                    w.producer_id,
                    bytes(w.digest),
                    w.rule_id,
                    w.policy_hash,
                    now,
                ),
            )
        for q in sorted(batch.quarantined, key=lambda q: (q.topic, q.partition, q.offset)):
            self._exec(
                cur,
                _INSERT_QUARANTINE,
                (
                    q.topic,
                    q.partition,
                    q.offset,
                    bytes(q.raw),
                    q.reason,
                    q.message,
                    q.record_id,
                    q.producer_id,
                    now,
                ),
            )
        # Amendments of records that just arrived (and were pending) apply first, in arrival
        # order; then this batch's amendments, in batch order (a correction before a retraction).
        for record_id in new_ids:
            for row in self._exec(cur, _PENDING_FOR, (record_id,)).fetchall():
                self._apply(cur, self._amendment_from_row(row), now, strict=False)
        # A target that arrives in this same batch, after its amendment, was unknown when the
        # pipeline judged the amendment: like a pending one, a foreign amendment of it is refused.
        # Raising would fail the batch on every retry: one hostile record would stop the consumer.
        arrived = set(new_ids)
        for a in batch.amendments:
            inserted = self._exec(
                cur,
                _INSERT_AMENDMENT,
                (
                    a.amendment_record_id,
                    a.kind,
                    a.target_record_id,
                    a.producer_id,
                    self._enc_time(a.at),
                    a.reason,
                    None if a.new_payload is None else self._enc_json(a.new_payload),
                    now,
                ),
            ).fetchone()
            if inserted is not None:  # else: already applied (or pending) from an earlier delivery
                self._apply(cur, a, now, strict=a.target_record_id not in arrived)
        for c in sorted(batch.chain, key=lambda c: (c.producer_id, c.stream)):
            self._exec(
                cur, _UPSERT_CHAIN, (c.producer_id, c.stream, c.last_sequence, bytes(c.last_digest))
            )
        self._write_beats(cur, batch.beats)
        for (topic, partition), next_offset in sorted(batch.offsets.items()):
            self._exec(cur, self._UPSERT_OFFSET, (batch.group_id, topic, partition, next_offset))

    def _write_beats(self, cur: Any, beats: Sequence[FeedBeat]) -> None:  # noqa: ANN401 - cursor
        newest: dict[tuple[str, str], FeedBeat] = {}
        for b in beats:
            seen = newest.get((b.producer_id, b.topic))
            if seen is None or b.at > seen.at:
                newest[(b.producer_id, b.topic)] = b
        for (producer_id, topic), b in sorted(newest.items()):
            self._exec(cur, _UPSERT_FEED, (producer_id, topic, self._enc_time(b.at), b.interval_ms))

    def _amendment_from_row(self, row: Sequence[Any]) -> Amendment:
        return Amendment(
            kind=row[1],
            amendment_record_id=row[0],
            target_record_id=row[2],
            producer_id=row[3],
            at=self._dec_time(row[4]),
            reason=row[5],
            new_payload=None if row[6] is None else self._dec_json(row[6]),
        )

    def _apply(self, cur: Any, a: Amendment, now: object, *, strict: bool) -> None:  # noqa: ANN401
        """Apply one amendment already recorded as pending; leave it pending if its target is absent."""
        current = self._exec(cur, _CURRENT, (a.target_record_id,)).fetchone()
        if current is None:
            return  # stays pending until the target arrives (it never will if it was withheld)
        producer_id, payload, version = current
        if producer_id != a.producer_id:
            if strict:
                # The pipeline quarantines these (foreign_target); reaching here is a bug upstream.
                raise StoreError(
                    f"amendment {a.amendment_record_id} by {a.producer_id} targets "
                    f"{a.target_record_id} of another producer"
                )
            self._exec(cur, _SET_AMENDMENT_STATUS, ("refused", now, a.amendment_record_id))
            log.warning(
                "store.amendment_refused",
                amendment=a.amendment_record_id,
                target=a.target_record_id,
            )
            return
        self._exec(
            cur,
            _INSERT_HISTORY,
            (
                a.target_record_id,
                version,
                self._enc_json(self._dec_json(payload)),
                a.amendment_record_id,
                a.kind,
                self._enc_time(a.at),
                a.reason,
                now,
            ),
        )
        if a.kind == "retraction":
            self._exec(cur, _RETRACT, (True, a.target_record_id))
        elif a.new_payload is None:
            self._exec(cur, _SUPERSEDE, (True, a.target_record_id))
        else:
            self._exec(cur, _CORRECT, (self._enc_json(a.new_payload), a.target_record_id))
        self._exec(cur, _SET_AMENDMENT_STATUS, ("applied", now, a.amendment_record_id))

    # -- reads --------------------------------------------------------------------------------------

    def load_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """See :meth:`Store.load_offsets`."""
        return {int(p): int(o) for p, o in self._query(_LOAD_OFFSETS, (group_id, topic))}

    def feeds(self) -> list[FeedBeat]:
        """See :meth:`Store.feeds`."""
        return [
            FeedBeat(str(p), str(t), self._dec_time(at), int(interval))
            for p, t, at, interval in self._query(_LOAD_FEEDS)
        ]

    def load_chain(self) -> dict[tuple[str, str], ChainState]:
        """See :meth:`Store.load_chain`."""
        return {
            (p, s): ChainState(p, s, int(seq), bytes(d))
            for p, s, seq, d in self._query(_LOAD_CHAIN)
        }

    def _view(self, row: Sequence[Any], history: tuple[HistoryEntry, ...]) -> StoredRecordView:
        return StoredRecordView(
            record_id=row[0],
            topic=row[1],
            partition=int(row[2]),
            offset=int(row[3]),
            producer_id=row[4],
            kind=row[5],
            sequence=int(row[6]),
            digest=bytes(row[7]),
            created_at=self._dec_time(row[8]),
            appended_at=self._dec_time(row[9]),
            policy_hash=row[10],
            rule_id=row[11],
            action=row[12],
            redacted_fields=tuple(self._dec_json(row[13])),
            tlp=row[14],
            classification=row[15],
            force_area=row[16],
            occurred_at=None if row[17] is None else self._dec_time(row[17]),
            payload=self._dec_json(row[18]),
            version=int(row[19]),
            retracted=bool(row[20]),
            superseded=bool(row[21]),
            history=history,
        )

    def _history(self, record_id: str) -> tuple[HistoryEntry, ...]:
        return tuple(
            HistoryEntry(int(v), self._dec_json(p), aid, k, self._dec_time(at), reason)
            for v, p, aid, k, at, reason in self._query(_HISTORY, (record_id,))
        )

    def _views(self, rows: list[tuple[Any, ...]]) -> list[StoredRecordView]:
        # Only amended records (version > 1) have history; skip the query for the rest.
        return [self._view(r, self._history(r[0]) if int(r[19]) > 1 else ()) for r in rows]

    def get(self, record_id: str) -> StoredRecordView | None:
        """See :meth:`Store.get`."""
        rows = self._query(_GET, (record_id,))
        return self._views(rows)[0] if rows else None

    def producer_of(self, record_id: str) -> str | None:
        """See :meth:`Store.producer_of`."""
        rows = self._query(_PRODUCER_OF, (record_id, record_id))
        return str(rows[0][0]) if rows else None

    def count_by_action(self) -> dict[str, int]:
        """See :meth:`Store.count_by_action`."""
        counts = {"store": 0, "redact": 0}
        counts.update({str(a): int(n) for a, n in self._query(_COUNT_BY_ACTION)})
        return counts

    def summary(self) -> dict[str, int]:
        """See :meth:`Store.summary`. Quarantine counts are ``quarantined:<reason>`` keys only."""
        by_action = self.count_by_action()
        result = {
            "stored": by_action["store"],
            "redacted": by_action["redact"],
            "withheld": int(self._query(_COUNT_WITHHELD)[0][0]),
            "retracted": int(self._query(_COUNT_RETRACTED, (True,))[0][0]),
        }
        amendments = {str(s): int(n) for s, n in self._query(_COUNT_AMENDMENTS)}
        for status in ("applied", "pending", "refused"):
            result[f"amendments_{status}"] = amendments.get(status, 0)
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
        """See :meth:`Store.search`."""
        return self._views(self._query(self._SEARCH, (text.lower(), max(0, limit))))

    def quarantine_entries(self, limit: int = 100) -> list[QuarantineEntry]:
        """See :meth:`Store.quarantine_entries`."""
        return [
            QuarantineEntry(t, int(p), int(o), bytes(raw), reason, msg, rid, pid)
            for t, p, o, raw, reason, msg, rid, pid in self._query(_QUARANTINE, (max(0, limit),))
        ]

    def iter_records(self) -> Iterator[StoredRecordView]:
        """See :meth:`Store.iter_records`. Pages by key, so no cursor stays open between pages."""
        key: tuple[str, int, int, str] = ("", -1, -1, "")
        while True:
            rows = self._query(_EXPORT_PAGE, (*key, EXPORT_PAGE))
            yield from self._views(rows)
            if len(rows) < EXPORT_PAGE:
                return
            last = rows[-1]
            key = (last[1], int(last[2]), int(last[3]), last[0])

    def close(self) -> None:
        """See :meth:`Store.close`."""
        if not self._closed:
            self._closed = True
            self._close_connection()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

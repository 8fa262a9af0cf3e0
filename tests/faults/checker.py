"""The durability checker, after Kafka's system tests and Jepsen's queue checker.

Inputs are three independent views of one run:

* the producer's **history** (:mod:`tests.faults.history`): what it was told (ok / fail /
  indeterminate, with the acknowledged partition and offset);
* the **topic**, read whole from offset 0 by a fresh group-less reader (:func:`read_topic`); each
  value's envelope header is parsed, *not verified* (the checker asks where records went, not whether
  they are genuine: that is the attack suite's job);
* the consumer's **store**, read with a plain read-only SQLite or PostgreSQL connection
  (:func:`read_store`), not through the store class under test.

:func:`check` is pure, so it is unit-tested on synthetic histories (tests/faults/test_checker.py).
Topic duplicates are reported, not failed: the bus is at-least-once by design (an indeterminate
send is resent with the same bytes) and the store's record-id key makes them harmless. Everything
else must be zero for a case to pass.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intelbus.envelope import wire
from intelbus.errors import IntelbusError
from intelbus.transport import kafka as transport
from tests.faults.history import SendEvent, Status, outcomes

SAMPLE = 10  # ids listed per finding, so a report names examples without growing unbounded


@dataclass(frozen=True, slots=True)
class TopicEntry:
    """One record as read from the topic. ``record_id`` is None when the value is not an envelope."""

    partition: int
    offset: int
    record_id: str | None
    producer_id: str | None = None
    stream: str | None = None
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class StoreRow:
    """One row of the store's ``records`` table."""

    record_id: str
    topic: str
    partition: int
    offset: int
    producer_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class StoreView:
    """What the checker reads from a store: record rows, quarantine reasons, stored offsets."""

    rows: tuple[StoreRow, ...]
    quarantined: dict[str, int] = field(default_factory=dict)
    #: (topic, partition) -> next offset, for the group checked
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Every figure of one case. ``store_*`` are None when no store was checked."""

    attempted: int
    acknowledged: int
    failed: int
    indeterminate: int
    indeterminate_written: int
    read: int
    lost: int
    unexpected: int
    unparseable: int
    topic_duplicates: int
    inconsistent_offsets: int
    order_violations: int
    sequence_gaps: int
    offset_gaps: int
    stored: int | None = None
    store_missing: int | None = None
    store_duplicates: int | None = None
    store_unexpected: int | None = None
    quarantined: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    #: figures that must be zero (topic duplicates are allowed: at-least-once by design)
    MUST_BE_ZERO = (
        "lost",
        "unexpected",
        "inconsistent_offsets",
        "order_violations",
        "sequence_gaps",
        "offset_gaps",
        "store_missing",
        "store_duplicates",
        "store_unexpected",
    )

    def violations(self) -> dict[str, int]:
        """Every must-be-zero figure that is not zero."""
        out: dict[str, int] = {}
        for name in self.MUST_BE_ZERO:
            value = getattr(self, name)
            if value:
                out[name] = int(value)
        return out

    @property
    def passed(self) -> bool:
        return not self.violations()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "violations": self.violations()}


def check(
    history: Iterable[SendEvent],
    topic: Sequence[TopicEntry],
    store: StoreView | None = None,
) -> CheckReport:
    """Compare what the producer was told, what the topic holds and what the store kept."""
    final = outcomes(history)
    acked = {rid: o for rid, o in final.items() if o.status is Status.OK}
    failed = {rid for rid, o in final.items() if o.status is Status.FAIL}
    maybe = {rid for rid, o in final.items() if o.status is Status.INDETERMINATE}

    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    at: dict[tuple[int, int], str | None] = {}
    unparseable: list[str] = []
    for e in topic:
        at[(e.partition, e.offset)] = e.record_id
        if e.record_id is None:
            unparseable.append(f"{e.partition}:{e.offset}")
        else:
            positions[e.record_id].append((e.partition, e.offset))

    lost = sorted(rid for rid in acked if rid not in positions)
    # Read but never attempted, or attempted and definitely refused: neither may be in the log.
    unexpected = sorted(rid for rid in positions if rid not in final or rid in failed)
    duplicates = sorted(rid for rid, p in positions.items() if len(p) > 1)
    inconsistent = sorted(
        rid
        for rid, o in acked.items()
        if rid in positions and at.get((o.partition or 0, o.offset or 0)) != rid
    )
    report: dict[str, Any] = {
        "attempted": len(final),
        "acknowledged": len(acked),
        "failed": len(failed),
        "indeterminate": len(maybe),
        "indeterminate_written": sum(1 for rid in maybe if rid in positions),
        "read": len(topic),
        "lost": len(lost),
        "unexpected": len(unexpected) + len(unparseable),
        "unparseable": len(unparseable),
        "topic_duplicates": sum(len(positions[rid]) - 1 for rid in duplicates),
        "order_violations": _order_violations(topic),
        "sequence_gaps": _sequence_gaps(topic),
        "offset_gaps": _offset_gaps(topic),
    }
    samples = {
        "lost": lost[:SAMPLE],
        "unexpected": (unexpected + unparseable)[:SAMPLE],
        "topic_duplicates": duplicates[:SAMPLE],
    }
    if store is not None:
        ids = Counter(r.record_id for r in store.rows)
        by_seq: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        for r in store.rows:
            by_seq[(r.producer_id, r.topic, r.sequence)].add(r.record_id)
        store_dups = sum(n - 1 for n in ids.values()) + sum(
            len(s) - 1 for s in by_seq.values() if len(s) > 1
        )
        missing = sorted(rid for rid in acked if rid not in ids)
        store_unexpected = sorted(rid for rid in ids if rid not in positions)
        wrong_place = sorted(
            r.record_id
            for r in store.rows
            if r.record_id in positions and (r.partition, r.offset) not in positions[r.record_id]
        )
        inconsistent = sorted({*inconsistent, *wrong_place})
        report |= {
            "stored": len(ids),
            "store_missing": len(missing),
            "store_duplicates": store_dups,
            "store_unexpected": len(store_unexpected),
            "quarantined": dict(store.quarantined),
        }
        samples |= {
            "store_missing": missing[:SAMPLE],
            "store_unexpected": store_unexpected[:SAMPLE],
        }
    samples["inconsistent_offsets"] = inconsistent[:SAMPLE]
    report["inconsistent_offsets"] = len(inconsistent)
    return CheckReport(**report, samples={k: v for k, v in samples.items() if v})


def _streams(topic: Sequence[TopicEntry]) -> dict[tuple[int, str, str], list[TopicEntry]]:
    """(partition, producer, stream) -> its parseable entries in offset order."""
    out: dict[tuple[int, str, str], list[TopicEntry]] = defaultdict(list)
    for e in sorted(topic, key=lambda e: (e.partition, e.offset)):
        if e.producer_id is not None and e.stream is not None and e.sequence is not None:
            out[(e.partition, e.producer_id, e.stream)].append(e)
    return out


def _order_violations(topic: Sequence[TopicEntry]) -> int:
    """First appearances of a stream's sequence numbers that go backwards in offset order.

    A later copy of a sequence already seen is a duplicate (a resend), not an order violation.
    """
    count = 0
    for entries in _streams(topic).values():
        seen: set[int] = set()
        high = -1
        for e in entries:
            seq = e.sequence
            assert seq is not None  # _streams keeps only entries with a sequence
            if seq in seen:
                continue
            seen.add(seq)
            if seq < high:
                count += 1
            high = max(high, seq)
    return count


def _sequence_gaps(topic: Sequence[TopicEntry]) -> int:
    """Sequence numbers missing from each producer stream (streams start at 0)."""
    by_stream: dict[tuple[str, str], set[int]] = defaultdict(set)
    for (_, producer, stream), entries in _streams(topic).items():
        by_stream[(producer, stream)].update(e.sequence for e in entries if e.sequence is not None)
    return sum(max(s) + 1 - len(s) for s in by_stream.values() if s)


def _offset_gaps(topic: Sequence[TopicEntry]) -> int:
    """Offsets missing inside each partition's log (no transactions, so there are no markers)."""
    by_partition: dict[int, set[int]] = defaultdict(set)
    for e in topic:
        by_partition[e.partition].add(e.offset)
    return sum(max(s) + 1 - len(s) for s in by_partition.values() if s)


# --- Independent readers. ----------------------------------------------------------------------------


def entry_from_value(partition: int, offset: int, value: bytes) -> TopicEntry:
    """Parse (never verify) one value's envelope header into a topic entry."""
    try:
        header = wire.parse(value).header
    except IntelbusError:
        return TopicEntry(partition, offset, None)
    return TopicEntry(
        partition,
        offset,
        str(header.record_id),
        header.producer_id,
        header.topic,
        header.sequence,
    )


def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 120.0) -> list[TopicEntry]:
    """Every record of ``topic``, all partitions, from offset 0 to the end (no group, no commit)."""
    consumer = transport.make_consumer(bootstrap, group_id=None)
    try:
        return [
            entry_from_value(m.partition, m.offset, bytes(m.value or b""))
            for m in transport.read_all(consumer, topic, timeout_s=timeout_s)
        ]
    finally:
        consumer.close()


def read_store(where: Path | str, *, group_id: str | None = None) -> StoreView:
    """The store's records, quarantine reasons and offsets, read with a plain read-only connection
    (SQLite file, or a ``postgresql://`` URL), not through the store class under test."""
    if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
        import psycopg  # noqa: PLC0415 - only PostgreSQL cases need the driver

        with psycopg.connect(where, autocommit=True) as pg:
            pg.execute("SET default_transaction_read_only = on")
            return _view(lambda q, p: list(pg.execute(q.replace("?", "%s"), p)), group_id)
    conn = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=10.0)
    try:
        return _view(lambda q, p: list(conn.execute(q, p)), group_id)
    finally:
        conn.close()


def _view(query: Callable[[str, tuple[str, ...]], list[Any]], group_id: str | None) -> StoreView:
    rows = tuple(
        StoreRow(str(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5]))
        for r in query(
            "SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, sequence "
            "FROM records",
            (),
        )
    )
    quarantined = {
        str(r[0]): int(r[1])
        for r in query("SELECT reason, count(*) FROM quarantine GROUP BY reason", ())
    }
    sql = "SELECT topic, kafka_partition, next_offset FROM offsets"
    params: tuple[str, ...] = ()
    if group_id is not None:
        sql += " WHERE group_id = ?"
        params = (group_id,)
    offsets = {(str(r[0]), int(r[1])): int(r[2]) for r in query(sql, params)}
    return StoreView(rows, quarantined, offsets)

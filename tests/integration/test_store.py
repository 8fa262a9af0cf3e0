"""The consumer store (schema 4): one behaviour, verified by the same tests on SQLite and PostgreSQL.

Every test taking ``store_url`` (or ``store``) runs twice (``[sqlite]`` and ``[postgres]``), each
time on a fresh, empty store. No Kafka here: these tests exercise the store alone, with batches
built from the judge's value types (:mod:`intelbus.trust.model`), or judged by the real
:class:`~intelbus.trust.judge.Judge` inside :meth:`Store.judge_and_commit` where what matters is
the snapshot a decision was made against.

The contract under test is the module docstring of :mod:`intelbus.store.base`; migration from
the stores earlier intelbus versions wrote (schema 1 and 2) is the docstring of
:mod:`intelbus.store.migrate`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from intelbus.chain import ANY_PARTITION, GENESIS_DIGEST, LEGACY_EPOCH, ChainState, StreamKey
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import EnvelopeHeader, SealedRecord
from intelbus.errors import MalformedEnvelope, ReasonCode, StoreError
from intelbus.identity import PublicIdentity
from intelbus.kinds import RecordKind
from intelbus.store import Store, StoredRecordView, open_store
from intelbus.store import base as store_base
from intelbus.store.base import SCHEMA_VERSION
from intelbus.trust.judge import QUARANTINE_PREFIX_BYTES, Judge, Reader, keys_for
from intelbus.trust.model import (
    AmendmentStatus,
    Batch,
    Change,
    FeedBeat,
    Labels,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    PendingAmendment,
    Position,
    Prepared,
    Quarantined,
    Snapshot,
    SnapshotKeys,
    Verdict,
    VersionDecision,
    VersionSource,
)
from tests.integration.conftest import REPO, fresh_postgres_database

T0 = datetime(2024, 9, 14, 9, 30, tzinfo=UTC)
TOPIC = "cst.sightings"
INCIDENTS = "cst.incidents"
GROUP = "herts-police"
POLICY = "p" * 64
KEY_A = bytes.fromhex("a1" * 16)  # cst's first signing key
KEY_B = bytes.fromhex("b2" * 16)  # cst's next key (a new stream epoch)
KEY_G = bytes.fromhex("c3" * 16)  # gmp's key


# --- building batches from the judge's value types -----------------------------------------------------


def _id(n: int) -> str:
    """A deterministic UUID, so sort orders are predictable."""
    return str(uuid.UUID(int=n))


def _digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def source(
    n: int,
    *,
    key: bytes = KEY_A,
    topic: str = TOPIC,
    partition: int = 0,
    sequence: int | None = None,
    offset: int | None = None,
    appended: datetime | None = None,
    reason: str = "",
    amended_at: datetime | None = None,
) -> VersionSource:
    """Where record ``n`` came from; its digest is ``_digest(n)``, its sequence ``n`` by default."""
    return VersionSource(
        record_id=_id(n),
        key_id=key,
        sequence=n if sequence is None else sequence,
        digest=_digest(n),
        topic=topic,
        partition=partition,
        offset=n if offset is None else offset,
        created_at=minutes(n),
        appended_at=appended if appended is not None else minutes(n) + timedelta(seconds=1),
        reason=reason,
        amended_at=amended_at,
    )


def labels(
    *,
    tlp: str = "GREEN",
    classification: str = "OFFICIAL",
    force_area: str | None = "HERTFORDSHIRE",
    occurred_at: datetime | None = None,
) -> Labels:
    return Labels(tlp, classification, force_area, occurred_at)


def payload_of(n: int, text: str | None = None) -> dict[str, Any]:
    return {
        "record_id": _id(n),
        "description": text if text is not None else f"person photographing entrance {n}",
        "n": n,
    }


def kept(
    payload: dict[str, Any],
    *,
    rule: str = "herts-green",
    redacted: tuple[str, ...] = (),
    lab: Labels | None = None,
) -> VersionDecision:
    outcome = Outcome.REDACT if redacted else Outcome.STORE
    return VersionDecision(outcome, rule, POLICY, payload, redacted, lab or labels())


def withheld(*, rule: str = "elsewhere", lab: Labels | None = None) -> VersionDecision:
    return VersionDecision(Outcome.WITHHOLD, rule, POLICY, labels=lab or labels())


def policy_quarantined(
    *, rule: str = "false-reports", lab: Labels | None = None
) -> VersionDecision:
    return VersionDecision(Outcome.QUARANTINE, rule, POLICY, labels=lab or labels())


RETRACT = VersionDecision(Outcome.RETRACT, "retraction", POLICY)


def rec(
    n: int,
    *,
    producer: str = "cst",
    kind: RecordKind = RecordKind.SIGHTING,
    decision: VersionDecision | None = None,
    **src: Any,
) -> NewRecord:
    """A new record ``n`` (stored in full unless ``decision`` says otherwise)."""
    if "topic" not in src and kind is RecordKind.INCIDENT:
        src["topic"] = INCIDENTS
    return NewRecord(producer, _id(n), kind, source(n, **src), decision or kept(payload_of(n)))


def amend(
    n: int,
    target: int,
    decision: VersionDecision,
    *,
    producer: str = "cst",
    kind: RecordKind = RecordKind.CORRECTION,
    reason: str = "typo",
    **src: Any,
) -> tuple[NewAmendment, NewVersion]:
    """Amendment ``n`` of record ``target``, applied: its registration and the version it makes."""
    s = source(n, reason=reason, amended_at=minutes(n) - timedelta(seconds=30), **src)
    change = Change.RETRACTION if kind is RecordKind.RETRACTION else Change.CORRECTION
    return (
        NewAmendment(producer, _id(n), kind, _id(target), AmendmentStatus.APPLIED, s),
        NewVersion(producer, _id(target), change, s, decision),
    )


def retraction(n: int, target: int, **kw: Any) -> tuple[NewAmendment, NewVersion]:
    return amend(n, target, RETRACT, kind=RecordKind.RETRACTION, reason="duplicate", **kw)


def pending(
    n: int,
    target: int,
    decision: VersionDecision = RETRACT,
    *,
    producer: str = "cst",
    kind: RecordKind = RecordKind.RETRACTION,
    **src: Any,
) -> NewAmendment:
    """Amendment ``n`` of a record not held yet: registered pending with its decided version."""
    s = source(n, reason="entered in error", amended_at=minutes(n), **src)
    replacement = RecordKind.SIGHTING if kind is RecordKind.CORRECTION else None
    p = PendingAmendment(producer, _id(n), _id(target), kind, replacement, s.topic, decision, s)
    return NewAmendment(producer, _id(n), kind, _id(target), AmendmentStatus.PENDING, s, p)


def quarantined(
    offset: int, raw: bytes, reason: str = "bad_signature", *, authentic: bool = False
) -> Quarantined:
    return Quarantined(
        TOPIC,
        0,
        offset,
        raw[:QUARANTINE_PREFIX_BYTES],
        len(raw),
        hashlib.blake2b(raw, digest_size=32).digest(),
        reason,
        f"offset {offset} rejected",
        None,
        None,
        authentic,
    )


def head(
    sequence: int,
    *,
    producer: str = "cst",
    topic: str = TOPIC,
    partition: int = 0,
    key: bytes = KEY_A,
    digest: bytes | None = None,
    gaps: tuple[tuple[int, int], ...] = (),
) -> ChainState:
    stream = StreamKey(producer, topic, partition, key.hex())
    return ChainState(stream, sequence, digest or _digest(sequence), gaps)


def beat(producer: str, mins: int, *, topic: str = "cst.heartbeats", interval_s: int = 30):
    return FeedBeat(producer, topic, minutes(mins), interval_s * 1000)


def batch(
    *,
    amended: Iterable[tuple[NewAmendment, NewVersion]] = (),
    group_id: str = GROUP,
    **kw: Any,
) -> Batch:
    """A batch; ``amended`` pairs go to ``amendments`` and ``versions`` (added to any given)."""
    pairs = list(amended)
    kw["amendments"] = [*kw.get("amendments", ()), *(a for a, _ in pairs)]
    kw["versions"] = [*kw.get("versions", ()), *(v for _, v in pairs)]
    return Batch(group_id=group_id, **kw)


def ids(views: Sequence[StoredRecordView]) -> list[str]:
    return [v.record_id for v in views]


def keys(*record_ids: int, streams: Iterable[StreamKey] = ()) -> SnapshotKeys:
    return SnapshotKeys(frozenset(streams), frozenset(_id(n) for n in record_ids))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


ZERO_SUMMARY = {
    "stored": 0,
    "redacted": 0,
    "withheld": 0,
    "retracted": 0,
    "policy_quarantined": 0,
    "withdrawn": 0,
    "erased": 0,
    "pruned": 0,
    "amendments_pending": 0,
    "amendments_applied": 0,
    "amendments_unreadable": 0,
    "amendments_refused": 0,
    "amendments_withdrawn": 0,
}


def assert_empty(store: Store, *record_ids: int) -> None:
    """Nothing of any batch was kept."""
    assert store.summary() == ZERO_SUMMARY
    assert store.load_offsets(GROUP, TOPIC) == {}
    assert store.load_chain() == {}
    assert store.feeds() == []
    assert store.list_records(limit=10) == []
    assert store.quarantine_entries(10) == []
    assert store.meta("checkpoint") is None
    for n in record_ids:
        assert store.get_all(_id(n)) == []
    snap = store.snapshot(keys(*record_ids))
    assert (snap.records, snap.amendments, snap.pending) == ({}, {}, {})


# --- judged by the real judge: envelopes that passed intake ----------------------------------------------

AUDITOR = Reader(agency_id=None, policy=None, clock=lambda: T0)


def envelope(
    n: int,
    *,
    sequence: int,
    prev: bytes = GENESIS_DIGEST,
    kind: RecordKind = RecordKind.SIGHTING,
    producer: str = "cst",
    key: bytes = KEY_A,
    topic: str = TOPIC,
    partition: int = 0,
    offset: int | None = None,
    target: int | None = None,
    digest: bytes | None = None,
    format_version: int = 2,
) -> Prepared:
    """Record ``n`` as intake hands it to the judge: verified (its signature is not what these
    tests are about), not addressed to the reader. Its digest is ``_digest(n)``."""
    header = EnvelopeHeader(
        kind=kind,
        created_at=minutes(n),
        sequence=sequence,
        record_id=uuid.UUID(int=n),
        key_id=key,
        prev_digest=prev,
        environment="test",
        topic=topic,
        producer_id=producer,
        schema_fingerprint=bytes(32),
        recipients=(),
        format_version=format_version,
        partition=partition if format_version >= 2 else None,
        target_record_id=None if target is None else uuid.UUID(int=target),
    )
    raw = b"envelope-" + str(n).encode()
    sealed = SealedRecord(header, b"", b"", b"", raw, raw)
    signer = PublicIdentity(producer, bytes(32), bytes(32), key)
    verified = VerifiedRecord(sealed, signer, digest or _digest(n))
    position = Position(topic, partition, n if offset is None else offset, minutes(n))
    return Prepared(position, raw, verified)


def judge_and_commit(
    store: Store,
    prepared: Sequence[Prepared],
    *,
    before_judging: Callable[[Snapshot], None] | None = None,
) -> tuple[Batch, list[Verdict]]:
    """Judge ``prepared`` with the real judge inside the store's transaction, and commit."""
    verdicts: list[Verdict] = []

    def decide(snapshot: Snapshot) -> Batch:
        if before_judging is not None:
            before_judging(snapshot)
        verdicts.clear()
        judge = Judge(AUDITOR, snapshot)
        verdicts.extend(judge.judge(p) for p in prepared)
        offsets = {
            (p.position.topic, p.position.partition): p.position.offset + 1 for p in prepared
        }
        return judge.batch(GROUP, offsets)

    committed = store.judge_and_commit(keys_for(prepared), decide)
    return committed, verdicts


# --- round trip --------------------------------------------------------------------------------------------


def test_every_field_round_trips(store: Store) -> None:
    """What goes in comes out, field for field; times come back as the same instants, in UTC."""
    plus_two = timezone(timedelta(hours=2))
    occurred = datetime(2024, 9, 14, 8, 0, 0, 123456, tzinfo=plus_two)
    lab = labels(tlp="AMBER", classification="OFFICIAL-SENSITIVE", occurred_at=occurred)
    body = {
        "record_id": _id(7),
        "text": "Zoë\u2019s café",
        "nested": {"list": [1, 2.5, None, True]},
    }
    r = rec(7, kind=RecordKind.INCIDENT, decision=kept(body, redacted=("victim_details",), lab=lab))
    store.commit(batch(records=[r], offsets={(INCIDENTS, 0): 8}))
    view = store.get(r.record_id)
    assert view is not None
    s = r.source
    assert view == StoredRecordView(
        record_id=_id(7),
        topic=INCIDENTS,
        partition=0,
        offset=7,
        producer_id="cst",
        kind="incident",
        sequence=7,
        digest=_digest(7),
        created_at=s.created_at,
        appended_at=s.appended_at,
        policy_hash=POLICY,
        rule_id="herts-green",
        action="redact",
        redacted_fields=("victim_details",),
        tlp="AMBER",
        classification="OFFICIAL-SENSITIVE",
        force_area="HERTFORDSHIRE",
        occurred_at=occurred,
        payload=body,
        version=1,
        status="live",
        key_id=KEY_A,
        history=(),  # an unamended record has no history, however it is read
    )
    assert view.occurred_at is not None
    assert view.occurred_at.utcoffset() == timedelta(0)
    assert (view.retracted, view.superseded, view.visible) == (False, False, True)
    assert store.list_records() == [view]
    assert store.get(_id(999)) is None
    assert store.get_all(_id(999)) == []
    assert store.get(_id(7), "gmp") is None


def test_a_naive_datetime_fails_the_batch(store: Store) -> None:
    """A timestamp without a zone cannot be placed in time: the batch is refused, nothing kept."""
    naive = datetime(2024, 1, 1)  # noqa: DTZ001 - the point of the test
    bad = rec(2, decision=kept(payload_of(2), lab=labels(occurred_at=naive)))
    with pytest.raises(StoreError):
        store.commit(batch(records=[rec(1), bad], offsets={(TOPIC, 0): 3}))
    assert_empty(store, 1, 2)


# --- identity: (producer, record id) -----------------------------------------------------------------------


def test_two_producers_records_with_one_id_are_two_records(store: Store) -> None:
    """mallory publishing under cst's record id makes a second record; cst's is untouched, and
    an amendment of one never reaches the other."""
    mallory = rec(
        1, producer="mallory", key=KEY_G, offset=50, decision=kept(payload_of(1, "fabricated"))
    )
    store.commit(batch(records=[rec(1), mallory]))
    both = store.get_all(_id(1))
    assert [(v.producer_id, v.payload) for v in both] == [
        ("cst", payload_of(1)),
        ("mallory", payload_of(1, "fabricated")),
    ]
    assert store.get(_id(1)) == both[0]  # the first producer, by producer id
    assert store.get(_id(1), "mallory") == both[1]
    assert store.get(_id(1), "gmp") is None
    assert store.summary()["stored"] == 2
    assert len(store.list_records()) == 2

    store.commit(batch(amended=[retraction(2, 1, producer="mallory", key=KEY_G)]))
    cst, mal = store.get_all(_id(1))
    assert (cst.status, cst.version, cst.payload) == ("live", 1, payload_of(1))
    assert (mal.status, mal.version) == ("retracted", 2)
    snap = store.snapshot(keys(1))
    assert {k: (h.status.value, h.version) for k, h in snap.records.items()} == {
        ("cst", _id(1)): ("live", 1),
        ("mallory", _id(1)): ("retracted", 2),
    }


def test_a_held_record_is_never_overwritten(store: Store) -> None:
    """The same (producer, record id) again with other content leaves the first copy as it was."""
    store.commit(batch(records=[rec(1)]))
    first = store.get(_id(1))
    other = rec(1, offset=90, decision=kept(payload_of(1, "other"), lab=labels(tlp="RED")))
    store.commit(batch(records=[other]))
    assert store.get(_id(1)) == first
    assert store.summary()["stored"] == 1


# --- atomicity ---------------------------------------------------------------------------------------------


def _everything(bad: NewRecord | None = None) -> Batch:
    """A batch touching every table, with ``bad`` as its last record."""
    return batch(
        records=[rec(1), rec(2), *([bad] if bad is not None else [])],
        amended=[amend(3, 1, kept(payload_of(1, "v2")))],
        amendments=[pending(4, 40)],
        quarantined=[quarantined(11, b"x")],
        chain=[head(4)],
        beats=[beat("cst", 1)],
        offsets={(TOPIC, 0): 12},
        meta={"checkpoint": "12"},
    )


def test_a_batch_that_fails_midway_leaves_nothing(store: Store) -> None:
    """A bad row after valid ones: StoreError, and nothing of the batch in any table."""
    bad = rec(5, decision=kept({"record_id": _id(5), "text": "nul \x00 byte"}))
    with pytest.raises(StoreError):
        store.commit(_everything(bad))
    assert_empty(store, 1, 2, 3, 4, 5, 40)
    # The store is still usable after the failed batch, and the same batch without it commits.
    store.commit(_everything())
    assert store.load_offsets(GROUP, TOPIC) == {0: 12}
    assert store.summary()["stored"] == 2
    assert store.meta("checkpoint") == "12"


def test_a_failure_at_the_last_statement_rolls_back_everything(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offsets are written last; breaking that statement still leaves nothing behind."""
    monkeypatch.setattr(store, "_UPSERT_OFFSET", "INSERT INTO no_such_table VALUES (?, ?, ?, ?)")
    with pytest.raises(StoreError):
        store.commit(_everything())
    monkeypatch.undo()
    assert_empty(store, 1, 2, 3, 4, 40)
    store.commit(_everything())
    assert store.load_offsets(GROUP, TOPIC) == {0: 12}


def test_a_wrong_row_type_fails_the_batch_cleanly(store: Store) -> None:
    """A quarantine row passed as a record is a programming error: StoreError, nothing kept."""
    with pytest.raises(StoreError):
        store.commit(
            batch(records=[rec(1), quarantined(2, b"oops")], offsets={(TOPIC, 0): 3})  # type: ignore[list-item]
        )
    assert_empty(store, 1)


def test_a_version_of_a_record_not_held_fails_the_batch(store: Store) -> None:
    """The judge amends only what the snapshot holds; a version of anything else (here: another
    producer's record) is a bug upstream, and the store refuses the whole batch."""
    store.commit(batch(records=[rec(1)]))
    with pytest.raises(StoreError, match="not held"):
        store.commit(
            batch(records=[rec(5)], amended=[retraction(2, 1, producer="mallory", key=KEY_G)])
        )
    assert store.get_all(_id(5)) == []
    assert store.get_all(_id(2)) == []
    view = store.get(_id(1))
    assert view is not None
    assert (view.status, view.version) == ("live", 1)


def test_judge_and_commit_keeps_nothing_when_judging_fails(store: Store) -> None:
    """The judgement is part of the transaction: an exception in it leaves nothing."""
    store.commit(batch(records=[rec(1)], offsets={(TOPIC, 0): 2}))

    seen: list[Snapshot] = []

    def decide(snapshot: Snapshot) -> Batch:
        seen.append(snapshot)
        raise RuntimeError("the judge failed")

    with pytest.raises(StoreError):
        store.judge_and_commit(keys(1), decide)
    assert [("cst", _id(1)) in s.records for s in seen] == [True]
    # A batch that fails to write is rolled back the same way.
    with pytest.raises(StoreError):
        store.judge_and_commit(keys(1), lambda _s: _everything(rec(5, decision=kept({"x": {1}}))))
    assert store.load_offsets(GROUP, TOPIC) == {0: 2}
    assert store.get_all(_id(2)) == []
    assert store.summary() == {**ZERO_SUMMARY, "stored": 1}


# --- idempotence, offsets and stream heads ----------------------------------------------------------------


def test_the_same_batch_twice_gives_one_row_each(store: Store) -> None:
    """At-least-once delivery: a redelivered batch changes nothing."""
    b = batch(
        records=[rec(1), rec(2, decision=kept(payload_of(2), redacted=("victim_details",)))],
        amended=[amend(5, 1, kept({"description": "fixed"}))],
        amendments=[pending(6, 60)],
        quarantined=[quarantined(4, b"raw-4")],
        chain=[head(6)],
        beats=[beat("cst", 3)],
        offsets={(TOPIC, 0): 7},
    )

    def state() -> tuple[object, ...]:
        return (
            store.summary(),
            store.load_offsets(GROUP, TOPIC),
            store.load_chain(),
            store.get_all(_id(1)),
            store.quarantine_entries(),
            store.feeds(),
            store.snapshot(keys(1, 2, 5, 6, 60)),
        )

    store.commit(b)
    first = state()
    store.commit(b)
    assert state() == first
    summary = store.summary()
    assert (summary["stored"], summary["redacted"]) == (1, 1)
    assert (summary["amendments_applied"], summary["amendments_pending"]) == (1, 1)
    assert summary["quarantined:bad_signature"] == 1
    view = store.get(_id(1))
    assert view is not None
    assert view.version == 2  # the correction was applied once, not twice
    assert [h.version for h in view.history] == [1, 2]


def test_offsets_only_move_forward(store: Store) -> None:
    """A late, smaller offset (from a lagging member) never rewinds the stored position."""
    store.commit(batch(offsets={(TOPIC, 0): 10, (TOPIC, 1): 4}))
    store.commit(batch(offsets={(TOPIC, 0): 5, (TOPIC, 1): 9}))
    assert store.load_offsets(GROUP, TOPIC) == {0: 10, 1: 9}
    store.commit(batch(offsets={(TOPIC, 0): 20}))
    assert store.load_offsets(GROUP, TOPIC) == {0: 20, 1: 9}
    # Groups and topics are separate.
    store.commit(batch(group_id="met-police", offsets={(TOPIC, 0): 1, ("other", 0): 7}))
    assert store.load_offsets("met-police", TOPIC) == {0: 1}
    assert store.load_offsets("met-police", "other") == {0: 7}
    assert store.load_offsets(GROUP, "other") == {}


def test_stream_heads_round_trip_and_never_move_backwards(store: Store) -> None:
    """Heads per (producer, topic, partition, epoch) keep the newest sequence and its digest and
    their gaps; an older head never moves one back, a fill at the same head updates the gaps."""
    p0 = head(5, gaps=((2, 3),))
    p1 = head(2, partition=1)
    b = head(0, key=KEY_B)
    inc = head(9, topic=INCIDENTS)
    legacy = ChainState(StreamKey("cst", TOPIC, ANY_PARTITION, LEGACY_EPOCH), 4, _digest(44))
    store.commit(batch(chain=[p0, p1, b, inc, legacy]))
    assert store.load_chain() == {s.stream: s for s in (p0, p1, b, inc, legacy)}
    store.commit(batch(chain=[head(3)]))  # a lagging member's older head
    assert store.load_chain()[p0.stream] == p0
    filled = head(5, gaps=((2, 2),))  # sequence 3 arrived late
    store.commit(batch(chain=[filled]))
    assert store.load_chain()[p0.stream] == filled
    store.commit(batch(chain=[head(9, gaps=((2, 2), (6, 8)))]))
    assert store.load_chain()[p0.stream] == head(9, gaps=((2, 2), (6, 8)))
    assert store.load_chain()[p1.stream] == p1  # other streams untouched
    snap = store.snapshot(keys(streams=[p0.stream, b.stream, head(0, key=KEY_G).stream]))
    assert snap.heads == {p0.stream: head(9, gaps=((2, 2), (6, 8))), b.stream: b}


def test_feeds_keep_the_newest_heartbeat_of_each_producer_and_topic(store: Store) -> None:
    """Newest wins within a batch and across batches; an older beat never moves a feed back."""
    assert store.feeds() == []
    store.commit(batch(beats=[beat("cst", 5), beat("cst", 7, interval_s=60), beat("cst", 6)]))
    store.commit(batch(beats=[beat("gmp", 1, topic="gmp.heartbeats")]))
    store.commit(batch(beats=[beat("cst", 3)]))  # late, older: ignored
    assert store.feeds() == [beat("cst", 7, interval_s=60), beat("gmp", 1, topic="gmp.heartbeats")]
    store.commit(batch(beats=[beat("cst", 9)]))
    assert store.feeds()[0] == beat("cst", 9)


def test_meta_is_kept_with_its_batch(store: Store) -> None:
    """An auditor's checkpoint is committed with its ledger rows, and replaced by the next."""
    assert store.meta("checkpoint") is None
    store.commit(batch(records=[rec(1)], meta={"checkpoint": "a", "other": "x"}))
    store.commit(batch(meta={"checkpoint": "b"}))
    assert (store.meta("checkpoint"), store.meta("other")) == ("b", "x")


# --- durability --------------------------------------------------------------------------------------------


def test_everything_survives_close_and_reopen(store_url: str) -> None:
    """Close, reopen: everything committed is there; a closed store refuses to be used."""
    s = open_store(store_url)
    s.commit(
        batch(
            records=[rec(1), rec(2)],
            amended=[amend(3, 1, kept(payload_of(1, "v2")))],
            amendments=[pending(4, 40)],
            quarantined=[quarantined(5, b"q" * 5000)],
            chain=[head(4, gaps=((0, 0),))],
            beats=[beat("cst", 1)],
            offsets={(TOPIC, 0): 6},
            meta={"checkpoint": "6"},
        )
    )
    s.withdraw(KEY_A.hex(), minutes(2))

    def state(st: Store) -> tuple[object, ...]:
        return (
            st.summary(),
            st.get_all(_id(1)),
            st.get_all(_id(2)),
            st.load_offsets(GROUP, TOPIC),
            st.load_chain(),
            st.feeds(),
            st.quarantine_entries(),
            st.meta("checkpoint"),
            st.rejudged(),
            st.snapshot(keys(1, 2, 3, 4, 40)),
        )

    before = state(s)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.get(_id(1))
    with pytest.raises(StoreError):
        s.commit(batch(offsets={(TOPIC, 0): 7}))
    s = open_store(store_url)
    try:
        assert state(s) == before
        assert s.rejudged() == [(KEY_A.hex(), minutes(2))]
        assert s.summary()["withdrawn"] == 1  # record 2 was appended after minute 2
    finally:
        s.close()


_KILLED_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from tests.integration.test_store import GROUP, TOPIC, batch, head, rec, retraction
    from intelbus.store import open_store
    store = open_store(sys.argv[1])
    store.commit(batch(records=[rec(n) for n in range(1, 51)], chain=[head(50)],
                       offsets={(TOPIC, 0): 51}))
    store.commit(batch(amended=[retraction(51, 7)], offsets={(TOPIC, 0): 52}))
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no interpreter shutdown
    """
)


def test_a_commit_survives_sigkill_right_after_it_returns(store_url: str) -> None:
    """A process killed with SIGKILL just after commit() returned: a new process finds every row.

    (SIGKILL keeps the OS page cache, so this proves the commit happened, not power-loss safety.)
    """
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_COMMIT, store_url],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    s = open_store(store_url)
    try:
        assert s.load_offsets(GROUP, TOPIC) == {0: 52}
        assert set(ids(s.list_records(limit=100))) == {_id(n) for n in range(1, 51)}
        assert s.load_chain()[head(50).stream].last_sequence == 50
        view = s.get(_id(7))
        assert view is not None
        assert (view.status, view.version) == ("retracted", 2)
    finally:
        s.close()


# --- versions ------------------------------------------------------------------------------------------------


def test_a_correction_replaces_payload_and_labels(store: Store) -> None:
    """The correction's version is current: its payload AND every label and policy column, so
    filters, searches and exports follow it; the earlier version stays in the history."""
    first = labels(occurred_at=T0 - timedelta(days=3))
    original = kept(
        {"record_id": _id(1), "victim_details": "[REDACTED]", "note": "blue van"},
        rule="incidents-redacted",
        redacted=("victim_details",),
        lab=first,
    )
    second = labels(
        tlp="AMBER",
        classification="OFFICIAL-SENSITIVE",
        force_area="METROPOLITAN",
        occurred_at=T0 + timedelta(days=2),
    )
    corrected = kept({"record_id": _id(1), "note": "red car"}, rule="met-store", lab=second)
    store.commit(batch(records=[rec(1, kind=RecordKind.INCIDENT, decision=original)]))
    store.commit(batch(amended=[amend(2, 1, corrected, topic=INCIDENTS)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.payload, view.version, view.status) == (corrected.payload, 2, "live")
    assert (view.tlp, view.classification, view.force_area, view.occurred_at) == (
        "AMBER",
        "OFFICIAL-SENSITIVE",
        "METROPOLITAN",
        T0 + timedelta(days=2),
    )
    assert (view.rule_id, view.action, view.redacted_fields) == ("met-store", "store", ())
    # Identity and provenance stay the original's.
    assert (view.offset, view.sequence, view.digest, view.key_id) == (1, 1, _digest(1), KEY_A)
    assert [
        (h.version, h.change, h.payload, h.amendment_record_id, h.outcome) for h in view.history
    ] == [
        (1, "original", original.payload, _id(1), "redact"),
        (2, "correction", corrected.payload, _id(2), "store"),
    ]
    assert view.history[1].reason == "typo"
    assert view.history[1].at == minutes(2) - timedelta(seconds=30)  # the signed corrected_at
    # Filters and search see the current version only.
    assert ids(store.list_records(tlp="AMBER")) == [_id(1)]
    assert store.list_records(tlp="GREEN") == []
    assert ids(store.list_records(force_area="METROPOLITAN")) == [_id(1)]
    assert store.list_records(force_area="HERTFORDSHIRE") == []
    assert ids(store.list_records(since=T0 + timedelta(days=1))) == [_id(1)]
    assert store.list_records(until=T0) == []
    assert ids(store.search("red car")) == [_id(1)]
    assert store.search("blue van") == []
    assert store.summary()["stored"] == 1
    assert store.summary()["redacted"] == 0
    assert [v.payload for v in store.iter_records()] == [corrected.payload]


@pytest.mark.parametrize(
    ("decision", "status", "counted"),
    [
        (withheld(lab=labels(tlp="RED")), "withheld", "withheld"),
        (policy_quarantined(), "quarantined", "policy_quarantined"),
    ],
)
def test_a_correction_the_policy_does_not_keep_takes_the_content_away(
    store: Store, decision: VersionDecision, status: str, counted: str
) -> None:
    """A correction re-graded so that policy withholds (or quarantines) it: the record holds no
    content any more and leaves lists, searches and exports; its history is kept. A later
    correction the policy keeps brings it back."""
    store.commit(batch(records=[rec(1), rec(9)]))
    store.commit(batch(amended=[amend(2, 1, decision)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.status, view.payload, view.version) == (status, None, 2)
    assert (view.superseded, view.visible, view.retracted) == (True, False, False)
    assert view.tlp == decision.labels.tlp  # type: ignore[union-attr]
    assert [(h.version, h.outcome, h.payload) for h in view.history] == [
        (1, "store", payload_of(1)),
        (2, decision.outcome.value, None),
    ]
    assert ids(store.list_records()) == [_id(9)]
    assert store.search("entrance 1") == []
    assert ids(store.iter_records()) == [_id(9)]
    assert store.count_by_action() == {"store": 1, "redact": 0}
    summary = store.summary()
    assert (summary["stored"], summary[counted]) == (1, 1)
    store.commit(batch(amended=[amend(3, 1, kept(payload_of(1, "regraded back")))]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.status, view.payload, view.version) == ("live", payload_of(1, "regraded back"), 3)
    assert ids(store.search("regraded back")) == [_id(1)]


def test_a_retraction_keeps_the_content_flagged_and_is_sticky(store: Store) -> None:
    """A retraction applies (version 2): the last content stays, flagged retracted, still listed.
    A later correction does not un-retract it."""
    store.commit(batch(records=[rec(1)]))
    store.commit(batch(amended=[retraction(2, 1)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.status, view.retracted, view.payload, view.version) == (
        "retracted",
        True,
        payload_of(1),
        2,
    )
    assert ids(store.list_records()) == [_id(1)]
    assert view.history[1].change == "retraction"
    assert view.history[1].reason == "duplicate"
    store.commit(batch(amended=[amend(3, 1, kept(payload_of(1, "after the retraction")))]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.status, view.retracted, view.version) == ("retracted", True, 3)
    summary = store.summary()
    assert (summary["retracted"], summary["stored"], summary["amendments_applied"]) == (1, 0, 2)


def test_a_withheld_record_is_held_without_content(store: Store) -> None:
    """A record policy withholds is registered (its identity and digest) with no payload."""
    store.commit(batch(records=[rec(1, decision=withheld()), rec(2)]))
    (view,) = store.get_all(_id(1))
    assert (view.status, view.payload, view.action, view.digest) == (
        "withheld",
        None,
        "withhold",
        _digest(1),
    )
    assert (view.superseded, view.visible) == (False, False)
    assert ids(store.list_records()) == [_id(2)]
    snap = store.snapshot(keys(1))
    assert snap.records[("cst", _id(1))].digest == _digest(1)
    assert store.summary()["withheld"] == 1


# --- amendments: pending, applied, refused ------------------------------------------------------------------


def test_a_pending_amendment_round_trips_and_settles_once(store: Store) -> None:
    """A pending amendment is read back exactly as registered (decision, labels and source), in
    arrival order; settling it applies once, and only a pending one can be settled."""
    lab = labels(tlp="AMBER", occurred_at=T0)
    first = pending(2, 1, kept(payload_of(1, "v2"), lab=lab), kind=RecordKind.CORRECTION)
    second = pending(3, 1)
    store.commit(batch(amendments=[first, second]))
    snap = store.snapshot(keys(1))
    assert snap.pending == {("cst", _id(1)): (first.pending, second.pending)}
    assert {k: h.status for k, h in snap.amendments.items()} == {}  # keyed by their own ids
    assert store.snapshot(keys(2, 3)).amendments[("cst", _id(2))].digest == _digest(2)
    assert store.summary()["amendments_pending"] == 2
    assert store.get_all(_id(1)) == []

    # The target arrives: the judge applied both (in arrival order) and refused nothing.
    assert first.pending is not None
    assert second.pending is not None
    arrived = batch(
        records=[rec(1)],
        versions=[
            NewVersion("cst", _id(1), Change.CORRECTION, first.source, first.pending.decision),
            NewVersion("cst", _id(1), Change.RETRACTION, second.source, RETRACT),
        ],
        applied=[("cst", _id(2), "applied"), ("cst", _id(3), "applied")],
    )
    store.commit(arrived)
    store.commit(arrived)
    view = store.get(_id(1))
    assert view is not None
    assert (view.payload, view.version, view.status, view.tlp) == (
        payload_of(1, "v2"),
        3,
        "retracted",
        "AMBER",
    )
    assert store.snapshot(keys(1)).pending == {}
    summary = store.summary()
    assert (summary["amendments_pending"], summary["amendments_applied"]) == (0, 2)
    # A stale batch cannot move a settled amendment again.
    store.commit(batch(applied=[("cst", _id(2), "refused")]))
    assert store.snapshot(keys(2)).amendments[("cst", _id(2))].status is AmendmentStatus.APPLIED


def test_an_unreadable_amendment_is_registered_without_a_target(store: Store) -> None:
    """A v1 amendment not addressed to this agency: registered (identity, digest), nothing amended."""
    s = source(2)
    store.commit(
        batch(
            amendments=[
                NewAmendment(
                    "cst", _id(2), RecordKind.CORRECTION, None, AmendmentStatus.UNREADABLE, s
                )
            ]
        )
    )
    assert store.summary()["amendments_unreadable"] == 1
    held = store.snapshot(keys(2)).amendments[("cst", _id(2))]
    assert (held.status, held.digest) == (AmendmentStatus.UNREADABLE, _digest(2))


def test_the_judge_applies_a_pending_amendment_when_its_target_arrives(store: Store) -> None:
    """Two judge_and_commit calls: the second is judged against the first's rows. A retraction
    that arrived first waits; its target, judged later, finds it pending and it applies."""
    retract = envelope(2, sequence=0, kind=RecordKind.RETRACTION, target=1, partition=1, offset=0)
    _, verdicts = judge_and_commit(store, [retract])
    assert [v.accepted for v in verdicts] == [True]
    assert store.summary()["amendments_pending"] == 1
    target = envelope(1, sequence=0, offset=0)
    committed, verdicts = judge_and_commit(store, [target])
    assert [v.accepted for v in verdicts] == [True]
    assert committed.applied == (("cst", _id(2), "applied"),)
    (view,) = store.get_all(_id(1))
    assert (view.status, view.version) == ("retracted", 2)
    summary = store.summary()
    assert (summary["amendments_pending"], summary["amendments_applied"]) == (0, 1)


def test_the_judge_refuses_a_pending_amendment_of_another_producers_record(store: Store) -> None:
    """mallory registers a retraction of an id before cst's record with that id arrives: it can
    never be mallory's own record now, so it is refused, and cst's record is untouched."""
    forged = envelope(
        2, sequence=0, kind=RecordKind.RETRACTION, target=1, producer="mallory", key=KEY_G
    )
    judge_and_commit(store, [forged])
    _, verdicts = judge_and_commit(store, [envelope(1, sequence=0, offset=1)])
    assert verdicts[0].accepted
    (view,) = store.get_all(_id(1))
    assert (view.producer_id, view.status, view.version) == ("cst", "withheld", 1)
    summary = store.summary()
    assert (summary["amendments_refused"], summary["amendments_pending"]) == (1, 0)


def test_the_judge_sees_what_the_previous_commit_wrote(store: Store) -> None:
    """The same record again, judged in a later transaction, is the stream's newest record byte
    for byte (chain_duplicate), and its retraction then applies at once, not pending."""
    first = envelope(1, sequence=0)
    _, verdicts = judge_and_commit(store, [first])
    assert verdicts[0].accepted
    _, verdicts = judge_and_commit(store, [envelope(1, sequence=0, offset=5)])
    assert verdicts[0].reason is ReasonCode.CHAIN_DUPLICATE
    retract = envelope(2, sequence=1, prev=_digest(1), kind=RecordKind.RETRACTION, target=1)
    committed, verdicts = judge_and_commit(store, [retract])
    assert verdicts[0].accepted
    assert [a.status for a in committed.amendments] == [AmendmentStatus.APPLIED]
    assert [(q.offset, q.reason) for q in store.quarantine_entries()] == [(5, "chain_duplicate")]
    (view,) = store.get_all(_id(1))
    assert (view.status, view.version, view.offset) == ("retracted", 2, 1)
    assert store.load_chain()[head(0).stream] == head(1, digest=_digest(2))
    assert store.load_offsets(GROUP, TOPIC) == {0: 6}


# --- quarantine --------------------------------------------------------------------------------------------


def test_quarantine_keeps_a_bounded_prefix_its_size_and_digest(store: Store) -> None:
    """A 1 MiB record refused by the judge: the row keeps its first 4096 bytes, exact size and
    BLAKE2b-256 digest (the whole record stays on Kafka). Every byte value survives; a second
    row at the same position is ignored."""
    big = bytes(range(256)) * 4096 + b"\x00tail"
    garbage = Prepared(
        Position(TOPIC, 0, 3, minutes(3)), big, error=MalformedEnvelope("not an envelope")
    )
    judge = Judge(AUDITOR, Snapshot())
    assert not judge.judge(garbage).accepted
    small = bytes(range(256)) + b"\x00\x00"
    store.commit(
        batch(
            quarantined=[
                *judge.batch(GROUP, {}).quarantined,
                quarantined(4, small, "chain_replay", authentic=True),
                quarantined(5, b"", "malformed"),
            ]
        )
    )
    store.commit(batch(quarantined=[quarantined(3, b"different", "oversize")]))
    entries = store.quarantine_entries(10)
    assert [(e.offset, e.reason, e.raw_size, e.truncated, e.authentic) for e in entries] == [
        (3, "malformed", len(big), True, False),
        (4, "chain_replay", len(small), False, True),
        (5, "malformed", 0, False, False),
    ]
    assert entries[0].raw_prefix == big[:4096]
    assert len(entries[0].raw) == QUARANTINE_PREFIX_BYTES == 4096
    assert entries[0].raw_digest == hashlib.blake2b(big, digest_size=32).digest()
    assert entries[1].raw == small
    assert entries[1].raw_digest == hashlib.blake2b(small, digest_size=32).digest()
    assert entries[2].raw == b""
    assert entries[0].message == str(MalformedEnvelope("not an envelope"))
    summary = store.summary()
    assert (summary["quarantined:chain_replay"], summary["quarantined:malformed"]) == (1, 2)
    assert "quarantined:oversize" not in summary
    assert store.quarantine_entries(1) == entries[:1]


# --- queries -------------------------------------------------------------------------------------------------


def test_list_filters_and_search(store: Store) -> None:
    """Filters by kind, event time, force area and TLP; newest event first; search is a
    case-insensitive substring; records without content are never shown."""
    records = [
        rec(1, decision=kept(payload_of(1), lab=labels(occurred_at=T0 - timedelta(days=3)))),
        rec(
            2,
            kind=RecordKind.INCIDENT,
            decision=kept(
                {"text": "Swastika daubed on GRAVE"}, lab=labels(force_area="METROPOLITAN")
            ),
        ),
        rec(3, decision=kept(payload_of(3), lab=labels(tlp="AMBER", force_area=None))),
        rec(
            4,
            decision=kept(
                {"note": "drone overhead, 50% sure"}, lab=labels(occurred_at=T0 + timedelta(days=1))
            ),
        ),
        rec(5, decision=withheld()),  # entrance 5: never listed or found
        rec(6, decision=policy_quarantined()),
        rec(2, producer="gmp", key=KEY_G, offset=60, decision=kept({"text": "grave, gmp's own"})),
    ]
    store.commit(batch(records=records))
    assert ids(store.list_records()) == [_id(4), _id(3), _id(2), _id(2), _id(1)]
    assert [v.producer_id for v in store.list_records()][2:4] == ["cst", "gmp"]
    assert ids(store.list_records(limit=2)) == [_id(4), _id(3)]
    assert ids(store.list_records(kind="incident")) == [_id(2)]
    assert ids(store.list_records(force_area="HERTFORDSHIRE")) == [_id(4), _id(2), _id(1)]
    assert ids(store.list_records(tlp="AMBER")) == [_id(3)]
    assert ids(store.list_records(since=T0)) == [_id(4), _id(3), _id(2), _id(2)]
    assert ids(store.list_records(until=minutes(3))) == [_id(2), _id(2), _id(1)]
    window = store.list_records(since=T0, until=T0 + timedelta(hours=1), kind="sighting")
    assert [(v.record_id, v.producer_id) for v in window] == [(_id(3), "cst"), (_id(2), "gmp")]
    assert [v.producer_id for v in store.search("grave")] == ["cst", "gmp"]
    assert ids(store.search("50%")) == [_id(4)]
    assert store.search("photographing_entrance") == []  # "_" is not a wildcard
    assert ids(store.search("PHOTOGRAPHING entrance 3")) == [_id(3)]
    assert store.search("entrance 5") == []
    assert store.search("entrance 6") == []
    assert len(store.search("photographing", limit=1)) == 1
    with pytest.raises(StoreError):
        store.list_records(since=datetime(2024, 1, 1))  # noqa: DTZ001 - refused


def test_summary_counts(store: Store) -> None:
    """Every status and amendment status, and quarantine by reason."""
    store.commit(
        batch(
            records=[
                rec(1),
                rec(2),
                rec(3, decision=kept(payload_of(3), redacted=("victim_details",))),
                rec(4, decision=withheld()),
                rec(5, decision=withheld(rule="not-addressed")),
                rec(6, decision=policy_quarantined()),
                rec(7, key=KEY_B, appended=minutes(60)),
            ],
            amended=[retraction(9, 1)],
            amendments=[pending(10, 99)],
            quarantined=[
                quarantined(16, b"a"),
                quarantined(17, b"b"),
                quarantined(18, b"c", "unknown_key"),
            ],
        )
    )
    store.withdraw(KEY_B.hex(), minutes(30))
    assert store.summary() == {
        **ZERO_SUMMARY,
        "stored": 1,
        "redacted": 1,
        "withheld": 2,
        "retracted": 1,
        "policy_quarantined": 1,
        "withdrawn": 1,
        "amendments_applied": 1,
        "amendments_pending": 1,
        "quarantined:bad_signature": 2,
        "quarantined:unknown_key": 1,
    }
    assert store.count_by_action() == {"store": 2, "redact": 1}  # retracted record 1 counts


def test_iter_records_exports_visible_records_in_log_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export pages through every visible record by (topic, partition, offset), with history."""
    monkeypatch.setattr(store_base, "EXPORT_PAGE", 3)
    places = [("b", 0), ("a", 1), ("a", 0), ("b", 0), ("a", 0), ("a", 1), ("c", 2)]
    records = [rec(n, topic=t, partition=p) for n, (t, p) in enumerate(places, start=1)]
    # Two producers' records at the same position and with the same id both come out.
    records.append(rec(3, producer="gmp", key=KEY_G, topic="a", partition=0))
    hidden = rec(8, decision=withheld(), topic="a", partition=0)
    store.commit(batch(records=[*records, hidden], amended=[retraction(50, 3, topic="a")]))
    exported = list(store.iter_records())
    assert [(v.topic, v.partition, v.offset, v.producer_id) for v in exported] == sorted(
        (r.source.topic, r.source.partition, r.source.offset, r.producer_id) for r in records
    )
    retracted = next(v for v in exported if v.record_id == _id(3) and v.producer_id == "cst")
    assert [h.change for h in retracted.history] == ["original", "retraction"]
    assert all(v.history == () for v in exported if v.version == 1)


def test_open_store_dispatch(tmp_path: Path, postgres_url: str) -> None:
    """A path or sqlite:/// URL opens SQLite, postgresql:// or postgres:// opens PostgreSQL; an
    unknown scheme is refused."""
    from intelbus.store.postgres import PostgresStore  # noqa: PLC0415
    from intelbus.store.sqlite import SqliteStore  # noqa: PLC0415

    for target in (str(tmp_path / "a.sqlite"), f"sqlite:///{tmp_path / 'b.sqlite'}"):
        with closing(open_store(target)) as s:
            assert isinstance(s, SqliteStore)
    assert (tmp_path / "a.sqlite").exists()
    assert (tmp_path / "b.sqlite").exists()
    with fresh_postgres_database(postgres_url) as url:
        for target in (url, url.replace("postgresql://", "postgres://", 1)):
            with closing(open_store(target)) as s:
                assert isinstance(s, PostgresStore)
    with pytest.raises(StoreError):
        open_store("mysql://localhost/x")


# --- withdrawing what a compromised key signed ---------------------------------------------------------------

LEAK = T0 + timedelta(hours=1)


def _leaked_key_history() -> list[Batch]:
    """cst's genuine records under key A, then forgeries made with A after it leaked at LEAK, then
    cst's genuine records under its next key B, and gmp's records meanwhile."""
    genuine = batch(
        records=[
            rec(1, sequence=0, appended=minutes(1)),
            rec(2, sequence=1, appended=minutes(2)),
            rec(3, sequence=2, appended=minutes(3)),
        ],
        # A genuine correction of record 3, appended a microsecond before the leak.
        amended=[
            amend(
                4,
                3,
                kept(payload_of(3, "genuine fix")),
                sequence=3,
                appended=LEAK - timedelta(microseconds=1),
            )
        ],
        chain=[head(3, digest=_digest(4))],
    )
    forged = batch(
        records=[
            rec(5, sequence=4, appended=LEAK, decision=kept(payload_of(5, "forged original"))),
            rec(10, sequence=0, partition=1, appended=LEAK + timedelta(minutes=5)),
        ],
        amended=[
            amend(
                6,
                1,
                kept(payload_of(1, "forged fix"), lab=labels(tlp="CLEAR", force_area="ESSEX")),
                sequence=5,
                appended=LEAK + timedelta(minutes=1),
            ),
            retraction(7, 2, sequence=6, appended=LEAK + timedelta(minutes=2)),
            amend(
                8,
                3,
                kept(payload_of(3, "forged fix")),
                sequence=7,
                appended=LEAK + timedelta(minutes=3),
            ),
        ],
        amendments=[pending(9, 20, sequence=8, appended=LEAK + timedelta(minutes=4))],
        chain=[
            head(8, digest=_digest(9), gaps=((1, 1),)),
            head(0, partition=1, digest=_digest(10)),
        ],
    )
    after = batch(
        records=[
            rec(11, key=KEY_B, sequence=0, appended=LEAK + timedelta(minutes=6)),
            rec(13, producer="gmp", key=KEY_G, sequence=0, appended=LEAK + timedelta(minutes=7)),
        ],
        chain=[
            head(0, key=KEY_B, digest=_digest(11)),
            head(0, producer="gmp", key=KEY_G, digest=_digest(13)),
        ],
    )
    return [genuine, forged, after]


def test_withdrawing_a_leaked_key_refolds_records_and_rolls_streams_back(store_url: str) -> None:
    """``withdraw(A, LEAK)``: every version and amendment A signed that the broker appended at or
    after LEAK is withdrawn and the records re-folded; A's streams roll back to the last record
    before LEAK (or disappear); nothing signed by another key, or before LEAK, changes."""
    store = open_store(store_url)
    for b in _leaked_key_history():
        store.commit(b)
    # Before: the forgeries are what an analyst sees.
    assert ids(store.search("forged")) == [_id(5), _id(3), _id(1)]
    assert store.get(_id(2)).status == "retracted"  # type: ignore[union-attr]
    assert store.snapshot(keys(20)).pending != {}
    untouched = {n: store.get_all(_id(n)) for n in (11, 13)}
    b_heads = {k: v for k, v in store.load_chain().items() if k.epoch != KEY_A.hex()}

    w = store.withdraw(KEY_A.hex(), LEAK)
    assert (w.key_id, w.since, w.already_done) == (KEY_A.hex(), LEAK, False)
    # Versions: records 5 and 10, corrections 6 and 8, retraction 7; amendments 6, 7, 8 and 9.
    assert (w.versions, w.amendments, w.records, w.streams) == (5, 4, 5, 2)

    def check(s: Store) -> None:
        # An original withdrawn: the record is withdrawn, kept as evidence, never shown.
        for n in (5, 10):
            (view,) = s.get_all(_id(n))
            assert (view.status, view.visible) == ("withdrawn", False)
            assert view.payload is not None  # evidence
        # A forged correction withdrawn: the previous content and labels are back.
        one = s.get(_id(1))
        assert one is not None
        assert (one.status, one.payload, one.tlp, one.force_area, one.version) == (
            "live",
            payload_of(1),
            "GREEN",
            "HERTFORDSHIRE",
            2,
        )
        assert [(h.version, h.withdrawn) for h in one.history] == [(1, False), (2, True)]
        # A forged retraction withdrawn: live again.
        two = s.get(_id(2))
        assert two is not None
        assert (two.status, two.retracted) == ("live", False)
        # A genuine correction just before LEAK stands; the forged one after it is withdrawn.
        three = s.get(_id(3))
        assert three is not None
        assert (three.payload, three.version) == (payload_of(3, "genuine fix"), 3)
        assert s.search("forged") == []
        assert sorted(ids(s.list_records())) == [_id(n) for n in (1, 2, 3, 11, 13)]
        assert sorted(ids(s.iter_records())) == [_id(n) for n in (1, 2, 3, 11, 13)]
        # Another key's, another producer's: untouched.
        assert {n: s.get_all(_id(n)) for n in (11, 13)} == untouched
        # Streams: A's partition 0 back to record 4 (the last before LEAK), gaps cleared;
        # A's partition 1 had nothing before LEAK: gone. Other epochs untouched.
        chain = s.load_chain()
        assert chain == {**b_heads, head(0).stream: head(3, digest=_digest(4))}
        # A pending amendment from A never applies: it is no longer pending for its target.
        assert s.snapshot(keys(20)).pending == {}
        assert s.snapshot(keys(9)).amendments[("cst", _id(9))].status is AmendmentStatus.WITHDRAWN
        summary = s.summary()
        assert (summary["stored"], summary["withdrawn"], summary["retracted"]) == (5, 2, 0)
        assert (summary["amendments_withdrawn"], summary["amendments_applied"]) == (4, 1)
        assert summary["amendments_pending"] == 0
        assert s.rejudged() == [(KEY_A.hex(), LEAK)]

    check(store)
    # A stale batch that would settle the withdrawn pending amendment cannot.
    store.commit(batch(applied=[("cst", _id(9), "applied")]))
    check(store)
    # Idempotent, and still so after a reopen.
    again = store.withdraw(KEY_A.hex(), LEAK)
    assert again.already_done
    assert (again.versions, again.amendments, again.records, again.streams) == (0, 0, 0, 0)
    check(store)
    store.close()
    store = open_store(store_url)
    try:
        check(store)
        assert store.withdraw(KEY_A.hex(), LEAK).already_done
        # Another withdrawal of the same key from an earlier time is a new one, and reaches
        # the records it did not reach before.
        earlier = store.withdraw(KEY_A.hex(), minutes(2))
        assert not earlier.already_done
        assert store.get(_id(1)).status == "live"  # type: ignore[union-attr]
        assert store.get(_id(2)).status == "withdrawn"  # type: ignore[union-attr]
        assert store.get(_id(3)).status == "withdrawn"  # type: ignore[union-attr]
        assert store.load_chain()[head(0).stream] == head(0, digest=_digest(1))
        assert store.rejudged() == [(KEY_A.hex(), minutes(2)), (KEY_A.hex(), LEAK)]
    finally:
        store.close()


def test_a_new_genuine_record_after_a_withdrawal_is_judged_against_the_rolled_back_head(
    store: Store,
) -> None:
    """After the rollback, the stream goes on from its last good record: the producer's genuine
    next record (same key epoch, the forger's sequence number) is accepted, not a replay."""
    judge_and_commit(store, [envelope(1, sequence=0)])
    forgery = envelope(2, sequence=1, prev=_digest(1))
    forgery = Prepared(
        Position(TOPIC, 0, 1, LEAK + timedelta(minutes=1)), forgery.raw, forgery.verified
    )
    _, verdicts = judge_and_commit(store, [forgery])
    assert verdicts[0].accepted
    genuine_next = envelope(3, sequence=1, prev=_digest(1), offset=2)
    _, verdicts = judge_and_commit(store, [genuine_next])
    assert verdicts[0].reason is ReasonCode.CHAIN_FORK  # the forgery holds its place
    store.withdraw(KEY_A.hex(), LEAK)
    assert store.load_chain()[head(0).stream] == head(0, digest=_digest(1))
    _, verdicts = judge_and_commit(store, [envelope(3, sequence=1, prev=_digest(1), offset=3)])
    assert verdicts[0].accepted
    assert store.get(_id(3)) is not None
    assert store.get(_id(2)).status == "withdrawn"  # type: ignore[union-attr]


# --- concurrency: the state a decision was made against is the state it is committed over ----------------


def test_racing_members_judge_one_stream_one_after_the_other(store_url: str) -> None:
    """Two consumer instances (two connections to one store) judge the same record at the same
    time. Both snapshots read beforehand are empty, so judged outside the transaction both would
    accept it; inside, the loser waits for the winner's commit and judges against its head."""
    open_store(store_url).close()  # schema first, so the race below is about the batch
    record = envelope(1, sequence=0)
    members = [open_store(store_url), open_store(store_url)]
    try:
        for m in members:
            assert m.snapshot(keys_for([record])).heads == {}
        start = threading.Barrier(2)
        events: list[tuple[str, int]] = []
        judged_against: dict[int, Snapshot] = {}
        verdicts: dict[int, Verdict] = {}
        errors: list[BaseException] = []

        def member(i: int) -> None:
            try:
                start.wait()
                events.append(("enter", i))

                def hold(snapshot: Snapshot) -> None:
                    judged_against[i] = snapshot
                    events.append(("judging", i))
                    time.sleep(0.5)  # inside the transaction: the other member has entered
                    events.append(("judged", i))

                _, (verdict,) = judge_and_commit(members[i], [record], before_judging=hold)
                verdicts[i] = verdict
            except BaseException as e:  # noqa: BLE001 - reported to the main thread
                errors.append(e)

        threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        winner = next(i for e, i in events if e == "judging")
        loser = 1 - winner
        # They overlapped: the loser entered while the winner was judging in its transaction,
        # and it judged only after the winner had finished.
        assert events.index(("enter", loser)) < events.index(("judged", winner))
        assert events.index(("judged", winner)) < events.index(("judging", loser))
        # The winner judged against an empty stream, the loser against the winner's commit.
        stream = head(0).stream
        assert judged_against[winner].heads == {}
        assert judged_against[loser].heads == {stream: head(0, digest=_digest(1))}
        assert ("cst", _id(1)) in judged_against[loser].records
        assert verdicts[winner].accepted
        assert verdicts[loser].reason in (ReasonCode.CHAIN_DUPLICATE, ReasonCode.CHAIN_REPLAY)
        summary = members[0].summary()
        assert (summary["withheld"], summary["quarantined:chain_duplicate"]) == (1, 1)
        assert members[1].load_chain() == {head(0).stream: head(0, digest=_digest(1))}
    finally:
        for m in members:
            m.close()


def test_pending_amendment_and_target_judged_at_once_always_apply(store_url: str) -> None:
    """One member judges a record while another judges its retraction (from another partition):
    whichever commits second sees the other's row, so the retraction always ends up applied."""
    open_store(store_url).close()
    a, b = open_store(store_url), open_store(store_url)
    errors: list[BaseException] = []
    try:
        for n in range(25):
            target = envelope(
                1000 + n,
                sequence=n,
                prev=_digest(999 + n) if n else GENESIS_DIGEST,
                offset=n,
            )
            retract = envelope(
                2000 + n,
                sequence=n,
                prev=_digest(1999 + n) if n else GENESIS_DIGEST,
                kind=RecordKind.RETRACTION,
                target=1000 + n,
                partition=1,
                offset=n,
            )
            start = threading.Barrier(2)

            def run(s: Store, p: Prepared, start: threading.Barrier = start) -> None:
                try:
                    start.wait()
                    (verdict,) = judge_and_commit(s, [p])[1]
                    assert verdict.accepted, verdict
                except BaseException as e:  # noqa: BLE001 - reported to the main thread
                    errors.append(e)

            threads = [
                threading.Thread(target=run, args=(a, target)),
                threading.Thread(target=run, args=(b, retract)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == []
            (view,) = a.get_all(_id(1000 + n))
            assert (view.status, view.version) == ("retracted", 2), n
        summary = a.summary()
        assert (summary["amendments_pending"], summary["amendments_applied"]) == (0, 25)
    finally:
        a.close()
        b.close()


def test_postgres_members_committing_overlapping_batches_at_once(postgres_url: str) -> None:
    """Two consumer instances, one database, the same records at the same time: no error, no dupes."""
    with fresh_postgres_database(postgres_url) as url:
        open_store(url).close()  # schema first, so the race below is about batches
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def member(offset_bias: int) -> None:
            s = open_store(url)
            try:
                start.wait()
                for round_ in range(20):
                    span = range(round_ * 10, round_ * 10 + 15)  # overlaps the next round too
                    s.commit(
                        batch(
                            records=[
                                *(rec(n) for n in span),
                                *(rec(1000 + n, decision=withheld()) for n in span),
                            ],
                            amended=[retraction(5000 + round_, round_ * 10 + 3)],
                            chain=[head(round_ * 10 + 14)],
                            beats=[beat("cst", round_)],
                            offsets={(TOPIC, 0): round_ * 10 + 15 - offset_bias},
                        )
                    )
            except BaseException as e:  # noqa: BLE001 - reported to the main thread
                errors.append(e)
            finally:
                s.close()

        threads = [threading.Thread(target=member, args=(bias,)) for bias in (0, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        with closing(open_store(url)) as s:
            summary = s.summary()
            assert (summary["stored"], summary["retracted"], summary["withheld"]) == (185, 20, 205)
            assert summary["amendments_applied"] == 20
            assert s.load_offsets(GROUP, TOPIC) == {0: 205}
            assert s.load_chain() == {head(0).stream: head(204)}
            assert s.feeds() == [beat("cst", 19)]
            exported = list(s.iter_records())
            assert len({v.record_id for v in exported}) == len(exported) == 205
            assert {v.version for v in exported if v.retracted} == {2}


# --- migration from the stores earlier intelbus versions wrote (schema 1 and 2) --------------------------
# The DDL below is copied verbatim from intelbus/store/sqlite.py and intelbus/store/postgres.py as
# committed before schema 3 (`git show HEAD:intelbus/store/sqlite.py` when schema 3 was written).
# Schema 1 is schema 2 without the feeds table.

OLD_SQLITE_SCHEMA = """
CREATE TABLE records (
    record_id       TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    producer_id     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('sighting', 'incident')),
    sequence        INTEGER NOT NULL,
    digest          BLOB NOT NULL CHECK (length(digest) = 32),
    created_at      TEXT NOT NULL,
    appended_at     TEXT NOT NULL,
    policy_hash     TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    action          TEXT NOT NULL CHECK (action IN ('store', 'redact')),
    redacted_fields TEXT NOT NULL,
    tlp             TEXT NOT NULL,
    classification  TEXT NOT NULL,
    force_area      TEXT,
    occurred_at     TEXT,
    event_at        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    retracted       INTEGER NOT NULL DEFAULT 0,
    superseded      INTEGER NOT NULL DEFAULT 0,
    stored_at       TEXT NOT NULL
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);

CREATE TABLE record_history (
    record_id           TEXT NOT NULL REFERENCES records (record_id),
    version             INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    amendment_record_id TEXT NOT NULL,
    kind                TEXT NOT NULL,
    at                  TEXT NOT NULL,
    reason              TEXT NOT NULL,
    applied_at          TEXT NOT NULL,
    PRIMARY KEY (record_id, version)
);

CREATE TABLE withheld (
    record_id       TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    producer_id     TEXT NOT NULL,
    digest          BLOB NOT NULL,
    rule_id         TEXT NOT NULL,
    policy_hash     TEXT NOT NULL,
    received_at     TEXT NOT NULL
);

CREATE TABLE quarantine (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    raw             BLOB NOT NULL,
    reason          TEXT NOT NULL,
    message         TEXT NOT NULL,
    record_id       TEXT,
    producer_id     TEXT,
    quarantined_at  TEXT NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE TABLE amendments (
    arrival             INTEGER PRIMARY KEY AUTOINCREMENT,
    amendment_record_id TEXT NOT NULL UNIQUE,
    kind                TEXT NOT NULL CHECK (kind IN ('correction', 'retraction')),
    target_record_id    TEXT NOT NULL,
    producer_id         TEXT NOT NULL,
    at                  TEXT NOT NULL,
    reason              TEXT NOT NULL,
    new_payload         TEXT,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'refused')),
    received_at         TEXT NOT NULL,
    applied_at          TEXT
);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);

CREATE TABLE chain (
    producer_id   TEXT NOT NULL,
    stream        TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
    last_digest   BLOB NOT NULL,
    PRIMARY KEY (producer_id, stream)
);

CREATE TABLE offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
"""

OLD_SQLITE_FEEDS = """
CREATE TABLE feeds (
    producer_id       TEXT NOT NULL,
    topic             TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    interval_ms       INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
"""

OLD_POSTGRES_SCHEMA = """
CREATE TABLE schema_version (version integer NOT NULL);

CREATE TABLE records (
    record_id       text COLLATE "C" PRIMARY KEY,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    producer_id     text COLLATE "C" NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('sighting', 'incident')),
    sequence        bigint NOT NULL,
    digest          bytea NOT NULL CHECK (octet_length(digest) = 32),
    created_at      timestamptz NOT NULL,
    appended_at     timestamptz NOT NULL,
    policy_hash     text NOT NULL,
    rule_id         text NOT NULL,
    action          text NOT NULL CHECK (action IN ('store', 'redact')),
    redacted_fields jsonb NOT NULL,
    tlp             text NOT NULL,
    classification  text NOT NULL,
    force_area      text,
    occurred_at     timestamptz,
    event_at        timestamptz NOT NULL,
    payload         jsonb NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    retracted       boolean NOT NULL DEFAULT false,
    superseded      boolean NOT NULL DEFAULT false,
    stored_at       timestamptz NOT NULL
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);

CREATE TABLE record_history (
    record_id           text COLLATE "C" NOT NULL REFERENCES records (record_id),
    version             integer NOT NULL,
    payload             jsonb NOT NULL,
    amendment_record_id text COLLATE "C" NOT NULL,
    kind                text NOT NULL,
    at                  timestamptz NOT NULL,
    reason              text NOT NULL,
    applied_at          timestamptz NOT NULL,
    PRIMARY KEY (record_id, version)
);

CREATE TABLE withheld (
    record_id       text COLLATE "C" PRIMARY KEY,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    producer_id     text COLLATE "C" NOT NULL,
    digest          bytea NOT NULL,
    rule_id         text NOT NULL,
    policy_hash     text NOT NULL,
    received_at     timestamptz NOT NULL
);

CREATE TABLE quarantine (
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    raw             bytea NOT NULL,
    reason          text NOT NULL,
    message         text NOT NULL,
    record_id       text COLLATE "C",
    producer_id     text COLLATE "C",
    quarantined_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE TABLE amendments (
    arrival             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    amendment_record_id text COLLATE "C" NOT NULL UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('correction', 'retraction')),
    target_record_id    text COLLATE "C" NOT NULL,
    producer_id         text COLLATE "C" NOT NULL,
    at                  timestamptz NOT NULL,
    reason              text NOT NULL,
    new_payload         jsonb,
    status              text NOT NULL CHECK (status IN ('pending', 'applied', 'refused')),
    received_at         timestamptz NOT NULL,
    applied_at          timestamptz
);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);

CREATE TABLE chain (
    producer_id   text COLLATE "C" NOT NULL,
    stream        text COLLATE "C" NOT NULL,
    last_sequence bigint NOT NULL,
    last_digest   bytea NOT NULL,
    PRIMARY KEY (producer_id, stream)
);

CREATE TABLE offsets (
    group_id        text COLLATE "C" NOT NULL,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
"""

OLD_POSTGRES_FEEDS = """
CREATE TABLE feeds (
    producer_id       text COLLATE "C" NOT NULL,
    topic             text COLLATE "C" NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    interval_ms       bigint NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
"""

_OLD_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class LegacyStore:
    """A raw connection to a store as an earlier intelbus left it (no intelbus code involved)."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg  # noqa: PLC0415 - only the PostgreSQL cases need the driver

            self.pg = psycopg.connect(url, autocommit=True)
        else:
            self.lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.lite.execute("PRAGMA journal_mode=WAL")

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            cur = self.pg.execute(sql.replace("?", "%s"), params)  # type: ignore[call-overload]
            return list(cur.fetchall()) if cur.description is not None else []
        return list(self.lite.execute(sql, params).fetchall())

    def ts(self, t: datetime) -> object:
        return t if self.postgres else t.astimezone(UTC).strftime(_OLD_TIME_FORMAT)

    def js(self, value: object) -> object:
        if self.postgres:
            from psycopg.types.json import Jsonb  # noqa: PLC0415

            return Jsonb(value)
        return json.dumps(value, sort_keys=True)

    def flag(self, value: bool) -> object:
        return value if self.postgres else int(value)

    def create(self, version: int) -> None:
        """The old schema, as version ``version`` (1: without feeds, 2: with) created it."""
        ddl = OLD_POSTGRES_SCHEMA if self.postgres else OLD_SQLITE_SCHEMA
        if version == 2:
            ddl += OLD_POSTGRES_FEEDS if self.postgres else OLD_SQLITE_FEEDS
        for statement in ddl.split(";"):
            if statement.strip():
                self.execute(statement)
        if self.postgres:
            self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        else:
            self.execute(f"PRAGMA user_version={version}")

    def version(self) -> int:
        if self.postgres:
            return int(self.execute("SELECT max(version) FROM schema_version")[0][0])
        return int(self.execute("PRAGMA user_version")[0][0])

    def dump(self) -> dict[str, object]:
        """Every table's definition and rows, indexes, constraints, sequences and the version."""
        out: dict[str, object] = {"version": self.version()}
        if self.postgres:
            tables = self.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                "ORDER BY 1, 2"
            )
            out["columns"] = self.execute(
                "SELECT table_schema, table_name, column_name, data_type, is_nullable, "
                "column_default, collation_name, is_identity FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                "ORDER BY 1, 2, ordinal_position"
            )
            out["indexes"] = self.execute(
                "SELECT schemaname, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                "ORDER BY 1, 2"
            )
            out["constraints"] = self.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE conrelid <> 0 ORDER BY 1, 2"
            )
            out["sequences"] = self.execute(
                "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
            )
            out["schemas"] = self.execute(
                "SELECT nspname FROM pg_namespace "
                "WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1"
            )
        else:
            tables = [
                ("main", str(name))
                for (name,) in self.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            out["schema"] = self.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            )
        for schema, table in tables:
            rows = self.execute(f'SELECT * FROM "{schema}"."{table}"')  # noqa: S608 - catalogue names
            out[f"{schema}.{table}"] = sorted(map(repr, rows))
        return out

    def close(self) -> None:
        if self.postgres:
            self.pg.close()
        else:
            self.lite.close()


SIGHTINGS = "intelbus.sightings"
OLD_INCIDENTS = "intelbus.incidents"
HEARTBEATS = "intelbus.heartbeats"
# Record ids of the legacy store.
A, B, C, D, E, W, WI, HB = (_id(n) for n in range(1, 9))
C_A, R_A, C_B, C_E1, C_E2, P, PC, F = (_id(n) for n in (101, 102, 103, 105, 106, 110, 111, 112))
INCIDENT_PAYLOAD = {"record_id": C, "summary": "criminal damage", "victim_details": "[REDACTED]"}
BIG_RAW = bytes(range(256)) * 40  # 10240 bytes: more than the 4096 a quarantine row keeps


def at_hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def fill_legacy_store(old: LegacyStore, version: int) -> None:
    """Representative rows of every kind an earlier intelbus wrote."""

    def record(
        n: int,
        payload: dict[str, Any],
        *,
        topic: str = SIGHTINGS,
        producer: str = "cst",
        kind: str = "sighting",
        action: str = "store",
        redacted: Sequence[str] = (),
        tlp: str = "GREEN",
        force_area: str | None = "HERTFORDSHIRE",
        occurred: datetime | None = None,
        version: int = 1,
        retracted: bool = False,
        superseded: bool = False,
    ) -> None:
        old.execute(
            "INSERT INTO records (record_id, topic, kafka_partition, kafka_offset, producer_id, "
            "kind, sequence, digest, created_at, appended_at, policy_hash, rule_id, action, "
            "redacted_fields, tlp, classification, force_area, occurred_at, event_at, payload, "
            "version, retracted, superseded, stored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _id(n),
                topic,
                0,
                n,
                producer,
                kind,
                n,
                _digest(n),
                old.ts(minutes(n)),
                old.ts(minutes(n) + timedelta(seconds=1)),
                POLICY,
                f"rule-{n}",
                action,
                old.js(list(redacted)),
                tlp,
                "OFFICIAL",
                force_area,
                None if occurred is None else old.ts(occurred),
                old.ts(occurred or minutes(n)),
                old.js(payload),
                version,
                old.flag(retracted),
                old.flag(superseded),
                old.ts(minutes(n) + timedelta(seconds=2)),
            ),
        )

    def history(rid: str, v: int, payload: dict[str, Any], amendment: str, kind: str) -> None:
        h = {C_A: 2, R_A: 3, C_B: 4, C_E1: 5, C_E2: 6}[amendment]
        reason = {C_A: "typo", R_A: "duplicate", C_B: "regraded"}.get(amendment, "again")
        old.execute(
            "INSERT INTO record_history (record_id, version, payload, amendment_record_id, kind, "
            "at, reason, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rid,
                v,
                old.js(payload),
                amendment,
                kind,
                old.ts(at_hours(h)),
                reason,
                old.ts(at_hours(h) + timedelta(seconds=5)),
            ),
        )

    def amendment(
        rid: str,
        kind: str,
        target: str,
        new_payload: dict[str, Any] | None,
        status: str,
        *,
        producer: str = "cst",
        h: float = 7,
    ) -> None:
        old.execute(
            "INSERT INTO amendments (amendment_record_id, kind, target_record_id, producer_id, at, "
            "reason, new_payload, status, received_at, applied_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rid,
                kind,
                target,
                producer,
                old.ts(at_hours(h)),
                f"{kind} of {target}",
                None if new_payload is None else old.js(new_payload),
                status,
                old.ts(at_hours(h) + timedelta(seconds=1)),
                None if status == "pending" else old.ts(at_hours(h) + timedelta(seconds=5)),
            ),
        )

    def receipt(rid: str, topic: str, offset: int, digest: bytes, rule: str) -> None:
        old.execute(
            "INSERT INTO withheld (record_id, topic, kafka_partition, kafka_offset, producer_id, "
            "digest, rule_id, policy_hash, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, topic, 0, offset, "cst", digest, rule, POLICY, old.ts(minutes(offset))),
        )

    # A: corrected, then retracted (version 3).
    record(
        1, payload_of(1, "corrected"), occurred=T0 - timedelta(days=1), version=3, retracted=True
    )
    history(A, 1, payload_of(1), C_A, "correction")
    history(A, 2, payload_of(1, "corrected"), R_A, "retraction")
    amendment(C_A, "correction", A, payload_of(1, "corrected"), "applied", h=2)
    amendment(R_A, "retraction", A, None, "applied", h=3)
    # B: superseded (a correction whose content the policy withheld), with the correction's receipt.
    record(2, payload_of(2), version=2, superseded=True)
    history(B, 1, payload_of(2), C_B, "correction")
    amendment(C_B, "correction", B, None, "applied", h=4)
    receipt(C_B, SIGHTINGS, 103, _digest(103), "elsewhere")
    # C: an incident stored redacted; D: another producer's sighting.
    record(
        3,
        INCIDENT_PAYLOAD,
        topic=OLD_INCIDENTS,
        kind="incident",
        action="redact",
        redacted=["victim_details"],
        tlp="AMBER",
        force_area="METROPOLITAN",
        occurred=T0 + timedelta(hours=1),
    )
    record(4, payload_of(4), producer="gmp", force_area="GREATER_MANCHESTER")
    # E: superseded by one correction, then corrected again with content the policy kept.
    record(5, payload_of(5, "kept again"), version=3, superseded=True)
    history(E, 1, payload_of(5), C_E1, "correction")
    history(E, 2, payload_of(5), C_E2, "correction")
    amendment(C_E1, "correction", E, None, "applied", h=5)
    amendment(C_E2, "correction", E, payload_of(5, "kept again"), "applied", h=6)
    # Receipts: a sighting and an incident withheld, a heartbeat not addressed to us.
    receipt(W, SIGHTINGS, 6, _digest(6), "not-addressed")
    receipt(WI, OLD_INCIDENTS, 7, _digest(7), "elsewhere")
    receipt(HB, HEARTBEATS, 8, _digest(8), "not-addressed")
    # Amendments still pending, and one refused (another producer's retraction of A).
    amendment(P, "retraction", _id(50), None, "pending")
    amendment(PC, "correction", _id(51), payload_of(51, "pending fix"), "pending")
    amendment(F, "retraction", A, None, "refused", producer="mallory")
    for offset, raw, reason, rid, producer in (
        (200, b"\x00short", "malformed", None, None),
        (201, BIG_RAW, "bad_signature", _id(9), "cst"),
    ):
        old.execute(
            "INSERT INTO quarantine (topic, kafka_partition, kafka_offset, raw, reason, message, "
            "record_id, producer_id, quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (SIGHTINGS, 0, offset, raw, reason, f"{reason} at {offset}", rid, producer, old.ts(T0)),
        )
    for producer, stream, seq, digest in (
        ("cst", SIGHTINGS, 7, _digest(7)),
        ("cst", OLD_INCIDENTS, 3, _digest(33)),
        ("gmp", SIGHTINGS, 4, _digest(44)),
    ):
        old.execute(
            "INSERT INTO chain (producer_id, stream, last_sequence, last_digest) VALUES (?, ?, ?, ?)",
            (producer, stream, seq, digest),
        )
    for topic, partition, next_offset in (
        (SIGHTINGS, 0, 210),
        (SIGHTINGS, 1, 5),
        (OLD_INCIDENTS, 0, 4),
    ):
        old.execute(
            "INSERT INTO offsets (group_id, topic, kafka_partition, next_offset) VALUES (?, ?, ?, ?)",
            (GROUP, topic, partition, next_offset),
        )
    if version == 2:
        old.execute(
            "INSERT INTO feeds (producer_id, topic, last_heartbeat_at, interval_ms) "
            "VALUES (?, ?, ?, ?)",
            ("cst", HEARTBEATS, old.ts(at_hours(5)), 30_000),
        )


@pytest.fixture
def legacy_store(store_url: str, request: pytest.FixtureRequest) -> Iterator[LegacyStore]:
    """A store written by the previous intelbus (schema ``request.param``), filled."""
    old = LegacyStore(store_url)
    try:
        old.create(request.param)
        fill_legacy_store(old, request.param)
        yield old
    finally:
        old.close()


def _history(view: StoredRecordView) -> list[tuple[object, ...]]:
    return [
        (h.version, h.change, h.payload, h.amendment_record_id, h.outcome, h.at, h.reason)
        for h in view.history
    ]


@pytest.mark.parametrize("legacy_store", [1, 2], indirect=True, ids=["schema1", "schema2"])
def test_an_old_store_migrates_in_place_losing_nothing(
    store_url: str, legacy_store: LegacyStore
) -> None:
    """Every row of a schema 1 or 2 store arrives in schema 4 as intelbus/store/migrate.py says;
    reopening is a no-op; the migrated store works with the judge and the store as any other."""
    version = legacy_store.version()
    store = open_store(store_url)
    try:
        assert store.meta("schema_version") == str(SCHEMA_VERSION) == "4"
        assert legacy_store.version() == 4

        # A: versions from its history (original, correction, retraction); labels and
        # provenance kept; the signing key of old versions is unknown.
        (a,) = store.get_all(A)
        assert (a.status, a.version, a.payload, a.retracted) == (
            "retracted",
            3,
            payload_of(1, "corrected"),
            True,
        )
        assert (a.topic, a.partition, a.offset, a.sequence, a.digest, a.key_id) == (
            SIGHTINGS,
            0,
            1,
            1,
            _digest(1),
            None,
        )
        assert (a.created_at, a.appended_at) == (minutes(1), minutes(1) + timedelta(seconds=1))
        assert (a.tlp, a.classification, a.force_area, a.occurred_at) == (
            "GREEN",
            "OFFICIAL",
            "HERTFORDSHIRE",
            T0 - timedelta(days=1),
        )
        assert (a.policy_hash, a.rule_id, a.action) == (POLICY, "rule-1", "store")
        assert _history(a) == [
            (1, "original", payload_of(1), A, "store", a.appended_at, ""),
            (2, "correction", payload_of(1, "corrected"), C_A, "store", at_hours(2), "typo"),
            (3, "retraction", None, R_A, "retract", at_hours(3), "duplicate"),
        ]
        # B: superseded becomes withheld; the earlier content stays in the versions.
        (b,) = store.get_all(B)
        assert (b.status, b.version, b.payload, b.superseded) == ("withheld", 2, None, True)
        assert _history(b) == [
            (1, "original", payload_of(2), B, "store", b.appended_at, ""),
            (2, "correction", None, C_B, "withhold", at_hours(4), "regraded"),
        ]
        # C: redacted incident, labels intact.
        (c,) = store.get_all(C)
        assert (c.status, c.kind, c.action, c.redacted_fields, c.payload) == (
            "live",
            "incident",
            "redact",
            ("victim_details",),
            INCIDENT_PAYLOAD,
        )
        assert (c.tlp, c.force_area, c.occurred_at, c.history) == (
            "AMBER",
            "METROPOLITAN",
            T0 + timedelta(hours=1),
            (),
        )
        (d,) = store.get_all(D)
        assert (d.producer_id, d.status, d.force_area) == ("gmp", "live", "GREATER_MANCHESTER")
        # E: the content a later correction brought is current; only the withheld one is withheld.
        (e,) = store.get_all(E)
        assert (e.status, e.version, e.payload) == ("live", 3, payload_of(5, "kept again"))
        assert [(h.version, h.outcome, h.payload) for h in e.history] == [
            (1, "store", payload_of(5)),
            (2, "withhold", None),
            (3, "store", payload_of(5, "kept again")),
        ]
        # Receipts become records without content, of their topic's kind.
        for rid, kind, topic, offset in (
            (W, "sighting", SIGHTINGS, 6),
            (WI, "incident", OLD_INCIDENTS, 7),
        ):
            (r,) = store.get_all(rid)
            assert (r.status, r.payload, r.kind, r.topic, r.offset, r.producer_id) == (
                "withheld",
                None,
                kind,
                topic,
                offset,
                "cst",
            )
            assert (r.digest, r.created_at, r.version) == (_digest(offset), minutes(offset), 1)
        # A heartbeat's receipt carried nothing; an amendment's is not a record.
        assert store.get_all(HB) == []
        assert store.get_all(C_B) == []
        assert store.get_all(P) == []
        # Lists show what has content and is live or retracted.
        assert sorted(ids(store.list_records())) == [A, C, D, E]
        assert ids(store.search("corrected")) == [A]
        # Amendments keep their status; pending ones wait for their targets, as registered.
        snap = store.snapshot(
            SnapshotKeys(
                frozenset(), frozenset({C_A, R_A, C_B, C_E1, C_E2, P, PC, F, _id(50), _id(51)})
            )
        )
        assert {k: h.status.value for k, h in snap.amendments.items()} == {
            ("cst", C_A): "applied",
            ("cst", R_A): "applied",
            ("cst", C_B): "applied",
            ("cst", C_E1): "applied",
            ("cst", C_E2): "applied",
            ("cst", P): "pending",
            ("cst", PC): "pending",
            ("mallory", F): "refused",
        }
        (waiting,) = snap.pending[("cst", _id(50))]
        assert (waiting.record_id, waiting.kind, waiting.decision.outcome) == (
            P,
            RecordKind.RETRACTION,
            Outcome.RETRACT,
        )
        assert (waiting.source.reason, waiting.source.amended_at) == (
            f"retraction of {_id(50)}",
            at_hours(7),
        )
        (fix,) = snap.pending[("cst", _id(51))]
        assert (fix.kind, fix.decision.payload) == (
            RecordKind.CORRECTION,
            payload_of(51, "pending fix"),
        )
        # Quarantine: a bounded prefix, the whole size and digest.
        q = store.quarantine_entries()
        assert [(e.offset, e.reason, e.raw_size, e.truncated, e.record_id) for e in q] == [
            (200, "malformed", 6, False, None),
            (201, "bad_signature", len(BIG_RAW), True, _id(9)),
        ]
        assert q[0].raw == b"\x00short"
        assert q[1].raw == BIG_RAW[:4096]
        for entry, raw in zip(q, (b"\x00short", BIG_RAW), strict=True):
            assert entry.raw_digest == hashlib.blake2b(raw, digest_size=32).digest()
        # Stream heads: the legacy topic-wide heads of format v1 streams.
        legacy = {
            StreamKey(p, t, ANY_PARTITION, LEGACY_EPOCH): (seq, dg)
            for p, t, seq, dg in (
                ("cst", SIGHTINGS, 7, _digest(7)),
                ("cst", OLD_INCIDENTS, 3, _digest(33)),
                ("gmp", SIGHTINGS, 4, _digest(44)),
            )
        }
        assert store.load_chain() == {k: ChainState(k, seq, dg) for k, (seq, dg) in legacy.items()}
        assert store.load_offsets(GROUP, SIGHTINGS) == {0: 210, 1: 5}
        assert store.load_offsets(GROUP, OLD_INCIDENTS) == {0: 4}
        assert store.feeds() == (
            [FeedBeat("cst", HEARTBEATS, at_hours(5), 30_000)] if version == 2 else []
        )
        assert store.summary() == {
            **ZERO_SUMMARY,
            "stored": 2,
            "redacted": 1,
            "withheld": 3,
            "retracted": 1,
            "amendments_applied": 5,
            "amendments_pending": 2,
            "amendments_refused": 1,
            "quarantined:bad_signature": 1,
            "quarantined:malformed": 1,
        }
    finally:
        store.close()

    # The legacy tables are gone; reopening changes nothing at all.
    migrated = legacy_store.dump()
    assert not any("_v2" in key or "intelbus_legacy" in key for key in migrated), migrated.keys()
    assert "intelbus_legacy" not in repr(migrated.get("schemas"))
    with closing(open_store(store_url)):
        pass
    assert legacy_store.dump() == migrated

    store = open_store(store_url)
    try:
        # Old versions carry no key: a withdrawal cannot reach them.
        w = store.withdraw(KEY_A.hex(), T0 - timedelta(days=3650))
        assert (w.versions, w.amendments, w.records) == (0, 0, 0)
        # v1 records go on being judged against the legacy heads.
        dup = envelope(
            70, sequence=7, prev=_digest(6), digest=_digest(7), topic=SIGHTINGS, format_version=1
        )
        nxt = envelope(
            71, sequence=8, prev=_digest(7), topic=SIGHTINGS, format_version=1, offset=211
        )
        _, verdicts = judge_and_commit(store, [dup, nxt])
        assert [v.reason for v in verdicts] == [ReasonCode.CHAIN_DUPLICATE, None]
        wide = StreamKey("cst", SIGHTINGS, ANY_PARTITION, LEGACY_EPOCH)
        assert store.load_chain()[wide] == ChainState(wide, 8, _digest(71))
        # Another producer's record with a legacy amendment's id is its own record, and a
        # snapshot holding a legacy amendment (no digest kept) is judged like any other.
        _, verdicts = judge_and_commit(
            store, [envelope(101, sequence=0, producer="mallory", key=KEY_G, topic=SIGHTINGS)]
        )
        assert verdicts[0].accepted
        assert [v.producer_id for v in store.get_all(C_A)] == ["mallory"]
        # A legacy pending retraction applies when its target arrives.
        committed, verdicts = judge_and_commit(store, [envelope(50, sequence=0, topic=SIGHTINGS)])
        assert verdicts[0].accepted
        assert committed.applied == (("cst", P, "applied"),)
        (fifty,) = store.get_all(_id(50))
        assert (fifty.status, fifty.version) == ("retracted", 2)
        # Migrated records take new versions.
        store.commit(batch(amended=[amend(80, 3, kept({"summary": "v2"}), topic=OLD_INCIDENTS)]))
        (c,) = store.get_all(C)
        assert (c.version, c.payload, [h.version for h in c.history]) == (
            2,
            {"summary": "v2"},
            [1, 2],
        )
    finally:
        store.close()


def _fail_after_copying(monkeypatch: pytest.MonkeyPatch, store_url: str) -> None:
    """Make the migration fail after every row was copied, just before the old tables go."""
    module = (
        "intelbus.store.postgres" if store_url.startswith("postgresql") else "intelbus.store.sqlite"
    )
    from intelbus.store import migrate  # noqa: PLC0415

    def copy_then_fail(*args: Any, **kw: Any) -> dict[str, int]:
        migrate.copy_legacy(*args, **kw)
        raise RuntimeError("injected failure after the copy")

    monkeypatch.setattr(f"{module}.copy_legacy", copy_then_fail)


@pytest.mark.parametrize("legacy_store", [1, 2], indirect=True, ids=["schema1", "schema2"])
@pytest.mark.parametrize("failure", ["refused_row", "after_copy"])
def test_a_failed_migration_leaves_the_old_store_exactly_as_it_was(
    store_url: str, legacy_store: LegacyStore, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the new schema refuses (a receipt whose digest is not 32 bytes), or a failure after
    everything was copied: StoreError, and the old store is untouched (tables, indexes, rows,
    version); once the cause is gone it migrates."""
    if failure == "refused_row":
        legacy_store.execute(
            "INSERT INTO withheld (record_id, topic, kafka_partition, kafka_offset, producer_id, "
            "digest, rule_id, policy_hash, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_id(99), SIGHTINGS, 0, 99, "cst", b"short digest", "r", POLICY, legacy_store.ts(T0)),
        )
    else:
        _fail_after_copying(monkeypatch, store_url)
    before = legacy_store.dump()
    assert before["version"] == legacy_store.version() in (1, 2)
    with pytest.raises(StoreError):
        open_store(store_url)
    assert legacy_store.dump() == before
    with pytest.raises(StoreError):
        open_store(store_url)  # the same again: nothing half-done stands in the way
    assert legacy_store.dump() == before

    if failure == "refused_row":
        legacy_store.execute("DELETE FROM withheld WHERE record_id = ?", (_id(99),))
    else:
        monkeypatch.undo()
    with closing(open_store(store_url)) as store:
        assert store.meta("schema_version") == "4"
        assert store.summary()["amendments_applied"] == 5
    assert legacy_store.version() == 4

"""The consumer store: one behaviour, verified by the same tests on SQLite and on PostgreSQL.

Every test taking ``store_url`` runs twice (``[sqlite]`` and ``[postgres]``), each time on a fresh,
empty store. No Kafka here: these tests exercise the store alone.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from intelbus.store import (
    Amendment,
    Batch,
    ChainState,
    FeedBeat,
    QuarantineEntry,
    Store,
    StoredRecord,
    StoreError,
    WithheldReceipt,
    open_store,
)
from intelbus.store import base as store_base
from tests.integration.conftest import REPO, fresh_postgres_database

T0 = datetime(2024, 9, 14, 9, 30, tzinfo=UTC)
TOPIC = "cst.sightings.v1"
GROUP = "herts-police"


def _id(n: int) -> str:
    """A deterministic UUID, so sort orders are predictable."""
    return str(uuid.UUID(int=n))


def _digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def rec(
    n: int,
    *,
    producer: str = "cst",
    topic: str = TOPIC,
    partition: int = 0,
    kind: str = "sighting",
    action: str = "store",
    force_area: str | None = "HERTFORDSHIRE",
    tlp: str = "GREEN",
    occurred_at: datetime | None = None,
    payload: dict[str, object] | None = None,
) -> StoredRecord:
    return StoredRecord(
        record_id=_id(n),
        topic=topic,
        partition=partition,
        offset=n,
        producer_id=producer,
        kind=kind,
        sequence=n,
        digest=_digest(n),
        created_at=T0 + timedelta(minutes=n),
        appended_at=T0 + timedelta(minutes=n, seconds=1),
        policy_hash="p" * 64,
        rule_id="herts-green",
        action=action,
        redacted_fields=("victim_details",) if action == "redact" else (),
        tlp=tlp,
        classification="OFFICIAL",
        force_area=force_area,
        occurred_at=occurred_at,
        payload=payload
        if payload is not None
        else {"record_id": _id(n), "description": f"person photographing entrance {n}", "n": n},
    )


def receipt(n: int, *, producer: str = "cst") -> WithheldReceipt:
    return WithheldReceipt(_id(n), TOPIC, 0, n, producer, _digest(n), "not-addressed", "p" * 64)


def quarantine(offset: int, raw: bytes, reason: str = "bad_signature") -> QuarantineEntry:
    return QuarantineEntry(TOPIC, 0, offset, raw, reason, f"offset {offset} rejected", None, None)


def correction(n: int, target: int, payload: dict[str, object] | None, *, producer: str = "cst"):
    return Amendment(
        "correction", _id(n), _id(target), producer, T0 + timedelta(hours=n), "typo", payload
    )


def retraction(n: int, target: int, *, producer: str = "cst") -> Amendment:
    return Amendment(
        "retraction", _id(n), _id(target), producer, T0 + timedelta(hours=n), "duplicate"
    )


def batch(**kw: object) -> Batch:
    return Batch(group_id=str(kw.pop("group_id", GROUP)), **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def _empty(store: Store) -> bool:
    summary = store.summary()
    return (
        all(v == 0 for v in summary.values())
        and store.load_offsets(GROUP, TOPIC) == {}
        and store.load_chain() == {}
        and store.list_records(limit=10) == []
        and store.quarantine_entries(10) == []
    )


# --- round trip ----------------------------------------------------------------------------------------


def test_every_field_round_trips(store: Store) -> None:
    """What goes in comes out, field for field; times come back as the same instants, in UTC."""
    plus_two = timezone(timedelta(hours=2))
    r = rec(7, action="redact", occurred_at=datetime(2024, 9, 14, 8, 0, 0, 123456, tzinfo=plus_two))
    store.commit(batch(records=[r], offsets={(TOPIC, 0): 8}))
    view = store.get(r.record_id)
    assert view is not None
    for name in StoredRecord.__dataclass_fields__:
        assert getattr(view, name) == getattr(r, name), name
    assert view.occurred_at is not None
    assert view.occurred_at.utcoffset() == timedelta(0)
    assert (view.version, view.retracted, view.superseded, view.history) == (1, False, False, ())
    assert store.get(_id(999)) is None
    assert store.producer_of(r.record_id) == "cst"


def test_naive_datetimes_are_refused() -> None:
    """A timestamp without a zone cannot be placed in time: refused when the value is made."""
    with pytest.raises(StoreError):
        rec(1, occurred_at=datetime(2024, 1, 1))  # noqa: DTZ001 - the point of the test


# --- atomicity -----------------------------------------------------------------------------------------


def test_a_batch_that_fails_midway_leaves_nothing(store: Store) -> None:
    """A bad row after valid ones: StoreError, and no records, receipts, quarantine, chain or offsets."""
    good = [rec(1), rec(2)]
    bad = rec(3, payload={"when": object()})  # not JSON: fails after rows 1 and 2 were inserted
    b = batch(
        records=[*good, bad],
        withheld=[receipt(10)],
        quarantined=[quarantine(11, b"x")],
        chain=[ChainState("cst", TOPIC, 3, _digest(3))],
        offsets={(TOPIC, 0): 12},
    )
    with pytest.raises(StoreError):
        store.commit(b)
    assert _empty(store)
    assert store.get(good[0].record_id) is None
    # The store is still usable after the failed batch.
    store.commit(batch(records=good, offsets={(TOPIC, 0): 3}))
    assert store.load_offsets(GROUP, TOPIC) == {0: 3}


def test_a_failure_at_the_last_statement_rolls_back_everything(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offsets are written last; breaking that statement still leaves no records behind."""
    monkeypatch.setattr(store, "_UPSERT_OFFSET", "INSERT INTO no_such_table VALUES (?, ?, ?, ?)")
    with pytest.raises(StoreError):
        store.commit(
            batch(
                records=[rec(1)],
                amendments=[retraction(2, 1)],
                quarantined=[quarantine(5, b"q")],
                chain=[ChainState("cst", TOPIC, 1, _digest(1))],
                offsets={(TOPIC, 0): 6},
            )
        )
    monkeypatch.undo()
    assert _empty(store)


def test_a_wrong_row_type_fails_the_batch_cleanly(store: Store) -> None:
    """A quarantine entry passed as a record is a programming error: StoreError, nothing kept."""
    with pytest.raises(StoreError):
        store.commit(
            batch(records=[rec(1), quarantine(2, b"oops")], offsets={(TOPIC, 0): 3})  # type: ignore[list-item]
        )
    assert _empty(store)


# --- idempotence and offsets ---------------------------------------------------------------------------


def test_the_same_batch_twice_gives_one_row_each(store: Store) -> None:
    """At-least-once delivery: a redelivered batch changes nothing."""
    b = batch(
        records=[rec(1), rec(2, action="redact")],
        withheld=[receipt(3)],
        quarantined=[quarantine(4, b"raw-4")],
        amendments=[correction(5, 1, {"description": "fixed"})],
        chain=[ChainState("cst", TOPIC, 5, _digest(5))],
        offsets={(TOPIC, 0): 6},
    )
    store.commit(b)
    first = (
        store.summary(),
        store.load_offsets(GROUP, TOPIC),
        store.load_chain(),
        store.get(_id(1)),
    )
    store.commit(b)
    again = (
        store.summary(),
        store.load_offsets(GROUP, TOPIC),
        store.load_chain(),
        store.get(_id(1)),
    )
    assert first == again
    assert first[0]["stored"] == 1
    assert first[0]["redacted"] == 1
    assert first[0]["withheld"] == 1
    assert first[0]["quarantined:bad_signature"] == 1
    view = store.get(_id(1))
    assert view is not None
    assert view.version == 2  # the correction was applied once, not twice
    assert len(store.list_records(limit=100)) == 2


def test_a_stored_record_is_never_overwritten(store: Store) -> None:
    """The same record id with other content (a replay at a new offset) leaves the first copy."""
    store.commit(batch(records=[rec(1)]))
    store.commit(batch(records=[rec(1, payload={"description": "other"})]))
    view = store.get(_id(1))
    assert view is not None
    assert view.payload == rec(1).payload


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


def test_chain_state_round_trips_and_never_moves_backwards(store: Store) -> None:
    """The high-water mark keeps the highest sequence and its digest."""
    store.commit(
        batch(
            chain=[ChainState("cst", TOPIC, 5, _digest(5)), ChainState("cst", "inc", 2, _digest(2))]
        )
    )
    assert store.load_chain() == {
        ("cst", TOPIC): ChainState("cst", TOPIC, 5, _digest(5)),
        ("cst", "inc"): ChainState("cst", "inc", 2, _digest(2)),
    }
    store.commit(batch(chain=[ChainState("cst", TOPIC, 3, _digest(3))]))
    assert store.load_chain()[("cst", TOPIC)] == ChainState("cst", TOPIC, 5, _digest(5))
    store.commit(batch(chain=[ChainState("cst", TOPIC, 9, _digest(9))]))
    assert store.load_chain()[("cst", TOPIC)] == ChainState("cst", TOPIC, 9, _digest(9))


# --- durability ----------------------------------------------------------------------------------------


def test_records_and_offsets_survive_close_and_reopen(store_url: str) -> None:
    """Close, reopen: everything committed is there."""
    s = open_store(store_url)
    s.commit(
        batch(
            records=[rec(1)],
            offsets={(TOPIC, 0): 2},
            chain=[ChainState("cst", TOPIC, 1, _digest(1))],
        )
    )
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.get(_id(1))
    s = open_store(store_url)
    try:
        assert s.get(_id(1)) is not None
        assert s.load_offsets(GROUP, TOPIC) == {0: 2}
        assert s.load_chain()[("cst", TOPIC)].last_sequence == 1
    finally:
        s.close()


_KILLED_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from tests.integration.test_store import batch, rec, TOPIC
    from intelbus.store import open_store
    store = open_store(sys.argv[1])
    store.commit(batch(records=[rec(n) for n in range(1, 51)], offsets={(TOPIC, 0): 51}))
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
        assert s.load_offsets(GROUP, TOPIC) == {0: 51}
        assert {v.record_id for v in s.list_records(limit=100)} == {_id(n) for n in range(1, 51)}
    finally:
        s.close()


# --- amendments ----------------------------------------------------------------------------------------


def test_correction_then_retraction_keep_history(store: Store) -> None:
    """A correction replaces the payload (version 2); a retraction marks it withdrawn (version 3)."""
    store.commit(batch(records=[rec(1)]))
    store.commit(batch(amendments=[correction(2, 1, {"description": "corrected"})]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.payload, view.version, view.retracted) == ({"description": "corrected"}, 2, False)
    assert [(h.version, h.payload, h.kind) for h in view.history] == [
        (1, rec(1).payload, "correction")
    ]
    store.commit(batch(amendments=[retraction(3, 1)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.payload, view.version, view.retracted) == ({"description": "corrected"}, 3, True)
    assert [(h.version, h.amendment_record_id, h.reason) for h in view.history] == [
        (1, _id(2), "typo"),
        (2, _id(3), "duplicate"),
    ]
    assert view.history[1].payload == {"description": "corrected"}
    summary = store.summary()
    assert (summary["retracted"], summary["amendments_applied"], summary["stored"]) == (1, 2, 1)


def test_an_amendment_in_the_same_batch_as_its_target_applies(store: Store) -> None:
    """Records are written before the batch's amendments."""
    store.commit(batch(records=[rec(1)], amendments=[retraction(2, 1)]))
    view = store.get(_id(1))
    assert view is not None
    assert view.retracted


def test_a_pending_amendment_applies_when_its_target_arrives(store: Store) -> None:
    """Arrived before its target: kept pending, then applied, in arrival order, when it comes."""
    store.commit(batch(amendments=[correction(2, 1, {"description": "v2"})]))
    store.commit(batch(amendments=[retraction(3, 1)]))
    assert store.get(_id(1)) is None
    assert store.summary()["amendments_pending"] == 2
    store.commit(batch(records=[rec(1)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.payload, view.version, view.retracted) == ({"description": "v2"}, 3, True)
    summary = store.summary()
    assert (summary["amendments_pending"], summary["amendments_applied"]) == (0, 2)


def test_a_pending_amendment_from_another_producer_is_refused(store: Store) -> None:
    """When the target finally arrives and belongs to someone else, the amendment is not applied."""
    store.commit(batch(amendments=[retraction(2, 1, producer="mallory")]))
    store.commit(batch(records=[rec(1)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.retracted, view.version) == (False, 1)
    assert store.summary()["amendments_refused"] == 1


def test_amending_another_producers_record_fails_the_batch(store: Store) -> None:
    """The pipeline quarantines these; if one slips through, the store refuses the whole batch."""
    store.commit(batch(records=[rec(1)]))
    with pytest.raises(StoreError):
        store.commit(batch(records=[rec(5)], amendments=[retraction(2, 1, producer="mallory")]))
    assert store.get(_id(5)) is None
    view = store.get(_id(1))
    assert view is not None
    assert not view.retracted


def test_a_foreign_amendment_whose_target_arrives_in_the_same_batch_is_refused(
    store: Store,
) -> None:
    """The target came from another partition in the same poll, so the pipeline could not know
    its producer: the store refuses the amendment instead of failing the batch on every retry
    (which stopped the consumer)."""
    store.commit(batch(records=[rec(1)], amendments=[retraction(2, 1, producer="mallory")]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.retracted, view.version) == (False, 1)
    assert store.summary()["amendments_refused"] == 1


def test_a_correction_whose_content_is_withheld_marks_the_record_superseded(store: Store) -> None:
    """Policy withholds the corrected content: keep what we hold, flag it as superseded."""
    store.commit(batch(records=[rec(1)]))
    store.commit(batch(amendments=[correction(2, 1, None)]))
    view = store.get(_id(1))
    assert view is not None
    assert (view.superseded, view.retracted, view.version, view.payload) == (
        True,
        False,
        2,
        rec(1).payload,
    )


def test_amendment_of_a_withheld_record_stays_pending(store: Store) -> None:
    """The target was withheld: only a receipt, so its amendment has nothing to apply to."""
    store.commit(batch(withheld=[receipt(1)]))
    store.commit(batch(amendments=[retraction(2, 1)]))
    assert store.get(_id(1)) is None
    assert store.producer_of(_id(1)) == "cst"
    assert store.summary()["amendments_pending"] == 1


# --- quarantine ----------------------------------------------------------------------------------------


def test_quarantine_keeps_raw_bytes_exactly_and_first_entry_wins(store: Store) -> None:
    """Every byte value, NULs included, comes back; a second entry at the same position is ignored."""
    raw = bytes(range(256)) * 4 + b"\x00\x00"
    store.commit(
        batch(quarantined=[quarantine(3, raw, "chain_replay"), quarantine(4, b"", "malformed")])
    )
    store.commit(batch(quarantined=[quarantine(3, b"different", "oversize")]))
    entries = store.quarantine_entries(10)
    assert [(e.offset, e.raw, e.reason) for e in entries] == [
        (3, raw, "chain_replay"),
        (4, b"", "malformed"),
    ]
    assert entries[0].message == "offset 3 rejected"
    summary = store.summary()
    assert (summary["quarantined:chain_replay"], summary["quarantined:malformed"]) == (1, 1)
    assert "quarantined:oversize" not in summary
    assert store.quarantine_entries(1) == entries[:1]


# --- queries -------------------------------------------------------------------------------------------


def test_list_filters_and_search(store: Store) -> None:
    """Filters by kind, event time, force area and TLP; newest event first; search is a substring."""
    records = [
        rec(1, occurred_at=T0 - timedelta(days=3)),
        rec(
            2,
            kind="incident",
            force_area="METROPOLITAN",
            payload={"text": "Swastika daubed on GRAVE"},
        ),
        rec(3, tlp="AMBER", force_area=None),
        rec(4, occurred_at=T0 + timedelta(days=1), payload={"note": "drone overhead, 50% sure"}),
    ]
    store.commit(batch(records=records))

    def ids(views: list[store_base.StoredRecordView]) -> list[str]:
        return [v.record_id for v in views]

    assert ids(store.list_records()) == [_id(4), _id(3), _id(2), _id(1)]
    assert ids(store.list_records(limit=2)) == [_id(4), _id(3)]
    assert ids(store.list_records(kind="incident")) == [_id(2)]
    assert ids(store.list_records(force_area="HERTFORDSHIRE")) == [_id(4), _id(1)]
    assert ids(store.list_records(tlp="AMBER")) == [_id(3)]
    assert ids(store.list_records(since=T0)) == [_id(4), _id(3), _id(2)]
    assert ids(store.list_records(until=T0 + timedelta(minutes=3))) == [_id(2), _id(1)]
    assert ids(store.list_records(since=T0, until=T0 + timedelta(hours=1), kind="sighting")) == [
        _id(3)
    ]
    assert ids(store.search("grave")) == [_id(2)]
    assert ids(store.search("50%")) == [_id(4)]
    assert ids(store.search("photographing_entrance")) == []  # "_" is not a wildcard
    assert ids(store.search("photographing entrance 3")) == [_id(3)]
    assert len(store.search("photographing", limit=1)) == 1


def test_summary_counts(store: Store) -> None:
    """Stored, redacted, withheld, retracted, amendments and quarantine by reason."""
    store.commit(
        batch(
            records=[rec(1), rec(2), rec(3, action="redact")],
            withheld=[receipt(4), receipt(5)],
            quarantined=[
                quarantine(6, b"a"),
                quarantine(7, b"b"),
                quarantine(8, b"c", "unknown_key"),
            ],
            amendments=[retraction(9, 1)],
        )
    )
    assert store.summary() == {
        "stored": 2,
        "redacted": 1,
        "withheld": 2,
        "retracted": 1,
        "amendments_applied": 1,
        "amendments_pending": 0,
        "amendments_refused": 0,
        "quarantined:bad_signature": 2,
        "quarantined:unknown_key": 1,
    }
    assert store.count_by_action() == {"store": 2, "redact": 1}


def test_iter_records_exports_everything_in_log_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export pages through every record by (topic, partition, offset), with history."""
    monkeypatch.setattr(store_base, "EXPORT_PAGE", 3)
    records = [
        rec(n, topic=t, partition=p)
        for n, (t, p) in enumerate(
            [("b", 0), ("a", 1), ("a", 0), ("b", 0), ("a", 0), ("a", 1), ("c", 2)], start=1
        )
    ]
    store.commit(batch(records=records, amendments=[retraction(50, 3)]))
    exported = list(store.iter_records())
    assert [(v.topic, v.partition, v.offset) for v in exported] == sorted(
        (r.topic, r.partition, r.offset) for r in records
    )
    assert next(v for v in exported if v.record_id == _id(3)).history[0].kind == "retraction"


def test_open_store_dispatch(tmp_path: Path) -> None:
    """A path or sqlite:/// URL opens SQLite; an unknown scheme is refused."""
    for target in (str(tmp_path / "a.sqlite"), f"sqlite:///{tmp_path / 'b.sqlite'}"):
        s = open_store(target)
        s.close()
    assert (tmp_path / "a.sqlite").exists()
    assert (tmp_path / "b.sqlite").exists()
    with pytest.raises(StoreError):
        open_store("mysql://localhost/x")


# --- PostgreSQL under concurrency ----------------------------------------------------------------------


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
                    ids = range(round_ * 10, round_ * 10 + 15)  # overlaps the next round too
                    s.commit(
                        batch(
                            records=[rec(n) for n in ids],
                            withheld=[receipt(1000 + n) for n in ids],
                            amendments=[retraction(5000 + round_, round_ * 10 + 3)],
                            chain=[ChainState("cst", TOPIC, round_ * 10 + 14, _digest(round_))],
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
        s = open_store(url)
        try:
            summary = s.summary()
            assert (summary["stored"], summary["withheld"]) == (205, 205)
            assert (summary["retracted"], summary["amendments_applied"]) == (20, 20)
            assert s.load_offsets(GROUP, TOPIC) == {0: 205}
            assert s.load_chain()[("cst", TOPIC)].last_sequence == 204
            assert len({v.record_id for v in s.iter_records()}) == 205
            versions = {v.version for v in s.iter_records() if v.retracted}
            assert versions == {2}
        finally:
            s.close()


def test_postgres_pending_amendment_and_target_committed_at_once(postgres_url: str) -> None:
    """A member stores a target while another stores its amendment: it always ends up applied."""
    with fresh_postgres_database(postgres_url) as url:
        open_store(url).close()
        a, b = open_store(url), open_store(url)
        try:
            for n in range(30):
                start = threading.Barrier(2)

                def commit(s: Store, bt: Batch, start: threading.Barrier = start) -> None:
                    start.wait()
                    s.commit(bt)

                t1 = threading.Thread(target=commit, args=(a, batch(records=[rec(n)])))
                t2 = threading.Thread(
                    target=commit, args=(b, batch(amendments=[retraction(100 + n, n)]))
                )
                t1.start()
                t2.start()
                t1.join(30)
                t2.join(30)
                view = a.get(_id(n))
                assert view is not None
                assert view.retracted, n
            assert a.summary()["amendments_pending"] == 0
        finally:
            a.close()
            b.close()


# --- feeds (heartbeats) ---------------------------------------------------------------------------------


def beat(producer: str, minutes: int, *, topic: str = "cst.heartbeats", interval_s: int = 30):
    return FeedBeat(producer, topic, T0 + timedelta(minutes=minutes), interval_s * 1000)


def test_feeds_keep_the_newest_heartbeat_of_each_producer_and_topic(store: Store) -> None:
    """Newest wins within a batch and across batches; an older beat never moves a feed back."""
    assert store.feeds() == []
    store.commit(batch(beats=[beat("cst", 5), beat("cst", 7, interval_s=60), beat("cst", 6)]))
    store.commit(batch(beats=[beat("gmp", 1, topic="gmp.heartbeats")]))
    store.commit(batch(beats=[beat("cst", 3)]))  # late, older: ignored
    assert store.feeds() == [beat("cst", 7, interval_s=60), beat("gmp", 1, topic="gmp.heartbeats")]
    store.commit(batch(beats=[beat("cst", 9)]))
    assert store.feeds()[0] == beat("cst", 9)


def test_a_version_1_store_gains_the_feeds_table_on_open(store_url: str) -> None:
    """Stores made before heartbeats were kept (schema 1) are upgraded in place, rows intact."""
    s = open_store(store_url)
    s.commit(batch(records=[rec(1)]))
    # Wind the schema back to version 1, as an older intelbus left it.
    s._conn.execute("DROP TABLE feeds")  # type: ignore[attr-defined]
    if store_url.startswith("postgresql"):
        s._conn.execute("UPDATE schema_version SET version = 1")  # type: ignore[attr-defined]
    else:
        s._conn.execute("PRAGMA user_version=1")  # type: ignore[attr-defined]
    s.close()
    s = open_store(store_url)
    try:
        assert s.get(_id(1)) is not None
        s.commit(batch(beats=[beat("cst", 1)]))
        assert s.feeds() == [beat("cst", 1)]
    finally:
        s.close()

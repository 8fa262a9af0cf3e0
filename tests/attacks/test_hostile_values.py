"""A validly signed record is still hostile input (issue 20, classes 1 and 4), on both backends.

The insider here holds CST's genuine producer key and signs whatever it likes: values the Avro
types allow but nothing downstream can use (an interval of 2^63 - 1 ms, a sequence number past
any JSON integer, a time in year 9999 or a day ahead, U+0000 in a description, NaN coordinates).
Before the bounds, such a record raised an untyped error somewhere after intake, or was committed
and then broke every later read (``store feeds``, a restart), so one record stopped a force's
consumer for good.

Each case asserts, on SQLite and on PostgreSQL: the record is quarantined under its reason code
(``schema_violation`` for a value out of bounds, ``future_time`` for a time ahead of the broker's),
trusted state is unchanged apart from CST's own stream moving to it (the record is authentic and
in its place), a restarted consumer reads its whole store back, and CST's genuine records flow
afterwards.
"""

from __future__ import annotations

import importlib
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import MemorySource
from consumers.liveness import assess
from consumers.pipeline import RawRecord
from intelbus.errors import ReasonCode as R
from intelbus.kinds import RecordKind
from intelbus.records import Correction, Heartbeat, Sighting
from intelbus.transport.kafka import Message
from intelbus.trust.completeness import missing_records
from tests.attacks.harness import attack, genuine_flows, sighting
from tests.attacks.report import availability_result
from tests.pgfixtures import fresh_postgres_database
from tests.simulator import ENV, REGISTRY, SIGHTINGS, BusSimulator, SimulatedConsumer

HEARTBEATS = "sim.heartbeats"
# The module, not the function intelbus.envelope re-exports under the same name.
seal_module = importlib.import_module("intelbus.envelope.seal")
FAR = 2**63 - 1


@pytest.fixture(params=["sqlite", "postgres"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "herts.sqlite")
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


@pytest.fixture
def herts(sim: BusSimulator, store_path: str) -> Iterator[SimulatedConsumer]:
    """Herts on the chosen backend, having stored three genuine sightings and a heartbeat."""
    pub = sim.publisher()
    for i in range(3):
        pub.publish(sighting(seed=140 + i))
    pub.heartbeat(30)
    consumer = SimulatedConsumer(sim, store_path=store_path)
    consumer.deliver(list(sim.log))
    assert len(consumer.trusted_state().records) == 3
    assert len(consumer.store.feeds()) == 1
    yield consumer
    consumer.close()


def _signed(
    sim: BusSimulator,
    topic: str,
    value: dict[str, Any],
    *,
    kind: RecordKind,
    schema: str,
    record_id: uuid.UUID,
    target: uuid.UUID | None = None,
) -> RawRecord:
    """CST's genuine key signing an Avro value the model never validated (the insider's tool)."""
    pub = sim.publisher()
    fingerprint, payload = pub.registry.encode(schema, value)
    now = datetime.now(UTC)
    pub._publish_payload(
        topic,
        kind=kind,
        fingerprint=fingerprint,
        payload=payload,
        keys=[sim.history.recipient_key(a, now) for a in ("herts-police", "inspectorate")],
        record_id=record_id,
        target=target,
    )
    return sim.log[-1]


def _heartbeat(sim: BusSimulator, **changes: Any) -> RawRecord:
    value = Heartbeat(
        producer_id="cst", sent_at=datetime.now(UTC), interval_ms=30_000, streams=()
    ).to_avro()
    value.update(changes)
    return _signed(
        sim,
        HEARTBEATS,
        value,
        kind=RecordKind.HEARTBEAT,
        schema=Heartbeat.SCHEMA,
        record_id=uuid.uuid4(),
    )


def _sighting(sim: BusSimulator, change: Callable[[dict[str, Any]], None]) -> RawRecord:
    record = sighting(seed=170)
    value = record.to_avro()
    change(value)
    rid = uuid.UUID(record.record_id)
    return _signed(
        sim, SIGHTINGS, value, kind=RecordKind.SIGHTING, schema=Sighting.SCHEMA, record_id=rid
    )


def _head(**fields: Any) -> dict[str, Any]:
    return {"stream": SIGHTINGS, "last_sequence": 3, "partition": 0, "epoch": "", **fields}


HEARTBEAT_CASES: dict[str, tuple[dict[str, Any], R]] = {
    "interval_zero": ({"interval_ms": 0}, R.SCHEMA_VIOLATION),
    "interval_negative": ({"interval_ms": -30_000}, R.SCHEMA_VIOLATION),
    "interval_int64_max": ({"interval_ms": FAR}, R.SCHEMA_VIOLATION),
    "interval_beyond_a_week": ({"interval_ms": 8 * 86_400_000}, R.SCHEMA_VIOLATION),
    "sent_in_year_9999": (
        {"sent_at": datetime(9999, 12, 31, tzinfo=UTC)},
        R.SCHEMA_VIOLATION,
    ),
    "sent_a_day_ahead": (
        {"sent_at": datetime.now(UTC) + timedelta(days=1)},
        R.FUTURE_TIME,
    ),
    "sent_before_1900": ({"sent_at": datetime(1, 1, 2, tzinfo=UTC)}, R.SCHEMA_VIOLATION),
    "sequence_int64_max": ({"streams": [_head(last_sequence=FAR)]}, R.SCHEMA_VIOLATION),
    "sequence_below_minus_one": ({"streams": [_head(last_sequence=-5)]}, R.SCHEMA_VIOLATION),
    "partition_int32_max": ({"streams": [_head(partition=2**31 - 1)]}, R.SCHEMA_VIOLATION),
    "epoch_not_a_key_id": ({"streams": [_head(epoch="../../x")]}, R.SCHEMA_VIOLATION),
    "stream_with_nul": ({"streams": [_head(stream="sim.sightings\x00")]}, R.SCHEMA_VIOLATION),
    "producer_with_newline": ({"producer_id": "cst\n"}, R.SCHEMA_VIOLATION),
}


def _text(field: str, text: str) -> Callable[[dict[str, Any]], None]:
    def change(value: dict[str, Any]) -> None:
        value[field] = text

    return change


def _place(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(value: dict[str, Any]) -> None:
        value["place"].update(fields)

    return change


def _observed(when: datetime) -> Callable[[dict[str, Any]], None]:
    def change(value: dict[str, Any]) -> None:
        value["observed_at"] = when

    return change


SIGHTING_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], R]] = {
    "nul_in_description": (_text("description", "seen\x00 at the gate"), R.SCHEMA_VIOLATION),
    "escape_in_reporter_ref": (_text("reporter_ref", "\x1b[2Jref"), R.SCHEMA_VIOLATION),
    "text_beyond_its_bound": (_text("description", "a" * 4_001), R.SCHEMA_VIOLATION),
    "nan_latitude": (_place(latitude=math.nan, longitude=0.0), R.SCHEMA_VIOLATION),
    "infinite_longitude": (_place(latitude=51.5, longitude=math.inf), R.SCHEMA_VIOLATION),
    "observed_in_year_9999": (
        _observed(datetime(9999, 1, 1, tzinfo=UTC)),
        R.SCHEMA_VIOLATION,
    ),
    "observed_a_year_ahead": (
        _observed(datetime.now(UTC) + timedelta(days=365)),
        R.FUTURE_TIME,
    ),
    "observed_an_hour_ahead": (
        _observed(datetime.now(UTC) + timedelta(hours=1)),
        R.FUTURE_TIME,
    ),
}


def _survives(
    consumer: SimulatedConsumer, raw: RawRecord, reason: R, case: str
) -> SimulatedConsumer:
    """Deliver one signed hostile record: refused under ``reason``, and the consumer neither
    raised outside the typed hierarchy nor failed to read its store back after a restart
    (reported as "consumers stopped by a hostile record")."""
    stopped = False
    try:
        attack(consumer, [raw], reason, case=case, authentic=True)
        assert _auditor_finds(consumer.sim, raw) == reason.value, f"{case}: the auditor disagrees"
        return _reads_back(consumer)
    except AssertionError:
        raise
    except Exception:
        stopped = True
        raise
    finally:
        availability_result(case=case, source="simulated", stopped=stopped)


def _auditor_finds(sim: BusSimulator, raw: RawRecord) -> str | None:
    """The auditor's finding at ``raw``'s offset, replaying its topic with its own key (the
    hostile records are addressed to it too): the same judge, so the same reason code."""
    messages = [
        Message(r.topic, r.partition, r.offset, r.value, r.appended_at)
        for r in sim.log
        if r.topic == raw.topic
    ]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        audit(
            source=MemorySource(raw.topic, messages),
            history=sim.history,
            config=AuditConfig(environment=ENV),
            identity=sim.identities["inspectorate"],
            registry=REGISTRY,
            report=report,
        )
        findings = json.loads(report.read_text())["findings"]
    at = [
        f["reason"]
        for f in findings
        if (f["partition"], f["offset"]) == (raw.partition, raw.offset)
        and f["reason"] != "clock_skew"
    ]
    return at[0] if len(at) == 1 else None


def _reads_back(consumer: SimulatedConsumer) -> SimulatedConsumer:
    """Restart on the same store and read every part of it back, as analysts and checks do."""
    again = consumer.restart()
    now = datetime.now(UTC)
    beats = again.store.feeds()
    assess(beats, now)
    missing_records(beats, again.store.load_chain(), now)
    list(again.store.iter_records())
    again.store.quarantine_entries(10**6)
    again.store.summary()
    return again


@pytest.mark.parametrize("case", sorted(HEARTBEAT_CASES))
def test_a_hostile_heartbeat_value_is_refused_and_the_consumer_carries_on(
    sim: BusSimulator, herts: SimulatedConsumer, case: str
) -> None:
    changes, reason = HEARTBEAT_CASES[case]
    feeds = herts.store.feeds()
    raw = _heartbeat(sim, **changes)
    herts = _survives(herts, raw, reason, f"hostile_value.heartbeat.{case}")
    assert herts.store.feeds() == feeds  # the feed neither moved nor took the value
    genuine_flows(herts, sim, case=f"hostile_value.heartbeat.{case}")
    herts.close()


@pytest.mark.parametrize("case", sorted(SIGHTING_CASES))
def test_a_hostile_record_value_is_refused_and_the_consumer_carries_on(
    sim: BusSimulator, herts: SimulatedConsumer, case: str
) -> None:
    change, reason = SIGHTING_CASES[case]
    raw = _sighting(sim, change)
    herts = _survives(herts, raw, reason, f"hostile_value.sighting.{case}")
    genuine_flows(herts, sim, case=f"hostile_value.sighting.{case}")
    herts.close()


def test_a_correction_from_the_future_leaves_the_record_as_it_was(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A correction dated a day ahead is refused; the record it names keeps its version."""
    original = sighting(seed=171)
    sim.publisher().publish(original)
    herts.deliver([sim.log[-1]])
    before = herts.stored(original.record_id)
    assert before is not None
    replacement = original.model_copy(update={"description": "corrected"})
    value = Correction(
        record_id=str(uuid.uuid4()),
        grading=original.grading,
        corrects_record_id=original.record_id,
        corrected_at=datetime.now(UTC),
        reason="typo",
        replacement=replacement,
    ).to_avro()
    value["corrected_at"] = datetime.now(UTC) + timedelta(days=1)
    raw = _signed(
        sim,
        SIGHTINGS,
        value,
        kind=RecordKind.CORRECTION,
        schema=Correction.SCHEMA,
        record_id=uuid.UUID(value["record_id"]),
        target=uuid.UUID(original.record_id),
    )
    attack(
        herts, [raw], R.FUTURE_TIME, case="hostile_value.correction_from_the_future", authentic=True
    )
    after = herts.stored(original.record_id)
    assert after is not None
    assert (after.version, after.payload) == (before.version, before.payload)
    genuine_flows(herts, sim, case="hostile_value.correction_from_the_future")


class _DayAhead(datetime):
    """``datetime`` whose ``now`` is a day fast: the sealing producer's clock."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _DayAhead:  # type: ignore[override]
        return cls.fromtimestamp(time.time() + 86_400, tz)


def test_an_envelope_created_in_the_future_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leaked key's holder (or a producer whose clock is a day fast) signs a creation time a day
    after the broker's append time."""
    with monkeypatch.context() as m:
        m.setattr(seal_module, "datetime", _DayAhead)
        sim.publisher().publish(sighting(seed=172))
    attack(
        herts,
        [sim.log[-1]],
        R.FUTURE_TIME,
        case="hostile_value.created_in_the_future",
        authentic=True,
    )
    genuine_flows(herts, sim, case="hostile_value.created_in_the_future")

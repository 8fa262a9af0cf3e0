"""The consumer pipeline on simulated records: every action, every failure class, typed and kept.

Each test runs the real pipeline (intake, then the judge inside the store's transaction) over the
real SQLite store, as the consumer loop does after its poll.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from intelbus.chain import StreamKey
from intelbus.errors import NoRecipients, ReasonCode
from intelbus.kinds import Family
from intelbus.records import Correction, Retraction
from intelbus.samples import feed
from intelbus.trust.model import NOT_ADDRESSED_RULE, Effect, RecordStatus
from tests.simulator import INCIDENTS, SIGHTINGS, BusSimulator, SimulatedConsumer

STORE_ALL = [{"id": "all", "action": "store"}]


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


@pytest.fixture
def herts(sim: BusSimulator) -> Iterator[SimulatedConsumer]:
    consumer = SimulatedConsumer(sim)
    yield consumer
    consumer.close()


def _consumer(sim: BusSimulator, agency: str, rules: list[dict[str, object]]) -> SimulatedConsumer:
    return SimulatedConsumer(sim, agency, policy={"agency": agency, "rules": rules})


def _rebuild(model, **changes):
    data = model.model_dump(mode="json")
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return type(model).model_validate(data)


def _sighting(area: str = "HERTFORDSHIRE", tlp: str = "GREEN", assessment: str = "B"):
    base = feed(seed=11, sightings=1, incidents=0)[0]
    grading = {
        "tlp": tlp,
        "assessment": assessment,
        "handling_code": "P",
        "handling_conditions": [],
    }
    return _rebuild(base, record_id=str(uuid.uuid4()), place={"force_area": area}, grading=grading)


def _incident():
    base = next(r for r in feed(seed=12, sightings=0, incidents=6) if r.victim_details)
    grading = {"tlp": "GREEN", "handling_code": "P", "handling_conditions": []}
    return _rebuild(base, record_id=str(uuid.uuid4()), grading=grading)


def test_policy_actions_store_redact_withhold_and_quarantine(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Herts stores its own sightings, redacts incidents, withholds others' areas, quarantines E."""
    pub = sim.publisher()
    own, incident = _sighting("HERTFORDSHIRE"), _incident()
    elsewhere, false = _sighting("GREATER_MANCHESTER"), _sighting("HERTFORDSHIRE", assessment="E")
    for r in (own, incident, elsewhere, false):
        pub.publish(r)
    kept, redacted, withheld, quarantined = herts.deliver(list(sim.log))
    assert (kept.effect, kept.reason) == (Effect.STORED, None)
    assert redacted.effect is Effect.REDACTED
    assert withheld.effect is Effect.WITHHELD
    assert quarantined.reason is ReasonCode.POLICY_QUARANTINE
    stored = herts.stored(own.record_id)
    assert stored is not None
    assert (stored.action, stored.rule_id, stored.status) == ("store", "own-sightings", "live")
    view = herts.stored(incident.record_id)
    assert view is not None
    assert view.payload is not None
    assert view.payload["victim_details"] == "[REDACTED]"
    assert set(view.redacted_fields) == {"victim_details", "reporter_ref"}
    receipt = herts.stored(elsewhere.record_id)
    assert receipt is not None
    assert (receipt.payload, receipt.status, receipt.rule_id) == (None, "withheld", "elsewhere")
    # A record the policy quarantines is registered (a correction may later make it acceptable)
    # but holds nothing and is shown nowhere.
    held = herts.stored(false.record_id)
    assert held is not None
    assert (held.payload, held.status) == (None, "quarantined")
    assert {v.record_id for v in herts.store.iter_records()} == {own.record_id, incident.record_id}


def test_a_record_for_another_force_area_only_reaches_that_force(sim: BusSimulator) -> None:
    """AMBER in Greater Manchester: GMP opens it; Herts keeps a not-addressed receipt only."""
    record = _sighting("GREATER_MANCHESTER", tlp="AMBER")
    sim.publisher().publish(record)
    herts = SimulatedConsumer(sim)
    gmp = _consumer(sim, "gmp", STORE_ALL)
    try:
        (h,) = herts.deliver(list(sim.log))
        (g,) = gmp.deliver(list(sim.log))
        assert h.effect is Effect.NOT_ADDRESSED
        receipt = herts.stored(record.record_id)
        assert receipt is not None
        assert (receipt.rule_id, receipt.payload) == (NOT_ADDRESSED_RULE, None)
        assert g.effect is Effect.STORED
    finally:
        herts.close()
        gmp.close()


def test_a_red_record_reaches_only_its_named_recipient(sim: BusSimulator) -> None:
    """RED goes to the named force alone; without a name it is not published at all."""
    pub = sim.publisher()
    with pytest.raises(NoRecipients):
        pub.publish(_sighting(tlp="RED"))
    assert sim.log == []
    pub.publish(_sighting(tlp="RED"), named=["met-police"])
    met = _consumer(sim, "met-police", STORE_ALL)
    try:
        assert met.deliver(list(sim.log))[0].effect is Effect.STORED
    finally:
        met.close()
    for other in ("herts-police", "gmp", "inspectorate"):
        consumer = _consumer(sim, other, STORE_ALL)
        try:
            assert consumer.deliver(list(sim.log))[0].effect is Effect.NOT_ADDRESSED
        finally:
            consumer.close()


def test_replay_at_a_new_offset_is_quarantined_and_chain_unchanged(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The first record again at a new offset: CHAIN_REPLAY; the stream head stays where it was."""
    pub = sim.publisher()
    pub.publish(_sighting())
    pub.publish(_sighting())
    herts.deliver(list(sim.log))
    before = herts.store.load_chain()
    first = sim.log[0]
    (verdict,) = herts.deliver([sim.append(first.topic, first.value, partition=first.partition)])
    assert verdict.reason is ReasonCode.CHAIN_REPLAY
    assert verdict.chain is None
    assert herts.store.load_chain() == before


def test_a_gap_is_reported_and_the_record_kept_and_a_late_record_fills_it(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A record missing from the topic shows as a gap on the next one; if it arrives later (a
    resend after later records), it fills the gap and is kept."""
    pub = sim.publisher()
    for _ in range(3):
        pub.publish(_sighting())
    first, second, third = sim.log
    v1, v3 = herts.deliver([first, third])
    assert v1.gap is None
    assert v3.gap == (1, 1)
    assert v3.effect is Effect.STORED
    (late,) = herts.deliver([sim.append(second.topic, second.value, partition=second.partition)])
    assert late.accepted
    assert late.filled
    (head,) = [c for k, c in herts.store.load_chain().items() if k.topic == SIGHTINGS]
    assert (head.last_sequence, head.gaps) == (2, ())


def test_a_record_copied_to_another_topic_or_partition_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Binding mismatch: not the topic, nor the partition, this record was signed for."""
    sim.publisher().publish(_sighting())
    raw = sim.log[0]
    elsewhere = (raw.partition + 1) % sim.partitions
    moved = [
        sim.append(INCIDENTS, raw.value, partition=raw.partition),
        sim.append(SIGHTINGS, raw.value, partition=elsewhere),
    ]
    assert [v.reason for v in herts.deliver(moved)] == [ReasonCode.BINDING_MISMATCH] * 2
    assert herts.deliver([raw])[0].effect is Effect.STORED  # in its place it is still the next


def test_tampered_bytes_and_oversize_records_are_quarantined_typed(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A flipped byte, a truncation and an oversized value each get their reason code."""
    sim.publisher().publish(_sighting())
    raw = sim.log.pop()
    flipped = bytearray(raw.value)
    flipped[-80] ^= 0x01  # inside the ciphertext: only the signature can catch it
    cases = {
        ReasonCode.BAD_SIGNATURE: bytes(flipped),
        ReasonCode.MALFORMED: raw.value[:50],
        ReasonCode.OVERSIZE: b"\x00" * (2 * 1024 * 1024),
    }
    for reason, value in cases.items():
        (verdict,) = herts.deliver([sim.append(raw.topic, value, partition=raw.partition)])
        assert verdict.reason is reason
        assert not verdict.authentic
    assert herts.store.load_chain() == {}


def test_a_foreign_retraction_is_refused(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """A second producer cannot retract CST's record."""
    original = _sighting()
    sim.publisher().publish(original)
    retraction = Retraction(
        record_id=str(uuid.uuid4()),
        retracts_record_id=original.record_id,
        retracted_at=datetime.now(UTC),
        reason="not true",
        grading=original.grading,
    )
    sim.publisher("rogue").publish(retraction, family=Family.SIGHTINGS)
    first, result = herts.deliver(list(sim.log))
    assert first.effect is Effect.STORED
    assert result.reason is ReasonCode.FOREIGN_TARGET
    assert result.authentic
    view = herts.stored(original.record_id)
    assert view is not None
    assert view.status == "live"


def test_own_corrections_and_retractions_become_versions(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST corrects then retracts its own record: version 2 holds the correction, version 3
    retracts it, and the history keeps every version."""
    original = _sighting()
    pub = sim.publisher()
    pub.publish(original)
    fixed = _rebuild(original, description="Corrected: photographed the side gate only.")
    pub.publish(
        Correction(
            record_id=str(uuid.uuid4()),
            corrects_record_id=original.record_id,
            corrected_at=datetime.now(UTC),
            reason="detail",
            replacement=fixed,
            grading=original.grading,
        )
    )
    corrected = herts.deliver(list(sim.log))
    assert [v.effect for v in corrected] == [Effect.STORED, Effect.AMENDED]
    view = herts.stored(original.record_id)
    assert view is not None
    assert view.payload is not None
    assert str(view.payload["description"]).startswith("Corrected")
    n = len(sim.log)
    pub.publish(
        Retraction(
            record_id=str(uuid.uuid4()),
            retracts_record_id=original.record_id,
            retracted_at=datetime.now(UTC),
            reason="duplicate report",
            grading=original.grading,
        ),
        family=Family.SIGHTINGS,
    )
    (retraction,) = herts.deliver(sim.log[n:])
    assert retraction.effect is Effect.AMENDED
    view = herts.stored(original.record_id)
    assert view is not None
    assert (view.version, view.status) == (3, RecordStatus.RETRACTED.value)
    assert [h.change for h in view.history] == ["original", "correction", "retraction"]


def test_an_unknown_producer_key_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer, tmp_path: Path
) -> None:
    """A record signed by a key outside the directory: UNKNOWN_KEY."""
    other = BusSimulator(tmp_path / "other")
    other.publisher().publish(_sighting())
    (verdict,) = herts.deliver(other.log)
    assert verdict.reason is ReasonCode.UNKNOWN_KEY


def test_heartbeats_verify_and_keep_only_their_promise(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A heartbeat moves its own stream and refreshes the producer's feed at broker time."""
    pub = sim.publisher()
    pub.publish(_sighting())
    pub.heartbeat(30)
    beat = sim.log[-1]
    assert beat.topic == "sim.heartbeats"
    _, verdict = herts.deliver(list(sim.log))
    assert verdict.effect is Effect.HEARTBEAT
    assert verdict.stream is not None
    assert (verdict.stream.topic, verdict.stream.partition) == ("sim.heartbeats", beat.partition)
    (feed_beat,) = herts.store.feeds()
    assert (feed_beat.producer_id, feed_beat.interval_ms, feed_beat.at) == (
        "cst",
        30_000,
        beat.appended_at,
    )


def test_a_record_without_broker_time_is_judged_by_its_key_s_standing(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """No broker append time (a topic that is not LogAppendTime): from a key with no revocation,
    retirement or removal the signed time is enough; once the key is revoked, such a record is
    NO_BROKER_TIME (a false creation time could escape the cutoff)."""
    pub = sim.publisher()
    pub.publish(_sighting())
    pub.publish(_sighting())
    first, second = (replace(r, appended_at=None) for r in sim.log)
    (verdict,) = herts.deliver([first])
    assert (verdict.accepted, verdict.effect) == (True, Effect.STORED)
    sim.revoke_key("cst", key_id=sim.identities["cst"].key_id, at=datetime.now(UTC))
    (verdict,) = herts.deliver([second])
    assert verdict.reason is ReasonCode.NO_BROKER_TIME


def test_pipeline_never_raises_on_random_bytes(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """Random values: always refused with a typed reason, never an exception."""
    rng = random.Random(5)
    raws = []
    for n in range(300):
        value = rng.randbytes(rng.randint(0, 600))
        if n % 3 == 0:
            value = b"IBUS\x02\x01" + value
        raws.append(sim.append(SIGHTINGS, value, partition=n % sim.partitions))
    verdicts = herts.deliver(raws)
    assert len(verdicts) == 300
    assert all(v.reason is not None and not v.authentic for v in verdicts)
    assert herts.store.summary()["stored"] == 0


def test_stream_keys_follow_partition_and_key_epoch(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's sightings are one stream bound to its partition and its key: the store's head says so."""
    sim.publisher().publish(_sighting())
    herts.deliver(list(sim.log))
    (key,) = herts.store.load_chain()
    assert key == StreamKey(
        "cst", SIGHTINGS, sim.partition_of("cst"), sim.identities["cst"].key_id.hex()
    )

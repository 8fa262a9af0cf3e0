"""The consumer pipeline on simulated records: every action, every failure class, typed and kept."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.pipeline import NOT_ADDRESSED_RULE, Amend, Beat, Kept, RawRecord, Receipt, Rejected
from intelbus.errors import ReasonCode
from intelbus.policy.agreement import NoRecipients
from intelbus.policy.rules import Action
from intelbus.records import Correction, Retraction
from intelbus.samples import feed
from intelbus.transport.topics import Family
from tests.simulator import INCIDENTS, SIGHTINGS, BusSimulator


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


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


def test_policy_actions_store_redact_withhold_and_quarantine(sim: BusSimulator) -> None:
    """Herts stores its own sightings, redacts incidents, withholds others' areas, quarantines E."""
    pub = sim.publisher()
    pub.publish(_sighting("HERTFORDSHIRE"))
    pub.publish(_incident())
    pub.publish(_sighting("GREATER_MANCHESTER"))
    pub.publish(_sighting("HERTFORDSHIRE", assessment="E"))
    pipe = sim.pipeline()
    results = [pipe.process(r).result for r in sim.log]
    kept, redacted, withheld, quarantined = results
    assert isinstance(kept, Kept)
    assert (kept.action, kept.rule_id) == (Action.STORE, "own-sightings")
    assert isinstance(redacted, Kept)
    assert redacted.action is Action.REDACT
    assert redacted.payload["victim_details"] == "[REDACTED]"
    assert set(redacted.redacted_fields) == {"victim_details", "reporter_ref"}
    assert isinstance(withheld, Receipt)
    assert withheld.rule_id == "elsewhere"
    assert isinstance(quarantined, Rejected)
    assert quarantined.reason is ReasonCode.POLICY_QUARANTINE


def test_a_record_for_another_force_area_only_reaches_that_force(sim: BusSimulator) -> None:
    """AMBER in Greater Manchester: GMP opens it; Herts only gets a not-addressed receipt."""
    sim.publisher().publish(_sighting("GREATER_MANCHESTER", tlp="AMBER"))
    raw = sim.log[0]
    herts = sim.pipeline().process(raw).result
    assert isinstance(herts, Receipt)
    assert herts.rule_id == NOT_ADDRESSED_RULE
    gmp_policy = {
        "agency": "gmp",
        "own_force_areas": ["GREATER_MANCHESTER"],
        "rules": [{"id": "all", "action": "store"}],
    }
    gmp = sim.pipeline("gmp", gmp_policy).process(raw).result
    assert isinstance(gmp, Kept)


def test_a_red_record_reaches_only_its_named_recipient(sim: BusSimulator) -> None:
    """RED goes to the named force alone; without a name it is not published at all."""
    pub = sim.publisher()
    with pytest.raises(NoRecipients):
        pub.publish(_sighting(tlp="RED"))
    assert sim.log == []
    pub.publish(_sighting(tlp="RED"), named=["met-police"])
    met_policy = {"agency": "met-police", "rules": [{"id": "all", "action": "store"}]}
    assert isinstance(sim.pipeline("met-police", met_policy).process(sim.log[0]).result, Kept)
    for other in ("herts-police", "gmp", "inspectorate"):
        policy = {"agency": other, "rules": [{"id": "all", "action": "store"}]}
        result = sim.pipeline(other, policy).process(sim.log[0]).result
        assert isinstance(result, Receipt)
        assert result.rule_id == NOT_ADDRESSED_RULE


def test_replay_at_a_new_offset_is_quarantined_and_chain_unchanged(sim: BusSimulator) -> None:
    """The same signed record again (new offset): CHAIN_REPLAY; the chain stays where it was."""
    pub = sim.publisher()
    pub.publish(_sighting())
    pub.publish(_sighting())
    pipe = sim.pipeline()
    for raw in sim.log:
        pipe.process(raw)
    before = dict(pipe.chain)
    replay = replace(sim.log[0], offset=99)
    outcome = pipe.process(replay)
    assert isinstance(outcome.result, Rejected)
    assert outcome.result.reason is ReasonCode.CHAIN_REPLAY
    assert outcome.chain is None
    assert pipe.chain == before


def test_a_gap_is_reported_and_the_record_kept(sim: BusSimulator) -> None:
    """A record missing from the topic (suppressed) shows as a gap on the next one."""
    pub = sim.publisher()
    for _ in range(3):
        pub.publish(_sighting())
    pipe = sim.pipeline()
    first = pipe.process(sim.log[0])
    third = pipe.process(sim.log[2])
    assert first.gap is None
    assert third.gap == (1, 1)
    assert isinstance(third.result, Kept)


def test_a_record_copied_to_another_topic_is_refused(sim: BusSimulator) -> None:
    """Binding mismatch: the incidents topic is not where this sighting was signed for."""
    sim.publisher().publish(_sighting())
    moved = replace(sim.log[0], topic=INCIDENTS)
    result = sim.pipeline().process(moved).result
    assert isinstance(result, Rejected)
    assert result.reason is ReasonCode.BINDING_MISMATCH


def test_tampered_bytes_and_oversize_records_are_quarantined_typed(sim: BusSimulator) -> None:
    """A flipped byte, a truncation and an oversized value each get their reason code."""
    sim.publisher().publish(_sighting())
    raw = sim.log[0]
    pipe = sim.pipeline()
    flipped = bytearray(raw.value)
    flipped[-80] ^= 0x01  # inside the ciphertext: only the signature can catch it
    cases = {
        ReasonCode.BAD_SIGNATURE: bytes(flipped),
        ReasonCode.MALFORMED: raw.value[:50],
        ReasonCode.OVERSIZE: b"\x00" * (2 * 1024 * 1024),
    }
    for reason, value in cases.items():
        result = pipe.process(replace(raw, value=value)).result
        assert isinstance(result, Rejected)
        assert result.reason is reason
    assert pipe.chain == {}


def test_a_foreign_retraction_is_refused(sim: BusSimulator) -> None:
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
    pipe = sim.pipeline()
    first = pipe.process(sim.log[0]).result
    assert isinstance(first, Kept)
    result = pipe.process(sim.log[1]).result
    assert isinstance(result, Rejected)
    assert result.reason is ReasonCode.FOREIGN_TARGET


def test_own_corrections_and_retractions_become_amendments(sim: BusSimulator) -> None:
    """CST corrects then retracts its own record: two amendments naming the target."""
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
    pipe = sim.pipeline()
    results = [pipe.process(r).result for r in sim.log]
    assert isinstance(results[0], Kept)
    correction, retraction = results[1], results[2]
    assert isinstance(correction, Amend)
    assert correction.kind == "correction"
    assert correction.new_payload is not None
    assert correction.new_payload["description"].startswith("Corrected")
    assert isinstance(retraction, Amend)
    assert (retraction.kind, retraction.target_record_id) == ("retraction", original.record_id)


def test_an_unknown_producer_key_is_refused(sim: BusSimulator, tmp_path: Path) -> None:
    """A record signed by a key outside the directory: UNKNOWN_KEY."""
    other = BusSimulator(tmp_path / "other")
    other.publisher().publish(_sighting())
    result = sim.pipeline().process(other.log[0]).result
    assert isinstance(result, Rejected)
    assert result.reason in {ReasonCode.UNKNOWN_KEY, ReasonCode.KEY_NOT_VALID}


def test_heartbeats_verify_and_keep_only_their_promise(sim: BusSimulator) -> None:
    """A heartbeat advances its stream's chain and yields a Beat (no record): who, and the interval."""
    pub = sim.publisher()
    pub.publish(_sighting())
    pub.heartbeat(30)
    beat = sim.log[-1]
    assert beat.topic == "sim.heartbeats"
    outcome = sim.pipeline().process(beat)
    assert isinstance(outcome.result, Beat)
    assert (outcome.result.producer_id, outcome.result.interval_ms) == ("cst", 30_000)
    assert outcome.chain is not None
    assert outcome.chain.stream == "sim.heartbeats"


def test_pipeline_never_raises_on_random_bytes(sim: BusSimulator) -> None:
    """Random values: always a Rejected, never an exception."""
    import random  # noqa: PLC0415

    rng = random.Random(5)
    pipe = sim.pipeline()
    for n in range(300):
        value = rng.randbytes(rng.randint(0, 600))
        if n % 3 == 0:
            value = b"IBUS\x01\x01" + value
        result = pipe.process(RawRecord(SIGHTINGS, 0, n, value, None)).result
        assert isinstance(result, Rejected)

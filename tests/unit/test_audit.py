"""Auditor replay on simulated records: each check finds its defect, with its reason code and offset.

Records come from the real publisher through the BusSimulator (tests/simulator.py); the auditor
reads them from an in-memory source. Delivery through a real broker is in
tests/integration/test_audit_replay.py.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from consumers.audit.digest import TopicDigest, authentic_item
from consumers.audit.keycache import CachedResolver
from consumers.audit.replay import AuditConfig
from consumers.audit.run import AuditResult, StartAt, StartKind, audit
from consumers.audit.source import MemorySource
from consumers.audit.state import MAX_OPEN_GAPS, AuditState, StreamHead
from intelbus.directory import edit
from intelbus.envelope import RecordKind, seal
from intelbus.errors import ReasonCode
from intelbus.identity import AgencyIdentity
from intelbus.samples import feed
from intelbus.transport.kafka import Message
from tests.simulator import ENV, INCIDENTS, PREFIX, REGISTRY, SIGHTINGS, BusSimulator

HEARTBEATS = f"{PREFIX}.heartbeats"


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


def _sighting(area: str = "HERTFORDSHIRE", tlp: str = "GREEN"):
    base = feed(seed=31, sightings=1, incidents=0)[0]
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = area
    data["grading"].update(tlp=tlp, handling_code="P", handling_conditions=[], assessment="B")
    return type(base).model_validate(data)


def _publish(sim: BusSimulator, n: int, agency: str = "cst") -> None:
    pub = sim.publisher(agency)
    for _ in range(n):
        pub.publish(_sighting())


def _messages(sim: BusSimulator, topic: str = SIGHTINGS) -> list[Message]:
    return [
        Message(r.topic, r.partition, r.offset, r.value, r.appended_at)
        for r in sim.log
        if r.topic == topic
    ]


def _run(
    sim: BusSimulator, messages: list[Message], topic: str = SIGHTINGS, **kwargs
) -> AuditResult:
    config = kwargs.pop("config", AuditConfig(environment=ENV))
    return audit(
        source=MemorySource(topic, messages),
        history=kwargs.pop("history", sim.history),
        config=config,
        workers=2,
        batch_size=kwargs.pop("batch_size", 7),
        **kwargs,
    )


def _findings(tmp_path: Path, sim: BusSimulator, messages: list[Message], **kwargs):
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    result = _run(sim, messages, report=report, **kwargs)
    data = json.loads(report.read_text())
    return result, [(f["reason"], f["offset"]) for f in data["findings"]], data


def _append(messages: list[Message], value: bytes, topic: str = SIGHTINGS, **changes) -> Message:
    last = max((m.offset for m in messages if m.topic == topic), default=-1)
    m = Message(topic, 0, last + 1, value, datetime.now(UTC))
    m = replace(m, **changes)
    messages.append(m)
    return m


def test_a_clean_history_verifies_with_no_findings(sim: BusSimulator, tmp_path: Path) -> None:
    """Every record authentic, chain continuous: zero findings, verdict clean, one producer."""
    _publish(sim, 12)
    result, findings, data = _findings(tmp_path, sim, _messages(sim))
    assert findings == []
    assert result.summary["verdict"] == "clean"
    assert result.summary["records"] == result.summary["authentic"] == 12
    assert result.summary["producers"]["cst"]["first_sequence"] == 0
    assert result.summary["producers"]["cst"]["last_sequence"] == 11
    assert data["summary"] == result.summary


def test_a_record_replayed_at_a_new_offset_is_found(sim: BusSimulator, tmp_path: Path) -> None:
    _publish(sim, 5)
    messages = _messages(sim)
    copy = _append(messages, messages[1].value)
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_REPLAY.value, copy.offset)]
    assert result.integrity_findings == 1


def test_a_sequence_deleted_by_omission_is_a_gap_at_the_next_record(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 6)
    messages = _messages(sim)
    del messages[3]  # the broker (or someone) withholds sequence 3
    _, findings, data = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_GAP.value, 4)]
    assert "sequence 3..3" in data["findings"][0]["message"]


def test_a_late_record_is_a_reorder_not_a_replay(sim: BusSimulator, tmp_path: Path) -> None:
    _publish(sim, 5)
    messages = _messages(sim)
    late = messages.pop(2)
    _append(messages, late.value)
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_GAP.value, 3), (ReasonCode.CHAIN_REORDER.value, 5)]


def test_a_byte_identical_resend_of_the_newest_record_is_a_warning(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 3)
    messages = _messages(sim)
    _append(messages, messages[-1].value)
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_DUPLICATE.value, 3)]
    assert result.summary["verdict"] == "clean with warnings"
    assert result.integrity_findings == 0


def _seal(
    sim: BusSimulator,
    identity: AgencyIdentity,
    *,
    sequence: int,
    prev: bytes,
    topic: str = SIGHTINGS,
) -> bytes:
    return seal(
        identity,
        environment=ENV,
        topic=topic,
        kind=RecordKind.SIGHTING,
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=bytes(8),
        payload=b"x" * 40,
        recipients=[sim.identities["herts-police"].public],
    ).data


def test_forks_and_jumps_by_the_real_key_are_found(sim: BusSimulator, tmp_path: Path) -> None:
    """A second record with an existing sequence, a wrong previous digest, a huge jump."""
    _publish(sim, 3)
    messages = _messages(sim)
    cst = sim.identities["cst"]
    same_seq = _append(messages, _seal(sim, cst, sequence=2, prev=bytes(32)))
    wrong_prev = _append(messages, _seal(sim, cst, sequence=3, prev=bytes(32)))
    jump = _append(messages, _seal(sim, cst, sequence=10**9, prev=bytes(32)))
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [
        (ReasonCode.CHAIN_FORK.value, same_seq.offset),
        (ReasonCode.CHAIN_FORK.value, wrong_prev.offset),
        (ReasonCode.CHAIN_JUMP.value, jump.offset),
    ]


def test_forged_tampered_and_garbage_records_are_found(sim: BusSimulator, tmp_path: Path) -> None:
    _publish(sim, 2)
    messages = _messages(sim)
    impostor = AgencyIdentity.generate("cst")
    forged = _append(messages, _seal(sim, impostor, sequence=2, prev=bytes(32)))
    flipped = bytearray(messages[0].value)
    flipped[-80] ^= 1
    tampered = _append(messages, bytes(flipped))
    garbage = _append(messages, b"\x00not an envelope")
    result, findings, data = _findings(tmp_path, sim, messages)
    assert findings == [
        (ReasonCode.UNKNOWN_KEY.value, forged.offset),
        (ReasonCode.BAD_SIGNATURE.value, tampered.offset),
        (ReasonCode.MALFORMED.value, garbage.offset),
    ]
    assert [f["authentic"] for f in data["findings"]] == [False, False, False]
    # Claimed ids of a forgery are reported (to find it), counted under the claimed, known producer.
    assert data["findings"][0]["producer_id"] == "cst"
    assert result.summary["producers"]["(unverified)"]["records"] == 1


def test_a_record_copied_from_another_topic_is_a_binding_mismatch(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 2)
    copied = _append([], _messages(sim)[0].value, topic=INCIDENTS)
    _, findings, _ = _findings(tmp_path, sim, [copied], topic=INCIDENTS)
    assert findings == [(ReasonCode.BINDING_MISMATCH.value, copied.offset)]


def _revoke_cst(sim: BusSimulator, compromised_since: datetime) -> None:
    cst = sim.identities["cst"]
    doc = edit.revoke_key(
        sim.history.latest,
        agency_id="cst",
        key_id=cst.key_id.hex(),
        reason="laptop stolen",
        now=datetime.now(UTC),
        compromised_since=compromised_since,
    )
    sim.history.update(sim._signed(doc))


def test_records_signed_after_compromised_since_are_found(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Only the records appended at or after the compromise start are flagged, at their offsets."""
    _publish(sim, 4)
    messages = _messages(sim)
    cut = messages[2].appended_at
    assert cut is not None
    _revoke_cst(sim, cut)
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.KEY_REVOKED.value, 2), (ReasonCode.KEY_REVOKED.value, 3)]


def test_clock_skew_between_append_and_creation_is_a_warning(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 2)
    messages = _messages(sim)
    late = messages[1].appended_at + timedelta(hours=2)
    messages[1] = replace(messages[1], appended_at=late)
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CLOCK_SKEW.value, 1)]
    assert result.summary["verdict"] == "clean with warnings"


def _beats(sim: BusSimulator, gaps_s: list[int]) -> list[Message]:
    pub = sim.publisher()
    for _ in range(len(gaps_s) + 1):
        pub.heartbeat(30)
    beats = _messages(sim, HEARTBEATS)
    t0 = beats[0].appended_at
    assert t0 is not None
    times = [t0]
    for gap in gaps_s:
        times.append(times[-1] + timedelta(seconds=gap))
    # Broker append times as if the beats had arrived at these moments (skew is not judged here).
    return [replace(m, appended_at=t) for m, t in zip(beats, times, strict=True)]


def test_a_heartbeat_silence_and_a_frozen_feed_are_found(sim: BusSimulator, tmp_path: Path) -> None:
    beats = _beats(sim, [30, 31, 200, 30])
    config = AuditConfig(
        environment=ENV, heartbeat_interval=timedelta(seconds=30), max_skew=timedelta(days=1)
    )
    as_of = beats[-1].appended_at + timedelta(seconds=120)
    _, findings, _ = _findings(tmp_path, sim, beats, topic=HEARTBEATS, config=config, as_of=as_of)
    # The 200 s silence before the 4th beat; then nothing for 120 s before the audit's time.
    assert findings == [
        (ReasonCode.HEARTBEAT_MISSING.value, 3),
        (ReasonCode.HEARTBEAT_MISSING.value, 4),
    ]


def test_the_signed_interval_is_used_when_the_auditor_can_read_heartbeats(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """No agreed interval given: the auditor (a heartbeat recipient) reads the producer's own."""
    beats = _beats(sim, [30, 100])
    config = AuditConfig(environment=ENV, max_skew=timedelta(days=1))
    result, findings, _ = _findings(
        tmp_path,
        sim,
        beats,
        topic=HEARTBEATS,
        config=config,
        identity=sim.identities["inspectorate"],
        registry=REGISTRY,
    )
    assert findings == [(ReasonCode.HEARTBEAT_MISSING.value, 2)]
    assert result.summary["contents"]["decrypted_and_decoded"] == 3
    _, blind, _ = _findings(tmp_path, sim, beats, topic=HEARTBEATS, config=config)
    assert blind == []  # without the interval and without read rights, silences are not judged


def test_contents_are_checked_when_the_auditor_is_addressed(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """GREEN sightings reach the inspectorate: opened and decoded, nothing logged about contents."""
    _publish(sim, 4)
    messages = _messages(sim)
    with capture_logs() as logs:
        result, findings, _ = _findings(
            tmp_path, sim, messages, identity=sim.identities["inspectorate"], registry=REGISTRY
        )
    assert findings == []
    assert result.summary["contents"] == {
        "checked": True,
        "addressed": 4,
        "decrypted_and_decoded": 4,
    }
    text = json.dumps(logs, default=str)
    assert "description" not in text
    assert all(k not in text for k in ("observed_at", "force_area"))


def test_a_recipient_outside_the_directory_roles_is_found(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Sealed to a producer (rogue) as if it were a consumer: not entitled."""
    _publish(sim, 1)
    messages = _messages(sim)
    cst = sim.identities["cst"]
    head = sim.publisher().state.head(SIGHTINGS)
    data = seal(
        cst,
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        schema_fingerprint=bytes(8),
        payload=b"x" * 40,
        recipients=[sim.identities["rogue"].public],
    ).data
    extra = _append(messages, data)
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.RECIPIENT_NOT_ENTITLED.value, extra.offset)]
    config = AuditConfig(environment=ENV, allowed_recipients=frozenset({"met-police"}))
    _, strict, _ = _findings(tmp_path, sim, messages[:1], config=config)
    assert strict == [(ReasonCode.RECIPIENT_NOT_ENTITLED.value, 0)]


def test_since_and_offsets_start_the_chain_where_the_replay_starts(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 6)
    messages = _messages(sim)
    result, findings, _ = _findings(
        tmp_path, sim, messages, start=StartAt(StartKind.OFFSETS, offsets={0: 3})
    )
    assert findings == []
    assert result.summary["records"] == 3
    since = messages[4].appended_at
    result, findings, _ = _findings(
        tmp_path, sim, messages, start=StartAt(StartKind.SINCE, since=since)
    )
    assert findings == []
    assert result.summary["records"] == 2


def test_the_digest_is_order_independent_and_sees_every_occurrence(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 10)
    messages = _messages(sim)
    first = _run(sim, messages).digest
    # The same records in another partition layout and order: the same digest.
    shuffled = list(messages)
    random.Random(5).shuffle(shuffled)
    relaid = [replace(m, partition=i % 3, offset=i) for i, m in enumerate(shuffled)]
    assert _run(sim, relaid).digest == first
    # One tampered record, one record read twice, one record missing: all differ.
    flipped = bytearray(messages[4].value)
    flipped[100] ^= 1
    tampered = [*messages[:4], replace(messages[4], value=bytes(flipped)), *messages[5:]]
    twice = [*messages, replace(messages[2], offset=10)]
    assert (
        len(
            {
                first,
                _run(sim, tampered).digest,
                _run(sim, twice).digest,
                _run(sim, messages[1:]).digest,
            }
        )
        == 4
    )


def test_the_digest_state_round_trips_and_merges() -> None:
    a, b, whole = TopicDigest("t"), TopicDigest("t"), TopicDigest("t")
    for i in range(50):
        rid, dig = uuid.UUID(int=i).bytes, bytes([i]) * 32
        (a if i % 2 else b).add_authentic(rid, dig)
        whole.add_authentic(rid, dig)
    a.merge(b)
    assert a.hexdigest() == whole.hexdigest()
    assert TopicDigest.from_json(whole.to_json()).hexdigest() == whole.hexdigest()
    assert TopicDigest("other").hexdigest() != TopicDigest("t").hexdigest()
    with pytest.raises(ValueError, match="does not match"):
        TopicDigest.from_json({**whole.to_json(), "count": 49})
    assert authentic_item(bytes(16), bytes(32)) != authentic_item(bytes(16), b"\x01" + bytes(31))


def test_the_key_cache_answers_exactly_as_the_directory(sim: BusSimulator) -> None:
    """For times around every directory change, cached and uncached resolution agree."""
    _revoke_cst(sim, datetime.now(UTC) - timedelta(days=2))
    cache = CachedResolver(sim.history)
    from consumers.audit.keycache import directory_times  # noqa: PLC0415

    times = directory_times(sim.history)
    probes = [
        t + d
        for t in times
        for d in (-timedelta(microseconds=1), timedelta(0), timedelta(seconds=1))
    ]
    cst = sim.identities["cst"]
    for at in probes:
        for witnessed in (None, at + timedelta(days=1)):
            for resolver in (sim.history, cache, cache):  # the cache twice: miss, then hit
                try:
                    got: object = resolver.resolve_signing_key(
                        cst.key_id, "cst", SIGHTINGS, at, witnessed
                    )
                except Exception as e:  # noqa: BLE001 - comparing outcomes, whatever they are
                    got = type(e)
                if resolver is sim.history:
                    expected = got
                else:
                    assert got == expected, (at, witnessed)


def test_a_resumed_replay_ends_exactly_as_a_full_one(sim: BusSimulator, tmp_path: Path) -> None:
    """Stop after part of the topic, resume from the checkpoint: same summary, findings, digest."""
    _publish(sim, 40)
    messages = _messages(sim)
    del messages[10]
    _append(messages, messages[3].value)
    _append(messages, b"garbage")
    full_report = tmp_path / "full.json"
    full = _run(sim, messages, report=full_report)
    ckpt = tmp_path / "audit.ckpt"
    part_report = tmp_path / "part.json"
    first = _run(
        sim, messages, checkpoint=ckpt, report=part_report, stop_after=14, checkpoint_every=7
    )
    assert not first.complete
    assert first.summary["verdict"] == "incomplete"
    resumed = _run(sim, messages, checkpoint=ckpt, report=part_report)
    assert resumed.complete
    assert resumed.run["resumed"] is True
    assert resumed.summary == full.summary
    assert (
        json.loads(part_report.read_text())["findings"]
        == json.loads(full_report.read_text())["findings"]
    )
    assert len(json.loads(full_report.read_text())["findings"]) == 3


def test_state_stays_fixed_size_however_many_records(sim: BusSimulator) -> None:
    """Per stream one head with a bounded list of gaps; per producer and partition a few counters."""
    _publish(sim, 60)
    messages = [m for i, m in enumerate(_messages(sim)) if i % 3 != 1]  # 20 gaps
    result = _run(sim, messages)
    assert result.summary["findings"]["by_reason"] == {"chain_gap": 20}
    head = StreamHead("p", "s", -1, bytes(32))
    for i in range(100):
        head.note_gap(3 * i, 3 * i + 1)
    assert len(head.gaps) == MAX_OPEN_GAPS
    state = AuditState.from_json(AuditState.empty("t").to_json())
    assert state.records == 0
    assert state.to_json() == AuditState.empty("t").to_json()

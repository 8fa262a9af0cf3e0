"""Auditor replay on simulated records: each check finds its defect, with its reason code and offset.

Records come from the real publisher through the BusSimulator (tests/simulator.py); the auditor
reads them from an in-memory source and judges them with the consumers' own judge
(intelbus/trust/judge.py) against its ledger. Delivery through a real broker is in
tests/integration/test_audit_replay.py; that the auditor and a consumer reach the same verdict on
every record of a hostile mix is tests/property/test_consumer_auditor_agree.py.
"""

from __future__ import annotations

import json
import random
import shutil
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from consumers.audit import checkpoint as cp
from consumers.audit.digest import TopicDigest, authentic_item
from consumers.audit.keycache import CachedResolver
from consumers.audit.replay import AuditConfig
from consumers.audit.report import render
from consumers.audit.run import AuditResult, StartAt, StartKind, audit
from consumers.audit.source import MemorySource
from consumers.audit.state import AuditState
from intelbus.chain import MAX_OPEN_GAPS
from intelbus.directory import edit
from intelbus.envelope import Sealed, seal
from intelbus.errors import ConfigError, IntelbusError, KeyRevoked, ReasonCode, UnknownKey
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.kinds import RecordKind
from intelbus.policy.agreement import SharingAgreement
from intelbus.records import Sighting
from intelbus.samples import feed
from intelbus.store.sqlite import SqliteStore
from intelbus.transport.kafka import Message
from tests.simulator import ENV, INCIDENTS, PREFIX, REGISTRY, SIGHTINGS, BusSimulator

HEARTBEATS = f"{PREFIX}.heartbeats"


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


def _sighting(area: str = "HERTFORDSHIRE", tlp: str = "GREEN") -> Sighting:
    base = feed(seed=31, sightings=1, incidents=0)[0]
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = area
    data["grading"].update(tlp=tlp, handling_code="P", handling_conditions=[], assessment="B")
    return Sighting.model_validate(data)


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
    sim: BusSimulator, messages: list[Message], topic: str = SIGHTINGS, **kwargs: Any
) -> AuditResult:
    config = kwargs.pop("config", AuditConfig(environment=ENV))
    if "checkpoint" in kwargs:
        # A checkpoint is signed with the auditor's key (without decrypting with it here).
        kwargs.setdefault("checkpoint_key", sim.identities["inspectorate"])
    return audit(
        source=MemorySource(topic, messages),
        history=kwargs.pop("history", sim.history),
        config=config,
        workers=2,
        batch_size=kwargs.pop("batch_size", 7),
        **kwargs,
    )


def _findings(
    tmp_path: Path, sim: BusSimulator, messages: list[Message], **kwargs: Any
) -> tuple[AuditResult, list[tuple[str, int]], dict[str, Any]]:
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    result = _run(sim, messages, report=report, **kwargs)
    data = json.loads(report.read_text())
    return result, [(f["reason"], f["offset"]) for f in data["findings"]], data


def _append(
    messages: list[Message],
    value: bytes,
    topic: str = SIGHTINGS,
    partition: int = 0,
    **changes: Any,
) -> Message:
    """Append ``value`` at the end of ``topic``'s ``partition`` (as anyone with write access can)."""
    last = max(
        (m.offset for m in messages if (m.topic, m.partition) == (topic, partition)), default=-1
    )
    m = Message(topic, partition, last + 1, value, datetime.now(UTC))
    m = replace(m, **changes)
    messages.append(m)
    return m


def _sealed(
    sim: BusSimulator,
    identity: AgencyIdentity,
    *,
    sequence: int,
    prev: bytes,
    topic: str = SIGHTINGS,
    partition: int = 0,
    recipients: tuple[str, ...] = ("herts-police",),
) -> Sealed:
    """A record signed by ``identity`` at a chosen place in a stream (contents not decodable)."""
    return seal(
        identity,
        environment=ENV,
        topic=topic,
        kind=RecordKind.SIGHTING,
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=bytes(8),
        payload=b"x" * 40,
        recipients=[sim.identities[a].public for a in recipients],
        partition=partition,
    )


def _seal(sim: BusSimulator, identity: AgencyIdentity, **kwargs: Any) -> bytes:
    return _sealed(sim, identity, **kwargs).data


# --- A clean history, and the chain's findings. ---------------------------------------------------


def test_a_clean_history_verifies_with_no_findings(sim: BusSimulator, tmp_path: Path) -> None:
    """Every record authentic, chain continuous: zero findings, verdict clean, one producer."""
    _publish(sim, 12)
    result, findings, data = _findings(tmp_path, sim, _messages(sim))
    assert findings == []
    assert result.summary["verdict"] == "clean"
    assert result.summary["records"] == result.summary["authentic"] == 12
    assert result.summary["producers"]["cst"]["lowest_sequence"] == 0
    assert result.summary["producers"]["cst"]["highest_sequence"] == 11
    assert data["format"] == "intelbus.audit.report/v3"
    assert data["summary"] == result.summary


def test_the_sequence_span_is_lowest_to_highest_over_every_stream(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """A producer with many records in several streams: the span is the lowest and the highest
    sequence number, not the last one read (the report used to say "0..0" for 957 records)."""
    _publish(sim, 120)  # stream on partition 0: sequences 0..119
    messages = _messages(sim)
    cst = sim.identities["cst"]
    prev = bytes(32)
    for seq in range(3):  # a second stream of CST's, bound to partition 1: sequences 0..2
        sealed = _sealed(sim, cst, sequence=seq, prev=prev, partition=1)
        _append(messages, sealed.data, partition=1)
        prev = sealed.digest
    # Partition 1 is read last, so the last record read has sequence 2.
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == []
    assert result.summary["producers"]["cst"] == {
        "records": 123,
        "authentic": 123,
        "findings": 0,
        "lowest_sequence": 0,
        "highest_sequence": 119,
    }
    assert set(result.summary["partitions"]) == {"0", "1"}
    console = Console(record=True, width=200)
    render(console, result.summary, result.sample)
    assert "0..119" in console.export_text()


def test_a_record_replayed_at_a_new_offset_is_found(sim: BusSimulator, tmp_path: Path) -> None:
    _publish(sim, 5)
    messages = _messages(sim)
    copy = _append(messages, messages[1].value)
    result, findings, data = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_REPLAY.value, copy.offset)]
    assert result.integrity_findings == 1
    assert data["findings"][0]["authentic"] is True
    assert data["findings"][0]["sequence"] == 1


def test_a_copy_on_another_partition_is_a_binding_mismatch(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """A stream is bound to its partition: a copy elsewhere is refused and moves nothing."""
    _publish(sim, 4)
    messages = _messages(sim)
    copy = _append(messages, messages[3].value, partition=2)
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.BINDING_MISMATCH.value, copy.offset)]
    assert result.summary["producers"]["cst"]["highest_sequence"] == 3


def test_a_sequence_deleted_by_omission_is_a_gap_reported_at_the_end(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """The gap is reported once the replay ends (a late record could still have filled it), at the
    offset of the record that revealed it: after findings of later records."""
    _publish(sim, 6)
    messages = _messages(sim)
    del messages[3]  # the broker (or someone) withholds sequence 3
    replayed = _append(messages, messages[0].value)  # a later finding, at offset 6
    _, findings, data = _findings(tmp_path, sim, messages)
    assert findings == [
        (ReasonCode.CHAIN_REPLAY.value, replayed.offset),
        (ReasonCode.CHAIN_GAP.value, 4),
    ]
    gap = data["findings"][1]
    assert "sequence 3..3" in gap["message"]
    assert (gap["sequence"], gap["authentic"], gap["producer_id"]) == (4, True, "cst")


def test_a_late_record_fills_its_gap_a_reorder_warning_and_no_gap(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 5)
    messages = _messages(sim)
    late = messages.pop(2)
    _append(messages, late.value)
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CHAIN_REORDER.value, 5)]
    assert result.summary["verdict"] == "clean with warnings"
    assert result.integrity_findings == 0


def test_a_late_record_fills_part_of_a_gap_the_rest_is_reported(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Sequences 1..3 withheld, 2 arrives late: 1 and 3 are still missing at the end."""
    _publish(sim, 6)
    messages = _messages(sim)
    withheld = messages[1:4]
    del messages[1:4]
    late = _append(messages, withheld[1].value)
    _, findings, data = _findings(tmp_path, sim, messages)
    assert findings == [
        (ReasonCode.CHAIN_REORDER.value, late.offset),
        (ReasonCode.CHAIN_GAP.value, 4),
        (ReasonCode.CHAIN_GAP.value, 4),
    ]
    assert "sequence 1..1" in data["findings"][1]["message"]
    assert "sequence 3..3" in data["findings"][2]["message"]


def test_gaps_pushed_out_of_the_chains_memory_are_reported_at_once(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """A stream remembers MAX_OPEN_GAPS missing ranges; an older one can no longer be filled, so
    it is reported when it is pushed out, and a late record for it is then a replay."""
    _publish(sim, 3 * (MAX_OPEN_GAPS + 1) + 1)
    messages = _messages(sim)
    kept = [m for i, m in enumerate(messages) if i % 3 != 1]  # sequences 1, 4, 7, ... missing
    late = _append(kept, messages[1].value)  # sequence 1: its range was pushed out
    _, findings, _ = _findings(tmp_path, sim, kept)
    reasons = [r for r, _ in findings]
    # The first range (revealed at offset 2, by sequence 2) is reported when the 9th gap pushes it out, before
    # the late record is judged; the other 8 at the end.
    assert reasons == [
        ReasonCode.CHAIN_GAP.value,
        ReasonCode.CHAIN_REPLAY.value,
        *[ReasonCode.CHAIN_GAP.value] * MAX_OPEN_GAPS,
    ]
    assert findings[0] == (ReasonCode.CHAIN_GAP.value, 2)
    assert findings[1] == (ReasonCode.CHAIN_REPLAY.value, late.offset)


def test_a_range_the_chain_forgets_when_a_late_record_splits_one_is_reported_at_once(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """With MAX_OPEN_GAPS ranges open, a late record splitting the oldest into two makes one
    range too many: the chain keeps the newest ones, so the oldest can no longer be filled (a late
    record for it is a replay). It is reported then, not held until the end."""
    n = 4 * MAX_OPEN_GAPS + 1
    _publish(sim, n)
    messages = _messages(sim)
    # Sequences 1..3, 5..7, ...: MAX_OPEN_GAPS ranges of three, each revealed by the next record.
    kept = [m for i, m in enumerate(messages) if i % 4 == 0]
    late_2 = _append(kept, messages[2].value)  # splits 1..3 into 1..1 and 3..3
    late_1 = _append(kept, messages[1].value)  # 1..1 was forgotten: a replay now
    _, findings, data = _findings(tmp_path, sim, kept)
    assert findings[:3] == [
        (ReasonCode.CHAIN_REORDER.value, late_2.offset),
        (ReasonCode.CHAIN_GAP.value, 4),  # 1..1, revealed by sequence 4
        (ReasonCode.CHAIN_REPLAY.value, late_1.offset),
    ]
    assert "sequence 1..1" in data["findings"][1]["message"]
    # Then, at the end, the ranges still open: 3..3 and the other seven.
    assert findings[3:] == [(ReasonCode.CHAIN_GAP.value, 4 * k) for k in range(1, n // 4 + 1)]
    assert "sequence 3..3" in data["findings"][3]["message"]


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


def test_forks_and_jumps_by_the_real_key_are_found(sim: BusSimulator, tmp_path: Path) -> None:
    """A second record with an existing sequence, a wrong previous digest, a huge jump (chain_jump,
    as the consumer calls it); the genuine stream then goes on without findings."""
    _publish(sim, 3)
    messages = _messages(sim)
    cst = sim.identities["cst"]
    same_seq = _append(messages, _seal(sim, cst, sequence=2, prev=bytes(32)))
    wrong_prev = _append(messages, _seal(sim, cst, sequence=3, prev=bytes(32)))
    jump = _append(messages, _seal(sim, cst, sequence=10**9, prev=bytes(32)))
    _publish(sim, 2)  # sequences 3 and 4: still accepted after the jump was refused
    messages += _messages(sim)[3:]
    messages[-2:] = [replace(m, offset=jump.offset + 1 + i) for i, m in enumerate(messages[-2:])]
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [
        (ReasonCode.CHAIN_FORK.value, same_seq.offset),
        (ReasonCode.CHAIN_FORK.value, wrong_prev.offset),
        (ReasonCode.CHAIN_JUMP.value, jump.offset),
    ]
    # Spans cover authentic records, accepted or not: the jump is CST's own signature.
    assert result.summary["producers"]["cst"]["highest_sequence"] == 10**9


def test_a_gap_of_exactly_max_gap_is_accepted_one_more_is_a_jump(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 1)
    messages = _messages(sim)
    cst = sim.identities["cst"]
    config = AuditConfig(environment=ENV, max_gap=5)
    head = sim.publisher().state.head(SIGHTINGS).last_digest
    jump = _append(messages, _seal(sim, cst, sequence=7, prev=head))  # 6 missing
    gap = _append(messages, _seal(sim, cst, sequence=6, prev=head))  # 5 missing: accepted
    _, findings, _ = _findings(tmp_path, sim, messages, config=config)
    assert findings == [
        (ReasonCode.CHAIN_JUMP.value, jump.offset),
        (ReasonCode.CHAIN_GAP.value, gap.offset),
    ]


# --- Envelope checks. -------------------------------------------------------------------------------


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
    assert result.summary["producers"]["cst"]["authentic"] == 2


def test_a_record_without_broker_time_is_judged_by_its_key(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """No LogAppendTime on a record: its signed creation time is trusted only while its key has
    no cutoff a back-dated record could escape; once the key is revoked, it is refused."""
    _publish(sim, 3)
    messages = _messages(sim)
    messages[1] = replace(messages[1], appended_at=None)
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == []
    cst = sim.identities["cst"]
    doc = edit.revoke_key(
        sim.history.latest,
        agency_id="cst",
        key_id=cst.key_id.hex(),
        reason="retired early",
        now=datetime.now(UTC) + timedelta(seconds=1),
    )
    sim.history.update(sim._signed(doc))
    _, findings, data = _findings(tmp_path, sim, messages)
    # The timed records were appended before the revocation and stand; the refused one is
    # missing from CST's stream.
    assert findings == [(ReasonCode.NO_BROKER_TIME.value, 1), (ReasonCode.CHAIN_GAP.value, 2)]
    assert data["findings"][0]["authentic"] is False


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


def test_records_appended_after_compromised_since_are_found(
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
    late = messages[1].appended_at
    assert late is not None
    messages[1] = replace(messages[1], appended_at=late + timedelta(hours=2))
    result, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.CLOCK_SKEW.value, 1)]
    assert result.summary["verdict"] == "clean with warnings"


# --- Heartbeats. ---------------------------------------------------------------------------------------


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
    last = beats[-1].appended_at
    assert last is not None
    _, findings, _ = _findings(
        tmp_path, sim, beats, topic=HEARTBEATS, config=config, as_of=last + timedelta(seconds=120)
    )
    # The 200 s silence before the 4th beat; then nothing for 120 s before the audit's time.
    assert findings == [
        (ReasonCode.HEARTBEAT_MISSING.value, 3),
        (ReasonCode.HEARTBEAT_MISSING.value, 4),
    ]


def test_a_replayed_heartbeat_is_refused_and_keeps_no_feed_alive(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Copies of old heartbeats, appended during a silence and after the last beat, are replays:
    they neither break the silence nor make a frozen feed look alive."""
    genuine = _beats(sim, [30, 30, 60])  # beats at 0, 30, 60 and 120 s
    t0 = genuine[0].appended_at
    assert t0 is not None
    at = [t0 + timedelta(seconds=s) for s in (0, 30, 60, 85, 120, 150)]
    values = [genuine[0], genuine[1], genuine[2], genuine[0], genuine[3], genuine[1]]
    beats = [
        Message(HEARTBEATS, 0, i, m.value, t)
        for i, (m, t) in enumerate(zip(values, at, strict=True))
    ]
    config = AuditConfig(
        environment=ENV, heartbeat_interval=timedelta(seconds=30), max_skew=timedelta(days=1)
    )
    _, findings, data = _findings(
        tmp_path, sim, beats, topic=HEARTBEATS, config=config, as_of=t0 + timedelta(seconds=170)
    )
    assert findings == [
        (ReasonCode.CHAIN_REPLAY.value, 3),
        (ReasonCode.HEARTBEAT_MISSING.value, 4),  # 60 s since the beat at 60 s (not 35 s)
        (ReasonCode.CHAIN_REPLAY.value, 5),
        (ReasonCode.HEARTBEAT_MISSING.value, 4),  # at 170 s, 50 s since the last genuine beat
    ]
    assert "after offset 2" in data["findings"][1]["message"]


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


# --- Contents and recipients. ---------------------------------------------------------------------


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


def test_undecodable_contents_addressed_to_the_auditor_are_found(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Signed by CST, addressed to the inspectorate, but not a schema the registry knows."""
    _publish(sim, 1)
    messages = _messages(sim)
    head = sim.publisher().state.head(SIGHTINGS)
    bad = _append(
        messages,
        _seal(
            sim,
            sim.identities["cst"],
            sequence=head.next_sequence,
            prev=head.last_digest,
            recipients=("herts-police", "inspectorate"),
        ),
    )
    result, findings, _ = _findings(
        tmp_path, sim, messages, identity=sim.identities["inspectorate"], registry=REGISTRY
    )
    assert findings == [(ReasonCode.UNKNOWN_SCHEMA.value, bad.offset)]
    assert result.summary["contents"] == {
        "checked": True,
        "addressed": 2,
        "decrypted_and_decoded": 1,
    }
    # Without the auditor's key the same record is judged on what it can see: nothing wrong.
    _, blind, _ = _findings(tmp_path, sim, messages)
    assert blind == []


def test_a_recipient_outside_the_directory_roles_is_found(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Sealed to a producer (rogue) as if it were a consumer: not entitled."""
    _publish(sim, 1)
    messages = _messages(sim)
    head = sim.publisher().state.head(SIGHTINGS)
    extra = _append(
        messages,
        _seal(
            sim,
            sim.identities["cst"],
            sequence=head.next_sequence,
            prev=head.last_digest,
            recipients=("rogue",),
        ),
    )
    _, findings, _ = _findings(tmp_path, sim, messages)
    assert findings == [(ReasonCode.RECIPIENT_NOT_ENTITLED.value, extra.offset)]


#: CST's agreement for the --agreement cases: met-police is in none of its lists, gmp receives
#: AMBER only as a partner (not as a member force, and no force area).
PARTNER_AGREEMENT = {
    "producer": "cst",
    "member_forces": ["herts-police"],
    "amber_partners": ["gmp"],
    "auditors": ["inspectorate"],
    "auditor_tlp": ["CLEAR", "GREEN", "AMBER"],
    "force_areas": {"herts-police": ["HERTFORDSHIRE"]},
}


def test_the_agreement_entitles_amber_partners_and_nobody_outside_it(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """--agreement: an AMBER record the publisher addressed (by the agreement) to an AMBER partner
    is not flagged (the CLI used to forget ``amber_partners``); one also addressed to an agency
    outside the agreement is, whoever else it went to."""
    agreement = SharingAgreement.model_validate(PARTNER_AGREEMENT)
    pub = sim.publisher()
    pub.agreement = agreement
    amber = pub.publish(_sighting(tlp="AMBER"))
    assert amber.recipients == ("gmp", "herts-police", "inspectorate")
    named = pub.publish(_sighting(tlp="AMBER"), named=["met-police"])
    assert "met-police" in named.recipients
    config = AuditConfig(environment=ENV, agreement=agreement)
    result, findings, data = _findings(tmp_path, sim, _messages(sim), config=config)
    assert findings == [(ReasonCode.RECIPIENT_NOT_ENTITLED.value, named.offset)]
    assert "met-police" in data["findings"][0]["message"]
    assert "outside cst's sharing agreement" in data["findings"][0]["message"]
    assert result.summary["verdict"] == "integrity findings"
    # Without the agreement, both are entitled by the directory alone.
    _, plain, _ = _findings(tmp_path, sim, _messages(sim))
    assert plain == []


def test_the_agreement_binds_its_own_producer_only(sim: BusSimulator, tmp_path: Path) -> None:
    """CST's agreement says nothing about rogue's records: the same recipients are fine from
    rogue and not from CST, in either order (the answer is not cached across producers)."""
    agreement = SharingAgreement.model_validate(PARTNER_AGREEMENT)
    config = AuditConfig(environment=ENV, agreement=agreement)
    recipients = ("met-police", "herts-police")
    rogue = _seal(sim, sim.identities["rogue"], sequence=0, prev=bytes(32), recipients=recipients)
    cst = _seal(sim, sim.identities["cst"], sequence=0, prev=bytes(32), recipients=recipients)
    for order in ((rogue, cst), (cst, rogue)):
        messages: list[Message] = []
        for value in order:
            _append(messages, value)
        flagged = 1 if order[0] is rogue else 0
        _, findings, data = _findings(tmp_path, sim, messages, config=config)
        assert findings == [(ReasonCode.RECIPIENT_NOT_ENTITLED.value, flagged)], order
        assert data["findings"][0]["producer_id"] == "cst"


# --- Where a replay starts, and the digest. --------------------------------------------------------


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
    assert result.summary["producers"]["cst"]["lowest_sequence"] == 3
    since = messages[4].appended_at
    result, findings, _ = _findings(
        tmp_path, sim, messages, start=StartAt(StartKind.SINCE, since=since)
    )
    assert findings == []
    assert result.summary["records"] == 2
    # A hole after the baseline is still a gap.
    result, findings, _ = _findings(
        tmp_path,
        sim,
        [m for m in messages if m.offset != 4],
        start=StartAt(StartKind.OFFSETS, offsets={0: 2}),
    )
    assert findings == [(ReasonCode.CHAIN_GAP.value, 5)]


def test_the_digest_is_order_independent_and_sees_every_occurrence(
    sim: BusSimulator, tmp_path: Path
) -> None:
    _publish(sim, 10)
    messages = _messages(sim)
    first = _run(sim, messages).records_digest
    # The same records read in another order (the chain then complains): the same digest.
    shuffled = list(messages)
    random.Random(5).shuffle(shuffled)
    reordered = [replace(m, offset=i) for i, m in enumerate(shuffled)]
    result = _run(sim, reordered)
    assert result.summary["findings"]["by_reason"].get(ReasonCode.CHAIN_REORDER.value, 0) > 0
    assert result.records_digest == first
    # One tampered record, one record read twice, one record missing: all differ.
    flipped = bytearray(messages[4].value)
    flipped[100] ^= 1
    tampered = [*messages[:4], replace(messages[4], value=bytes(flipped)), *messages[5:]]
    twice = [*messages, replace(messages[2], offset=10)]
    assert (
        len(
            {
                first,
                _run(sim, tampered).records_digest,
                _run(sim, twice).records_digest,
                _run(sim, messages[1:]).records_digest,
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
    seen: set[type] = set()  # the directory's answers: a key, or the type of its refusal
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
                    seen.add(got if isinstance(got, type) else type(got))
                else:
                    assert got == expected, (at, witnessed)
    # The probes span every kind of answer, all typed: agreement on one outcome (say, the same
    # TypeError from both resolvers) would prove nothing.
    assert {PublicIdentity, KeyRevoked, UnknownKey} <= seen, seen
    assert all(t is PublicIdentity or issubclass(t, IntelbusError) for t in seen), seen


# --- Checkpoints and the ledger. -------------------------------------------------------------------


def _hostile_topic(sim: BusSimulator) -> list[Message]:
    """40 records with a hole, a replay, garbage, a late record and a pending-looking state."""
    _publish(sim, 40)
    messages = _messages(sim)
    late = messages.pop(20)  # withheld, delivered at the end: a reorder, no gap
    del messages[10]  # never delivered: a gap, reported at the end
    _append(messages, messages[3].value)  # a replay
    _append(messages, b"garbage")
    _append(messages, late.value)
    return messages


def _report_findings(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["findings"])


def _full(sim: BusSimulator, messages: list[Message], tmp_path: Path) -> tuple[AuditResult, Path]:
    report = tmp_path / "full.json"
    return _run(sim, messages, report=report), report


def test_a_resumed_replay_ends_exactly_as_a_full_one(sim: BusSimulator, tmp_path: Path) -> None:
    """Stop after part of the topic, resume from the checkpoint: same summary, findings, digest."""
    messages = _hostile_topic(sim)
    full, full_report = _full(sim, messages, tmp_path)
    assert [f["reason"] for f in _report_findings(full_report)] == [
        ReasonCode.CHAIN_REPLAY.value,
        ReasonCode.MALFORMED.value,
        ReasonCode.CHAIN_REORDER.value,
        ReasonCode.CHAIN_GAP.value,
    ]
    ckpt = tmp_path / "audit.ckpt"
    part_report = tmp_path / "part.json"
    first = _run(
        sim, messages, checkpoint=ckpt, report=part_report, stop_after=14, checkpoint_every=7
    )
    assert not first.complete
    assert first.summary["verdict"] == "incomplete"
    assert ckpt.with_name("audit.ckpt.ledger").exists()
    resumed = _run(sim, messages, checkpoint=ckpt, report=part_report)
    assert resumed.complete
    assert resumed.run["resumed"] is True
    assert resumed.run["records_this_run"] < len(messages)
    assert resumed.summary == full.summary
    assert resumed.digest == full.digest
    assert _report_findings(part_report) == _report_findings(full_report)
    # A finished checkpoint resumes to the same end without reading anything.
    again = _run(sim, messages, checkpoint=ckpt, report=part_report)
    assert again.summary == full.summary
    assert again.run["records_this_run"] == 0


def _fail_checkpoint_file_write(monkeypatch: pytest.MonkeyPatch, *, on_call: int) -> list[int]:
    """Make the ``on_call``-th write of the checkpoint file fail (after its ledger commit)."""
    real = cp.save
    calls: list[int] = []

    def save(path: Path, point: str) -> None:
        calls.append(len(calls) + 1)
        if len(calls) == on_call:
            raise OSError("disk full (simulated)")
        real(path, point)

    monkeypatch.setattr(cp, "save", save)
    return calls


@pytest.mark.parametrize("on_call", [1, 3])
def test_a_stop_between_the_ledger_commit_and_the_checkpoint_file_resumes_exactly(
    sim: BusSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_call: int
) -> None:
    """The process stops after the ledger committed a checkpoint but before the file was written:
    the file is one save behind (or absent), the ledger is right, and the resumed replay ends as
    an uninterrupted one (nothing judged twice, nothing skipped)."""
    messages = _hostile_topic(sim)
    full, full_report = _full(sim, messages, tmp_path)
    ckpt = tmp_path / "audit.ckpt"
    report = tmp_path / "part.json"
    calls = _fail_checkpoint_file_write(monkeypatch, on_call=on_call)
    with pytest.raises(OSError, match="simulated"):
        _run(sim, messages, checkpoint=ckpt, report=report, checkpoint_every=7)
    assert len(calls) == on_call
    ledger = SqliteStore(ckpt.with_name("audit.ckpt.ledger"))
    try:
        committed = cp.verified(
            ledger.meta(cp.LEDGER_KEY) or "null",
            source="ledger",
            key=sim.identities["inspectorate"].public,
        )
    finally:
        ledger.close()
    assert not committed.complete
    if on_call == 1:
        assert not ckpt.exists()  # never written: the ledger alone is no checkpoint
    else:
        behind = cp.load(
            ckpt,
            key=sim.identities["inspectorate"].public,
            topic=SIGHTINGS,
            environment=ENV,
            directory_version=sim.history.latest.version,
        )
        assert behind.positions != committed.positions  # the file is one save behind
    monkeypatch.undo()
    resumed = _run(sim, messages, checkpoint=ckpt, report=report)
    assert resumed.complete
    assert resumed.run["resumed"] is (on_call != 1)
    assert resumed.summary == full.summary
    assert resumed.digest == full.digest
    assert _report_findings(report) == _report_findings(full_report)


def test_a_checkpoint_without_its_ledger_is_refused(sim: BusSimulator, tmp_path: Path) -> None:
    messages = _hostile_topic(sim)
    ckpt = tmp_path / "audit.ckpt"
    _run(sim, messages, checkpoint=ckpt, stop_after=10, checkpoint_every=5)
    ckpt.with_name("audit.ckpt.ledger").unlink()
    with pytest.raises(ConfigError, match="no ledger"):
        _run(sim, messages, checkpoint=ckpt)


def test_a_checkpoint_whose_findings_file_is_missing_or_short_is_refused(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """The findings before the checkpoint exist only in that file: resuming without them would
    end with a report that lacks them (or, cut to a longer length, one padded with zeros)."""
    _publish(sim, 20)
    values = [m.value for m in _messages(sim)]
    values.insert(3, b"garbage")  # a finding before the checkpoint
    messages = [Message(SIGHTINGS, 0, i, v, datetime.now(UTC)) for i, v in enumerate(values)]
    ckpt = tmp_path / "audit.ckpt"
    _run(sim, messages, checkpoint=ckpt, stop_after=10, checkpoint_every=7)
    spool = ckpt.with_name("audit.ckpt.findings.jsonl")
    assert spool.stat().st_size > 0
    spool.write_bytes(spool.read_bytes()[:-1])
    with pytest.raises(ConfigError, match="fewer than"):
        _run(sim, messages, checkpoint=ckpt)
    spool.unlink()
    with pytest.raises(ConfigError, match="missing"):
        _run(sim, messages, checkpoint=ckpt)


def test_a_checkpoint_or_ledger_for_another_topic_is_refused(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """The findings would not be comparable: a checkpoint file for another topic, or a ledger
    beside it made for another topic, is refused rather than resumed."""
    _publish(sim, 12)
    sightings = _messages(sim)
    incidents = [replace(m, topic=INCIDENTS) for m in sightings]  # all binding mismatches
    a, b = tmp_path / "a" / "audit.ckpt", tmp_path / "b" / "audit.ckpt"
    a.parent.mkdir()
    b.parent.mkdir()
    _run(sim, sightings, checkpoint=a, stop_after=5, checkpoint_every=5)
    _run(sim, incidents, topic=INCIDENTS, checkpoint=b, stop_after=5, checkpoint_every=5)
    with pytest.raises(ConfigError, match="topic"):
        _run(sim, incidents, topic=INCIDENTS, checkpoint=a)
    shutil.copyfile(b.with_name("audit.ckpt.ledger"), a.with_name("audit.ckpt.ledger"))
    with pytest.raises(ConfigError, match="topic"):
        _run(sim, sightings, checkpoint=a)


def test_a_ledger_left_without_a_checkpoint_is_not_trusted(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """A ledger beside a checkpoint path that was never written (the process stopped before its
    first checkpoint file, possibly without closing SQLite) is started afresh, WAL included."""
    messages = _hostile_topic(sim)
    full, full_report = _full(sim, messages, tmp_path)
    # A crashed earlier run's files: its ledger with a hot write-ahead log, no checkpoint file.
    other = tmp_path / "crashed"
    other.mkdir()
    crashed = other / "audit.ckpt"
    _run(sim, messages, checkpoint=crashed, stop_after=20, checkpoint_every=7)
    ledger_path = tmp_path / "audit.ckpt.ledger"
    held = SqliteStore(crashed.with_name("audit.ckpt.ledger"))
    try:
        # Write through an open connection and copy the files while it is open: what a killed
        # process leaves behind (the WAL not yet checkpointed into the database file).
        held._conn.execute("PRAGMA wal_autocheckpoint=0")
        held._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('stale', 'x') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        for suffix in ("", "-wal", "-shm"):
            src = crashed.with_name("audit.ckpt.ledger" + suffix)
            if src.exists():
                shutil.copyfile(src, ledger_path.with_name(ledger_path.name + suffix))
    finally:
        held.close()
    ckpt = tmp_path / "audit.ckpt"
    assert not ckpt.exists()
    result = _run(sim, messages, checkpoint=ckpt, report=tmp_path / "r.json")
    assert result.run["resumed"] is False
    assert result.summary == full.summary
    assert _report_findings(tmp_path / "r.json") == _report_findings(full_report)
    ledger = SqliteStore(ledger_path)
    try:
        assert ledger.meta("stale") is None
    finally:
        ledger.close()


def test_state_stays_fixed_size_however_many_records(sim: BusSimulator, tmp_path: Path) -> None:
    """Per stream at most MAX_OPEN_GAPS open ranges; per producer and partition a few counters.
    Stream heads and record ids live in the ledger, on disk, not in the checkpoint's state."""
    _publish(sim, 60)
    messages = [m for i, m in enumerate(_messages(sim)) if i % 3 != 1]  # 20 gaps
    result = _run(sim, messages)
    assert result.summary["findings"]["by_reason"] == {"chain_gap": 20}
    ckpt = tmp_path / "audit.ckpt"
    _run(sim, messages, checkpoint=ckpt, stop_after=35, checkpoint_every=7, batch_size=5)
    state = cp.load(
        ckpt,
        key=sim.identities["inspectorate"].public,
        topic=SIGHTINGS,
        environment=ENV,
        directory_version=sim.history.latest.version,
    ).state
    assert [len(gaps) for gaps in state["gaps"].values()] == [MAX_OPEN_GAPS]
    assert set(state["producers"]) == {"cst"}
    assert len(json.dumps(state)) < 4096
    fresh = AuditState.from_json(AuditState.empty("t").to_json())
    assert fresh.records == 0
    assert fresh.to_json() == AuditState.empty("t").to_json()


def test_an_old_heartbeat_appended_again_fills_its_gap_but_breaks_no_silence(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """The second heartbeat is withheld, then its bytes are appended at 100 s: authentic, it fills
    its chain's gap (a reorder warning), but it is not a sign of life, so at 140 s the feed has
    been silent for 80 s (since the beat at 60 s), not 40 s."""
    genuine = _beats(sim, [30, 30])  # beats at 0, 30 and 60 s
    t0 = genuine[0].appended_at
    assert t0 is not None
    at = [t0, t0 + timedelta(seconds=60), t0 + timedelta(seconds=100)]
    values = [genuine[0], genuine[2], genuine[1]]
    beats = [
        Message(HEARTBEATS, 0, i, m.value, t)
        for i, (m, t) in enumerate(zip(values, at, strict=True))
    ]
    config = AuditConfig(
        environment=ENV, heartbeat_interval=timedelta(seconds=30), max_skew=timedelta(days=1)
    )
    _, findings, _ = _findings(
        tmp_path, sim, beats, topic=HEARTBEATS, config=config, as_of=t0 + timedelta(seconds=140)
    )
    assert findings == [
        (ReasonCode.HEARTBEAT_MISSING.value, 1),  # 60 s from the first beat to the third
        (ReasonCode.CHAIN_REORDER.value, 2),  # the second, late
        (ReasonCode.HEARTBEAT_MISSING.value, 1),  # frozen: 80 s before 140 s, after offset 1
    ]

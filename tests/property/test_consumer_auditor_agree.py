"""One judge: a consumer and the auditor reach the same verdict on every record of a hostile mix.

Hypothesis writes a sightings topic on the simulated bus (tests/simulator.py) from real keys and
real envelopes: CST's genuine records on its partition, some withheld and delivered late, some
never; copies on other partitions and on its own; forks and fast-forward jumps signed with CST's
key; CST reusing its own record ids; CST's corrections (some changing the record's kind, some
naming another target in the header than in the payload), retractions and erasures (of records,
of amendments, of ids not seen yet); a rogue producer's
corrections, retractions and erasures of CST's records and its records squatting CST's ids; records signed
with CST's old key before its compromise, inside the compromise window and after its rotation;
an impostor's key; a heartbeat on the sightings topic; contents the registry does not know;
garbage, truncations, bit flips, and records without a broker time.

The same records, in the same order (the auditor's: partition by partition, by offset), go to

* a :class:`~tests.simulator.SimulatedConsumer` for herts-police, in polled batches of random
  sizes, with a policy that stores everything (so only integrity decides), and
* the auditor (:func:`consumers.audit.run.audit` over an in-memory source, which runs the shared
  judge against its ledger), in batches of random sizes, committing its ledger and checkpoint
  every few records, and stopped and resumed part-way,

and every record must get the same verdict: accepted by both, or refused by both with the same
reason code (and the same chain outcome). Records are addressed to herts-police and to the
inspectorate, and the auditor holds the inspectorate's key, so content checks run on both sides.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consumers.audit.run as audit_run
from consumers.audit.replay import AuditConfig, AuditJudge
from consumers.audit.run import audit
from consumers.audit.source import MemorySource
from consumers.pipeline import RawRecord
from intelbus.chain import DEFAULT_MAX_GAP
from intelbus.directory import edit
from intelbus.envelope import Sealed, seal
from intelbus.errors import ReasonCode
from intelbus.identity import AgencyIdentity
from intelbus.kinds import RecordKind
from intelbus.policy.facts import Tlp
from intelbus.records import Correction, Erasure, Heartbeat, Incident, Retraction, Sighting
from intelbus.samples import feed
from intelbus.transport.kafka import Message
from intelbus.trust.model import Prepared, Verdict
from tests.fuzz.profile import FUZZ
from tests.simulator import ENV, REGISTRY, SIGHTINGS, BusSimulator, SimulatedConsumer

#: herts-police keeps everything it may read: the sharing policy never refuses a record here.
STORE_ALL: dict[str, object] = {
    "agency": "herts-police",
    "rules": [{"id": "everything", "action": "store"}],
}
NOW = datetime.now(UTC)
#: CST's first key leaked at COMPROMISED, CST rotated to a new key at ROTATED, and the directory
#: revoked the old key (compromised since COMPROMISED) at REVOKED.
COMPROMISED = NOW - timedelta(days=12)
ROTATED = NOW - timedelta(days=10)
REVOKED = NOW - timedelta(days=9)
#: Broker times for records of the old key: before the leak, inside the window, after rotation.
ERAS = (NOW - timedelta(days=20), NOW - timedelta(days=11), NOW - timedelta(hours=30))
#: Everything else is appended from here on, one second apart.
BASE = NOW - timedelta(days=1)


@dataclass
class World:
    sim: BusSimulator
    old_key: AgencyIdentity  # CST's first key: leaked, retired, revoked
    cst: AgencyIdentity  # CST's current key
    rogue: AgencyIdentity
    impostor: AgencyIdentity  # calls itself cst; no directory lists its key
    readers: list[Any]  # the public identities every record is sealed to
    sighting: Sighting
    incident: Incident


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    sim = BusSimulator(tmp_path_factory.mktemp("agree"))
    old = sim.identities["cst"]
    new = AgencyIdentity.generate("cst")
    sim.update_directory(
        lambda body: edit.rotate_key(body, agency_id="cst", identity=new.public, now=ROTATED)
    )
    sim.update_directory(
        lambda body: edit.revoke_key(
            body,
            agency_id="cst",
            key_id=old.key_id.hex(),
            reason="leaked",
            now=REVOKED,
            compromised_since=COMPROMISED,
        )
    )
    base = feed(seed=5, sightings=1, incidents=1)
    return World(
        sim=sim,
        old_key=old,
        cst=new,
        rogue=sim.identities["rogue"],
        impostor=AgencyIdentity.generate("cst"),
        readers=[sim.identities[a].public for a in ("herts-police", "inspectorate")],
        sighting=next(r for r in base if isinstance(r, Sighting)),
        incident=next(r for r in base if isinstance(r, Incident)),
    )


# --- Contents. -------------------------------------------------------------------------------------


def _sighting(w: World, record_id: str, variant: int = 0) -> Sighting:
    data = w.sighting.model_dump(mode="json")
    data["record_id"] = record_id
    data["place"]["force_area"] = "HERTFORDSHIRE"
    data["description"] = f"variant {variant}"
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[])
    return Sighting.model_validate(data)


def _incident(w: World, record_id: str) -> Incident:
    data = w.incident.model_dump(mode="json")
    data["record_id"] = record_id
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[])
    return Incident.model_validate(data)


def _encode(record: Any) -> tuple[bytes, bytes]:
    return REGISTRY.encode(record.SCHEMA, record.to_avro())


# --- The hostile mix: operations, and the topic they write. -------------------------------------

IDX = st.integers(0, 1_000)
OPS = st.one_of(
    st.tuples(st.just("cst"), st.integers(1, 6)),
    st.tuples(st.just("cst"), st.integers(1, 2)),
    st.tuples(st.just("withhold"), st.integers(1, 3)),
    st.tuples(st.just("release"), IDX, st.booleans()),
    st.tuples(st.just("skip"), st.sampled_from([1, 2, 3, DEFAULT_MAX_GAP])),
    st.tuples(st.just("jump"), st.integers(1, 3)),
    st.tuples(st.just("fork"), st.booleans()),
    st.tuples(st.just("copy"), IDX, st.sampled_from([0, 1, 2])),
    st.tuples(st.just("untimed"), IDX),
    st.tuples(st.just("reuse"), IDX),
    st.tuples(st.just("correct"), IDX, st.sampled_from(["same", "kind", "header", "unknown"])),
    st.tuples(st.just("retract"), IDX),
    st.tuples(st.just("rogue"), st.sampled_from([0, 2])),
    st.tuples(st.just("squat"), IDX, st.sampled_from([0, 2])),
    st.tuples(st.just("rogue_amend"), IDX, st.sampled_from([0, 2]), st.booleans()),
    st.tuples(st.just("erase"), IDX, st.booleans()),
    st.tuples(st.just("rogue_erase"), IDX, st.sampled_from([0, 2])),
    st.tuples(st.just("leaked"), st.sampled_from([0, 1, 2]), st.booleans()),
    st.tuples(st.just("impostor")),
    st.tuples(st.just("heartbeat")),
    st.tuples(st.just("bad_content"), st.booleans()),
    st.tuples(st.just("garbage"), st.binary(max_size=120)),
    st.tuples(st.just("truncate"), IDX, st.integers(1, 10_000)),
    st.tuples(st.just("tamper"), IDX, st.integers(0, 10_000)),
)


@dataclass
class Stream:
    """A producer's stream as its signer sees it: the next sequence and the last digest."""

    partition: int
    next_seq: int = 0
    last_digest: bytes = bytes(32)


@dataclass
class Topic:
    """Builds the sightings topic from operations, with real keys and envelopes."""

    w: World
    log: list[Message] = field(default_factory=list)
    cst: Stream = field(default_factory=lambda: Stream(0))
    old: Stream = field(default_factory=lambda: Stream(0))
    rogue: dict[int, Stream] = field(default_factory=lambda: {0: Stream(0), 2: Stream(2)})
    cst_ids: list[str] = field(default_factory=list)  # every record id CST signed
    withheld: list[bytes] = field(default_factory=list)
    ids: int = 0

    def new_id(self) -> str:
        self.ids += 1
        return str(uuid.UUID(int=self.ids, version=4))

    def append(
        self, value: bytes, partition: int = 0, at: datetime | None = None, *, timed: bool = True
    ) -> None:
        """Append at the end of ``partition``, at broker time ``at`` (default: the next second;
        none at all when not ``timed``: a topic switched away from LogAppendTime)."""
        offset = sum(1 for m in self.log if m.partition == partition)
        when = at if at is not None else BASE + timedelta(seconds=len(self.log))
        self.log.append(Message(SIGHTINGS, partition, offset, value, when if timed else None))

    def sealed(
        self,
        identity: AgencyIdentity,
        stream: Stream,
        record: Any,
        kind: RecordKind,
        *,
        target: str | None = None,
        record_id: str | None = None,
        encoded: tuple[bytes, bytes] | None = None,
        sequence: int | None = None,
        prev: bytes | None = None,
        advance: bool = True,
    ) -> Sealed:
        fingerprint, payload = encoded if encoded is not None else _encode(record)
        rid = record_id or getattr(record, "record_id", None) or self.new_id()
        out = seal(
            identity,
            environment=ENV,
            topic=SIGHTINGS,
            kind=kind,
            sequence=stream.next_seq if sequence is None else sequence,
            prev_digest=stream.last_digest if prev is None else prev,
            schema_fingerprint=fingerprint,
            payload=payload,
            recipients=self.w.readers,
            partition=stream.partition,
            target_record_id=None if target is None else uuid.UUID(target),
            record_id=uuid.UUID(rid),
        )
        if advance:
            stream.next_seq = (stream.next_seq if sequence is None else sequence) + 1
            stream.last_digest = out.digest
        return out

    def pick(self, items: list[Any], i: int) -> Any:
        return items[i % len(items)] if items else None

    def apply(self, op: tuple[Any, ...]) -> None:  # noqa: PLR0912 - one case per op
        w = self.w
        name = op[0]
        if name in ("cst", "withhold"):
            for _ in range(op[1]):  # genuine records, delivered or held back
                rid = self.new_id()
                self.cst_ids.append(rid)
                value = self.sealed(w.cst, self.cst, _sighting(w, rid), RecordKind.SIGHTING).data
                if name == "cst":
                    self.append(value)
                else:
                    self.withheld.append(value)
        elif name == "release" and self.withheld:
            value = self.withheld.pop(op[1] % len(self.withheld))
            self.append(value, timed=op[2])
        elif name == "skip":
            self.cst.next_seq += op[1]  # records never sealed: a gap (or a jump) on the bus
        elif name == "jump":
            # The real key, far ahead: what a leaked key's fast-forward looks like.
            rid = self.new_id()
            self.cst_ids.append(rid)
            value = self.sealed(
                w.cst,
                self.cst,
                _sighting(w, rid),
                RecordKind.SIGHTING,
                sequence=self.cst.next_seq + DEFAULT_MAX_GAP + op[1],
                advance=False,
            ).data
            self.append(value)
        elif name == "fork":
            # Another record at the newest sequence, or the next one chained to something else.
            rid = self.new_id()
            seq = self.cst.next_seq - 1 if op[1] else self.cst.next_seq
            value = self.sealed(
                w.cst,
                self.cst,
                _sighting(w, rid, variant=7),
                RecordKind.SIGHTING,
                sequence=max(seq, 0),
                prev=bytes([7]) * 32,
                advance=False,
            ).data
            self.append(value)
        elif name == "copy" and self.log:
            self.append(self.pick(self.log, op[1]).value, partition=op[2])
        elif name == "untimed" and self.log:
            m = self.pick(self.log, op[1])
            self.append(m.value, m.partition, timed=False)
        elif name == "reuse" and self.cst_ids:
            rid = self.pick(self.cst_ids, op[1])
            record = _sighting(w, rid, variant=3)
            self.append(self.sealed(w.cst, self.cst, record, RecordKind.SIGHTING).data)
        elif name == "correct":
            target = self.pick(self.cst_ids, op[1]) if op[2] != "unknown" else None
            target = target or self.new_id()
            rid = self.new_id()
            self.cst_ids.append(rid)
            replacement: Sighting | Incident = (
                _incident(w, target) if op[2] == "kind" else _sighting(w, target, variant=1)
            )
            correction = Correction(
                record_id=rid,
                corrects_record_id=target,
                corrected_at=NOW,
                reason="corrected",
                replacement=replacement,
                grading=w.sighting.grading.model_copy(update={"tlp": Tlp.GREEN}),
            )
            header = self.new_id() if op[2] == "header" else target
            value = self.sealed(
                w.cst, self.cst, correction, RecordKind.CORRECTION, target=header
            ).data
            self.append(value)
        elif name == "retract" and self.cst_ids:
            target = self.pick(self.cst_ids, op[1])
            rid = self.new_id()
            self.cst_ids.append(rid)
            retraction = Retraction(
                record_id=rid,
                retracts_record_id=target,
                retracted_at=NOW,
                reason="withdrawn",
                grading=w.sighting.grading,
            )
            value = self.sealed(
                w.cst, self.cst, retraction, RecordKind.RETRACTION, target=target
            ).data
            self.append(value)
        elif name == "erase":
            # CST erases one of its ids (a record, or an amendment's id: target_not_content),
            # or an id nobody published yet (pending until it comes).
            target = self.pick(self.cst_ids, op[1]) if op[2] and self.cst_ids else self.new_id()
            rid = self.new_id()
            self.cst_ids.append(rid)
            erasure = Erasure(
                record_id=rid,
                erases_record_id=target,
                erased_at=NOW,
                legal_basis="UK GDPR Art. 17",
                reason="erase",
                grading=w.sighting.grading,
            )
            value = self.sealed(w.cst, self.cst, erasure, RecordKind.ERASURE, target=target).data
            self.append(value)
        elif name == "rogue_erase" and self.cst_ids:
            stream = self.rogue[op[2]]
            target = self.pick(self.cst_ids, op[1])
            erasure = Erasure(
                record_id=self.new_id(),
                erases_record_id=target,
                erased_at=NOW,
                legal_basis="UK GDPR Art. 17",
                reason="foreign",
                grading=w.sighting.grading,
            )
            value = self.sealed(w.rogue, stream, erasure, RecordKind.ERASURE, target=target).data
            self.append(value, op[2])
        elif name == "rogue":
            stream = self.rogue[op[1]]
            record = _sighting(w, self.new_id())
            self.append(self.sealed(w.rogue, stream, record, RecordKind.SIGHTING).data, op[1])
        elif name == "squat" and self.cst_ids:
            stream = self.rogue[op[2]]
            record = _sighting(w, self.pick(self.cst_ids, op[1]), variant=9)
            self.append(self.sealed(w.rogue, stream, record, RecordKind.SIGHTING).data, op[2])
        elif name == "rogue_amend" and self.cst_ids:
            stream = self.rogue[op[2]]
            target = self.pick(self.cst_ids, op[1])
            rid = self.new_id()
            if op[3]:
                amendment: Any = Retraction(
                    record_id=rid,
                    retracts_record_id=target,
                    retracted_at=NOW,
                    reason="foreign",
                    grading=w.sighting.grading,
                )
                kind = RecordKind.RETRACTION
            else:
                amendment = Correction(
                    record_id=rid,
                    corrects_record_id=target,
                    corrected_at=NOW,
                    reason="foreign",
                    replacement=_sighting(w, target, variant=8),
                    grading=w.sighting.grading,
                )
                kind = RecordKind.CORRECTION
            value = self.sealed(w.rogue, stream, amendment, kind, target=target).data
            self.append(value, op[2])
        elif name == "leaked":
            # CST's old key: fine before the leak, revoked inside the window, retired after.
            rid = self.pick(self.cst_ids, self.ids) if op[2] and self.cst_ids else self.new_id()
            self.cst_ids.append(rid)
            record = _sighting(w, rid, variant=5)
            value = self.sealed(w.old_key, self.old, record, RecordKind.SIGHTING).data
            self.append(value, at=ERAS[op[1]])
        elif name == "impostor":
            record = _sighting(w, self.new_id())
            value = self.sealed(
                w.impostor, Stream(0), record, RecordKind.SIGHTING, sequence=0, advance=False
            ).data
            self.append(value)
        elif name == "heartbeat":
            beat = Heartbeat(producer_id="cst", sent_at=NOW, interval_ms=30_000, streams=())
            value = self.sealed(
                w.cst, self.cst, beat, RecordKind.HEARTBEAT, record_id=self.new_id(), advance=False
            ).data
            self.append(value)
        elif name == "bad_content":
            rid = self.new_id()
            self.cst_ids.append(rid)
            # A schema no registry knows, or a sighting whose payload carries another record id
            # than its header.
            encoded = (bytes(8), b"\x00" * 30) if op[1] else _encode(_sighting(w, self.new_id()))
            value = self.sealed(
                w.cst, self.cst, None, RecordKind.SIGHTING, record_id=rid, encoded=encoded
            ).data
            self.append(value)
        elif name == "garbage":
            self.append(op[1])
        elif name == "truncate" and self.log:
            value = self.pick(self.log, op[1]).value
            self.append(value[: op[2] % max(len(value), 1)])
        elif name == "tamper" and self.log:
            flipped = bytearray(self.pick(self.log, op[1]).value)
            if flipped:
                flipped[op[2] % len(flipped)] ^= 1 << (op[2] % 8)
            self.append(bytes(flipped))


def in_read_order(log: list[Message]) -> list[Message]:
    """The auditor reads partition by partition, in offset order: the consumer gets that too."""
    return sorted(log, key=lambda m: (m.partition, m.offset))


def batches(items: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
    i = 0
    for n in sizes:
        if i >= len(items):
            return
        yield items[i : i + n]
        i += n
    if i < len(items):
        yield items[i:]


# --- The two readers. --------------------------------------------------------------------------


def outcome(v: Verdict) -> tuple[Any, ...]:
    """What must agree: where, accepted or why not, whose, and what it did to its stream."""
    p = v.position
    return (
        (p.partition, p.offset),
        v.reason.value if v.reason is not None else "accepted",
        v.authentic,
        v.producer_id,
        v.record_id,
        v.sequence,
        v.gap,
        v.filled,
    )


def consumer_verdicts(
    w: World, messages: list[Message], sizes: list[int], tmp: Path
) -> tuple[list[Any], list[tuple[int, int, str]]]:
    """The consumer's verdicts, and the amendments it refused later (when their target came)."""
    consumer = SimulatedConsumer(
        w.sim, "herts-police", store_path=tmp / "herts.sqlite", policy=STORE_ALL
    )
    try:
        out: list[Verdict] = []
        for batch in batches(messages, sizes):
            raws = [
                RawRecord(m.topic, m.partition, m.offset, m.value, m.appended_at) for m in batch
            ]
            out += consumer.deliver(raws)
        late = [
            (x.source.partition, x.source.offset, x.refusal.reason.value)
            for x in consumer.late_refusals
        ]
        return out, late
    finally:
        consumer.close()


def auditor_verdicts(
    w: World,
    messages: list[Message],
    *,
    batch_size: int,
    every: int,
    stop_after: int | None,
    tmp: Path,
) -> tuple[list[Verdict], list[dict[str, Any]]]:
    """Run the real audit (stopped and resumed when ``stop_after``), recording the judge's
    verdicts, and return them with the report's findings."""
    seen: list[Verdict] = []

    class Recording(AuditJudge):
        def judge_batch(self, prepared: Sequence[Prepared]) -> list[Verdict]:
            verdicts = super().judge_batch(prepared)
            seen.extend(verdicts)
            return verdicts

    ckpt = tmp / "audit.ckpt"
    report = tmp / "report.json"

    def run(stop: int | None) -> Any:
        return audit(
            source=MemorySource(SIGHTINGS, messages),
            history=w.sim.history,
            config=AuditConfig(environment=ENV),
            identity=w.sim.identities["inspectorate"],
            registry=REGISTRY,
            checkpoint=ckpt,
            report=report,
            workers=2,
            batch_size=batch_size,
            checkpoint_every=every,
            stop_after=stop,
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_run, "AuditJudge", Recording)
        if stop_after is not None:
            run(stop_after)
        result = run(None)
    assert result.complete
    return seen, json.loads(report.read_text())["findings"]


#: The fuzz profile's settings; in CI fewer examples than the other fuzz targets, since each one
#: commits a store and a ledger (with fsync) a few dozen times.
AGREE = settings(FUZZ, max_examples=100) if FUZZ.max_examples <= 150 else FUZZ

#: Findings the auditor makes over the whole topic, beside the per-record verdicts.
TOPIC_WIDE = {
    ReasonCode.CLOCK_SKEW.value,
    ReasonCode.CHAIN_GAP.value,
    ReasonCode.CHAIN_REORDER.value,
}


@AGREE
@given(
    ops=st.lists(OPS, min_size=12, max_size=48),
    consumer_sizes=st.lists(st.integers(1, 12), max_size=40),
    batch_size=st.integers(1, 9),
    every=st.integers(1, 25),
    stop_after=st.none() | st.integers(1, 30),
)
def test_consumer_and_auditor_agree_on_every_record(
    world: World,
    *,
    ops: list[tuple[Any, ...]],
    consumer_sizes: list[int],
    batch_size: int,
    every: int,
    stop_after: int | None,
) -> None:
    topic = Topic(world)
    for op in ops:
        topic.apply(op)
    messages = in_read_order(topic.log)
    with tempfile.TemporaryDirectory(prefix="agree-") as name:
        tmp = Path(name)
        by_consumer, late = consumer_verdicts(world, messages, consumer_sizes, tmp)
        by_auditor, findings = auditor_verdicts(
            world, messages, batch_size=batch_size, every=every, stop_after=stop_after, tmp=tmp
        )
    # Every record judged exactly once by each, in the same order, with the same verdict.
    assert [outcome(v) for v in by_auditor] == [outcome(v) for v in by_consumer]
    # The report says the same: a finding for each refusal, at its offset, with its reason ...
    # (and for each amendment refused later, when its target came, at the amendment's offset).
    refused = Counter(
        (v.position.partition, v.position.offset, v.reason.value)
        for v in by_consumer
        if v.reason is not None
    )
    refused.update(late)
    reported = Counter(
        (f["partition"], f["offset"], f["reason"])
        for f in findings
        if f["reason"] not in TOPIC_WIDE
    )
    assert reported == refused
    # ... a reorder warning for each late record that filled a gap, and gaps only where revealed.
    filled = sorted((v.position.partition, v.position.offset) for v in by_consumer if v.filled)
    reorders = sorted(
        (f["partition"], f["offset"]) for f in findings if f["reason"] == ReasonCode.CHAIN_REORDER
    )
    assert reorders == filled
    revealed = {(v.position.partition, v.position.offset) for v in by_consumer if v.gap}
    assert {
        (f["partition"], f["offset"]) for f in findings if f["reason"] == ReasonCode.CHAIN_GAP
    } <= revealed

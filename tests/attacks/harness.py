"""The attack harness (after python-tuf's tests/test_updater_top_level_update.py).

Every case feeds hostile records to a :class:`tests.simulator.SimulatedConsumer` (the real pipeline
and the real SQLite store) and asserts three things, as python-tuf does for each attack:

1. the exact reason code of the typed error (``Rejected.reason``);
2. the quarantine row the store now holds at its offset, with that reason: a bounded prefix of
   the raw bytes (byte for byte), their size and digest;
3. trusted state unchanged: stored rows, receipts, amendments and chain high-water marks are
   exactly as before, and the offsets moved only past the hostile records (the consumer commits
   past what it quarantined, so a poison record is read once, not for ever).

Each case also appends a line to the report card's input (:mod:`tests.attacks.report`).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from consumers.pipeline import RawRecord
from intelbus.envelope import merkle
from intelbus.envelope.verify import record_digest
from intelbus.envelope.wire import (
    FORMAT_V3,
    SIGNATURE_BYTES,
    BatchProof,
    batch_root_message,
    encode_trailer,
    parse,
    sign_prefix,
)
from intelbus.errors import ReasonCode
from intelbus.identity import AgencyIdentity
from intelbus.records import Sighting
from intelbus.samples import feed
from intelbus.trust.judge import QUARANTINE_PREFIX_BYTES, stream_key
from intelbus.trust.model import Effect
from tests.attacks.report import attack_result, genuine_result
from tests.simulator import SIGHTINGS, BusSimulator, SimulatedConsumer, TrustedState


def sighting(area: str = "HERTFORDSHIRE", tlp: str = "GREEN", seed: int = 31) -> Sighting:
    """A fresh sighting Herts stores (its own area, GREEN, handling P, assessment B)."""
    data = feed(seed=seed, sightings=1, incidents=0)[0].model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = area
    data["grading"].update(
        tlp=tlp, handling_code="P", handling_conditions=[], assessment="B", source_evaluation="S1"
    )
    return Sighting.model_validate(data)


def trailer_of(value: bytes) -> bytes:
    """What follows a record's signed bytes: its signature (v1, v2) or its proof trailer (v3)."""
    return value[len(parse(value).signed_bytes) :]


def resign(identity: AgencyIdentity, body: bytes) -> bytes:
    """A record's signed bytes (its body; in v3 its leaf) signed by ``identity`` as its format
    signs a record alone: prefix and body (v1, v2), or a batch of one (v3: the root message of
    the one-leaf tree, built from the body's own header). What an insider or a thief with the
    key does."""
    version = body[4]
    if version != FORMAT_V3:
        return body + identity.sign(sign_prefix(version) + body)
    # The header as parse() reads it: the body behind a placeholder batch-of-one trailer.
    header = parse(body + encode_trailer(BatchProof(1, 0, ()), bytes(SIGNATURE_BYTES))).header
    signature = identity.sign(batch_root_message(header, 1, merkle.root([body])))
    return body + encode_trailer(BatchProof(1, 0, ()), signature)


def inject(
    sim: BusSimulator,
    value: bytes,
    *,
    topic: str = SIGHTINGS,
    partition: int | None = None,
    appended_at: datetime | None = None,
) -> RawRecord:
    """Append hostile bytes to the simulated topic (as anyone with write access could), on CST's
    partition unless another is given."""
    where = sim.partition_of("cst") if partition is None else partition
    return sim.append(topic, value, partition=where, appended_at=appended_at)


@dataclass(frozen=True)
class Verdict:
    """What one attack did: the observed reasons and whether trusted state held."""

    reasons: tuple[ReasonCode | None, ...]
    unchanged: bool


def _advanced(before: TrustedState, raws: list[RawRecord]) -> tuple[tuple[str, int, int], ...]:
    offsets = {(t, p): o for t, p, o in before.offsets}
    for r in raws:
        offsets[(r.topic, r.partition)] = max(offsets.get((r.topic, r.partition), 0), r.offset + 1)
    return tuple(sorted((t, p, o) for (t, p), o in offsets.items()))


def _expected_chain(
    before: TrustedState, authentic: list[RawRecord]
) -> tuple[tuple[str, str, int, bytes], ...]:
    chain = {(p, s): (p, s, seq, d) for p, s, seq, d in before.chain}
    for raw in authentic:
        sealed = parse(raw.value)
        h = sealed.header
        k = stream_key(h, raw.partition)
        label = f"{k.topic}/{k.partition}/{k.epoch}"
        chain[(h.producer_id, label)] = (
            h.producer_id,
            label,
            h.sequence,
            record_digest(sealed.signed_bytes, h.format_version),
        )
    return tuple(sorted(chain.values()))


def attack(
    consumer: SimulatedConsumer,
    raws: list[RawRecord],
    expected: ReasonCode | set[ReasonCode],
    *,
    case: str,
    authentic: bool = False,
    report: bool = True,
) -> Verdict:
    """Deliver ``raws`` as one batch; assert each is quarantined under ``expected`` and that
    trusted state did not change (module docstring). ``expected`` as a set allows any of them,
    for exhaustive mutations whose exact check depends on which bit moved.

    ``authentic``: the records carry a genuine signature of their producer's valid key (an
    insider, or a compromised producer). The pipeline then advances that producer's own stream
    to them by design (the chain describes what the producer signed, readable or not); every
    other part of trusted state must still be unchanged, and the stream must stand exactly at
    the last such record.
    """
    allowed = expected if isinstance(expected, set) else {expected}
    before = consumer.trusted_state()
    results = consumer.deliver(raws)
    after = consumer.trusted_state()
    reasons = tuple(v.reason for v in results)
    chain = _expected_chain(before, raws if authentic else [])
    unchanged = (
        (after.records, after.summary) == (before.records, before.summary)
        and after.chain == chain
        and after.offsets == _advanced(before, raws)
        and after.quarantined == before.quarantined + len(raws)
    )
    if report:
        _report(case, allowed, reasons, unchanged)
    accepted = [i for i, r in enumerate(reasons) if r is None]
    assert not accepted, f"{case}: {len(accepted)} hostile record(s) accepted, e.g. #{accepted[0]}"
    wrong = [r for r in reasons if r not in allowed]
    assert not wrong, f"{case}: reasons {sorted(set(map(str, wrong)))}, expected {allowed}"
    rows = {(q.topic, q.partition, q.offset): q for q in consumer.store.quarantine_entries(10**6)}
    for raw, reason in zip(raws, reasons, strict=True):
        row = rows.get((raw.topic, raw.partition, raw.offset))
        assert row is not None, f"{case}: no quarantine row at offset {raw.offset}"
        assert (row.raw_prefix, row.raw_size, row.reason) == (
            raw.value[:QUARANTINE_PREFIX_BYTES],
            len(raw.value),
            str(reason),
        )
        assert row.raw_digest == hashlib.blake2b(raw.value, digest_size=32).digest()
    assert (after.records, after.summary) == (before.records, before.summary), f"{case}: rows"
    assert after.chain == chain, f"{case}: chain high-water marks moved"
    assert after.offsets == _advanced(before, raws), f"{case}: offsets not just past the batch"
    assert after.quarantined == before.quarantined + len(raws)
    return Verdict(reasons, unchanged)


def _report(
    case: str,
    allowed: set[ReasonCode],
    reasons: tuple[ReasonCode | None, ...],
    unchanged: bool,
) -> None:
    if len(allowed) == 1:
        (expected,) = allowed
        observed = set(reasons)
        outcome = "accepted" if None in observed else "rejected"
        reason = "|".join(sorted(str(r) for r in observed if r is not None)) or "none"
        attack_result(
            case=case,
            source="simulated",
            expected_reason=str(expected),
            outcome=outcome,
            reason=reason,
            trusted_state_unchanged=unchanged,
        )
        return
    # Several allowed reasons (which check fires depends on which bit moved): one line per
    # observed reason, each one asserted to be among the allowed ones by the caller.
    for observed in sorted(set(reasons), key=str):
        n = sum(1 for r in reasons if r == observed)
        attack_result(
            case=f"{case}[{n}x]",
            source="simulated",
            expected_reason=str(observed) if observed in allowed else "|".join(sorted(allowed)),
            outcome="accepted" if observed is None else "rejected",
            reason=str(observed) if observed is not None else "none",
            trusted_state_unchanged=unchanged,
        )


def genuine_flows(
    consumer: SimulatedConsumer,
    sim: BusSimulator,
    *,
    case: str,
    count: int = 3,
    publisher: str = "cst",
) -> list[str]:
    """After an attack, CST's next genuine records must still be kept, every one of them: publish
    ``count`` fresh sightings through the real publisher, deliver them, assert each is stored.
    Returns their record ids. Reported as the "genuine records lost to an attack" figure."""
    pub = sim.publisher(publisher)
    start = len(sim.log)
    ids = [pub.publish(sighting(seed=900 + i)).record_id for i in range(count)]
    verdicts = consumer.deliver(sim.log[start:])
    kept = sum(1 for v in verdicts if v.accepted and v.effect is Effect.STORED)
    genuine_result(case=case, source="simulated", published=count, kept=kept)
    lost = [
        (v.record_id, v.reason) for v in verdicts if not (v.accepted and v.effect is Effect.STORED)
    ]
    assert not lost, f"{case}: genuine records lost after the attack: {lost}"
    for rid in ids:
        view = consumer.stored(rid, publisher)
        assert view is not None, f"{case}: {rid} not live"
        assert view.status == "live", f"{case}: {rid} not live"
    return ids

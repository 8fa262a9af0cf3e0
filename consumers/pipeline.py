"""The consumer's decision for one Kafka record, with no I/O: accept, withhold, amend or quarantine.

Steps (each failure is a typed :class:`~intelbus.errors.RecordError`, quarantined under its
reason code; nothing here raises anything else for bad input):

1. Size cap, before any parsing.
2. Verify the envelope against the directory history (envelope.md steps 1-7), judging revocation
   at the broker's append time as well as the signed creation time.
3. Check the producer stream's hash chain: replays, forks and fast-forward jumps are refused; a gap
   is accepted and reported. The chain advances for every authentic record, even one this agency
   cannot read, because the chain describes the producer's stream, not what we may see of it.
4. Not addressed to this agency: keep a receipt (record id and digest), nothing else.
5. Decrypt (only now, after the signature), decode with the schema registry, validate the model.
   The record kind in the signed header must match the schema.
6. Corrections and retractions: only the target's own producer may amend it.
7. Apply the agency's sharing policy: store, store redacted, withhold (receipt), or quarantine.

A heartbeat addressed to this agency stores nothing but a :class:`Beat`: the time the broker
appended it, which the consumer's liveness watch (consumers/liveness.py) compares with the promised
interval to raise a frozen-feed alarm.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from intelbus.chain import ChainState, ChainStep, advance
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope import RecordKind, open_record, verify
from intelbus.envelope.unseal import UnwrapCache
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import MAX_RECORD_BYTES
from intelbus.errors import OversizeEnvelope, ReasonCode, RecordError, SchemaViolation
from intelbus.identity import AgencyIdentity
from intelbus.policy.decide import decide
from intelbus.policy.redact import redact
from intelbus.policy.rules import Action, SharingPolicy
from intelbus.records import RECORD_TYPES, Correction, Heartbeat, Incident, Retraction, Sighting
from intelbus.serde.registry import SchemaRegistry

NOT_ADDRESSED_RULE = "not-addressed"
_SCHEMA_KIND = {
    Sighting.SCHEMA: RecordKind.SIGHTING,
    Incident.SCHEMA: RecordKind.INCIDENT,
    Correction.SCHEMA: RecordKind.CORRECTION,
    Retraction.SCHEMA: RecordKind.RETRACTION,
    Heartbeat.SCHEMA: RecordKind.HEARTBEAT,
}


class ForeignTarget(RecordError):
    """A correction or retraction of a record published by another producer."""

    reason = ReasonCode.FOREIGN_TARGET


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    value: bytes
    appended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Kept:
    """A record stored (possibly redacted)."""

    record_id: str
    producer_id: str
    kind: str
    sequence: int
    digest: bytes
    created_at: datetime
    action: Action
    rule_id: str
    policy_hash: str
    redacted_fields: tuple[str, ...]
    tlp: str
    classification: str
    force_area: str | None
    occurred_at: datetime | None
    payload: dict[str, object]


@dataclass(frozen=True, slots=True)
class Beat:
    """A verified heartbeat addressed to us: its producer promises another within ``interval_ms``."""

    producer_id: str
    interval_ms: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Receipt:
    """A record withheld (by policy, or not addressed to us): only its id, digest and rule."""

    record_id: str
    producer_id: str
    digest: bytes
    rule_id: str
    policy_hash: str


@dataclass(frozen=True, slots=True)
class Amend:
    """A correction or retraction of an earlier record of the same producer."""

    kind: str  # "correction" | "retraction"
    record_id: str
    target_record_id: str
    producer_id: str
    at: datetime
    reason: str
    new_payload: dict[str, object] | None
    receipt: Receipt | None  # set when policy withholds the corrected content


@dataclass(frozen=True, slots=True)
class Rejected:
    """A quarantined record: the reason code and a message with ids only."""

    reason: ReasonCode
    message: str
    record_id: str | None
    producer_id: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision for one raw record, and the chain state to persist with it."""

    raw: RawRecord
    result: Kept | Receipt | Amend | Rejected | Beat
    chain: ChainState | None
    gap: tuple[int, int] | None = None


def _beat(rid: str, producer_id: str, value: dict[str, Any]) -> Beat:
    """A heartbeat's promise, or SchemaViolation when it fails its model or speaks for another."""
    try:
        beat = Heartbeat.from_avro_dict(value)
    except ValidationError as e:
        raise SchemaViolation(f"heartbeat {rid}: {e.error_count()} validation error(s)") from None
    if beat.producer_id != producer_id:
        # Signed by one producer, speaking for another: it must not keep that feed alive.
        raise SchemaViolation(f"heartbeat {rid} by {producer_id} names another producer")
    return Beat(producer_id, beat.interval_ms, beat.sent_at)


class Pipeline:
    """An agency's pure record pipeline. Holds the chain states it has advanced (in memory)."""

    def __init__(
        self,
        *,
        identity: AgencyIdentity,
        directory: DirectoryHistory,
        registry: SchemaRegistry,
        policy: SharingPolicy,
        environment: str,
        chain: dict[tuple[str, str], ChainState],
        producer_of: Callable[[str], str | None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if policy.agency != identity.agency_id:
            raise ValueError(f"policy is for {policy.agency}, identity is {identity.agency_id}")
        self.identity = identity
        self.directory = directory
        self.registry = registry
        self.policy = policy
        self.environment = environment
        self.chain = dict(chain)
        self.producer_of = producer_of
        self.clock = clock
        self._batch_producers: dict[str, str] = {}
        self._unwrap = UnwrapCache(identity)

    def reset(self, chain: dict[tuple[str, str], ChainState]) -> None:
        """Forget in-memory state (after a failed commit or a rebalance) and start from ``chain``."""
        self.chain = dict(chain)
        self._batch_producers.clear()

    def batch_committed(self) -> None:
        """The store now holds what this batch accepted; the in-batch lookups can go."""
        self._batch_producers.clear()

    def process(self, raw: RawRecord) -> Outcome:
        """Decide one record. Never raises for bad input: failures become :class:`Rejected`."""
        verified: VerifiedRecord | None = None
        step: ChainStep | None = None
        result: Kept | Receipt | Amend | Rejected | Beat
        try:
            if len(raw.value) > MAX_RECORD_BYTES:  # step 1
                raise OversizeEnvelope(
                    f"record of {len(raw.value)} bytes exceeds {MAX_RECORD_BYTES}"
                )
            verified = verify(  # step 2
                raw.value,
                self.directory,
                expected_environment=self.environment,
                expected_topic=raw.topic,
                witnessed_at=raw.appended_at,
            )
            h = verified.header
            key = (h.producer_id, h.topic)
            state = self.chain.get(key) or ChainState.empty(h.producer_id, h.topic)
            step = advance(
                state, sequence=h.sequence, prev_digest=h.prev_digest, digest=verified.digest
            )  # step 3
            self.chain[key] = step.state
            result = self._decide(verified)
        except RecordError as e:
            header = verified.header if verified is not None else None
            result = Rejected(
                e.reason,
                str(e),
                str(header.record_id) if header else None,
                header.producer_id if header else None,
            )
        return Outcome(raw, result, step.state if step else None, step.gap if step else None)

    def _decide(self, verified: VerifiedRecord) -> Kept | Receipt | Amend | Beat:
        h = verified.header
        rid = str(h.record_id)
        if self.identity.agency_id not in h.recipient_ids:  # step 4
            return Receipt(
                rid, h.producer_id, verified.digest, NOT_ADDRESSED_RULE, self.policy.policy_hash
            )
        payload = open_record(verified, self.identity, self._unwrap)  # step 5
        name, value = self.registry.decode(h.schema_fingerprint, payload)
        if _SCHEMA_KIND.get(name) is not h.kind:
            raise SchemaViolation(f"record {rid}: header kind {h.kind.name} but schema {name}")
        if name == Heartbeat.SCHEMA:
            return _beat(rid, h.producer_id, value)
        try:
            model = RECORD_TYPES[name].from_avro(value)
        except ValidationError as e:
            raise SchemaViolation(f"record {rid}: {e.error_count()} validation error(s)") from None
        if model.record_id != rid:
            raise SchemaViolation(f"record {rid}: payload carries another record id")
        if isinstance(model, (Correction, Retraction)):  # step 6
            target = (
                model.corrects_record_id
                if isinstance(model, Correction)
                else model.retracts_record_id
            )
            owner = self._batch_producers.get(target) or self.producer_of(target)
            if owner is not None and owner != h.producer_id:
                raise ForeignTarget(
                    f"record {rid} by {h.producer_id} amends {target}, published by {owner}"
                )
        facts = model.replacement.facts() if isinstance(model, Correction) else model.facts()
        decision = decide(self.policy, facts, self.clock())  # step 7
        if decision.action is Action.QUARANTINE:
            raise _PolicyQuarantine(f"record {rid} quarantined by policy rule {decision.rule_id}")
        receipt = Receipt(
            rid, h.producer_id, verified.digest, decision.rule_id, decision.policy_hash
        )
        if isinstance(model, Retraction):
            return Amend(
                "retraction",
                rid,
                model.retracts_record_id,
                h.producer_id,
                model.retracted_at,
                model.reason,
                None,
                None,
            )
        content: dict[str, object] = json.loads(model.model_dump_json())
        redacted: tuple[str, ...] = ()
        if decision.action is Action.REDACT:
            content, redacted = redact(content, decision.redact)
        if isinstance(model, Correction):
            raw_replacement = content.get("replacement")
            replacement = raw_replacement if isinstance(raw_replacement, dict) else None
            withheld = decision.action is Action.WITHHOLD
            return Amend(
                "correction",
                rid,
                model.corrects_record_id,
                h.producer_id,
                model.corrected_at,
                model.reason,
                None if withheld else replacement,
                receipt if withheld else None,
            )
        if decision.action is Action.WITHHOLD:
            return receipt
        self._batch_producers[rid] = h.producer_id
        return Kept(
            record_id=rid,
            producer_id=h.producer_id,
            kind=model.KIND,
            sequence=h.sequence,
            digest=verified.digest,
            created_at=h.created_at,
            action=decision.action,
            rule_id=decision.rule_id,
            policy_hash=decision.policy_hash,
            redacted_fields=redacted,
            tlp=facts.tlp.value,
            classification=facts.classification.value,
            force_area=facts.force_area,
            occurred_at=facts.occurred_at,
            payload=content,
        )


class _PolicyQuarantine(RecordError):
    reason = ReasonCode.POLICY_QUARANTINE

"""The one judge: a verified record and a snapshot of trusted state in, a verdict out. No I/O.

Consumers and auditors both call :class:`Judge`; a store only persists what it decided
(:class:`~intelbus.trust.model.Batch`), and the CLI only renders it. The checks, in order (each
refusal is a typed :class:`~intelbus.errors.RecordError` with its stable reason code):

1. **Intake** (:mod:`intelbus.trust.intake`, before the judge): size, broker time, envelope
   verification (key valid for this producer, role and topic at the broker's append time,
   signature, environment, topic and partition), and for a recipient, opening and decoding.
2. **Family**: a record's kind must belong on the topic it was read from (a sighting on a
   sightings topic, a heartbeat on a heartbeats topic): ``binding_mismatch``.
3. **Chain** (:mod:`intelbus.chain`): the record's place in its producer stream (producer, topic,
   partition, key epoch): ``chain_replay``, ``chain_fork``, ``chain_jump``, ``chain_duplicate``;
   gaps are accepted and reported, late records fill them. An authentic record in its place
   moves its stream even if a later check refuses it: the chain describes what the producer
   signed, not what this agency may keep.
4. **Identity**: a record is identified by (producer, record id). The same id again from the same
   producer is a copy at a new position (``chain_replay``) or a reuse (``record_id_reused``); another
   producer's use of an id never touches this producer's record.
5. **Contents** (when read): the decoded schema matches the signed kind, the payload carries the
   signed record id, an amendment's payload names the target its header names.
6. **Amendments**: a correction, retraction or erasure amends its own producer's record with that
   id. A target only another producer holds is ``foreign_target``; a target that is one of the
   producer's own amendments is ``target_not_content``; a correction may not change its record's
   kind or family (``kind_changed``); a target not held yet waits (pending) and is applied when it
   arrives. An erasure (issue 16) must name its target in its signed header (format 2), so every
   agency holding the target applies it, addressed or not; it ends the record's contents for good:
   a correction that comes after it is kept as a version without contents.
7. **Policy** (consumers only): every version of a record (the original, and each correction's
   replacement) is judged exactly as a new record would be: stored, redacted, withheld or
   quarantined, with its own labels. A retraction or an erasure only removes information, so it
   always applies, whatever its grading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from intelbus.chain import (
    DEFAULT_MAX_GAP,
    LEGACY_EPOCH,
    ChainState,
    Step,
    StreamKey,
    advance,
)
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import EnvelopeHeader
from intelbus.errors import (
    BindingMismatch,
    ChainError,
    ChainReplay,
    ForeignTarget,
    FutureTime,
    KindChanged,
    PolicyQuarantine,
    RecordError,
    RecordIdReused,
    SchemaViolation,
    TargetNotContent,
    UnhandledValue,
)
from intelbus.kinds import FAMILY_CONTENT, Family, RecordKind, family_of_topic, kind_belongs_on
from intelbus.policy.decide import decide
from intelbus.policy.facts import RecordFacts
from intelbus.policy.redact import redact
from intelbus.policy.rules import Action, SharingPolicy
from intelbus.records import Correction, Erasure, Heartbeat, Incident, Retraction, Sighting
from intelbus.trust.model import (
    AUDIT_RULE,
    NOT_ADDRESSED_RULE,
    SHREDDED_EPOCH_META,
    STATUS_OF_OUTCOME,
    AmendmentStatus,
    Batch,
    Change,
    Content,
    Effect,
    FeedBeat,
    HeldAmendment,
    HeldRecord,
    Labels,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    PendingAmendment,
    Prepared,
    Quarantined,
    RecordStatus,
    Snapshot,
    SnapshotKeys,
    Verdict,
    VersionDecision,
    VersionSource,
    VouchedHead,
)

#: How much of a refused record's bytes a quarantine row keeps (the whole record stays on Kafka).
QUARANTINE_PREFIX_BYTES = 4096
#: How far a signed time may lie after the broker's append time (or, without one, the reader's
#: clock) before the record is refused as ``future_time``: clocks drift, reports do not come from
#: the future. The auditor's clock-skew finding uses the same default.
DEFAULT_MAX_SKEW = timedelta(minutes=5)

_MODEL_OF_KIND: dict[RecordKind, type[Content]] = {
    RecordKind.SIGHTING: Sighting,
    RecordKind.INCIDENT: Incident,
    RecordKind.CORRECTION: Correction,
    RecordKind.RETRACTION: Retraction,
    RecordKind.ERASURE: Erasure,
    RecordKind.HEARTBEAT: Heartbeat,
}
_KIND_OF_MODEL: dict[type[Content], RecordKind] = {m: k for k, m in _MODEL_OF_KIND.items()}
_CHANGE_OF_KIND: dict[RecordKind, Change] = {
    RecordKind.CORRECTION: Change.CORRECTION,
    RecordKind.RETRACTION: Change.RETRACTION,
    RecordKind.ERASURE: Change.ERASURE,
}
#: The rule id of an erasure's version, and of a correction that came after a tombstone.
ERASURE_RULE = "erasure"
TOMBSTONE_RULE = "tombstone"
#: An auditor's decision on a record it did not open (a frozen value: one instance serves all).
_AUDIT_UNREAD = VersionDecision(Outcome.WITHHOLD, AUDIT_RULE, "")
_AMENDMENT_KINDS = frozenset(k for k in RecordKind if k.is_amendment)
_CONTENT_KINDS = frozenset(k for k in RecordKind if k.is_content)
#: :func:`kind_belongs_on` for every pair, read once per record instead of computed.
_BELONGS: dict[tuple[RecordKind, Family | None], bool] = {
    (k, f): kind_belongs_on(k, f) for k in RecordKind for f in (*Family, None)
}
#: Memos of what a record's header names (a topic's family, a stream's key): judging looks each
#: up once or twice per record, and a reader sees few distinct values. Bounded: cleared when full.
_MEMO_MAX = 4096
_FAMILY_OF: dict[str, Family | None] = {}
_STREAM_OF: dict[tuple[str, str, int, bytes], StreamKey] = {}


def _family(topic: str) -> Family | None:
    """:func:`family_of_topic`, remembered."""
    try:
        return _FAMILY_OF[topic]
    except KeyError:
        if len(_FAMILY_OF) >= _MEMO_MAX:
            _FAMILY_OF.clear()
        found = _FAMILY_OF[topic] = family_of_topic(topic)
        return found


@dataclass(frozen=True, slots=True)
class Reader:
    """Who judges: an agency with its sharing policy, or an auditor (``policy`` None), who keeps
    no content and judges integrity only."""

    agency_id: str | None
    policy: SharingPolicy | None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    max_gap: int = DEFAULT_MAX_GAP
    max_skew: timedelta = DEFAULT_MAX_SKEW
    #: The topics this reader reads, if it says: a heartbeat's vouched streams on other topics
    #: are not its to hold (a force that reads sightings only holds no incident).
    reads: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy.agency != self.agency_id:
            raise ValueError(f"policy is for {self.policy.agency}, reader is {self.agency_id}")
        if self.max_skew <= timedelta(0):
            raise ValueError("max_skew must be positive")


@dataclass(frozen=True, slots=True)
class LateRefusal:
    """A waiting amendment refused when its target arrived (foreign, or of another kind)."""

    producer_id: str
    source: VersionSource
    refusal: RecordError


def stream_key(header: EnvelopeHeader, read_partition: int) -> StreamKey:
    """The stream a verified record belongs to (intelbus/chain.py)."""
    partition = header.partition
    if partition is None:  # format v1: chained per partition read, one legacy epoch
        return StreamKey(header.producer_id, header.topic, read_partition, LEGACY_EPOCH)
    # Remembered: every record of a stream names the same one (a key is a frozen value, so the
    # shared instance is indistinguishable from a new one).
    slot = (header.producer_id, header.topic, partition, header.key_id)
    found = _STREAM_OF.get(slot)
    if found is None:
        if len(_STREAM_OF) >= _MEMO_MAX:
            _STREAM_OF.clear()
        found = _STREAM_OF[slot] = StreamKey(
            header.producer_id, header.topic, partition, header.key_id.hex()
        )
    return found


def keys_for(prepared: Sequence[Prepared]) -> SnapshotKeys:
    """What judging these records will look up (a store reads exactly this into a snapshot)."""
    streams: set[StreamKey] = set()
    ids: set[str] = set()
    for p in prepared:
        v = p.verified
        if v is None:
            continue
        key = stream_key(v.header, p.position.partition)
        streams.add(key)
        if key.legacy:
            streams.add(key.topic_wide())
        ids.add(str(v.record_id))
        if v.target_record_id is not None:
            ids.add(str(v.target_record_id))
        target = _payload_target(p.content)
        if target is not None:
            ids.add(target)
    return SnapshotKeys(frozenset(streams), frozenset(ids))


def quarantine_entry(
    prepared: Prepared,
    error: RecordError,
    *,
    authentic: bool,
    record_id: str | None,
    producer_id: str | None,
) -> Quarantined:
    """A quarantine row: a bounded prefix of the bytes, their digest and size, and the reason."""
    pos = prepared.position
    raw = prepared.raw
    return Quarantined(
        topic=pos.topic,
        partition=pos.partition,
        offset=pos.offset,
        raw_prefix=raw[:QUARANTINE_PREFIX_BYTES],
        raw_size=len(raw),
        raw_digest=hashlib.blake2b(raw, digest_size=32).digest(),
        reason=error.reason.value,
        message=str(error),
        record_id=record_id,
        producer_id=producer_id,
        authentic=authentic,
    )


class Judge:
    """Judges records in order against a snapshot, remembering what it accepted (no I/O).

    One instance per batch: records judged earlier in the batch are visible to later ones (a
    record and its retraction in one poll). :meth:`batch` gathers what to persist.
    """

    def __init__(self, reader: Reader, snapshot: Snapshot) -> None:
        self.reader = reader
        self._snapshot = snapshot
        self._heads: dict[StreamKey, ChainState] = dict(snapshot.heads)
        self._moved: dict[StreamKey, ChainState] = {}
        self._records: dict[tuple[str, str], HeldRecord] = dict(snapshot.records)
        # Who holds each record id: an amendment whose producer does not hold its target looks
        # here for another producer's (an auditor's judge holds many records: no scan).
        self._holders: dict[str, set[str]] = {}
        for producer, rid in self._records:
            self._holders.setdefault(rid, set()).add(producer)
        self._amendments: dict[tuple[str, str], HeldAmendment] = dict(snapshot.amendments)
        # Waiting amendments by target record id, then by their producer (so a record that
        # arrives finds its own and other producers' in one lookup, however many wait).
        self._pending: dict[str, dict[str, list[PendingAmendment]]] = {}
        self._load_pending(snapshot)
        self._new_records: list[NewRecord] = []
        self._new_versions: list[NewVersion] = []
        self._new_amendments: list[NewAmendment] = []
        self._applied: list[tuple[str, str, str]] = []
        self._quarantined: list[Quarantined] = []
        self._beats: list[FeedBeat] = []
        #: Encryption epochs this reader found destroyed (epoch id -> when): kept with the batch,
        #: so an auditor holding the store to the topic knows why nothing of those is held.
        self._shredded_epochs: dict[str, str] = {}
        #: Amendments accepted as pending earlier and refused now that their target arrived:
        #: the reader reports them at the amendment's own position (read them, then clear).
        self.late_refusals: list[LateRefusal] = []

    def load(self, snapshot: Snapshot) -> None:
        """Add trusted state read for keys this judge has not looked up yet.

        An auditor judges many batches with one judge between two commits of its ledger; before
        each batch it loads the keys that batch needs and the judge has not seen. State the judge
        already holds (loaded before, or decided since) wins: it is newer than the ledger.
        """
        for key, head in snapshot.heads.items():
            self._heads.setdefault(key, head)
        for rkey, held in snapshot.records.items():
            self._records.setdefault(rkey, held)
            self._holders.setdefault(rkey[1], set()).add(rkey[0])
        for akey, amendment in snapshot.amendments.items():
            self._amendments.setdefault(akey, amendment)
        self._load_pending(snapshot)

    def _load_pending(self, snapshot: Snapshot) -> None:
        for (producer, target), pending in snapshot.pending.items():
            by_producer = self._pending.setdefault(target, {})
            by_producer[producer] = [*pending, *by_producer.get(producer, [])]

    # -- the verdict ----------------------------------------------------------------------------------

    def judge(self, p: Prepared) -> Verdict:
        """Decide one record (module docstring). Never raises for bad input."""
        v = p.verified
        if v is None:
            error = p.error if p.error is not None else SchemaViolation("no verdict from intake")
            c = p.claim
            self._quarantine(p, error, False, c.record_id, c.producer_id)
            return Verdict(p.position, error, None, False, c.record_id, c.producer_id, c.sequence)
        h = v.header
        # The id's text is made once here and handed on: every later step reads it.
        rid = str(h.record_id)
        producer = h.producer_id
        kind = h.kind
        family = _family(p.position.topic)
        amendment = kind in _AMENDMENT_KINDS
        refusal: RecordError | None = None
        if not _BELONGS[kind, family]:
            refusal = BindingMismatch(
                f"record {rid}: a {kind.label} does not belong on {p.position.topic}"
            )
        elif h.format_version >= 2 and (h.target_record_id is not None) != amendment:
            # Format 2 names an amendment's target in what anyone can read (auditors, agencies not
            # addressed): an amendment that hides it, or another record that names one, is refused.
            what = "names no target" if amendment else "names a target"
            refusal = BindingMismatch(f"record {rid}: a {kind.label} that {what}")
        elif kind is RecordKind.ERASURE and h.format_version < 2:
            # Every holder of the target must see which record an erasure erases, addressed or
            # not; a format 1 header cannot say, and erasures are younger than format 2.
            refusal = BindingMismatch(f"record {rid}: an erasure must name its target (format 2)")
        if refusal is not None:
            self._quarantine(p, refusal, True, rid, producer)
            return Verdict(p.position, refusal, None, True, rid, producer, h.sequence)
        key = stream_key(h, p.position.partition)
        head_key, state = self._head(key)
        try:
            step = advance(
                state,
                sequence=h.sequence,
                prev_digest=h.prev_digest,
                digest=v.digest,
                max_gap=self.reader.max_gap,
            )
        except ChainError as e:
            self._quarantine(p, e, True, rid, producer)
            return Verdict(p.position, e, None, True, rid, producer, h.sequence, stream=key)
        self._heads[head_key] = step.state
        self._moved[head_key] = step.state
        effect: Effect | None = None
        try:
            effect, refusal = self._admit(p, v, rid, family, step.step)
        except RecordError as e:
            refusal = e
        except Exception as e:  # noqa: BLE001 - no signed record may stop a reader (issue 20)
            # Every value is bounded at the schema and the model; reaching here means a bound is
            # missing. The record is refused (its chain step stands: it is authentic and in its
            # place), and the error's type, never its message, names the defect.
            refusal = UnhandledValue(f"record {rid}: judging it raised {type(e).__name__}")
        if refusal is not None:
            self._quarantine(p, refusal, True, rid, producer)
        return Verdict(
            p.position,
            refusal,
            effect,
            True,
            rid,
            producer,
            h.sequence,
            stream=head_key,
            chain=step.state,
            gap=step.gap,
            evicted_gaps=step.evicted,
            filled=step.step is Step.FILL,
        )

    def _quarantine(
        self,
        p: Prepared,
        error: RecordError,
        authentic: bool,
        record_id: str | None,
        producer_id: str | None,
    ) -> None:
        self._quarantined.append(
            quarantine_entry(
                p, error, authentic=authentic, record_id=record_id, producer_id=producer_id
            )
        )

    def _head(self, key: StreamKey) -> tuple[StreamKey, ChainState]:
        """The stream's head; a v1 stream falls back to a legacy topic-wide head if a store made
        before partitions were bound holds one (it then keeps advancing that head)."""
        found = self._heads.get(key)
        if found is not None:
            return key, found
        if key.legacy:
            wide = key.topic_wide()
            legacy = self._heads.get(wide)
            if legacy is not None:
                return wide, legacy
        return key, ChainState.empty(key)

    # -- what an authentic record in its place does ---------------------------------------------------

    def _admit(
        self, p: Prepared, v: VerifiedRecord, rid: str, family: Family | None, step: Step
    ) -> tuple[Effect, RecordError | None]:
        h = v.header
        producer = h.producer_id
        content = self._content(p, h, rid)
        self._check_times(p, v, content)
        # --- crypto-shredding (issue 16) -----------------------------------------------------
        # Sealed to an encryption epoch whose key this reader destroyed: authentic, in its place
        # (its chain step stands) and timely; its contents are gone on purpose, so nothing of it
        # is kept and it is no refusal. An auditor (no policy) keeps no contents anyway: it judges
        # the record as one it did not open, so its ledger still registers it.
        if p.shredded is not None and self.reader.policy is not None:
            self._shredded_epochs[p.shredded.epoch_id] = p.shredded.destroyed_at
            return Effect.SHREDDED, None
        # --- end crypto-shredding ------------------------------------------------------------
        if h.kind is RecordKind.HEARTBEAT:
            if isinstance(content, Heartbeat):
                if content.producer_id != producer:
                    # Signed by one producer, speaking for another: it must not keep that feed alive.
                    raise SchemaViolation(f"heartbeat {rid} by {producer} names another producer")
                beat = self._beat(p, v, content, step)
                if beat is not None:
                    self._beats.append(beat)
            return Effect.HEARTBEAT, None
        self._check_identity(producer, rid, v.digest)
        source = self._source(p, v, rid, content)
        if h.kind in _CONTENT_KINDS:
            return self._new_record(p, producer, h.kind, content, source)
        assert family is not None  # noqa: S101 - kind_belongs_on() refused amendments elsewhere
        return self._amendment(p, v, family, content, source)

    def _beat(self, p: Prepared, v: VerifiedRecord, beat: Heartbeat, step: Step) -> FeedBeat | None:
        """What an authentic heartbeat may say about its feed, or None if it may not refresh it.

        Only a heartbeat that moves its producer's heartbeat chain forward speaks for the feed:
        a late one filling a gap (an old heartbeat appended again later) would otherwise lend the
        feed its new broker time. Its place must be signed (format 2: a format 1 heartbeat copied
        to another partition starts a new legacy stream), and its time must be the broker's, and
        not ahead of the reader's clock beyond the skew bound (a broker clock a year fast would
        keep a feed "fresh" for a year).
        """
        at = p.position.appended_at
        if step is Step.FILL or v.header.format_version < 2 or at is None:
            return None
        if at > self.reader.clock() + self.reader.max_skew:
            return None
        heads = tuple(
            VouchedHead(s.stream, s.partition, s.epoch, s.last_sequence)
            for s in beat.streams
            if s.bound and (self.reader.reads is None or s.stream in self.reader.reads)
        )
        return FeedBeat(v.producer_id, p.position.topic, at, beat.interval_ms, heads)

    def _check_times(self, p: Prepared, v: VerifiedRecord, content: Content | None) -> None:
        """Refuse a record that describes the future (issue 20, "Time").

        The reference is the broker's append time when there is one (so a consumer and an
        auditor, years later, decide alike), else the reader's clock.

        Raises:
            FutureTime: a signed time lies beyond the reference plus the skew bound.
        """
        reference = p.position.appended_at or self.reader.clock()
        limit = reference + self.reader.max_skew
        if content is None and v.header.created_at <= limit:
            return  # unopened: its creation time is the only time it states, and it is timely
        for what, when in _signed_times(v, content):
            if when > limit:
                raise FutureTime(
                    f"record {v.record_id}: its {what} is {_ahead(when - reference)} after "
                    f"{'its broker time' if p.position.appended_at else 'now'} "
                    f"(bound {self.reader.max_skew.total_seconds():.0f}s)"
                )

    def _content(self, p: Prepared, h: EnvelopeHeader, rid: str) -> Content | None:
        """The decoded contents when this reader could open them, checked against the header."""
        if p.content_error is not None:
            raise p.content_error
        model = p.content
        if model is None:
            return None
        if _KIND_OF_MODEL.get(type(model)) is not h.kind:
            raise SchemaViolation(
                f"record {rid}: header kind {h.kind.label} but schema {type(model).__name__}"
            )
        if not isinstance(model, Heartbeat) and model.record_id != rid:
            raise SchemaViolation(f"record {rid}: payload carries another record id")
        target = _payload_target(model)
        if h.target_record_id is not None and target != str(h.target_record_id):
            raise SchemaViolation(
                f"record {rid}: the payload amends {target}, the signed header {h.target_record_id}"
            )
        return model

    def _check_identity(self, producer: str, rid: str, digest: bytes) -> None:
        held = self._records.get((producer, rid))
        prior = held.digest if held is not None else None
        if prior is None:
            amendment = self._amendments.get((producer, rid))
            prior = amendment.digest if amendment is not None else None
        if prior is None:
            return
        if prior == digest:
            raise ChainReplay(
                f"record {rid} of {producer} is already held: delivered again at a new position"
            )
        raise RecordIdReused(f"{producer} used record id {rid} again for a different record")

    def _source(
        self, p: Prepared, v: VerifiedRecord, rid: str, content: Content | None
    ) -> VersionSource:
        reason = ""
        amended_at = None
        legal_basis = ""
        if content is None:
            pass  # not opened (an auditor, or not addressed): nothing of the contents to copy
        elif isinstance(content, Correction):
            reason, amended_at = content.reason, content.corrected_at
        elif isinstance(content, Retraction):
            reason, amended_at = content.reason, content.retracted_at
        elif isinstance(content, Erasure):
            reason, amended_at = content.reason, content.erased_at
            legal_basis = content.legal_basis
        pos = p.position
        h = v.header
        return VersionSource(
            rid,
            h.key_id,
            h.sequence,
            v.digest,
            pos.topic,
            pos.partition,
            pos.offset,
            h.created_at,
            # Without a broker time (intake let it through: its key has no cutoff yet), the time
            # it was judged stands in: later than its real arrival, so a later withdrawal of the
            # key errs on the side of withdrawing it, never of keeping a back-dated forgery.
            pos.appended_at or self.reader.clock(),
            reason,
            amended_at,
            legal_basis,
        )

    def _new_record(
        self,
        p: Prepared,
        producer: str,
        kind: RecordKind,
        content: Content | None,
        source: VersionSource,
    ) -> tuple[Effect, RecordError | None]:
        rid = source.record_id
        model = content if isinstance(content, (Sighting, Incident)) else None
        decision = self._decide(model, addressed=p.addressed)
        self._new_records.append(NewRecord(producer, rid, kind, source, decision))
        held = HeldRecord(
            producer,
            rid,
            kind,
            source.topic,
            source.digest,
            STATUS_OF_OUTCOME[decision.outcome],
            1,
        )
        self._records[(producer, rid)] = held
        holders = self._holders.get(rid)
        if holders is None:
            self._holders[rid] = {producer}
        else:
            holders.add(producer)
        waiting = self._pending.pop(rid, None)
        if waiting is not None:  # amendments that arrived first (rare: no dictionary otherwise)
            self._meet_waiting(waiting, held)
        if decision.outcome is Outcome.QUARANTINE:
            return Effect.WITHHELD, PolicyQuarantine(
                f"record {rid} quarantined by policy rule {decision.rule_id}"
            )
        return _effect_of(decision), None

    def _meet_waiting(self, waiting: dict[str, list[PendingAmendment]], held: HeldRecord) -> None:
        """A new record meets the amendments that waited for its id."""
        producer, rid = held.producer_id, held.record_id
        for pending in waiting.pop(producer, []):
            held = self._apply_pending(pending, held)
        for others in waiting.values():
            # Amendments another producer registered for this id before it arrived: they can
            # never be that producer's own record now, so they are refused (foreign), not left
            # waiting.
            for pending in others:
                self._settle(
                    pending,
                    AmendmentStatus.REFUSED,
                    ForeignTarget(
                        f"record {pending.record_id} by {pending.producer_id} amends {rid}, "
                        f"published by {producer}"
                    ),
                )

    def _amendment(
        self,
        p: Prepared,
        v: VerifiedRecord,
        family: Family,
        content: Content | None,
        source: VersionSource,
    ) -> tuple[Effect, RecordError | None]:
        producer = v.producer_id
        rid = source.record_id
        kind = v.kind
        target_id = str(v.target_record_id) if v.target_record_id is not None else None
        if target_id is None:
            target_id = _payload_target(content)
        if target_id is None:
            # Format v1, not addressed to this reader: the target is inside the ciphertext.
            self._register_amendment(producer, rid, source, AmendmentStatus.UNREADABLE)
            self._new_amendments.append(
                NewAmendment(producer, rid, kind, None, AmendmentStatus.UNREADABLE, source)
            )
            return Effect.NOT_ADDRESSED, None
        family_kind = FAMILY_CONTENT[family]
        replacement_kind = _replacement_kind(content)
        if replacement_kind is not None and replacement_kind is not family_kind:
            raise KindChanged(
                f"correction {rid} on {source.topic} replaces its record with a "
                f"{replacement_kind.label}"
            )
        if (producer, target_id) in self._amendments:
            raise TargetNotContent(
                f"{kind.label} {rid} by {producer} names its own amendment {target_id} as target"
            )
        target = self._records.get((producer, target_id))
        if target is None:
            others = self._holders.get(target_id, set()) - {producer}
            if others:
                raise ForeignTarget(
                    f"record {rid} by {producer} amends {target_id}, published by {min(others)}"
                )
        elif target.kind is not family_kind:
            raise KindChanged(
                f"{kind.label} {rid} on {source.topic} amends {target_id}, a {target.kind.label}"
            )
        decision = self._amendment_decision(kind, content, addressed=p.addressed)
        if target is None:
            pending = PendingAmendment(
                producer, rid, target_id, kind, replacement_kind, source.topic, decision, source
            )
            self._pending.setdefault(target_id, {}).setdefault(producer, []).append(pending)
            self._register_amendment(producer, rid, source, AmendmentStatus.PENDING)
            self._new_amendments.append(
                NewAmendment(
                    producer, rid, kind, target_id, AmendmentStatus.PENDING, source, pending
                )
            )
        else:
            self._register_amendment(producer, rid, source, AmendmentStatus.APPLIED)
            self._new_amendments.append(
                NewAmendment(producer, rid, kind, target_id, AmendmentStatus.APPLIED, source)
            )
            self._version(target, kind, source, decision)
        if decision.outcome is Outcome.QUARANTINE:
            return Effect.AMENDED, PolicyQuarantine(
                f"correction {rid}: the corrected record is quarantined by policy rule "
                f"{decision.rule_id}"
            )
        return (Effect.ERASED if kind is RecordKind.ERASURE else Effect.AMENDED), None

    def _register_amendment(
        self, producer: str, rid: str, source: VersionSource, status: AmendmentStatus
    ) -> None:
        self._amendments[(producer, rid)] = HeldAmendment(producer, rid, source.digest, status)

    def _apply_pending(self, pending: PendingAmendment, target: HeldRecord) -> HeldRecord:
        """A waiting amendment meets its target: applied, unless it would change the kind."""
        family = family_of_topic(pending.topic)
        family_kind = FAMILY_CONTENT.get(family) if family is not None else None
        # A pending amendment migrated from schema 2 has no known topic: only its kind is checked.
        wrong = (pending.topic != "" and target.kind is not family_kind) or (
            pending.replacement_kind is not None and pending.replacement_kind is not target.kind
        )
        if wrong:
            # Registered pending when its target was unknown; now known, it would change the
            # record's kind. It stays registered (evidence) and is never applied.
            self._settle(
                pending,
                AmendmentStatus.REFUSED,
                KindChanged(
                    f"{pending.kind.label} {pending.record_id} on {pending.topic} amends "
                    f"{target.record_id}, a {target.kind.label}"
                ),
            )
            return target
        self._settle(pending, AmendmentStatus.APPLIED)
        return self._version(target, pending.kind, pending.source, pending.decision)

    def _settle(
        self, pending: PendingAmendment, status: AmendmentStatus, why: RecordError | None = None
    ) -> None:
        key = (pending.producer_id, pending.record_id)
        self._amendments[key] = HeldAmendment(*key, pending.source.digest, status)
        self._applied.append((*key, status.value))
        if why is not None:
            self.late_refusals.append(LateRefusal(pending.producer_id, pending.source, why))

    def _version(
        self,
        target: HeldRecord,
        kind: RecordKind,
        source: VersionSource,
        decision: VersionDecision,
    ) -> HeldRecord:
        change = _CHANGE_OF_KIND[kind]
        if target.status.tombstone and change is Change.CORRECTION:
            # The record was erased or pruned: a later correction is kept as evidence that it
            # came, never with contents (erasure is final, and so is retention).
            decision = VersionDecision(Outcome.WITHHOLD, TOMBSTONE_RULE, decision.policy_hash)
        self._new_versions.append(
            NewVersion(target.producer_id, target.record_id, change, source, decision)
        )
        if decision.outcome is Outcome.ERASE:
            status = RecordStatus.ERASED
        elif target.status.tombstone:
            status = target.status
        elif target.status is RecordStatus.RETRACTED or decision.outcome is Outcome.RETRACT:
            status = RecordStatus.RETRACTED
        else:
            status = STATUS_OF_OUTCOME[decision.outcome]
        updated = replace(target, status=status, version=target.version + 1)
        self._records[(target.producer_id, target.record_id)] = updated
        return updated

    # -- sharing decisions ------------------------------------------------------------------------------

    def _decide(self, model: Sighting | Incident | None, *, addressed: bool) -> VersionDecision:
        """A version judged exactly as a new record: policy, redaction and labels."""
        policy = self.reader.policy
        if model is None and policy is None:
            return _AUDIT_UNREAD  # what an auditor decides for every record it did not open
        facts = model.facts() if model is not None else None
        labels = _labels(facts) if facts is not None else None
        if policy is None:
            return VersionDecision(Outcome.WITHHOLD, AUDIT_RULE, "", labels=labels)
        if facts is None or model is None or not addressed:
            return VersionDecision(Outcome.WITHHOLD, NOT_ADDRESSED_RULE, policy.policy_hash)
        d = decide(policy, facts, self.reader.clock())
        if d.action is Action.QUARANTINE:
            return VersionDecision(Outcome.QUARANTINE, d.rule_id, d.policy_hash, labels=labels)
        if d.action is Action.WITHHOLD:
            return VersionDecision(Outcome.WITHHOLD, d.rule_id, d.policy_hash, labels=labels)
        payload: dict[str, Any] = model.model_dump(mode="json")
        redacted: tuple[str, ...] = ()
        if d.action is Action.REDACT:
            payload, redacted = redact(payload, d.redact)
        outcome = Outcome.REDACT if d.action is Action.REDACT else Outcome.STORE
        return VersionDecision(outcome, d.rule_id, d.policy_hash, payload, redacted, labels)

    def _amendment_decision(
        self, kind: RecordKind, content: Content | None, *, addressed: bool
    ) -> VersionDecision:
        policy_hash = self.reader.policy.policy_hash if self.reader.policy is not None else ""
        if kind is RecordKind.RETRACTION:
            # A retraction only removes information: it applies whatever its grading says.
            return VersionDecision(Outcome.RETRACT, "retraction", policy_hash)
        if kind is RecordKind.ERASURE:
            # So does an erasure, addressed to this agency or not (its target is in the header).
            return VersionDecision(Outcome.ERASE, ERASURE_RULE, policy_hash)
        replacement = content.replacement if isinstance(content, Correction) else None
        return self._decide(replacement, addressed=addressed and replacement is not None)

    # -- what to persist -------------------------------------------------------------------------------

    def batch(
        self,
        group_id: str,
        offsets: dict[tuple[str, int], int],
        meta: dict[str, str] | None = None,
    ) -> Batch:
        """Everything judged so far, for one store transaction with ``offsets`` (and ``meta``)."""
        return Batch(
            group_id=group_id,
            records=tuple(self._new_records),
            versions=tuple(self._new_versions),
            amendments=tuple(self._new_amendments),
            applied=tuple(self._applied),
            quarantined=tuple(self._quarantined),
            chain=tuple(self._moved.values()),
            beats=tuple(self._beats),
            offsets=dict(offsets),
            meta={
                **{f"{SHREDDED_EPOCH_META}{e}": at for e, at in self._shredded_epochs.items()},
                **(meta or {}),
            },
        )


def _effect_of(decision: VersionDecision) -> Effect:
    if decision.outcome is Outcome.REDACT:
        return Effect.REDACTED
    if decision.outcome is Outcome.STORE:
        return Effect.STORED
    if decision.rule_id == NOT_ADDRESSED_RULE:
        return Effect.NOT_ADDRESSED
    if decision.rule_id == AUDIT_RULE:
        return Effect.REGISTERED
    return Effect.WITHHELD


def _labels(facts: RecordFacts) -> Labels:
    return Labels(facts.tlp.value, facts.classification.value, facts.force_area, facts.occurred_at)


def _signed_times(v: VerifiedRecord, content: Content | None) -> list[tuple[str, datetime]]:
    """Every time a record states about itself: its envelope's, and its contents' when read."""
    times = [("creation time", v.created_at)]
    record = content.replacement if isinstance(content, Correction) else content
    if isinstance(content, Correction):
        times.append(("correction time", content.corrected_at))
    elif isinstance(content, Retraction):
        times.append(("retraction time", content.retracted_at))
    elif isinstance(content, Erasure):
        times.append(("erasure time", content.erased_at))
    elif isinstance(content, Heartbeat):
        times.append(("sending time", content.sent_at))
    if isinstance(record, Sighting):
        times.append(("observation time", record.observed_at))
    elif isinstance(record, Incident):
        times.append(("occurrence time", record.occurred_at))
    return times


def _ahead(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds:.0f}s"


def _payload_target(content: Content | None) -> str | None:
    if isinstance(content, Correction):
        return content.corrects_record_id
    if isinstance(content, Retraction):
        return content.retracts_record_id
    if isinstance(content, Erasure):
        return content.erases_record_id
    return None


def _replacement_kind(content: Content | None) -> RecordKind | None:
    if isinstance(content, Correction):
        return (
            RecordKind.SIGHTING
            if isinstance(content.replacement, Sighting)
            else (RecordKind.INCIDENT)
        )
    return None

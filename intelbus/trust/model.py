"""The values that cross the judge's boundaries: what it reads, what it decides, what is persisted.

Everything is frozen. The judge reads a :class:`Prepared` record and a :class:`Snapshot`; it returns
a :class:`Verdict` per record, and the caller gathers the verdicts' effects into one :class:`Batch`,
which a store writes in one transaction (intelbus/store) and an auditor keeps in its ledger.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from intelbus.chain import ChainState, StreamKey
from intelbus.envelope.verify import VerifiedRecord
from intelbus.errors import ReasonCode, RecordError, Shredded
from intelbus.kinds import RecordKind
from intelbus.records import Correction, Erasure, Heartbeat, Incident, Retraction, Sighting

Content = Sighting | Incident | Correction | Retraction | Erasure | Heartbeat

#: The rule id of a version this agency could not read: not addressed to it.
NOT_ADDRESSED_RULE = "not-addressed"
#: The rule id of a version an auditor registers: it judges integrity, not sharing.
AUDIT_RULE = "audit"
#: The ``meta`` key prefix a store keeps each encryption epoch its reader found destroyed under
#: (with when), so an auditor holding the store to the topic knows why nothing of those is held.
SHREDDED_EPOCH_META = "shredded_epoch|"


# --- In: one record, prepared. --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read: topic, partition, offset, and the broker's append time."""

    topic: str
    partition: int
    offset: int
    appended_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Ids as claimed by bytes that did not verify: kept to find the record, never trusted."""

    record_id: str | None = None
    producer_id: str | None = None
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record after intake: verified (or why not) and, for a recipient, opened (or why not)."""

    position: Position
    raw: bytes = field(repr=False)
    verified: VerifiedRecord | None = None
    error: RecordError | None = None  # set when ``verified`` is None
    claim: Claim = Claim()
    addressed: bool = False  # this reader is among the signed recipients, with this key
    content: Content | None = field(default=None, repr=False)
    content_error: RecordError | None = None  # addressed, but it did not open or decode
    #: Addressed to an encryption epoch whose key this reader destroyed (crypto-shredding).
    shredded: Shredded | None = None


# --- In: trusted state. --------------------------------------------------------------------------------


class RecordStatus(enum.StrEnum):
    """Where a content record stands for the agency that holds it (its current version)."""

    LIVE = "live"  # content held and current
    RETRACTED = "retracted"  # withdrawn by its producer; the last content is kept, flagged
    WITHHELD = "withheld"  # the current version is not for this agency: no content held
    QUARANTINED = "quarantined"  # the current version is quarantined by this agency's policy
    WITHDRAWN = "withdrawn"  # every content version was signed by a key compromised since
    ERASED = "erased"  # erased by its producer: payload and history gone, a tombstone kept
    PRUNED = "pruned"  # past this agency's retention: payload and history gone, a tombstone kept

    @property
    def tombstone(self) -> bool:
        """Nothing of the record's contents is held any more, for good."""
        return self in (RecordStatus.ERASED, RecordStatus.PRUNED)


class AmendmentStatus(enum.StrEnum):
    """What became of a correction or retraction."""

    PENDING = "pending"  # its target is not held (yet)
    APPLIED = "applied"
    UNREADABLE = "unreadable"  # format v1, not addressed: its target cannot be known
    REFUSED = "refused"  # registered pending; its target, when it came, was of another kind
    WITHDRAWN = "withdrawn"  # signed by a key compromised since


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A content record (sighting or incident) an agency holds, whether or not it holds content."""

    producer_id: str
    record_id: str
    kind: RecordKind
    topic: str
    digest: bytes
    status: RecordStatus
    version: int


@dataclass(frozen=True, slots=True)
class HeldAmendment:
    """A correction or retraction an agency has registered."""

    producer_id: str
    record_id: str
    digest: bytes
    status: AmendmentStatus


@dataclass(frozen=True, slots=True)
class Labels:
    """What a version is labelled with, whatever of its content is kept."""

    tlp: str
    classification: str
    force_area: str | None
    occurred_at: datetime | None


class Outcome(enum.StrEnum):
    """The sharing decision for one version of a record (or what an amendment does to it)."""

    STORE = "store"
    REDACT = "redact"
    WITHHOLD = "withhold"
    QUARANTINE = "quarantine"
    RETRACT = "retract"
    ERASE = "erase"


#: The status a version's outcome gives its record when that version is current.
STATUS_OF_OUTCOME: Mapping[Outcome, RecordStatus] = MappingProxyType(
    {
        Outcome.STORE: RecordStatus.LIVE,
        Outcome.REDACT: RecordStatus.LIVE,
        Outcome.WITHHOLD: RecordStatus.WITHHELD,
        Outcome.QUARANTINE: RecordStatus.QUARANTINED,
        Outcome.RETRACT: RecordStatus.RETRACTED,
        Outcome.ERASE: RecordStatus.ERASED,
    }
)


@dataclass(frozen=True, slots=True)
class VersionDecision:
    """A version judged as a new record would be: kept (maybe redacted), withheld, quarantined.

    ``payload`` is set only for STORE and REDACT; ``labels`` whenever the content was read.
    """

    outcome: Outcome
    rule_id: str
    policy_hash: str
    payload: dict[str, Any] | None = field(default=None, repr=False)
    redacted_fields: tuple[str, ...] = ()
    labels: Labels | None = None

    @property
    def holds_content(self) -> bool:
        return self.payload is not None


@dataclass(frozen=True, slots=True)
class PendingAmendment:
    """An amendment registered before its target: its version is decided, waiting to apply."""

    producer_id: str
    record_id: str
    target_record_id: str
    kind: RecordKind  # CORRECTION, RETRACTION or ERASURE
    replacement_kind: RecordKind | None  # a readable correction's kind; None if unreadable
    topic: str
    decision: VersionDecision
    source: VersionSource


@dataclass(frozen=True, slots=True)
class VersionSource:
    """The record a version came from: where, when, by which key, with what digest."""

    record_id: str
    key_id: bytes
    sequence: int
    digest: bytes
    topic: str
    partition: int
    offset: int
    created_at: datetime
    appended_at: datetime
    reason: str = ""  # an amendment's stated reason (free text from the producer)
    amended_at: datetime | None = (
        None  # an amendment's signed corrected_at / retracted_at / erased_at
    )
    legal_basis: str = ""  # an erasure's stated legal basis


@dataclass(frozen=True, slots=True)
class SnapshotKeys:
    """What a batch's judgement will look up: stream heads and record ids (own ids and targets)."""

    streams: frozenset[StreamKey]
    record_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The trusted state a batch is judged against, read in the transaction that commits it."""

    heads: Mapping[StreamKey, ChainState] = field(default_factory=dict)
    records: Mapping[tuple[str, str], HeldRecord] = field(default_factory=dict)
    amendments: Mapping[tuple[str, str], HeldAmendment] = field(default_factory=dict)
    #: By (producer, target record id): amendments waiting for that record, in arrival order.
    pending: Mapping[tuple[str, str], tuple[PendingAmendment, ...]] = field(default_factory=dict)


# --- Out: one verdict per record. -------------------------------------------------------------------


class Effect(enum.StrEnum):
    """What an accepted record did (for counts and logs)."""

    STORED = "stored"  # a new record, content kept
    REDACTED = "redacted"  # a new record, content kept with fields redacted
    WITHHELD = "withheld"  # a new record withheld by policy: a receipt only
    NOT_ADDRESSED = "not_addressed"  # a new record for other agencies: a receipt only
    AMENDED = "amended"  # a correction or retraction applied (or registered pending)
    ERASED = "erased"  # an erasure applied (or registered pending): the target's payload goes
    HEARTBEAT = "heartbeat"
    REGISTERED = "registered"  # an auditor's ledger entry
    #: Sealed to an encryption epoch whose private key this agency destroyed: its chain step
    #: stands, nothing of it is kept, and it is no refusal (crypto-shredding, issue 16).
    SHREDDED = "shredded"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's decision for one record: accepted (with what it did) or refused (and why).

    ``authentic`` is True once the signature verified with a key valid at the broker time: the
    ids are then the producer's own. ``chain`` is the stream's new state when the record moved it
    (an authentic record in its place moves its stream even if refused later, because the chain
    describes what the producer signed). ``gap`` is the missing range it revealed, if any.
    """

    position: Position
    refusal: RecordError | None
    effect: Effect | None
    authentic: bool
    record_id: str | None
    producer_id: str | None
    sequence: int | None
    stream: StreamKey | None = None
    chain: ChainState | None = None
    gap: tuple[int, int] | None = None
    evicted_gaps: tuple[tuple[int, int], ...] = ()
    filled: bool = False

    @property
    def accepted(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> ReasonCode | None:
        return None if self.refusal is None else self.refusal.reason


# --- Out: what a store persists. ------------------------------------------------------------------------


class Change(enum.StrEnum):
    """How a version came about."""

    ORIGINAL = "original"
    CORRECTION = "correction"
    RETRACTION = "retraction"
    ERASURE = "erasure"


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A content record seen for the first time: its identity and its first version."""

    producer_id: str
    record_id: str
    kind: RecordKind
    source: VersionSource
    decision: VersionDecision


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A later version of a held record, from a correction or retraction."""

    producer_id: str
    record_id: str
    change: Change
    source: VersionSource
    decision: VersionDecision


@dataclass(frozen=True, slots=True)
class NewAmendment:
    """A correction or retraction registered (applied now, pending, or unreadable)."""

    producer_id: str
    record_id: str
    kind: RecordKind
    target_record_id: str | None
    status: AmendmentStatus
    source: VersionSource
    pending: PendingAmendment | None = None  # set when status is PENDING


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused record: a bounded prefix of its bytes, their digest and size, and why."""

    topic: str
    partition: int
    offset: int
    raw_prefix: bytes = field(repr=False)
    raw_size: int
    raw_digest: bytes
    reason: str
    message: str
    record_id: str | None
    producer_id: str | None
    authentic: bool = False
    #: When the store quarantined it (set by the store when read back; None before).
    quarantined_at: datetime | None = None

    @property
    def raw(self) -> bytes:
        """The bytes kept (a prefix when :attr:`truncated`)."""
        return self.raw_prefix

    @property
    def truncated(self) -> bool:
        return len(self.raw_prefix) < self.raw_size


@dataclass(frozen=True, slots=True)
class VouchedHead:
    """One stream a heartbeat vouches for: the chain (topic, partition, key epoch) and the last
    sequence number its producer had sent on it when the heartbeat was signed."""

    topic: str
    partition: int
    epoch: str
    last_sequence: int


@dataclass(frozen=True, slots=True)
class FeedBeat:
    """A heartbeat seen: ``producer_id`` was alive at ``at`` (broker time) on ``topic``, promised
    another within ``interval_ms``, and vouched that its streams stood at ``heads``."""

    producer_id: str
    topic: str
    at: datetime
    interval_ms: int
    heads: tuple[VouchedHead, ...] = ()


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one poll produced; a store commits it in one transaction with the offsets."""

    group_id: str
    records: Sequence[NewRecord] = ()
    versions: Sequence[NewVersion] = ()
    amendments: Sequence[NewAmendment] = ()
    #: (producer, amendment record id, new status) of pending amendments this batch settled.
    applied: Sequence[tuple[str, str, str]] = ()
    quarantined: Sequence[Quarantined] = ()
    chain: Sequence[ChainState] = ()
    beats: Sequence[FeedBeat] = ()
    #: (topic, partition) -> the next offset to read.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Keyed values the reader keeps with the batch, in the same transaction (an auditor's
    #: checkpoint, so its ledger and its place in the topic never disagree).
    meta: dict[str, str] = field(default_factory=dict)

"""The replay engine: verify records in a small thread pool, judge them in order on one thread.

Per record (docs/audit.md, "Checks"):

1. **Envelope** (worker thread): exactly :func:`intelbus.envelope.verify`, the consumer's own
   checks (size, layout, key for this producer, topic and time by the directory version in force,
   revocation and compromise windows judged at the broker's append time, signature, environment
   and topic binding), with a :class:`~consumers.audit.keycache.CachedResolver`. PyNaCl releases
   the GIL inside libsodium, so signatures verify on every core.
2. **Contents** (worker thread, optional): when the auditor holds a recipient key and the record
   is addressed to it, open and decode it as a consumer would, and check kind, record id and (for
   heartbeats) producer. Contents never leave the worker; only an error or an interval does.
3. **Judgement** (main thread, in offset order): the digest; recipients entitled by the directory
   (and the sharing agreement, when given); broker append time against the signed creation time;
   the producer stream's hash chain with :func:`intelbus.chain.advance`, telling duplicates,
   reorders, replays, forks, gaps and jumps apart; heartbeat silences per producer.

Nothing here keeps anything per record: see :mod:`consumers.audit.state`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from consumers.audit.findings import Finding, Severity, severity_of
from consumers.audit.keycache import CachedResolver
from consumers.audit.source import RecordSource
from consumers.audit.state import (
    UNVERIFIED_PRODUCER,
    AuditState,
    HeartbeatSeen,
    PartitionSpan,
    StreamHead,
)
from intelbus.chain import DEFAULT_MAX_GAP, GENESIS_DIGEST, advance
from intelbus.directory.model import DirectoryBody, Role
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope import RecordKind, VerifiedRecord, open_record, parse, verify
from intelbus.envelope.wire import to_micros
from intelbus.errors import (
    ChainFork,
    ChainJump,
    ChainReplay,
    ReasonCode,
    RecordError,
    SchemaViolation,
)
from intelbus.identity import AgencyIdentity
from intelbus.records import Correction, Heartbeat, Incident, Retraction, Sighting
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport.kafka import Message

_KIND_OF: dict[type, RecordKind] = {
    Sighting: RecordKind.SIGHTING,
    Incident: RecordKind.INCIDENT,
    Correction: RecordKind.CORRECTION,
    Retraction: RecordKind.RETRACTION,
    Heartbeat: RecordKind.HEARTBEAT,
}
_MAX_RECIPIENT_CACHE = 4096


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """What the auditor was asked to judge, and how strictly."""

    environment: str
    max_skew: timedelta = timedelta(minutes=5)
    heartbeat_interval: timedelta | None = None  # the agreed interval; else the signed one
    heartbeat_tolerance: float = 1.5  # a silence longer than interval x tolerance is a finding
    max_gap: int = DEFAULT_MAX_GAP
    baseline_first_sight: bool = False  # True when not replaying from the beginning
    allowed_recipients: frozenset[str] | None = None  # from the producer's sharing agreement

    def __post_init__(self) -> None:
        if self.max_skew <= timedelta(0) or self.heartbeat_tolerance < 1.0 or self.max_gap < 0:
            raise ValueError("max_skew must be positive, tolerance >= 1 and max_gap >= 0")


@dataclass(frozen=True, slots=True)
class Checked:
    """A record after the worker's checks: verified (or why not), and the content check."""

    message: Message
    verified: VerifiedRecord | None
    error: RecordError | None
    claim: tuple[str | None, str | None, int | None] = (None, None, None)  # unverified ids
    addressed: bool = False
    content_error: RecordError | None = None
    heartbeat_interval_ms: int | None = None


class Verifier:
    """Steps 1 and 2, pure and thread-safe (one instance shared by the workers)."""

    def __init__(
        self,
        resolver: CachedResolver,
        environment: str,
        *,
        identity: AgencyIdentity | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        if identity is not None and registry is None:
            raise ValueError("decrypting needs the schema registry")
        self.resolver = resolver
        self.environment = environment
        self.identity = identity
        self.registry = registry

    def check(self, m: Message) -> Checked:
        try:
            v = verify(
                m.value,
                self.resolver,
                expected_environment=self.environment,
                expected_topic=m.topic,
                witnessed_at=m.appended_at,
            )
        except RecordError as e:
            return Checked(m, None, e, _claims(m.value))
        if self.identity is None or self.identity.agency_id not in v.recipient_ids:
            return Checked(m, v, None)
        error: RecordError | None = None
        interval: int | None = None
        try:
            interval = self._open(v)
        except RecordError as e:
            error = e
        return Checked(
            m, v, None, addressed=True, content_error=error, heartbeat_interval_ms=interval
        )

    def _open(self, v: VerifiedRecord) -> int | None:
        """Decrypt and decode as a consumer would; the contents go no further than this frame.

        Raises:
            NotARecipient, DecryptionFailed, UnknownSchema, SchemaViolation.
        """
        assert self.identity is not None  # noqa: S101 - checked by the caller
        assert self.registry is not None  # noqa: S101 - checked in __init__
        h = v.header
        model = self.registry.decode_model(h.schema_fingerprint, open_record(v, self.identity))
        if _KIND_OF.get(type(model)) is not h.kind:
            raise SchemaViolation(
                f"record {h.record_id}: header kind {h.kind.name} but schema {type(model).__name__}"
            )
        if isinstance(model, Heartbeat):
            if model.producer_id != h.producer_id:
                raise SchemaViolation(f"heartbeat {h.record_id} names another producer")
            return model.interval_ms
        if model.record_id != str(h.record_id):
            raise SchemaViolation(f"record {h.record_id}: payload carries another record id")
        return None

    def check_all(self, messages: Sequence[Message]) -> list[Checked]:
        return [self.check(m) for m in messages]


def _claims(value: bytes) -> tuple[str | None, str | None, int | None]:
    """Record id, producer and sequence as *claimed* by bytes that did not verify (for the report)."""
    try:
        h = parse(value).header
    except RecordError:
        return (None, None, None)
    return (str(h.record_id), h.producer_id, h.sequence)


class Judge:
    """Step 3: in offset order, on one thread, against fixed-size state."""

    def __init__(
        self,
        history: DirectoryHistory,
        config: AuditConfig,
        state: AuditState,
        emit: Callable[[Finding], None],
    ) -> None:
        self.history = history
        self.config = config
        self.state = state
        self.emit = emit
        self._producers = frozenset(
            a.agency_id
            for doc in history.versions
            for a in doc.signed.agencies
            if Role.PRODUCER in a.roles
        )
        self._recipients_ok: dict[tuple[int, tuple[tuple[str, bytes], ...]], str | None] = {}

    # -- findings -----------------------------------------------------------------------------------

    def _find(
        self,
        m: Message,
        reason: ReasonCode,
        message: str,
        *,
        record: tuple[str | None, str | None, int | None],
        authentic: bool,
    ) -> None:
        s = self.state
        s.by_reason[reason.value] += 1
        if severity_of(reason) is Severity.INTEGRITY:
            s.integrity += 1
        else:
            s.warnings += 1
        record_id, producer, sequence = record
        s.producer(producer if authentic and producer else self._counted(producer)).findings += 1
        self.emit(
            Finding(
                m.topic,
                m.partition,
                m.offset,
                reason,
                message,
                record_id,
                producer,
                sequence,
                authentic,
            )
        )

    def _counted(self, producer: str | None) -> str:
        # Claimed ids of unverified bytes are attacker-chosen: count them under a known producer
        # or one bucket, so the per-producer counts stay bounded by the directory.
        return producer if producer in self._producers else UNVERIFIED_PRODUCER

    # -- one record ---------------------------------------------------------------------------------

    def judge(self, c: Checked) -> None:
        m = c.message
        s = self.state
        s.records += 1
        span = s.partitions.get(m.partition)
        if span is None:
            span = s.partitions[m.partition] = PartitionSpan(m.offset, m.offset)
        span.last_offset = m.offset
        span.records += 1
        v = c.verified
        if v is None:
            assert c.error is not None  # noqa: S101 - a Checked has one or the other
            s.digest.add_raw(m.value)
            s.producer(self._counted(c.claim[1])).records += 1
            self._find(m, c.error.reason, str(c.error), record=c.claim, authentic=False)
            return
        h = v.header
        ids = (str(h.record_id), h.producer_id, h.sequence)
        s.authentic += 1
        s.digest.add_authentic(h.record_id.bytes, v.digest)
        counts = s.producer(h.producer_id)
        counts.records += 1
        counts.authentic += 1
        if counts.first_sequence is None:
            counts.first_sequence = h.sequence
        counts.last_sequence = h.sequence
        self._recipients(m, v, ids)
        self._skew(m, v, ids)
        self._chain(m, v, ids)
        if c.addressed:
            s.addressed += 1
            if c.content_error is not None:
                self._find(
                    m, c.content_error.reason, str(c.content_error), record=ids, authentic=True
                )
            else:
                s.decrypted += 1
        if h.kind is RecordKind.HEARTBEAT:
            self._heartbeat(m, v, ids, c.heartbeat_interval_ms)

    def _recipients(self, m: Message, v: VerifiedRecord, ids: tuple[str, str, int]) -> None:
        """Each recipient must be a consumer or auditor, with that key, in the version in force."""
        body = self.history.in_force_at(v.created_at)
        if body is None:  # verify() already refused such a record
            return
        entries = tuple((r.agency_id, r.key_id) for r in v.recipients)
        slot = (body.version, entries)
        if slot not in self._recipients_ok:
            if len(self._recipients_ok) >= _MAX_RECIPIENT_CACHE:
                self._recipients_ok.clear()
            self._recipients_ok[slot] = self._recipient_problem(body, entries, v.created_at)
        problem = self._recipients_ok[slot]
        if problem is not None:
            self._find(
                m,
                ReasonCode.RECIPIENT_NOT_ENTITLED,
                f"record {ids[0]}: {problem}",
                record=ids,
                authentic=True,
            )

    def _recipient_problem(
        self, body: DirectoryBody, entries: tuple[tuple[str, bytes], ...], at: datetime
    ) -> str | None:
        for agency_id, key_id in entries:
            agency = body.agency(agency_id)
            if agency is None or (agency.removed_at is not None and agency.removed_at <= at):
                return f"recipient {agency_id} is not in directory v{body.version}"
            if Role.CONSUMER not in agency.roles and Role.AUDITOR not in agency.roles:
                return f"recipient {agency_id} is neither a consumer nor an auditor"
            if key_id.hex() not in {k.key_id for k in agency.keys}:
                return f"recipient {agency_id} is sealed to key {key_id.hex()}, not one of its keys"
            allowed = self.config.allowed_recipients
            if allowed is not None and agency_id not in allowed:
                return f"recipient {agency_id} is outside the producer's sharing agreement"
        return None

    def _skew(self, m: Message, v: VerifiedRecord, ids: tuple[str, str, int]) -> None:
        if m.appended_at is None:
            return
        lag = m.appended_at - v.created_at
        if abs(lag) > self.config.max_skew:
            when = "after" if lag > timedelta(0) else "before"
            self._find(
                m,
                ReasonCode.CLOCK_SKEW,
                f"record {ids[0]} reached the broker {abs(lag).total_seconds():.0f}s {when} its "
                f"signed creation time (limit {self.config.max_skew.total_seconds():.0f}s)",
                record=ids,
                authentic=True,
            )

    def _chain(self, m: Message, v: VerifiedRecord, ids: tuple[str, str, int]) -> None:
        h = v.header
        key = (h.producer_id, h.topic)
        head = self.state.heads.get(key)
        if head is None:
            if self.config.baseline_first_sight:
                # Not from the beginning: the first record seen is where this stream starts.
                self.state.heads[key] = StreamHead(h.producer_id, h.topic, h.sequence, v.digest)
                return
            head = self.state.heads[key] = StreamHead(h.producer_id, h.topic, -1, GENESIS_DIGEST)
        where = f"{h.producer_id} on {h.topic}"
        try:
            step = advance(
                head.chain,
                sequence=h.sequence,
                prev_digest=h.prev_digest,
                digest=v.digest,
                max_gap=self.config.max_gap,
            )
        except ChainReplay as e:
            if h.sequence == head.last_sequence and v.digest == head.last_digest:
                reason, text = (
                    ReasonCode.CHAIN_DUPLICATE,
                    (f"{where}: sequence {h.sequence} delivered again, byte for byte (a resend?)"),
                )
            elif h.sequence == head.last_sequence:
                reason, text = (
                    ReasonCode.CHAIN_FORK,
                    (f"{where}: a second, different record with sequence {h.sequence}"),
                )
            elif head.fill(h.sequence):
                reason, text = (
                    ReasonCode.CHAIN_REORDER,
                    (
                        f"{where}: sequence {h.sequence} arrived after {head.last_sequence} "
                        "(it had been reported missing)"
                    ),
                )
            else:
                reason, text = ReasonCode.CHAIN_REPLAY, f"{e.args[0]}: replayed at a new offset"
            self._find(m, reason, text, record=ids, authentic=True)
            return
        except ChainFork as e:
            self._find(m, ReasonCode.CHAIN_FORK, e.args[0], record=ids, authentic=True)
            return
        except ChainJump as e:
            self._find(m, ReasonCode.CHAIN_JUMP, e.args[0], record=ids, authentic=True)
            return
        if step.gap is not None:
            first, last = step.gap
            head.note_gap(first, last)
            self._find(
                m,
                ReasonCode.CHAIN_GAP,
                f"{where}: sequence {first}..{last} ({step.missing}) missing before {h.sequence}",
                record=ids,
                authentic=True,
            )
        head.advance_to(step.state)

    def _limit_us(self, interval_ms: int | None) -> int | None:
        if self.config.heartbeat_interval is not None:
            interval_ms = int(self.config.heartbeat_interval.total_seconds() * 1000)
        if interval_ms is None:
            return None
        return math.ceil(interval_ms * 1000 * self.config.heartbeat_tolerance)

    def _heartbeat(
        self, m: Message, v: VerifiedRecord, ids: tuple[str, str, int], signed_ms: int | None
    ) -> None:
        producer = v.producer_id
        at_us = to_micros(m.appended_at or v.created_at)
        prev = self.state.heartbeats.get(producer)
        interval_ms = signed_ms if signed_ms is not None else (prev.interval_ms if prev else None)
        limit = self._limit_us(interval_ms)
        if prev is not None and limit is not None and at_us - prev.at_us > limit:
            self._find(
                m,
                ReasonCode.HEARTBEAT_MISSING,
                f"no heartbeat from {producer} for {(at_us - prev.at_us) / 1e6:.0f}s "
                f"(limit {limit / 1e6:.0f}s) after offset {prev.offset}",
                record=ids,
                authentic=True,
            )
        self.state.heartbeats[producer] = HeartbeatSeen(at_us, m.partition, m.offset, interval_ms)

    def finish(self, as_of: datetime | None) -> None:
        """End of replay: a producer whose last heartbeat is older than the limit is a frozen feed."""
        if as_of is None:
            return
        now_us = to_micros(as_of)
        for producer, hb in sorted(self.state.heartbeats.items()):
            limit = self._limit_us(hb.interval_ms)
            if limit is not None and now_us - hb.at_us > limit:
                where = Message(self.state.topic, hb.partition, hb.offset, b"", None)
                self._find(
                    where,
                    ReasonCode.HEARTBEAT_MISSING,
                    f"no heartbeat from {producer} for {(now_us - hb.at_us) / 1e6:.0f}s before "
                    f"{as_of.isoformat()} (limit {limit / 1e6:.0f}s): a frozen feed",
                    record=(None, producer, None),
                    authentic=True,
                )


class Replay:
    """Reads partitions in order, verifies each batch in the pool while the next one is fetched,
    and judges the results in offset order."""

    def __init__(
        self,
        *,
        source: RecordSource,
        verifier: Verifier,
        judge: Judge,
        positions: dict[int, tuple[int, int]],
        workers: int | None = None,
        batch_size: int = 2000,
    ) -> None:
        self.source = source
        self.verifier = verifier
        self.judge = judge
        # partition -> [next offset to judge, end offset]: what a checkpoint saves.
        self.positions = {p: [start, end] for p, (start, end) in sorted(positions.items())}
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.batch_size = batch_size

    @property
    def remaining(self) -> int:
        return sum(max(0, end - start) for start, end in self.positions.values())

    def _submit(
        self, pool: ThreadPoolExecutor, batch: list[Message]
    ) -> list[Future[list[Checked]]]:
        size = max(1, math.ceil(len(batch) / (self.workers * 2)))
        return [
            pool.submit(self.verifier.check_all, batch[i : i + size])
            for i in range(0, len(batch), size)
        ]

    def _judge(self, partition: int, futures: list[Future[list[Checked]]]) -> int:
        n = 0
        last = -1
        for f in futures:
            for c in f.result():
                self.judge.judge(c)
                last = c.message.offset
                n += 1
        if n:
            self.positions[partition][0] = last + 1
        return n

    def batches(self) -> Iterator[tuple[int, list[Message]]]:
        for partition, (start, end) in list(self.positions.items()):
            for batch in self.source.read(partition, start, end, self.batch_size):
                yield partition, batch
            self.positions[partition][0] = end  # control records at the end take offsets too

    def run(
        self,
        *,
        on_batch: Callable[[int], None] | None = None,
        stop_after: int | None = None,
    ) -> bool:
        """Replay everything left; True when complete, False when stopped by ``stop_after``."""
        done = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="audit-verify") as pool:
            pending: tuple[int, list[Future[list[Checked]]]] | None = None
            for partition, batch in self.batches():
                submitted = (partition, self._submit(pool, batch))
                if pending is not None:
                    # Judge the previous batch while the pool verifies this one.
                    n = self._judge(*pending)
                    done += n
                    if on_batch is not None:
                        on_batch(n)
                    if stop_after is not None and done >= stop_after:
                        for f in submitted[1]:
                            f.cancel()
                        return False
                pending = submitted
            if pending is not None:
                n = self._judge(*pending)
                if on_batch is not None:
                    on_batch(n)
        return True

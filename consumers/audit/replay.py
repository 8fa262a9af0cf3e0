"""The replay engine: intake in worker processes, the shared judge in order in this one.

Per record (docs/audit.md, "Checks"):

1. **Intake** (a worker process, consumers/audit/workers.py): exactly the consumer's :class:`~intelbus.trust.intake.Intake`:
   size, broker time, envelope verification against the directory at the broker's append time
   (key valid for this producer, role and topic; revocations and compromise windows), signature,
   environment, topic and partition binding; and when the auditor holds a recipient key and the
   record is addressed to it, opening and decoding. Workers are processes (parsing is Python and
   holds the GIL); what a worker refused or opened is prepared again here, so findings are the
   serial path's. A worker never sends contents back.
2. **Judgement** (main thread, in offset order): the consumer's own
   :class:`~intelbus.trust.judge.Judge` (family, chain, identity, amendments), against the
   auditor's ledger instead of a force's store, so an auditor and a consumer reach the same
   verdict on every record, with the same reason code. Then what only a whole-topic reader can
   judge: recipients entitled by the directory (and the sharing agreement), broker time against
   the signed creation time, missing sequence ranges still open at the end, heartbeat silences.

Memory stays bounded: the judge's working state is committed to the ledger (on disk) every
``commit_every`` records, together with the replay's checkpoint, so the two never disagree.
"""

from __future__ import annotations

import gc
import math
import os
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from consumers.audit.findings import Finding, Severity, severity_of
from consumers.audit.source import RecordSource
from consumers.audit.state import (
    UNVERIFIED_PRODUCER,
    AuditState,
    HeartbeatSeen,
    OpenGap,
    PartitionSpan,
)
from consumers.audit.storecheck import StoreCheck
from consumers.audit.workers import IntakeBatch, IntakePool
from intelbus.chain import DEFAULT_MAX_GAP, StreamKey
from intelbus.directory.model import DirectoryBody, Role
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope import VerifiedRecord
from intelbus.envelope.wire import to_micros
from intelbus.errors import ReasonCode
from intelbus.kinds import RecordKind
from intelbus.policy.agreement import SharingAgreement
from intelbus.records import Heartbeat
from intelbus.store.base import SqlStore
from intelbus.transport.kafka import Message
from intelbus.trust.completeness import missing_records
from intelbus.trust.intake import Intake
from intelbus.trust.judge import Judge, Reader, keys_for
from intelbus.trust.model import FeedBeat, Position, Prepared, Verdict

_MAX_RECIPIENT_CACHE = 4096
#: A recipient entry's (agency id, key id): what its entitlement depends on.
_AGENCY_AND_KEY = attrgetter("agency_id", "key_id")
#: The consumer group name under which the ledger keeps nothing but its own bookkeeping.
LEDGER_GROUP = "intelbus.audit"


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """What the auditor was asked to judge, and how strictly."""

    environment: str
    max_skew: timedelta = timedelta(minutes=5)
    heartbeat_interval: timedelta | None = None  # the agreed interval; else the signed one
    heartbeat_tolerance: float = 1.5  # a silence longer than interval x tolerance is a finding
    max_gap: int = DEFAULT_MAX_GAP
    baseline_first_sight: bool = False  # True when not replaying from the beginning
    agreement: SharingAgreement | None = None  # the producer's: recipients must be entitled

    def __post_init__(self) -> None:
        if self.max_skew <= timedelta(0) or self.heartbeat_tolerance < 1.0 or self.max_gap < 0:
            raise ValueError("max_skew must be positive, tolerance >= 1 and max_gap >= 0")


class Verifier:
    """Step 1, pure (each forked worker process inherits one; consumers/audit/workers.py)."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def check(self, m: Message) -> Prepared:
        return self.intake.prepare(Position(m.topic, m.partition, m.offset, m.appended_at), m.value)

    def check_all(self, messages: Sequence[Message]) -> list[Prepared]:
        return [self.check(m) for m in messages]


class AuditJudge:
    """Step 2: in offset order, on one thread; the shared judge plus the topic-wide checks."""

    def __init__(
        self,
        history: DirectoryHistory,
        config: AuditConfig,
        state: AuditState,
        emit: Callable[[Finding], None],
        ledger: SqlStore,
        *,
        auditor_id: str | None = None,
    ) -> None:
        self.history = history
        self.config = config
        self.state = state
        self.emit = emit
        self.ledger = ledger
        self.reader = Reader(auditor_id, None, max_gap=config.max_gap)
        self._producers = frozenset(
            a.agency_id
            for doc in history.versions
            for a in doc.signed.agencies
            if Role.PRODUCER in a.roles
        )
        self._recipients_ok: dict[tuple[int, bool, tuple[tuple[str, bytes], ...]], str | None] = {}
        self._last_recipients: tuple[object, int, bool, str | None] | None = None
        # The history an audit judges against is fixed for the whole replay.
        self._bodies = [doc.signed for doc in history.versions]
        self._issued = [b.issued_at for b in self._bodies]
        self._issued_sorted = all(
            a <= b for a, b in zip(self._issued, self._issued[1:], strict=False)
        )
        #: A force's store held to this topic (issue 16), when the auditor was given one.
        self.store_check: StoreCheck | None = None
        self._new_judge()

    def _new_judge(self) -> None:
        self._judge = Judge(self.reader, self.ledger.snapshot(keys_for([])))
        self._loaded_ids: set[str] = set()
        self._loaded_streams: set[StreamKey] = set()
        self.pending_records = 0

    # -- the ledger ---------------------------------------------------------------------------------

    def _load(self, prepared: Sequence[Prepared]) -> None:
        keys = keys_for(prepared)
        ids = keys.record_ids - self._loaded_ids
        streams = keys.streams - self._loaded_streams
        if ids or streams:
            self._judge.load(self.ledger.snapshot(replace(keys, record_ids=ids, streams=streams)))
            self._loaded_ids |= ids
            self._loaded_streams |= streams

    def flush(self, meta: dict[str, str] | None = None) -> None:
        """Commit what was judged since the last flush to the ledger (with ``meta``, in the same
        transaction), and start a new working state."""
        batch = self._judge.batch(LEDGER_GROUP, {}, meta)
        # Quarantine rows are the findings' business here (the report has them); keep them out.
        self.ledger.commit(replace(batch, quarantined=()))
        self._new_judge()

    # -- findings -----------------------------------------------------------------------------------

    def _find(
        self,
        pos: Position,
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
                pos.topic,
                pos.partition,
                pos.offset,
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

    # -- a batch ------------------------------------------------------------------------------------

    def judge_batch(self, prepared: Sequence[Prepared]) -> list[Verdict]:
        """Judge one batch (one partition, offset order) and report what it reveals."""
        self._load(prepared)
        verdicts = []
        # What the workers already added up of the records digest (the items of the records
        # they answered for): added once here, and skipped record by record below.
        digested: list[bool] | None = None
        if isinstance(prepared, IntakeBatch):
            digested = prepared.digested
            self.state.digest.add_sum(sum(digested), prepared.digest_sum)
        for i, p in enumerate(prepared):
            v = self._judge.judge(p)
            self._account(p, v, digested=digested is not None and digested[i])
            verdicts.append(v)
            for late in self._judge.late_refusals:
                # An amendment judged earlier, refused now its target is known: reported where
                # the amendment is, as the consumer that holds both records refuses it.
                s = late.source
                self._find(
                    Position(s.topic, s.partition, s.offset, None),
                    late.refusal.reason,
                    str(late.refusal),
                    record=(s.record_id, late.producer_id, s.sequence),
                    authentic=True,
                )
            self._judge.late_refusals.clear()
        self.pending_records += len(prepared)
        return verdicts

    def _account(self, p: Prepared, v: Verdict, *, digested: bool = False) -> None:
        """Count a judged record and report what only a whole-topic reader finds; ``digested``:
        its item of the records digest was already added (by a worker)."""
        pos = p.position
        s = self.state
        s.records += 1
        span = s.partitions.get(pos.partition)
        if span is None:
            span = s.partitions[pos.partition] = PartitionSpan(pos.offset, pos.offset)
        span.last_offset = pos.offset
        span.records += 1
        ids = (v.record_id, v.producer_id, v.sequence)
        rv = p.verified
        if rv is None:
            assert not digested  # noqa: S101 - a worker sums only the records it verified
            s.digest.add_raw(p.raw)
            s.producer(self._counted(v.producer_id)).records += 1
            assert v.refusal is not None  # noqa: S101 - an unverified record is always refused
            self._find(pos, v.refusal.reason, str(v.refusal), record=ids, authentic=False)
            return
        h = rv.header
        s.authentic += 1
        if not digested:
            s.digest.add_authentic(h.record_id.bytes, rv.digest)
        if self.store_check is not None:
            self.store_check.observe(
                pos.partition,
                pos.offset,
                h.producer_id,
                str(h.record_id),
                rv.digest,
                accepted_content=v.accepted and h.kind.is_content,
                accepted_amendment=v.accepted and h.kind.is_amendment,
                recipients=h.recipients,
            )
        counts = s.producer(h.producer_id)
        counts.records += 1
        counts.authentic += 1
        counts.saw(h.sequence)
        self._recipients(pos, rv, ids)
        self._skew(pos, rv, ids)
        if p.addressed:
            s.addressed += 1
            if p.content_error is None:
                s.decrypted += 1
        if v.refusal is not None:
            self._find(pos, v.refusal.reason, str(v.refusal), record=ids, authentic=True)
        elif h.kind is RecordKind.ERASURE:
            s.erasures += 1
        self._gaps(pos, v, ids)
        # As for a consumer's feeds: only a heartbeat that moves its chain forward speaks for
        # the feed; an old one appended again later fills its gap but breaks no silence.
        if v.accepted and h.kind is RecordKind.HEARTBEAT and not v.filled:
            interval = p.content.interval_ms if isinstance(p.content, Heartbeat) else None
            self._heartbeat(pos, rv, ids, interval)

    def _gaps(
        self, pos: Position, v: Verdict, ids: tuple[str | None, str | None, int | None]
    ) -> None:
        """Missing ranges are reported at the end if still open (a late record may fill them)."""
        if v.stream is None:
            return
        label = _label(v.stream)
        if v.gap is None and not v.filled and label not in self.state.gaps:
            # Nothing revealed, filled or open on this stream (nearly every record): nothing to
            # track, and no kept range of the chain's can have been pushed out.
            self.state.seen.add(label)
            return
        open_gaps = self.state.gaps.setdefault(label, [])
        if v.filled and ids[2] is not None:
            seq = ids[2]
            for i, g in enumerate(open_gaps):
                if g.first <= seq <= g.last:
                    parts = [
                        replace(g, first=a, last=b)
                        for a, b in ((g.first, seq - 1), (seq + 1, g.last))
                        if a <= b
                    ]
                    open_gaps[i : i + 1] = parts
                    break
            self._find(
                pos,
                ReasonCode.CHAIN_REORDER,
                f"{v.stream}: sequence {seq} arrived late (it had been missing)",
                record=ids,
                authentic=True,
            )
        if v.gap is not None and not (
            self.config.baseline_first_sight and v.gap[0] == 0 and label not in self.state.seen
        ):
            open_gaps.append(
                OpenGap(v.gap[0], v.gap[1], pos.partition, pos.offset, ids[0] or "", ids[2] or 0)
            )
        if v.chain is not None:
            # A range the chain no longer remembers (pushed out by a newer gap, or by a late record
            # that split a range while MAX_OPEN_GAPS were open) can no longer be filled: a late
            # record for it is a replay now. Report it at once, so this state stays bounded too.
            kept = v.chain.gaps
            for g in [
                g for g in open_gaps if not any(a <= g.first and g.last <= b for a, b in kept)
            ]:
                open_gaps.remove(g)
                self._report_gap(v.stream, g)
        self.state.seen.add(label)
        if not open_gaps:
            del self.state.gaps[label]

    def completeness(self, vouched: Sequence[FeedBeat]) -> int:
        """After a whole replay: every sequence number the producers' heartbeats vouched for on
        this topic that the topic no longer holds (withheld or deleted while heartbeats flowed)
        is a ``records_missing`` finding. Returns how many records are missing.

        Gaps inside a stream are the chain's findings (``chain_gap``); this reports what lies
        beyond a stream's last record, or a whole stream the topic does not hold at all.
        """
        self.flush()  # the chain as judged so far, into the ledger it is read back from
        chain = self.ledger.load_chain()
        topic = self.state.topic
        beats = [replace(b, heads=tuple(h for h in b.heads if h.topic == topic)) for b in vouched]
        missing = 0
        for m in missing_records(
            beats, chain, datetime.max.replace(tzinfo=UTC), timedelta(0), include_gaps=False
        ):
            missing += m.count
            self._find(
                Position(topic, m.partition, -1, None),
                ReasonCode.RECORDS_MISSING,
                m.describe(),
                record=(None, m.producer_id, m.first),
                authentic=True,
            )
        return missing

    def _report_gap(self, stream: StreamKey, g: OpenGap) -> None:
        self._find(
            Position(self.state.topic, g.partition, g.offset, None),
            ReasonCode.CHAIN_GAP,
            f"{stream}: sequence {g.first}..{g.last} ({g.last - g.first + 1}) missing before "
            f"{g.sequence}",
            record=(g.record_id, stream.producer_id, g.sequence),
            authentic=True,
        )

    def _recipients(
        self, pos: Position, v: VerifiedRecord, ids: tuple[str | None, str | None, int | None]
    ) -> None:
        """Each recipient must be a consumer or auditor, with that key, in the version in force
        (and, with the producer's sharing agreement, one it can address)."""
        at = pos.appended_at or v.created_at
        body = self._in_force_at(at)
        if body is None:  # intake already refused such a record
            return
        agreement = self.config.agreement
        # The agreement binds its own producer only: the answer depends on the producer then.
        bound = agreement is not None and agreement.producer == v.producer_id
        recipients = v.recipients
        last = self._last_recipients
        if (
            last is not None
            and last[0] is recipients
            and last[1] == body.version
            and last[2] == bound
        ):
            # The very same list as the record before (a data key's reuse window): same answer.
            problem = last[3]
        else:
            entries = tuple(map(_AGENCY_AND_KEY, recipients))
            slot = (body.version, bound, entries)
            if slot not in self._recipients_ok:
                if len(self._recipients_ok) >= _MAX_RECIPIENT_CACHE:
                    self._recipients_ok.clear()
                self._recipients_ok[slot] = self._recipient_problem(
                    body, entries, at, v.producer_id
                )
            problem = self._recipients_ok[slot]
            self._last_recipients = (recipients, body.version, bound, problem)
        if problem is not None:
            self._find(
                pos,
                ReasonCode.RECIPIENT_NOT_ENTITLED,
                f"record {ids[0]}: {problem}",
                record=ids,
                authentic=True,
            )

    def _in_force_at(self, at: datetime) -> DirectoryBody | None:
        """As :meth:`DirectoryHistory.in_force_at`, by bisection when the versions' issue times
        are in order (they are: each version is issued after the one before)."""
        if not self._issued_sorted:
            return self.history.in_force_at(at)
        if self._issued and at >= self._issued[-1]:  # the newest (nearly always), as bisected
            return self._bodies[-1]
        i = bisect_right(self._issued, at)
        return self._bodies[i - 1] if i else None

    def _recipient_problem(
        self,
        body: DirectoryBody,
        entries: tuple[tuple[str, bytes], ...],
        at: datetime,
        producer: str,
    ) -> str | None:
        agreement = self.config.agreement
        for agency_id, key_id in entries:
            agency = body.agency(agency_id)
            if agency is None or (agency.removed_at is not None and agency.removed_at <= at):
                return f"recipient {agency_id} is not in directory v{body.version}"
            if Role.CONSUMER not in agency.roles and Role.AUDITOR not in agency.roles:
                return f"recipient {agency_id} is neither a consumer nor an auditor"
            # Sealed to one of its keys, or to an encryption epoch of one (crypto-shredding):
            # whether that epoch's private key still exists is the recipient's business, not
            # the record's integrity.
            sealable = {k.key_id for k in agency.keys} | {
                e.epoch_id for k in agency.keys for e in k.enc_epochs
            }
            if key_id.hex() not in sealable:
                return f"recipient {agency_id} is sealed to key {key_id.hex()}, not one of its keys"
            if agreement is not None and agreement.producer == producer:
                problem = agreement.recipient_problem(agency_id)
                if problem is not None:
                    return problem
        return None

    def _skew(
        self, pos: Position, v: VerifiedRecord, ids: tuple[str | None, str | None, int | None]
    ) -> None:
        if pos.appended_at is None:
            return
        lag = pos.appended_at - v.created_at
        if abs(lag) > self.config.max_skew:
            when = "after" if lag > timedelta(0) else "before"
            self._find(
                pos,
                ReasonCode.CLOCK_SKEW,
                f"record {ids[0]} reached the broker {abs(lag).total_seconds():.0f}s {when} its "
                f"signed creation time (limit {self.config.max_skew.total_seconds():.0f}s)",
                record=ids,
                authentic=True,
            )

    def _limit_us(self, interval_ms: int | None) -> int | None:
        if self.config.heartbeat_interval is not None:
            interval_ms = int(self.config.heartbeat_interval.total_seconds() * 1000)
        if interval_ms is None:
            return None
        return math.ceil(interval_ms * 1000 * self.config.heartbeat_tolerance)

    def _heartbeat(
        self,
        pos: Position,
        v: VerifiedRecord,
        ids: tuple[str | None, str | None, int | None],
        signed_ms: int | None,
    ) -> None:
        producer = v.producer_id
        at_us = to_micros(pos.appended_at or v.created_at)
        prev = self.state.heartbeats.get(producer)
        interval_ms = signed_ms if signed_ms is not None else (prev.interval_ms if prev else None)
        limit = self._limit_us(interval_ms)
        if prev is not None and limit is not None and at_us - prev.at_us > limit:
            self._find(
                pos,
                ReasonCode.HEARTBEAT_MISSING,
                f"no heartbeat from {producer} for {(at_us - prev.at_us) / 1e6:.0f}s "
                f"(limit {limit / 1e6:.0f}s) after offset {prev.offset}",
                record=ids,
                authentic=True,
            )
        self.state.heartbeats[producer] = HeartbeatSeen(
            at_us, pos.partition, pos.offset, interval_ms
        )

    def finish_store_check(self) -> int:
        """After a whole replay: each store row the topic did not bear out is a finding.
        Returns how many."""
        if self.store_check is None:
            return 0
        mismatches = self.store_check.finish()
        for m in mismatches:
            r = m.row
            self._find(
                Position(self.state.topic, r.partition, r.offset, None),
                ReasonCode.STORE_MISMATCH,
                f"{r.producer_id}'s record {r.record_id} ({r.status} in the store): {m.why}",
                record=(r.record_id, r.producer_id, None),
                authentic=False,
            )
        return len(mismatches)

    def finish(self, as_of: datetime | None) -> None:
        """End of replay: ranges still missing, and producers whose heartbeats stopped."""
        for label, gaps in sorted(self.state.gaps.items()):
            stream = _unlabel(label)
            for g in gaps:
                self._report_gap(stream, g)
        self.state.gaps.clear()
        if as_of is None:
            return
        now_us = to_micros(as_of)
        for producer, hb in sorted(self.state.heartbeats.items()):
            limit = self._limit_us(hb.interval_ms)
            if limit is not None and now_us - hb.at_us > limit:
                self._find(
                    Position(self.state.topic, hb.partition, hb.offset, None),
                    ReasonCode.HEARTBEAT_MISSING,
                    f"no heartbeat from {producer} for {(now_us - hb.at_us) / 1e6:.0f}s before "
                    f"{as_of.isoformat()} (limit {limit / 1e6:.0f}s): a frozen feed",
                    record=(None, producer, None),
                    authentic=True,
                )


def _label(stream: StreamKey) -> str:
    return f"{stream.producer_id}|{stream.topic}|{stream.partition}|{stream.epoch}"


def _unlabel(label: str) -> StreamKey:
    producer, topic, partition, epoch = label.split("|")
    return StreamKey(producer, topic, int(partition), epoch)


#: Young collections between full ones during a replay (Python's default is 10).
_FULL_COLLECTION_EVERY = 1000


@contextmanager
def _rare_full_collections() -> Iterator[None]:
    """Full garbage collections rarely while replaying, then as before.

    The judge's working state (tens of thousands of records between two ledger commits) is
    almost all long-lived and acyclic, so each full collection walked it again for nothing: about
    a fifth of the judging process's time. Young collections still run as usual (cycles made
    while judging are collected young), and the working state is freed by reference counting at
    each commit, so memory stays bounded.
    """
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, max(full, _FULL_COLLECTION_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(young, middle, full)


class Replay:
    """Reads partitions in order, verifies each batch in the worker processes while the previous
    one is judged, and judges the results in offset order (``workers`` 1: serial)."""

    def __init__(
        self,
        *,
        source: RecordSource,
        verifier: Verifier,
        judge: AuditJudge,
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

    def _judge(self, partition: int, prepared: list[Prepared]) -> int:
        self.judge.judge_batch(prepared)
        if prepared:
            self.positions[partition][0] = prepared[-1].position.offset + 1
        return len(prepared)

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
        with _rare_full_collections(), IntakePool(self.verifier, self.workers) as pool:
            pending: tuple[int, Callable[[], list[Prepared]]] | None = None
            for partition, batch in self.batches():
                submitted = (partition, pool.submit(batch))
                if pending is not None:
                    # Judge the previous batch while the workers prepare this one.
                    n = self._judge(pending[0], pending[1]())
                    done += n
                    if on_batch is not None:
                        on_batch(n)
                    if stop_after is not None and done >= stop_after:
                        pool.cancel()
                        return False
                pending = submitted
            if pending is not None:
                n = self._judge(pending[0], pending[1]())
                if on_batch is not None:
                    on_batch(n)
        return True

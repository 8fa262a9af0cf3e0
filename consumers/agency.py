"""An agency's consumer loop: poll, decide (the pure pipeline), store, then commit offsets.

The order is the one that loses nothing (SECURITY.md, "Durability settings"):

1. Poll a batch from the agency's consumer group.
2. Run every record through :class:`consumers.pipeline.Pipeline`; bad records become quarantine
   rows with their raw bytes and reason code, never exceptions.
3. Commit records, receipts, quarantine rows, amendments, chain states and the next offsets to
   the store in **one** transaction.
4. Only then commit the offsets to Kafka, for lag monitoring; the store's offsets are the truth,
   and every (re)assignment seeks to them.

If the store commit fails, nothing of the batch is kept, the pipeline's in-memory chain state is
reset from the store, and the batch is read again (the loop stops after repeated failures rather
than spin).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.liveness import LivenessWatch
from consumers.pipeline import Amend, Beat, Kept, Outcome, Pipeline, RawRecord, Receipt, Rejected
from intelbus.chain import ChainState
from intelbus.errors import ConfigError
from intelbus.log import get_logger
from intelbus.store.base import (
    Amendment,
    Batch,
    FeedBeat,
    QuarantineEntry,
    Store,
    StoredRecord,
    WithheldReceipt,
)
from intelbus.store.base import ChainState as StoredChain
from intelbus.transport import kafka as transport
from intelbus.transport.security import TransportSecurity

log = get_logger("consumers.agency")
MAX_COMMIT_FAILURES = 3

# Fault injection for the fault suite (tests/faults), off unless set: the consumer SIGKILLs itself
# at the named point of the INTELBUS_CRASH_AT_BATCH-th non-empty batch (default 2, so one batch is
# committed first). An unknown point is refused rather than silently never reached.
CRASH_AT_ENV = "INTELBUS_CRASH_AT"
CRASH_AT_BATCH_ENV = "INTELBUS_CRASH_AT_BATCH"
CRASH_POINTS = ("after_poll", "mid_transaction", "after_db_commit")


@dataclasses.dataclass(frozen=True, slots=True)
class _CrashPlan:
    point: str | None
    batch: int

    @classmethod
    def from_env(cls) -> _CrashPlan:
        point = os.environ.get(CRASH_AT_ENV) or None
        if point is not None and point not in CRASH_POINTS:
            raise ConfigError(f"{CRASH_AT_ENV}={point!r}: not one of {', '.join(CRASH_POINTS)}")
        return cls(point, int(os.environ.get(CRASH_AT_BATCH_ENV, "2")))

    def armed(self, point: str, batch: int) -> bool:
        return self.point == point and batch == self.batch

    def reached(self, point: str, batch: int) -> None:
        if self.armed(point, batch):
            _crash(point)

    def in_transaction(self, batch: Batch, number: int) -> Batch:
        """The batch, or (armed for ``mid_transaction``) one that crashes inside its commit."""
        if not self.armed("mid_transaction", number):
            return batch
        return dataclasses.replace(batch, offsets=_CrashWhenOffsetsWritten(batch.offsets))


def _crash(point: str) -> None:
    log.warning("consumer.crash_injected", point=point)
    os.kill(os.getpid(), signal.SIGKILL)


class _CrashWhenOffsetsWritten(dict[tuple[str, int], int]):
    """Offsets that kill the process when the store reads them to write them.

    The store writes a batch's offsets last, inside the batch's transaction: reading them here
    means the records' rows are written and the transaction is open, not committed.
    """

    def items(self) -> Any:  # noqa: ANN401 - dict's own items view type
        _crash("mid_transaction")
        return super().items()


@dataclass
class Stats:
    """What one run saw, for the progress display and the demo summary."""

    received: int = 0
    stored: int = 0
    redacted: int = 0
    withheld: int = 0
    not_addressed: int = 0
    amendments: int = 0
    heartbeats: int = 0
    gaps: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    batches: int = 0


def to_batch(group_id: str, outcomes: list[Outcome], stats: Stats) -> Batch:  # noqa: PLR0912 - one branch per outcome kind
    """Turn pipeline outcomes into one store batch (and count them)."""
    records: list[StoredRecord] = []
    withheld: list[WithheldReceipt] = []
    quarantined: list[QuarantineEntry] = []
    amendments: list[Amendment] = []
    chain: dict[tuple[str, str], StoredChain] = {}
    offsets: dict[tuple[str, int], int] = {}
    beats: list[FeedBeat] = []
    for o in outcomes:
        raw = o.raw
        offsets[(raw.topic, raw.partition)] = max(
            offsets.get((raw.topic, raw.partition), 0), raw.offset + 1
        )
        stats.received += 1
        if o.chain is not None:
            chain[(o.chain.producer_id, o.chain.stream)] = StoredChain(
                o.chain.producer_id, o.chain.stream, o.chain.last_sequence, o.chain.last_digest
            )
        if o.gap is not None:
            stats.gaps += 1
            log.warning(
                "chain.gap", topic=raw.topic, offset=raw.offset, first=o.gap[0], last=o.gap[1]
            )
        r = o.result
        if isinstance(r, Beat):
            stats.heartbeats += 1
            # The broker's append time, so a producer's own clock cannot keep its feed looking
            # alive (its signed time only where the broker gave none: bus topics always do).
            beats.append(
                FeedBeat(r.producer_id, raw.topic, raw.appended_at or r.sent_at, r.interval_ms)
            )
        elif isinstance(r, Kept):
            records.append(
                StoredRecord(
                    record_id=r.record_id,
                    topic=raw.topic,
                    partition=raw.partition,
                    offset=raw.offset,
                    producer_id=r.producer_id,
                    kind=r.kind,
                    sequence=r.sequence,
                    digest=r.digest,
                    created_at=r.created_at,
                    appended_at=raw.appended_at or r.created_at,
                    policy_hash=r.policy_hash,
                    rule_id=r.rule_id,
                    action=r.action.value,
                    redacted_fields=r.redacted_fields,
                    tlp=r.tlp,
                    classification=r.classification,
                    force_area=r.force_area,
                    occurred_at=r.occurred_at,
                    payload=r.payload,
                )
            )
            if r.action.value == "redact":
                stats.redacted += 1
            else:
                stats.stored += 1
        elif isinstance(r, Receipt):
            withheld.append(_receipt(raw, r))
            if r.rule_id == "not-addressed":
                stats.not_addressed += 1
            else:
                stats.withheld += 1
        elif isinstance(r, Amend):
            amendments.append(
                Amendment(
                    kind=r.kind,
                    amendment_record_id=r.record_id,
                    target_record_id=r.target_record_id,
                    producer_id=r.producer_id,
                    at=r.at,
                    reason=r.reason,
                    new_payload=r.new_payload,
                )
            )
            if r.receipt is not None:
                withheld.append(_receipt(raw, r.receipt))
            stats.amendments += 1
        elif isinstance(r, Rejected):
            quarantined.append(
                QuarantineEntry(
                    topic=raw.topic,
                    partition=raw.partition,
                    offset=raw.offset,
                    raw=raw.value,
                    reason=r.reason.value,
                    message=r.message,
                    record_id=r.record_id,
                    producer_id=r.producer_id,
                )
            )
            stats.quarantined[r.reason.value] += 1
            log.warning(
                "record.quarantined",
                topic=raw.topic,
                partition=raw.partition,
                offset=raw.offset,
                reason=r.reason.value,
                record_id=r.record_id,
            )
    return Batch(
        group_id=group_id,
        records=records,
        withheld=withheld,
        quarantined=quarantined,
        amendments=amendments,
        chain=list(chain.values()),
        beats=beats,
        offsets=offsets,
    )


def _receipt(raw: RawRecord, r: Receipt) -> WithheldReceipt:
    return WithheldReceipt(
        record_id=r.record_id,
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        producer_id=r.producer_id,
        digest=r.digest,
        rule_id=r.rule_id,
        policy_hash=r.policy_hash,
    )


def chain_from_store(store: Store) -> dict[tuple[str, str], ChainState]:
    """The stored chain states, as the pipeline's chain type."""
    return {
        key: ChainState(c.producer_id, c.stream, c.last_sequence, bytes(c.last_digest))
        for key, c in store.load_chain().items()
    }


class AgencyConsumer:
    """Runs one agency's consumer group member against its store."""

    def __init__(
        self,
        *,
        pipeline_factory: Callable[
            [Callable[[str], str | None], dict[tuple[str, str], ChainState]], Pipeline
        ],
        store: Store,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        batch_size: int = 500,
        security: TransportSecurity | None = None,
        liveness: LivenessWatch | None = None,
    ) -> None:
        self.store = store
        self.liveness = liveness or LivenessWatch()
        self.group_id = group_id
        self.topics = topics
        self.batch_size = batch_size
        self.security = security  # None: the environment's settings (INTELBUS_SECURITY, ...)
        self.pipeline = pipeline_factory(self._producer_of, chain_from_store(store))
        self.bootstrap = bootstrap_servers
        self.stats = Stats()
        self.stop_event = threading.Event()

    def _producer_of(self, record_id: str) -> str | None:
        # Receipts count too: a foreign amendment of a withheld record is caught as well.
        return self.store.producer_of(record_id)

    def _on_assigned(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        # Another member may have advanced these partitions' chains: start again from the store.
        self.pipeline.reset(chain_from_store(self.store))
        positions: dict[tuple[str, int], int] = {}
        for topic in {t for t, _ in partitions}:
            for partition, offset in self.store.load_offsets(self.group_id, topic).items():
                positions[(topic, partition)] = offset
        log.info("partitions.assigned", count=len(partitions), group=self.group_id)
        return positions

    def run(
        self,
        *,
        until_idle: bool = False,
        idle_polls: int = 6,
        poll_ms: int = 500,
        on_batch: Callable[[Stats], None] | None = None,
    ) -> Stats:
        """Consume until stopped (or, with ``until_idle``, until ``idle_polls`` empty polls in a row)."""
        consumer = transport.make_consumer(
            self.bootstrap,
            security=self.security,
            group_id=self.group_id,
            max_poll_records=self.batch_size,
            # Measured (bench/perf.py): with kafka-python's defaults (500 ms, 1 MiB) every
            # partition's next fetch stalled ~300 ms once its buffer drained, halving the
            # pipeline's rate. A shorter broker wait and a larger per-partition fetch keep
            # records flowing; memory stays bounded by the fetch size.
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        transport.subscribe(
            consumer, self.topics, on_assigned=self._on_assigned, on_revoked=lambda: None
        )
        idle = 0
        unassigned = 0
        failures = 0
        crash = _CrashPlan.from_env()
        polled = 0
        try:
            while not self.stop_event.is_set():
                messages = transport.poll(consumer, timeout_ms=poll_ms, max_records=self.batch_size)
                if len(messages) < self.batch_size and transport.has_assignment(consumer):
                    self.liveness.maybe_check(self.store)  # caught up: judge the feeds
                if not messages:
                    # Idle only counts once partitions are assigned: after a crash the group waits
                    # for the dead member's session to expire before it hands partitions over.
                    if transport.has_assignment(consumer):
                        idle += 1
                    else:
                        unassigned += 1
                        if until_idle and unassigned >= 120:  # a minute with no partitions: give up
                            break
                    if until_idle and idle >= idle_polls:
                        break
                    continue
                idle = 0
                polled += 1
                crash.reached("after_poll", polled)
                outcomes = [
                    self.pipeline.process(
                        RawRecord(m.topic, m.partition, m.offset, m.value, m.appended_at)
                    )
                    for m in messages
                ]
                attempt = Stats()
                batch = to_batch(self.group_id, outcomes, attempt)
                batch = crash.in_transaction(batch, polled)
                try:
                    self.store.commit(batch)
                except Exception as e:
                    failures += 1
                    # Type only: a driver message may quote row values.
                    log.error("store.commit_failed", error=type(e).__name__, failures=failures)  # noqa: TRY400
                    self.pipeline.reset(chain_from_store(self.store))
                    # Nothing of the batch was kept: read it again from the store's offsets.
                    transport.rewind(consumer, self._on_assigned)
                    if failures >= MAX_COMMIT_FAILURES:
                        raise
                    continue
                failures = 0
                crash.reached("after_db_commit", polled)
                self._committed(consumer, batch, attempt)
                if on_batch is not None:
                    on_batch(self.stats)
        finally:
            consumer.close()
        return self.stats

    def _committed(self, consumer: Any, batch: Batch, attempt: Stats) -> None:  # noqa: ANN401
        """The store holds the batch: count it, then tell Kafka (for lag only; the store rules)."""
        self.pipeline.batch_committed()
        _merge(self.stats, attempt)
        self.stats.batches += 1
        if not transport.commit(consumer, batch.offsets):
            log.warning("kafka.commit_failed", group=self.group_id)

    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self.stop_event.set()


def _merge(total: Stats, part: Stats) -> None:
    for name in (
        "received",
        "stored",
        "redacted",
        "withheld",
        "not_addressed",
        "amendments",
        "heartbeats",
        "gaps",
    ):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.quarantined.update(part.quarantined)

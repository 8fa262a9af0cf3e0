"""An agency's consumer loop: poll, judge inside the store's transaction, then commit offsets.

The order is the one that loses nothing (SECURITY.md, "Durability settings"):

1. Poll a batch from the agency's consumer group. (At start the consumer refuses, with
   :class:`TopicMisconfigured`, a bus topic whose timestamp type is not LogAppendTime: the
   broker's clock must witness arrivals. A topic changed while it runs is logged, and intake
   judges records without a broker time conservatively.)
2. Intake every record (verify, decrypt, decode) against the directory; a key the directory does
   not know yet makes the consumer read the directory topic once and try again, so a producer's
   newly published key is not mistaken for a forgery.
3. In **one** store transaction: read the trusted state this batch needs, judge every record
   (consumers/pipeline.py), write records, versions, amendments, quarantine rows, stream heads,
   heartbeats and the next offsets.
4. Only then commit the offsets to Kafka, for lag monitoring; the store's offsets are the truth,
   and every (re)assignment seeks to them.

Between batches the consumer follows the directory topic: a new version is verified and trusted,
what it withdraws (keys revoked, leaked, retired since a time) is withdrawn from the store, and an
expired directory stops the consumer (fail closed) until a newer version is available.

If the store commit fails, nothing of the batch was kept and it is read again from the store's
offsets (the loop stops after repeated failures rather than spin).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers import retention
from consumers.config import ConsumerConfig
from consumers.liveness import LivenessWatch
from consumers.pipeline import AgencyPipeline, RawRecord
from consumers.policy_watch import PolicyWatch
from consumers.prepare_pool import Pending, PreparePool
from intelbus.directory import store as dstore
from intelbus.directory.follow import DirectoryFollower, Freshness, require_fresh
from intelbus.directory.trust import DirectoryHistory
from intelbus.errors import (
    ConfigError,
    KeyNotCurrent,
    PolicyReloadFailed,
    PrepareFailed,
    ReasonCode,
    StoreError,
    TopicMisconfigured,
    UnknownKey,
)
from intelbus.identity import AgencyIdentity
from intelbus.keyring import load_epochs
from intelbus.kinds import Family
from intelbus.log import get_logger
from intelbus.serde.registry import SchemaRegistry
from intelbus.store import open_store
from intelbus.store.base import Store
from intelbus.transport import kafka as transport
from intelbus.transport.client import KafkaClient
from intelbus.transport.security import TransportSecurity
from intelbus.transport.topics import topic_name
from intelbus.trust.model import Batch, Effect, Prepared, Verdict
from intelbus.trust.rejudge import cutoffs

log = get_logger("consumers.agency")
MAX_COMMIT_FAILURES = 3
#: How often a running consumer reads the directory topic for new versions.
DIRECTORY_EVERY_S = 10.0
# A refusal that a newer directory version might turn into an acceptance (a new key, new rights).
_DIRECTORY_REASONS = frozenset({ReasonCode.UNKNOWN_KEY, ReasonCode.KEY_NOT_VALID})

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


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A polled batch handed to intake, not yet judged (its number counts non-empty polls)."""

    raws: list[RawRecord]
    pending: Pending | PrepareFailed
    number: int
    rebalances: int  # the consumer's count when it was polled


@dataclass
class _Loop:
    """The poll loop's counters, and the batch being prepared while the one before commits."""

    crash: _CrashPlan
    idle: int = 0
    unassigned: int = 0
    failures: int = 0
    polled: int = 0
    inflight: _InFlight | None = None


@dataclass
class Stats:
    """What one run saw, for the progress display and the demo summary."""

    received: int = 0
    stored: int = 0
    redacted: int = 0
    withheld: int = 0
    not_addressed: int = 0
    #: Sealed to an encryption epoch whose key this agency destroyed: nothing kept, no refusal.
    shredded: int = 0
    amendments: int = 0
    #: Erasures applied (or registered, waiting for their target): payloads removed.
    erased: int = 0
    heartbeats: int = 0
    gaps: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    #: Amendments registered pending and refused when their target came, by reason code.
    late_refusals: Counter[str] = field(default_factory=Counter)
    batches: int = 0


def apply_withdrawals(store: Store, history: DirectoryHistory, now: datetime) -> int:
    """Withdraw from ``store`` what ``history`` no longer trusts (intelbus/trust/rejudge.py);
    each (key, time) once, however often this runs. Returns how many were applied now."""
    done = set(store.rejudged())
    n = 0
    for key_id, since in sorted(cutoffs(history, now=now).items()):
        if (key_id, since) not in done:
            store.withdraw(key_id, since)
            n += 1
    return n


def count(verdicts: Sequence[Verdict], stats: Stats) -> None:
    """Add a batch's verdicts to ``stats`` (and log refusals and gaps, ids only)."""
    for v in verdicts:
        stats.received += 1
        pos = v.position
        if v.gap is not None:
            stats.gaps += 1
            log.warning(
                "chain.gap",
                topic=pos.topic,
                partition=pos.partition,
                offset=pos.offset,
                producer=v.producer_id,
                first=v.gap[0],
                last=v.gap[1],
            )
        if v.refusal is not None:
            stats.quarantined[v.refusal.reason.value] += 1
            log.warning(
                "record.quarantined",
                topic=pos.topic,
                partition=pos.partition,
                offset=pos.offset,
                reason=v.refusal.reason.value,
                record_id=v.record_id,
            )
            continue
        if v.effect is Effect.STORED:
            stats.stored += 1
        elif v.effect is Effect.REDACTED:
            stats.redacted += 1
        elif v.effect is Effect.WITHHELD:
            stats.withheld += 1
        elif v.effect is Effect.NOT_ADDRESSED:
            stats.not_addressed += 1
        elif v.effect is Effect.SHREDDED:
            stats.shredded += 1
        elif v.effect is Effect.AMENDED:
            stats.amendments += 1
        elif v.effect is Effect.ERASED:
            stats.erased += 1
        elif v.effect is Effect.HEARTBEAT:
            stats.heartbeats += 1


class AgencyConsumer:
    """Runs one agency's consumer group member against its store."""

    def __init__(
        self,
        *,
        pipeline: AgencyPipeline,
        store: Store,
        bootstrap_servers: str,
        group_id: str,
        topics: list[str],
        batch_size: int = 500,
        security: TransportSecurity | None = None,
        client: KafkaClient | None = None,
        liveness: LivenessWatch | None = None,
        follower: DirectoryFollower | None = None,
        policy_watch: PolicyWatch | None = None,
        directory_every_s: float = DIRECTORY_EVERY_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        prune_every_s: float = 0.0,
        prepare_workers: int = 0,
    ) -> None:
        self.pipeline = pipeline
        #: Intake on worker processes (consumers/prepare_pool.py); 0 or 1: in this thread.
        self.pool = PreparePool(prepare_workers)
        self.store = store
        self.liveness = liveness or LivenessWatch()
        self.group_id = group_id
        self.topics = topics
        self.batch_size = batch_size
        self.security = security  # None: the environment's settings (INTELBUS_SECURITY, ...)
        # None: INTELBUS_KAFKA_CLIENT, else kafka-python (intelbus/transport/client.py).
        self.client = KafkaClient.resolve(client)
        self.bootstrap = bootstrap_servers
        self.follower = follower
        self.policy_watch = policy_watch  # None: the policy is fixed for the run (tests)
        self.directory_every_s = directory_every_s
        self.clock = clock
        self.stats = Stats()
        self.stop_event = threading.Event()
        self._next_directory = 0.0
        self.prune_every_s = prune_every_s  # 0: never (tests; `intelbus store prune` instead)
        self._next_prune = 0.0
        self._expiring_logged = False
        self._untimed_warned = False
        self._rebalances = 0  # assignments and revocations seen (a batch in flight is dropped)

    @classmethod
    def from_config(cls, config: ConsumerConfig, passphrase: bytes | None = None) -> AgencyConsumer:
        """A consumer wired from its config (see :func:`build_consumer`)."""
        return build_consumer(config, passphrase)

    def _on_assigned(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        positions: dict[tuple[str, int], int] = {}
        for topic in {t for t, _ in partitions}:
            for partition, offset in self.store.load_offsets(self.group_id, topic).items():
                positions[(topic, partition)] = offset
        log.info("partitions.assigned", count=len(partitions), group=self.group_id)
        return positions

    def _rebalanced(self, partitions: list[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        self._rebalances += 1
        return self._on_assigned(partitions)

    def _revoked(self) -> None:
        # A batch polled before this may belong to partitions another member now reads from the
        # store's offsets: one still in flight is dropped, not committed (see run()).
        self._rebalances += 1

    def maybe_prune(self) -> int:
        """Prune payloads past the policy's retention when the schedule says so (issue 16);
        returns how many were pruned now. Between batches only, as the store's one writer."""
        if self.prune_every_s <= 0 or time.monotonic() < self._next_prune:
            return 0
        self._next_prune = time.monotonic() + self.prune_every_s
        return retention.prune(self.store, self.pipeline.policy, self.clock()).pruned

    # -- the directory --------------------------------------------------------------------------------

    def check_topics(self) -> None:
        """Refuse to start on a bus topic whose broker clock does not witness arrival.

        Raises:
            TopicMisconfigured: a topic's timestamp type is not LogAppendTime.
            KafkaUnavailableError: the topics cannot be described.
        """
        types = transport.timestamp_types(self.bootstrap, self.topics, security=self.security)
        wrong = sorted(t for t, kind in types.items() if kind != "LogAppendTime")
        if wrong:
            raise TopicMisconfigured(
                f"topic(s) {', '.join(wrong)} do not use message.timestamp.type=LogAppendTime: "
                "the broker's clock must witness when records arrive (a leaked key could "
                "back-date records otherwise). Fix the topic config; nothing was consumed."
            )

    def check_key(self) -> None:
        """Refuse to go on unless this consumer's key is the directory's current key for its
        agency: a rotated-out key, another agency's or one never listed would open nothing and
        quarantine every record, moving the offsets past them all.

        Raises:
            KeyNotCurrent: it is not (nothing read from Kafka, nothing committed).
        """
        mine = self.pipeline.identity.public
        directory = self.pipeline.directory
        version = directory.latest.version
        try:
            current = directory.recipient_key(mine.agency_id, self.clock())
        except UnknownKey as e:
            raise KeyNotCurrent(
                f"{mine.agency_id} has no current key in directory v{version} ({e}): "
                "nothing was consumed"
            ) from None
        if (current.enc_public, current.sign_public) != (mine.enc_public, mine.sign_public):
            raise KeyNotCurrent(
                f"the key file holds key {mine.key_id.hex()}, but {mine.agency_id}'s current "
                f"key in directory v{version} is {current.key_id.hex()}: records sealed to the "
                "current key could not be opened; use the current key file (nothing was consumed)"
            )

    def reload_policy(self) -> None:
        """Swap in the sharing policy if its file changed (once per poll loop, between batches).

        Raises:
            PolicyReloadFailed: the new file does not load; nothing more is judged.
        """
        if self.policy_watch is None:
            return
        policy = self.policy_watch.changed()
        if policy is None:
            return
        try:
            self.pipeline.swap_policy(policy)
        except ValueError as e:  # another agency's: PolicyWatch refuses it already
            raise PolicyReloadFailed(f"the new sharing policy cannot be used: {e}") from None

    def follow_directory(self, *, force: bool = False) -> int:
        """Read the directory topic (at most every ``directory_every_s`` unless ``force``), apply
        what new versions withdraw, and refuse an expired directory. Returns the new versions.

        Raises:
            DirectoryExpired: the newest trusted version has expired.
        """
        now_mono = time.monotonic()
        if not force and now_mono < self._next_directory:
            return 0
        self._next_directory = now_mono + self.directory_every_s
        new = self.follower.catch_up() if self.follower is not None else []
        if new:
            self.check_key()  # a new version may have rotated this agency's key away
        self.apply_withdrawals()
        health = require_fresh(self.pipeline.directory, self.clock())
        if health.state is Freshness.EXPIRING and not self._expiring_logged:
            self._expiring_logged = True
            log.warning(
                "directory.expiring",
                version=health.version,
                expires=health.expires.isoformat(),
                hours_left=round(health.left.total_seconds() / 3600, 1),
            )
        return len(new)

    def apply_withdrawals(self) -> int:
        """Withdraw from the store what the directory no longer trusts (each key and time once)."""
        return apply_withdrawals(self.store, self.pipeline.directory, self.clock())

    def _prepare(self, raws: list[RawRecord], pending: Pending | None = None) -> list[Prepared]:
        """The batch prepared under the directory this consumer now holds.

        Raises:
            PrepareFailed: the prepare workers died (twice) on it.
        """
        if pending is None:
            pending = self.pool.submit(self.pipeline, raws)
        prepared = pending.result()
        if pending.directory_versions != len(self.pipeline.directory.versions):
            # Prepared ahead (overlapped with the previous commit) and a directory version was
            # followed since: prepared again under the directory in force now.
            prepared = self.pool.prepare(self.pipeline, raws)
        unknown = [
            i
            for i, p in enumerate(prepared)
            if p.error is not None and p.error.reason in _DIRECTORY_REASONS
        ]
        if unknown and self.follower is not None and self.follow_directory(force=True):
            # A newer directory version arrived: judge those records again with it.
            again = self.pool.prepare(self.pipeline, [raws[i] for i in unknown])
            for i, p in zip(unknown, again, strict=True):
                prepared[i] = p
        return prepared

    # -- the loop ----------------------------------------------------------------------------------

    def run(
        self,
        *,
        until_idle: bool = False,
        idle_polls: int = 6,
        poll_ms: int = 500,
        on_batch: Callable[[Stats], None] | None = None,
    ) -> Stats:
        """Consume until stopped (or, with ``until_idle``, until ``idle_polls`` empty polls in a row).

        Raises:
            TopicMisconfigured: a bus topic is not LogAppendTime (nothing consumed).
            DirectoryExpired: the directory expired (nothing more consumed).
            KeyNotCurrent: this consumer's key is not its agency's current one (nothing consumed).
            StoreLocked: the store's writer lock was removed or replaced while running.
            PolicyReloadFailed: the policy file changed into one that does not load.
            StoreError: the store failed repeatedly.
            KafkaUnavailableError: the broker could not be reached.
        """
        self.check_topics()
        self.follow_directory(force=True)
        # Before joining the group: a consumer that could open nothing must not move offsets.
        self.check_key()
        consumer = transport.make_consumer(
            self.bootstrap,
            security=self.security,
            client=self.client,
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
            consumer, self.topics, on_assigned=self._rebalanced, on_revoked=self._revoked
        )
        loop = _Loop(_CrashPlan.from_env())
        try:
            # Forked before the first poll, when the Kafka client's heartbeat thread starts
            # (a fork copies only the forking thread).
            self.pool.start(self.pipeline)
            while not self.stop_event.is_set():
                self.follow_directory()
                # Once per poll loop, before the next batch is judged: still the one writer,
                # and under the policy the file now holds.
                self.store.check_writer()
                self.reload_policy()
                self.maybe_prune()
                if not self._turn(consumer, loop, poll_ms, on_batch):
                    continue
                # Idle only counts once partitions are assigned: after a crash the group waits
                # for the dead member's session to expire before it hands partitions over.
                if transport.has_assignment(consumer):
                    loop.idle += 1
                else:
                    loop.unassigned += 1
                # A minute with no partitions assigned at all: give up waiting.
                if until_idle and (loop.idle >= idle_polls or loop.unassigned >= 120):
                    break
            if loop.inflight is not None and self._finish(consumer, loop.inflight, loop.crash):
                loop.inflight = None  # stopped: the batch in flight is committed, not dropped
                if on_batch is not None:
                    on_batch(self.stats)
        finally:
            consumer.close()
            self.pool.close()
            if self.follower is not None:
                self.follower.close()
        return self.stats

    def _turn(
        self,
        consumer: Any,  # noqa: ANN401 - kafka-python's consumer, opaque outside the transport
        loop: _Loop,
        poll_ms: int,
        on_batch: Callable[[Stats], None] | None,
    ) -> bool:
        """Poll once and commit what is due; True if the poll was idle (nothing polled or due).

        With prepare workers, the batch just polled is handed to them and the one polled last
        time is judged and committed here meanwhile (intake overlaps the commit). Without, each
        batch is prepared and committed before the next poll.

        Raises:
            StoreError: the store (or intake's workers) failed repeatedly.
        """
        parallel = self.pool.parallel
        # A batch in flight is not kept waiting for the broker: take what is buffered.
        messages = transport.poll(
            consumer,
            timeout_ms=0 if loop.inflight is not None else poll_ms,
            max_records=self.batch_size,
        )
        started = None
        if messages:
            loop.polled += 1
            loop.crash.reached("after_poll", loop.polled)
            started = self._start(messages, loop.polled)
        due, loop.inflight = (loop.inflight, started) if parallel else (started, None)
        caught_up = len(messages) < self.batch_size and transport.has_assignment(consumer)
        if caught_up and (due is None or not parallel):
            self.liveness.maybe_check(self.store)  # caught up: judge the feeds
        if due is None:
            if messages:
                loop.idle = 0
            return not messages
        loop.idle = 0
        if not self._finish(consumer, due, loop.crash):
            # Rewound to the store's offsets: what was polled since is read again.
            loop.inflight = None
            loop.failures += 1
            if loop.failures >= MAX_COMMIT_FAILURES:
                raise StoreError(f"the store failed {loop.failures} times in a row")
            return False
        loop.failures = 0
        if caught_up and parallel:
            self.liveness.maybe_check(self.store)  # the batch before is in, too
        if on_batch is not None:
            on_batch(self.stats)
        return False

    def _start(self, messages: list[transport.Message], polled: int) -> _InFlight:
        """Hand a polled batch to intake (the workers, or prepared here and now)."""
        untimed = next((m for m in messages if m.appended_at is None), None)
        if untimed is not None and not self._untimed_warned:
            # A topic changed to CreateTime while we run: the start check will refuse it next
            # time; meanwhile intake judges such records conservatively (no_broker_time).
            self._untimed_warned = True
            log.warning(
                "topic.not_log_append_time",
                topic=untimed.topic,
                partition=untimed.partition,
                offset=untimed.offset,
            )
        raws = [RawRecord(m.topic, m.partition, m.offset, m.value, m.appended_at) for m in messages]
        try:
            pending: Pending | PrepareFailed = self.pool.submit(self.pipeline, raws)
        except PrepareFailed as e:
            pending = e
        return _InFlight(raws, pending, polled, self._rebalances)

    def _finish(
        self,
        consumer: Any,  # noqa: ANN401 - kafka-python's consumer, opaque outside the transport
        batch: _InFlight,
        crash: _CrashPlan,
    ) -> bool:
        """Judge and commit one batch; False (and rewound) if intake's workers or the store
        failed: nothing of it was kept, and it is read again from the store's offsets."""
        if batch.rebalances != self._rebalances:
            # Polled ahead, then the group rebalanced: its partitions may be another member's
            # now, which reads them from the store's offsets. Not committed here; if they are
            # still ours, the assignment sought back to the store's offsets and it is read again.
            log.info("batch.dropped_on_rebalance", records=len(batch.raws))
            return True
        try:
            if isinstance(batch.pending, PrepareFailed):
                raise batch.pending
            prepared = self._prepare(batch.raws, batch.pending)
        except PrepareFailed as e:
            log.error("prepare.failed", error=type(e).__name__)  # noqa: TRY400
            transport.rewind(consumer, self._on_assigned)
            return False
        try:
            committed, verdicts = self.pipeline.commit(
                self.store,
                self.group_id,
                batch.raws,
                prepared,
                before_write=lambda b: crash.in_transaction(b, batch.number),
            )
        except Exception as e:  # noqa: BLE001 - any store failure: nothing kept, read again
            # Type only: a driver message may quote row values.
            log.error("store.commit_failed", error=type(e).__name__)  # noqa: TRY400
            # Nothing of the batch was kept: read it again from the store's offsets.
            transport.rewind(consumer, self._on_assigned)
            return False
        crash.reached("after_db_commit", batch.number)
        self._committed(consumer, committed, verdicts)
        return True

    def _committed(self, consumer: Any, batch: Batch, verdicts: list[Verdict]) -> None:  # noqa: ANN401
        """The store holds the batch: count it, then tell Kafka (for lag only; the store rules)."""
        count(verdicts, self.stats)
        for late in self.pipeline.late_refusals:
            # Registered pending earlier; its target turned out to be another producer's or of
            # another kind: kept as evidence (status refused), never applied.
            self.stats.late_refusals[late.refusal.reason.value] += 1
            log.warning(
                "amendment.refused",
                producer=late.producer_id,
                record_id=late.source.record_id,
                topic=late.source.topic,
                partition=late.source.partition,
                offset=late.source.offset,
                reason=late.refusal.reason.value,
            )
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
        "shredded",
        "amendments",
        "erased",
        "heartbeats",
        "gaps",
    ):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.quarantined.update(part.quarantined)


def build_consumer(config: ConsumerConfig, passphrase: bytes | None = None) -> AgencyConsumer:
    """An agency consumer wired from its config: key, directory (and its topic), policy, store.

    Raises:
        IntelbusError: any part of the configuration is unusable (a ConfigError, a
            DirectoryError, an UnsafeFile, a StoreError...).
    """
    identity = AgencyIdentity.load(config.key_file, passphrase=passphrase)
    if identity.agency_id != config.agency:
        raise ConfigError(
            f"the key file is {identity.agency_id}'s, the config is for {config.agency}"
        )
    history = dstore.load_folder(config.directory)
    policy_watch = PolicyWatch(config.policy, config.agency)
    pipeline = AgencyPipeline(
        identity=identity,
        # The encryption-epoch keyring beside the key file (empty if it has none).
        epochs=load_epochs(config.key_file, identity.agency_id),
        directory=history,
        registry=SchemaRegistry.load(),
        policy=policy_watch.policy,
        environment=config.environment,
        # The heartbeats' vouched streams it will hold itself to: the topics it reads.
        reads=frozenset(topic_name(f, prefix=config.topic_prefix) for f in config.families),
    )
    bootstrap = config.bootstrap()
    security = config.transport_security()
    client = config.transport_client()
    follower = DirectoryFollower(
        history,
        bootstrap_servers=bootstrap,
        topic=topic_name(Family.DIRECTORY, prefix=config.topic_prefix),
        folder=config.directory,
        security=security,
        client=client,
    )
    return AgencyConsumer(
        pipeline=pipeline,
        # As its agency's writer: bound to the agency (another's is refused), and a SQLite
        # store locked against a second writer for as long as it is open.
        store=open_store(config.store, owner=config.agency),
        bootstrap_servers=bootstrap,
        security=security,
        client=client,
        group_id=config.group,
        topics=[topic_name(f, prefix=config.topic_prefix) for f in config.families],
        batch_size=config.batch_size,
        follower=follower,
        policy_watch=policy_watch,
        prune_every_s=config.prune_every_s,
        prepare_workers=config.prepare_workers,
    )

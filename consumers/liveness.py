"""The frozen-feed alarm: a producer whose signed heartbeats have stopped arriving.

SECURITY.md's "indefinite freeze": a broker (or anything between it and us) can withhold a
producer's records without forging one, and every record that does arrive still verifies. So
producers publish signed heartbeats that promise the next within an interval, and the store keeps
the newest one per producer and topic, stamped with the broker's append time (a producer's own
clock cannot make its feed look alive). A feed is **stale** when that heartbeat is older than
interval x tolerance.

The consumer judges its feeds only when it is caught up (a poll returned less than a full batch),
at most every ``every_s`` seconds: while it works through a backlog, old heartbeats say nothing
about the feed. It logs ``consumer.feed_stale`` once when a feed goes quiet and
``consumer.feed_resumed`` when it speaks again. ``intelbus store feeds`` shows the same judgement
to an operator or a monitoring check (its exit status is 1 while a feed is stale).

A producer never heard from has no row, so it is not judged here: which producers *should* be
heard is the directory's to say, and the auditor (consumers/audit) reports silences over a whole
topic's history.

**Liveness is not completeness.** A feed whose heartbeats flow while its records are withheld or
deleted looks alive. So each heartbeat (schema version 2) vouches for where its producer's streams
stood, named as the chain names them (topic, partition, key epoch, last sequence), and
:func:`missing_records` compares the newest vouched heads with the chain the store holds: every
sequence number vouched for and not held is missing, reported as ranges. A heartbeat younger than
``settle`` is not yet held to it (the records it vouches for may be a poll behind it, on another
partition). ``intelbus store feeds`` exits 1 while any range is missing; the consumer logs
``consumer.records_missing`` when it is caught up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from intelbus.errors import StoreError
from intelbus.log import get_logger
from intelbus.records import MAX_INTERVAL_MS
from intelbus.store.base import Store
from intelbus.trust.completeness import DEFAULT_SETTLE, MissingRange, missing_records
from intelbus.trust.model import FeedBeat

log = get_logger("consumers.liveness")

#: The auditor's default too: a heartbeat may be half an interval late before the feed is stale.
DEFAULT_TOLERANCE = 1.5
DEFAULT_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed's judgement at ``now``: how long since its newest heartbeat, and whether stale."""

    producer_id: str
    topic: str
    last_heartbeat_at: datetime
    interval: timedelta
    silent_for: timedelta
    stale: bool


def assess(
    feeds: Iterable[FeedBeat], now: datetime, tolerance: float = DEFAULT_TOLERANCE
) -> list[FeedHealth]:
    """Judge each feed at ``now`` (timezone-aware).

    Raises:
        ValueError: ``tolerance`` below 1 (a feed would be stale before its promise was due), or
            ``now`` naive.
    """
    if tolerance < 1.0:
        raise ValueError(f"tolerance must be at least 1, got {tolerance}")
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    out: list[FeedHealth] = []
    for f in feeds:
        # Bounded again at the point of use: a row edited by hand must not overflow a timedelta.
        interval = timedelta(milliseconds=min(max(f.interval_ms, 1), MAX_INTERVAL_MS))
        # A broker clock ahead of ours gives a negative age: that is "just now", not a failure.
        silent = max(now - f.at, timedelta(0))
        out.append(
            FeedHealth(
                f.producer_id, f.topic, f.at, interval, silent, silent > interval * tolerance
            )
        )
    return out


class LivenessWatch:
    """Judges the store's feeds now and then and logs when one goes quiet or speaks again."""

    def __init__(
        self,
        *,
        every_s: float = DEFAULT_EVERY_S,
        tolerance: float = DEFAULT_TOLERANCE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        settle: timedelta = DEFAULT_SETTLE,
    ) -> None:
        if tolerance < 1.0:
            raise ValueError(f"tolerance must be at least 1, got {tolerance}")
        self.every_s = every_s
        self.tolerance = tolerance
        self.clock = clock
        self.monotonic = monotonic
        self.stale: set[tuple[str, str]] = set()
        self.settle = settle
        #: The ranges found missing at the last check, and those already logged once.
        self.missing: list[MissingRange] = []
        self.reported: set[tuple[str, str, int, str, int, int]] = set()
        self._next_check = 0.0

    def maybe_check(self, store: Store) -> list[FeedHealth] | None:
        """:meth:`check`, unless one ran less than ``every_s`` seconds ago (then None)."""
        now = self.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.every_s
        return self.check(store)

    def check(self, store: Store) -> list[FeedHealth] | None:
        """Judge every feed now and log the changes. None if the store could not be read: an
        alarm that cannot look must not stop the consumer (the next check tries again)."""
        try:
            feeds = store.feeds()
        except StoreError as e:
            log.warning("liveness.check_failed", error=type(e).__name__)
            return None
        now = self.clock()
        health = assess(feeds, now, self.tolerance)
        try:
            missing = missing_records(feeds, store.load_chain(), now, self.settle)
        except StoreError as e:
            log.warning("liveness.check_failed", error=type(e).__name__)
            missing = []
        for m in missing:
            found = (m.producer_id, m.topic, m.partition, m.epoch, m.first, m.last)
            if found not in self.reported:
                self.reported.add(found)
                log.warning(
                    "consumer.records_missing",
                    producer=m.producer_id,
                    topic=m.topic,
                    partition=m.partition,
                    first=m.first,
                    last=m.last,
                    vouched_at=m.vouched_at.isoformat(),
                )
        self.missing = missing
        for h in health:
            key = (h.producer_id, h.topic)
            if h.stale and key not in self.stale:
                self.stale.add(key)
                log.warning(
                    "consumer.feed_stale",
                    producer=h.producer_id,
                    topic=h.topic,
                    silent_s=round(h.silent_for.total_seconds()),
                    interval_s=h.interval.total_seconds(),
                    last_heartbeat_at=h.last_heartbeat_at.isoformat(),
                )
            elif not h.stale and key in self.stale:
                self.stale.discard(key)
                log.info("consumer.feed_resumed", producer=h.producer_id, topic=h.topic)
        return health

"""The frozen-feed alarm (consumers/liveness.py) over a real SQLite store, on a controlled clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from consumers import liveness
from consumers.liveness import LivenessWatch, assess
from intelbus.errors import StoreError
from intelbus.store.sqlite import SqliteStore
from intelbus.trust.model import Batch, FeedBeat

T0 = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)


def beat(producer: str, at: datetime, interval_s: int = 30) -> FeedBeat:
    return FeedBeat(producer, f"{producer}.heartbeats", at, interval_s * 1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "herts.sqlite")
    yield s
    s.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.mono = 0.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def test_a_feed_is_stale_only_past_its_interval_times_the_tolerance() -> None:
    feeds = [beat("cst", T0)]
    assert not assess(feeds, T0 + timedelta(seconds=45), 1.5)[0].stale  # exactly at the limit
    late = assess(feeds, T0 + timedelta(seconds=45.001), 1.5)[0]
    assert late.stale
    assert late.silent_for == timedelta(seconds=45.001)
    # A broker clock ahead of ours: "just now", never negative, never stale.
    assert assess(feeds, T0 - timedelta(minutes=5))[0].silent_for == timedelta(0)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        assess([], T0, 0.5)
    with pytest.raises(ValueError, match="timezone"):
        assess([], datetime(2026, 1, 1))  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(ValueError, match="tolerance"):
        LivenessWatch(tolerance=0.9)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """What consumers.liveness logs. Its logger is swapped rather than using capture_logs, which
    misses loggers cached by an earlier configure() in the same test session."""
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(liveness, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture.entries  # type: ignore[return-value]


def test_the_watch_logs_a_freeze_once_and_the_recovery_once(
    store: SqliteStore, logs: list[dict[str, object]]
) -> None:
    clock = Clock()
    watch = LivenessWatch(every_s=10, clock=lambda: clock.now, monotonic=lambda: clock.mono)
    store.commit(Batch("g", beats=[beat("cst", T0), beat("gmp", T0, interval_s=600)]))
    assert watch.maybe_check(store) is not None
    clock.advance(5)
    assert watch.maybe_check(store) is None  # not due yet
    clock.advance(55)  # cst silent 60 s > 45 s: stale; gmp (10 min interval) fine
    health = watch.maybe_check(store)
    assert health is not None
    assert {h.producer_id: h.stale for h in health} == {"cst": True, "gmp": False}
    clock.advance(10)
    watch.maybe_check(store)  # still stale: no second alarm
    store.commit(Batch("g", beats=[beat("cst", clock.now)]))
    clock.advance(10)
    watch.maybe_check(store)
    alarms = [e for e in logs if str(e["event"]).startswith("consumer.feed_")]
    assert [(e["event"], e["producer"]) for e in alarms] == [
        ("consumer.feed_stale", "cst"),
        ("consumer.feed_resumed", "cst"),
    ]
    assert alarms[0]["silent_s"] == 60
    assert watch.stale == set()


def test_a_store_that_cannot_be_read_does_not_stop_the_consumer(
    store: SqliteStore, logs: list[dict[str, object]]
) -> None:
    watch = LivenessWatch()
    store.close()
    with pytest.raises(StoreError):
        store.feeds()
    assert watch.check(store) is None
    assert [e["event"] for e in logs] == ["liveness.check_failed"]

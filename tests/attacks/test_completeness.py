"""Liveness is not completeness (issue 20, class 2), on the simulated bus and the real store.

* Records withheld while heartbeats flow are reported missing, with their sequence ranges, and
  stop being reported when they arrive late.
* Only a heartbeat that moves its producer's heartbeat chain forward refreshes the feed: not an
  old heartbeat appended again (it fills a gap), not a copy (a replay), not one whose broker time
  is far ahead of the reader's clock.
* A force holds itself only to the streams of the topics it reads.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intelbus.chain import ChainState, StreamKey
from intelbus.errors import ReasonCode as R
from intelbus.trust.completeness import missing_records
from intelbus.trust.model import FeedBeat, Verdict, VouchedHead
from tests.attacks.harness import genuine_flows, inject, sighting
from tests.attacks.report import attack_result, completeness_result
from tests.simulator import INCIDENTS, SIGHTINGS, BusSimulator, SimulatedConsumer

HEARTBEATS = "sim.heartbeats"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EPOCH = "ab" * 16


def _beat(*heads: VouchedHead, at: datetime = NOW) -> FeedBeat:
    return FeedBeat("cst", HEARTBEATS, at, 30_000, heads)


def _state(last: int, gaps: tuple[tuple[int, int], ...] = ()) -> dict[StreamKey, ChainState]:
    key = StreamKey("cst", SIGHTINGS, 0, EPOCH)
    return {key: ChainState(key, last, b"\0" * 32, gaps)}


def test_missing_is_everything_vouched_above_the_head_and_inside_its_gaps() -> None:
    head = VouchedHead(SIGHTINGS, 0, EPOCH, 9)
    later = NOW + timedelta(minutes=1)
    got = missing_records([_beat(head)], _state(6, ((2, 3),)), later)
    assert [(m.first, m.last, m.count) for m in got] == [(2, 3, 2), (7, 9, 3)]
    assert "sequence 7-9 (3 record(s))" in got[1].describe()
    # A gap beyond what the heartbeat vouches for is the chain's to report, not this check's.
    assert missing_records([_beat(head)], _state(12, ((10, 11),)), later) == []
    # Nothing held at all: everything vouched is missing.
    assert [(m.first, m.last) for m in missing_records([_beat(head)], {}, later)] == [(0, 9)]
    # A stream with nothing sent yet vouches for nothing.
    assert missing_records([_beat(replace(head, last_sequence=-1))], {}, later) == []


def test_a_heartbeat_younger_than_the_settle_time_is_not_yet_held_to_account() -> None:
    head = VouchedHead(SIGHTINGS, 0, EPOCH, 9)
    assert missing_records([_beat(head)], {}, NOW + timedelta(seconds=5)) == []
    assert missing_records([_beat(head)], {}, NOW, settle=timedelta(0)) != []


def test_another_epoch_or_partition_is_another_stream() -> None:
    later = NOW + timedelta(minutes=1)
    other_epoch = VouchedHead(SIGHTINGS, 0, "cd" * 16, 0)
    other_partition = VouchedHead(SIGHTINGS, 1, EPOCH, 0)
    got = missing_records([_beat(other_epoch, other_partition)], _state(5), later)
    assert [(m.epoch, m.partition) for m in got] == [("cd" * 16, 0), (EPOCH, 1)]


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


def test_records_withheld_while_heartbeats_flow_are_reported_until_they_arrive(
    sim: BusSimulator,
) -> None:
    pub = sim.publisher()
    for i in range(5):
        pub.publish(sighting(seed=200 + i))
    pub.heartbeat(30)
    records, beat = sim.log[:5], sim.log[5]
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([*records[:2], beat])  # records 2-4 withheld; the heartbeat flows
        later = datetime.now(UTC) + timedelta(minutes=1)
        got = missing_records(herts.store.feeds(), herts.store.load_chain(), later)
        completeness_result(
            case="completeness.tail_withheld",
            source="simulated",
            withheld=3,
            reported=sum(m.count for m in got),
        )
        assert [(m.topic, m.first, m.last) for m in got] == [(SIGHTINGS, 2, 4)]
        herts.deliver([records[3]])  # one arrives late: 2 is now a gap, 4 still above the head
        got = missing_records(herts.store.feeds(), herts.store.load_chain(), later)
        assert [(m.first, m.last) for m in got] == [(2, 2), (4, 4)]
        herts.deliver([records[2], records[4]])
        assert missing_records(herts.store.feeds(), herts.store.load_chain(), later) == []
    finally:
        herts.close()


def test_a_middle_record_withheld_is_reported_with_its_range(sim: BusSimulator) -> None:
    pub = sim.publisher()
    for i in range(4):
        pub.publish(sighting(seed=210 + i))
    pub.heartbeat(30)
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([sim.log[0], sim.log[3], sim.log[4]])  # 1 and 2 withheld
        later = datetime.now(UTC) + timedelta(minutes=1)
        got = missing_records(herts.store.feeds(), herts.store.load_chain(), later)
        completeness_result(
            case="completeness.middle_withheld",
            source="simulated",
            withheld=2,
            reported=sum(m.count for m in got),
        )
        assert [(m.first, m.last) for m in got] == [(1, 2)]
    finally:
        herts.close()


def _refresh_case(
    case: str, herts: SimulatedConsumer, raw_index: int, sim: BusSimulator
) -> Verdict:
    before = herts.store.feeds()
    (verdict,) = herts.deliver([sim.log[raw_index]])
    after = herts.store.feeds()
    unchanged = after == before
    attack_result(
        case=case,
        source="simulated",
        expected_reason="no_refresh",
        outcome="rejected" if unchanged else "accepted",
        reason="no_refresh" if unchanged else "refreshed",
        trusted_state_unchanged=unchanged,
    )
    assert unchanged, f"{case}: the feed was refreshed ({verdict})"
    return verdict


def test_an_old_heartbeat_appended_again_fills_its_gap_but_does_not_refresh(
    sim: BusSimulator,
) -> None:
    pub = sim.publisher()
    for _ in range(3):
        pub.heartbeat(30)
    first, _, third = sim.log[:3]
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([first, third])  # the second never arrived
        # An insider appends the second heartbeat's bytes now: authentic, in its place, late.
        inject(sim, sim.log[1].value, topic=HEARTBEATS, appended_at=datetime.now(UTC))
        verdict = _refresh_case("freeze.old_heartbeat_fills_gap", herts, -1, sim)
        assert verdict.accepted  # authentic and in its place: it fills the gap
        assert verdict.filled
        genuine_flows(herts, sim, case="freeze.old_heartbeat_fills_gap")
    finally:
        herts.close()


def test_a_heartbeat_timed_far_ahead_by_the_broker_does_not_refresh(sim: BusSimulator) -> None:
    pub = sim.publisher()
    pub.heartbeat(30)
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([sim.log[0]])
        pub.heartbeat(30)
        # A broker whose clock runs a day fast (an operator's mistake) times the next heartbeat.
        ahead = sim.log.pop()
        sim.log.append(replace(ahead, appended_at=datetime.now(UTC) + timedelta(days=1)))
        verdict = _refresh_case("freeze.broker_clock_ahead", herts, -1, sim)
        assert verdict.accepted  # nothing wrong with the record: only its broker time is odd
        genuine_flows(herts, sim, case="freeze.broker_clock_ahead")
    finally:
        herts.close()


def test_a_copied_heartbeat_is_refused_and_does_not_refresh(sim: BusSimulator) -> None:
    pub = sim.publisher()
    pub.heartbeat(30)
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([sim.log[0]])
        inject(sim, sim.log[0].value, topic=HEARTBEATS, appended_at=datetime.now(UTC))
        before = herts.store.feeds()
        (verdict,) = herts.deliver([sim.log[-1]])
        assert verdict.reason in {R.CHAIN_DUPLICATE, R.CHAIN_REPLAY}
        assert herts.store.feeds() == before
        genuine_flows(herts, sim, case="freeze.copied_heartbeat")
    finally:
        herts.close()


def test_a_force_holds_itself_only_to_the_topics_it_reads(sim: BusSimulator) -> None:
    pub = sim.publisher()
    pub.publish(sighting(seed=220))
    pub.heartbeat(30)
    herts = SimulatedConsumer(sim)
    herts.pipeline.reader = replace(herts.pipeline.reader, reads=frozenset({INCIDENTS}))
    try:
        herts.deliver([sim.log[-1]])  # the heartbeat only: the sighting is never delivered
        later = datetime.now(UTC) + timedelta(minutes=1)
        (feed,) = herts.store.feeds()
        assert feed.heads == ()  # its one stream is on the sightings topic, which it does not read
        assert missing_records(herts.store.feeds(), herts.store.load_chain(), later) == []
    finally:
        herts.close()


def test_a_heartbeat_without_a_broker_time_does_not_refresh(sim: BusSimulator) -> None:
    """A topic switched to CreateTime (an operator): the record's time is its producer's own, a
    year ahead if it likes. Freshness is the broker's clock's to say, so it does not refresh."""
    pub = sim.publisher()
    pub.heartbeat(30)
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([sim.log[0]])
        pub.heartbeat(30)
        untimed = sim.log.pop()
        sim.log.append(replace(untimed, appended_at=None))
        _refresh_case("freeze.heartbeat_without_broker_time", herts, -1, sim)
        genuine_flows(herts, sim, case="freeze.heartbeat_without_broker_time")
    finally:
        herts.close()

"""The running consumer prunes its store on a schedule (issue 16): past the policy's retention,
payloads go and tombstones stay; not more often than ``prune_every_s``; never with 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.agency import AgencyConsumer
from tests.attacks.harness import sighting
from tests.simulator import BusSimulator, SimulatedConsumer


def _consumer(
    sim: BusSimulator, herts: SimulatedConsumer, every: float, at: datetime
) -> AgencyConsumer:
    return AgencyConsumer(
        pipeline=herts.pipeline,
        store=herts.store,
        bootstrap_servers="unused:0",
        group_id=herts.group_id,
        topics=[],
        prune_every_s=every,
        clock=lambda: at,
    )


def test_the_consumer_prunes_on_its_schedule(tmp_path: Path) -> None:
    sim = BusSimulator(tmp_path)
    sim.publisher().publish(sighting(seed=71))
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver(list(sim.log))
        now = datetime.now(UTC)
        assert _consumer(sim, herts, 3600, now).maybe_prune() == 0  # within retention
        later = now + timedelta(days=800)
        never = _consumer(sim, herts, 0, later)
        assert never.maybe_prune() == 0
        assert herts.store.summary()["pruned"] == 0
        scheduled = _consumer(sim, herts, 3600, later)
        assert scheduled.maybe_prune() == 1
        assert herts.store.summary()["pruned"] == 1
        (tomb,) = herts.store.tombstones()
        assert tomb.reason == "retention"
        # The next run waits for the schedule, whatever it would find.
        sim.publisher().publish(sighting(seed=72))
        herts.deliver([sim.log[-1]])
        assert scheduled.maybe_prune() == 0
        assert herts.store.summary()["pruned"] == 1
    finally:
        herts.close()

"""Fixtures of the attack suite: a simulated federation and a consumer with a trusted baseline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.harness import sighting
from tests.simulator import BusSimulator, SimulatedConsumer


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


@pytest.fixture
def herts(sim: BusSimulator) -> Iterator[SimulatedConsumer]:
    """Herts, having stored three genuine CST sightings and a heartbeat: the trusted baseline."""
    pub = sim.publisher()
    for i in range(3):
        pub.publish(sighting(seed=40 + i))
    pub.heartbeat(30)
    consumer = SimulatedConsumer(sim)
    consumer.deliver(list(sim.log))
    baseline = consumer.trusted_state()
    assert len(baseline.records) == 3
    assert baseline.quarantined == 0
    yield consumer
    consumer.close()

"""The two timed halves of the bus, through their public entry points only.

``publish_timed`` drives ``build_publisher``/``Publisher.publish_many``; ``consume_pipeline``
drives ``build_consumer``/``AgencyConsumer.run``. Both time only the work (not connecting, not a
new group's join), so whatever the publisher and the consumer do inside is what gets measured.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench.federation import BenchFederation
from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from intelbus.records import Sighting
from producers.config import ProducerConfig
from producers.publisher import build_publisher

CHUNK = 500  # records per publish_many call


def publish_timed(
    fed: BenchFederation,
    records: Sequence[Sighting],
    named: Sequence[str],
    *,
    producer: str = "cst",
    chunk: int = CHUNK,
) -> float:
    """Publish ``records`` as ``producer`` on the current topic set; seconds spent in
    ``publish_many`` after a first, untimed record (which connects and fetches metadata)."""
    path = fed.root / "producer.toml" if producer == "cst" else fed.producer_config(producer)
    publisher = build_publisher(ProducerConfig.load(path))
    try:
        publisher.publish(records[0], named=list(named))
        start = time.perf_counter()
        for i in range(1, len(records), chunk):
            publisher.publish_many(records[i : i + chunk], named=list(named))
        return time.perf_counter() - start
    finally:
        publisher.close()


def consume_pipeline(fed: BenchFederation, store: str, batch_size: int, count: int) -> float:
    """Verify, decrypt, decode, policy and store ``count`` records already on the topic; records/s
    from the group's assignment to the last store commit (the idle wait at the end not counted)."""
    name = f"c{uuid.uuid4().hex[:8]}"
    consumer = build_consumer(
        ConsumerConfig.load(fed.consumer_config(name, store, batch_size=batch_size))
    )
    marks: list[float] = []
    assigned: list[float] = []
    on_assigned = consumer._on_assigned

    def timed(partitions: list[tuple[str, int]]) -> Any:  # noqa: ANN401
        # The clock starts once the group has handed out partitions: joining a new group waits
        # for the broker's group.initial.rebalance.delay.ms, which is not the pipeline's cost.
        assigned.append(time.perf_counter())
        return on_assigned(partitions)

    consumer._on_assigned = timed  # type: ignore[method-assign]
    try:
        stats = consumer.run(
            until_idle=True, idle_polls=3, on_batch=lambda s: marks.append(time.perf_counter())
        )
    finally:
        consumer.store.close()
    if stats.stored != count:
        raise RuntimeError(f"stored {stats.stored} of {count}: {stats}")
    return count / (marks[-1] - assigned[0])

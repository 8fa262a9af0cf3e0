"""The fast fault tier, run in every CI run: one broker kill on a real 3-node cluster.

RF 3, min ISR 2, acks=all and idempotent: a few thousand sealed records are published through the
real Publisher (in its own process) while the partition leader is killed with kill -9; the consumer
then stores them. The checker must find every acknowledged record in the topic and exactly once in
the store. The full matrix (tests/faults/scenarios.py) runs from ``scripts/faults``.

A broker that cannot start fails this module (LocalKafka raises), it never skips.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, audit_topic_config
from tests.conftest import OPT_OUT_ENV
from tests.faults.scenarios import Bed, leader_kill, open_bed
from tests.faults.workspace import build

pytestmark = pytest.mark.kafka  # counted with the Kafka tests; a skip fails CI (tests/conftest.py)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    if os.environ.get(OPT_OUT_ENV) == "1":
        pytest.skip(f"Kafka tests skipped on request ({OPT_OUT_ENV}=1)")
    with open_bed(tmp_path_factory.mktemp("faults-fast"), proxied=False) as b:
        yield b


def test_leader_kill_9_loses_no_acknowledged_record_and_stores_none_twice(bed: Bed) -> None:
    ws = build(bed.root / "leader-kill", bed.bootstrap)
    result = leader_kill(bed, ws, count=3000, kills=1, seed=11)
    check = result.check
    assert result.figures["killed_leaders"], "no leader was killed"
    assert check["acknowledged"] == 3000
    assert check["lost"] == 0
    assert check["store_missing"] == 0
    assert check["store_duplicates"] == 0
    assert check["stored"] == 3000
    assert check["violations"] == {}
    assert {k: v for k, v in result.expectations.items() if not v} == {}
    assert result.passed


def test_a_producer_closed_while_the_cluster_is_frozen_neither_raises_nor_hangs(bed: Bed) -> None:
    """The publisher replaces its producer when sends fail; kafka-python's close() then raised
    KafkaTimeoutError from its flush and crashed the publisher (found by the leader-SIGSTOP case).
    close_producer must return, with the producer closed and the buffered send failed."""
    topic = f"close-{uuid.uuid4().hex[:10]}"
    transport.create_topics(
        bed.bootstrap, [TopicSpec(topic, 1, 3, audit_topic_config(min_insync_replicas=2))]
    )
    producer = transport.make_producer(bed.bootstrap)
    try:
        transport.send_and_wait(producer, topic, b"first", key=b"k")  # metadata and connections
        for node in (1, 2, 3):
            bed.cluster.signal_node(node, signal.SIGSTOP)
            bed.paused.add(node)
        future = producer.send(topic, value=b"never acknowledged", key=b"k")
        started = time.monotonic()
        transport.close_producer(producer, timeout_s=1.0)
        elapsed = time.monotonic() - started
    finally:
        bed.heal()
    assert producer._closed  # kafka-python keeps no public "closed" flag
    assert future.is_done
    assert future.failed()
    assert elapsed < 60, f"close_producer hung for {elapsed:.0f}s"

"""Pipelined publishing on the real broker: one reservation, many sends, every record acknowledged
in chain order, and a consumer stores them all with no gap and no quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from intelbus.envelope import wire
from intelbus.errors import NoRecipients
from intelbus.kinds import Family
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher
from tests.federation import Federation
from tests.federation import sighting_for as _sighting


@pytest.fixture
def fed(tmp_path: Path, bootstrap: str) -> Federation:
    return Federation(tmp_path, bootstrap, f"sqlite:///{tmp_path / 'x.sqlite'}")


def test_publish_many_acknowledges_in_chain_order_and_is_consumed_whole(fed: Federation) -> None:
    records = [_sighting("HERTFORDSHIRE", "GREEN") for _ in range(300)]
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        first = publisher.publish(records[0])
        published = publisher.publish_many(records[1:])
        assert publisher.state.pending() == []
        assert publisher.state.acked_count() == 300
    finally:
        publisher.close()
    assert [p.record_id for p in published] == [r.record_id for r in records[1:]]
    assert [p.sequence for p in published] == list(range(1, 300))
    offsets = [first.offset] + [p.offset for p in published]
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 300

    # The log holds them in sequence order, each chained to the one before.
    topic = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    consumer = transport.make_consumer(fed.bootstrap)
    try:
        headers = [wire.parse(m.value).header for m in transport.read_all(consumer, topic)]
    finally:
        consumer.close()
    assert [h.sequence for h in headers] == list(range(300))

    consumer = build_consumer(ConsumerConfig.load(fed.root / "herts-police.toml"))
    try:
        stats = consumer.run(until_idle=True, idle_polls=4)
    finally:
        consumer.store.close()
    assert stats.stored == 300
    assert stats.gaps == 0
    assert stats.quarantined == {}


def test_publish_many_fails_closed_before_reserving_anything(fed: Federation) -> None:
    good = _sighting("HERTFORDSHIRE", "GREEN")
    nobody = _sighting("HERTFORDSHIRE", "RED")  # RED needs named recipients: none given
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        with pytest.raises(NoRecipients):
            publisher.publish_many([good, nobody])
        assert publisher.state.pending() == []
        assert publisher.state.acked_count() == 0
        assert publisher.state.heads() == []
    finally:
        publisher.close()

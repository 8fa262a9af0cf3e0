"""The two Kafka clients interoperate on the real broker: what one publishes, the other consumes and
stores whole, with the broker's append time, in both directions. (The rest of the suite runs on
either: ``pytest --transport confluent-kafka``, which scripts/test does for the delivery tests.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from intelbus.envelope import wire
from intelbus.kinds import Family
from intelbus.transport import kafka as transport
from intelbus.transport.client import ConsumerClient, KafkaClient, ProducerClient
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher
from tests.federation import Federation
from tests.federation import sighting_for as _sighting

BOTH_WAYS = [
    (KafkaClient.KAFKA_PYTHON, KafkaClient.CONFLUENT_KAFKA),
    (KafkaClient.CONFLUENT_KAFKA, KafkaClient.KAFKA_PYTHON),
]


@pytest.fixture
def fed(tmp_path: Path, bootstrap: str) -> Federation:
    return Federation(tmp_path, bootstrap, f"sqlite:///{tmp_path / 'x.sqlite'}")


@pytest.mark.parametrize(("writer", "reader"), BOTH_WAYS, ids=str)
def test_what_one_client_publishes_the_other_consumes_whole(
    fed: Federation, writer: KafkaClient, reader: KafkaClient
) -> None:
    producer_config = ProducerConfig.load(fed.root / "producer.toml").model_copy(
        update={"kafka_client": writer}
    )
    publisher = build_publisher(producer_config)
    try:
        first = publisher.publish(_sighting("HERTFORDSHIRE", "GREEN"))
        published = publisher.publish_many([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(40)])
        # The chosen client carried them (confluent-kafka's objects implement ProducerClient).
        assert isinstance(publisher._producer, ProducerClient) is (
            writer is KafkaClient.CONFLUENT_KAFKA
        )
    finally:
        publisher.close()
    assert publisher.state.pending() == []
    offsets = [first.offset] + [p.offset for p in published]
    assert offsets == sorted(offsets)

    # Read back without a group with the other client: every record, in chain order, and the
    # broker's LogAppendTime carried on each.
    topic = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    consumer = transport.make_consumer(fed.bootstrap, group_id=None, client=reader)
    try:
        assert isinstance(consumer, ConsumerClient) is (reader is KafkaClient.CONFLUENT_KAFKA)
        messages, end = transport.read_partition(consumer, topic, first.partition, 0)
    finally:
        consumer.close()
    assert end == offsets[-1] + 1
    assert [wire.parse(m.value).header.sequence for m in messages] == list(range(41))
    assert all(m.appended_at is not None for m in messages)

    # And the agency consumer on the other client, in its group, stores them all.
    consumer_config = ConsumerConfig.load(fed.root / "herts-police.toml").model_copy(
        update={"kafka_client": reader}
    )
    agency = build_consumer(consumer_config)
    assert agency.client is reader
    try:
        stats = agency.run(until_idle=True, idle_polls=4)
    finally:
        agency.store.close()
    assert stats.stored == 41
    assert stats.gaps == 0
    assert stats.quarantined == {}
    # Its offsets reached Kafka's group commit, exactly the next offset after the last record.
    committed = transport.committed_offsets(fed.bootstrap, consumer_config.group)
    assert committed[(topic, first.partition)] == offsets[-1] + 1

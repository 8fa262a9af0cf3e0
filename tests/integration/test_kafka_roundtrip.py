"""The first real-broker tests: bytes with headers round-trip, and topics get the bus's settings."""

from __future__ import annotations

import uuid

from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, audit_topic_config, bus_topics

LOG_APPEND_TIME = 1  # kafka-python's timestamp_type for LogAppendTime


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_bytes_and_headers_round_trip_through_the_broker(bootstrap: str) -> None:
    """Values, keys and headers come back byte for byte, in order, with the broker's append time."""
    topic = _unique("it-roundtrip")
    transport.create_topics(
        bootstrap, [TopicSpec(topic, 1, 1, audit_topic_config(min_insync_replicas=1))]
    )
    sent = [
        (
            f"key-{i}".encode(),
            bytes(range(i % 256)) * 3,
            [("ibus-v", b"\x01"), ("seq", str(i).encode())],
        )
        for i in range(50)
    ]
    producer = transport.make_producer(bootstrap)
    try:
        metas = [
            producer.send(topic, value=v, key=k, headers=h).get(timeout=30) for k, v, h in sent
        ]
    finally:
        producer.close()
    assert [m.offset for m in metas] == list(range(50))

    consumer = transport.make_consumer(bootstrap, topic, group_id=None, consumer_timeout_ms=10_000)
    try:
        got = []
        for msg in consumer:
            got.append(msg)
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert [(m.key, m.value, list(m.headers)) for m in got] == [(k, v, h) for k, v, h in sent]
    assert {m.timestamp_type for m in got} == {LOG_APPEND_TIME}


def test_bus_topics_are_created_with_durable_audit_settings(bootstrap: str) -> None:
    """Every bus topic keeps records forever and stamps them with the broker's clock."""
    prefix = _unique("it-bus")
    specs = bus_topics(prefix=prefix, replication_factor=1, partitions=3)
    created = transport.create_topics(bootstrap, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    # A second call is a no-op, not an error.
    assert transport.create_topics(bootstrap, specs) == []
    for spec in specs:
        cfg = transport.topic_configs(bootstrap, spec.name)
        assert cfg["retention.ms"] == "-1"
        assert cfg["cleanup.policy"] == "delete"
        assert cfg["message.timestamp.type"] == "LogAppendTime"
        assert cfg["min.insync.replicas"] == "1"
        assert cfg["unclean.leader.election.enable"] == "false"
        partitions = transport.topic_partitions(bootstrap, spec.name)
        assert len(partitions) == spec.partitions
        assert all(len(replicas) == 1 for replicas in partitions.values())


def test_producer_uses_acks_all_and_idempotence(bootstrap: str) -> None:
    """The bus's producer settings are what SECURITY.md's durability section requires."""
    producer = transport.make_producer(bootstrap)
    try:
        assert producer.config["acks"] == -1  # kafka-python normalises "all" to -1
        assert producer.config["enable_idempotence"] is True
        assert producer.config["max_in_flight_requests_per_connection"] <= 5
        assert producer.config["compression_type"] is None
    finally:
        producer.close()

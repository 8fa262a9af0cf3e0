"""Is this producer state file the one that wrote the topic? Split brain and lost state.

A producer's state file holds its streams' heads (sequence, last digest). If it is lost and made
again, or a second state file for the same agency publishes too, the new file starts its streams
from nothing: its records reuse sequence numbers the topic already holds, and every force
quarantines them as replays, while the producer prints "published". So before publishing, the
producer compares its state with the topic (:func:`check`): every record on the topic signed by
this agency must be one this state reserved. One that is not means the topic is ahead of this
state file: publishing is refused with the way out, :func:`resync`.

Where to look: after the newest offset this state had acknowledged on a stream's partition (a
handful of records normally), or, for a state that never published on a topic, the whole topic
(every partition: partitions may have been added since the lost file chose one).

:func:`resync` reads this agency's records on the topic, verifies each signature with the
agency's own keys in the directory (a record someone else signed cannot move the state), and
sets each stream's head to the newest, in the key epoch of the newest record; the records it
found are recorded as acknowledged, so publishing them again is reported as already published.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope.verify import RootCache, verify
from intelbus.envelope.wire import parse
from intelbus.errors import RecordError, StateBehind
from intelbus.transport import kafka as transport
from intelbus.transport.client import KafkaClient
from intelbus.transport.kafka import Message
from intelbus.transport.security import TransportSecurity
from producers.state import ProducerState, StreamHead


@dataclass(frozen=True, slots=True)
class Found:
    """One of this agency's records on the topic."""

    topic: str
    partition: int
    offset: int
    record_id: str
    sequence: int
    epoch: str
    digest: bytes


def _mine(messages: Iterator[Message], agency: str) -> Iterator[tuple[Message, str]]:
    for m in messages:
        try:
            header = parse(m.value).header
        except RecordError:
            continue  # not a record of ours (or of anyone's): the consumers quarantine it
        if header.producer_id == agency:
            yield m, str(header.record_id)


def _read(
    bootstrap: str,
    topic: str,
    partitions: dict[int, int],
    security: TransportSecurity | None,
    client: KafkaClient,
) -> Iterator[Message]:
    """The records of ``topic`` from each partition's start offset to its end (as seen now)."""
    consumer = transport.make_consumer(bootstrap, group_id=None, security=security, client=client)
    try:
        for partition, start in sorted(partitions.items()):
            records, _ = transport.read_partition(consumer, topic, partition, start)
            yield from records
    finally:
        consumer.close()


def _scan(
    bootstrap: str,
    topic: str,
    security: TransportSecurity | None,
    client: KafkaClient,
    state: ProducerState,
) -> Iterator[Message]:
    head = state.head(topic)
    start = state.acked_offset(topic)
    if head.partition >= 0 and start is not None:
        return _read(bootstrap, topic, {head.partition: start + 1}, security, client)
    everything = dict.fromkeys(transport.partition_ids(bootstrap, topic, security=security), 0)
    return _read(bootstrap, topic, everything, security, client)


def check(
    state: ProducerState,
    *,
    agency: str,
    topics: list[str],
    bootstrap: str,
    security: TransportSecurity | None,
    client: KafkaClient = KafkaClient.KAFKA_PYTHON,
) -> None:
    """Refuse to publish on a state file the topic is ahead of (module docstring).

    Raises:
        StateBehind: a record of this agency on a topic that this state never reserved.
        KafkaUnavailableError: a topic could not be read.
    """
    for topic in topics:
        for m, record_id in _mine(_scan(bootstrap, topic, security, client, state), agency):
            if state.prior(record_id) is None:
                raise StateBehind(
                    f"{topic}[{m.partition}] holds {agency}'s record {record_id} (offset "
                    f"{m.offset}) that this state file never published: it was lost and made "
                    "again, or another state file publishes for the same agency. Nothing was "
                    "published; run `intelbus publish resync --config ...` (docs/operations.md)"
                )


def resync(
    state: ProducerState,
    *,
    agency: str,
    topics: list[str],
    bootstrap: str,
    security: TransportSecurity | None,
    directory: DirectoryHistory,
    client: KafkaClient = KafkaClient.KAFKA_PYTHON,
    environment: str,
) -> list[StreamHead]:
    """Set each stream's head to this agency's newest verified record on the topic; returns the
    heads that moved.

    Raises:
        StateBehind: the state has pending sends (settle them first: retry or abandon).
        KafkaUnavailableError: a topic could not be read.
    """
    if state.pending():
        raise StateBehind(
            "this state file has pending sends: `intelbus publish retry` (or abandon) first"
        )
    moved: list[StreamHead] = []
    roots = RootCache()  # one Ed25519 verification per batch of ours read back
    for topic in topics:
        found: list[tuple[tuple[float, int, int], Found]] = []
        everything = dict.fromkeys(transport.partition_ids(bootstrap, topic, security=security), 0)
        for m, record_id in _mine(_read(bootstrap, topic, everything, security, client), agency):
            try:
                v = verify(
                    m.value,
                    directory,
                    expected_environment=environment,
                    expected_topic=topic,
                    expected_partition=m.partition,
                    witnessed_at=m.appended_at,
                    roots=roots,
                )
            except RecordError:
                continue  # not verifiably ours: it must not move our state
            if v.producer_id != agency:
                continue
            when = m.appended_at.timestamp() if m.appended_at is not None else 0.0
            found.append(
                (
                    (when, m.partition, m.offset),
                    Found(
                        topic,
                        m.partition,
                        m.offset,
                        record_id,
                        v.sequence,
                        v.key_id.hex(),
                        v.digest,
                    ),
                )
            )
        if not found:
            continue
        # The newest by the broker's clock is where the stream stands (its partition and key
        # epoch included): the next record continues it.
        newest = max(found, key=lambda pair: pair[0])[1]
        head = StreamHead(topic, newest.sequence, newest.digest, newest.partition, newest.epoch)
        if state.head(topic) != head:
            state.adopt(
                head,
                [(f.record_id, f.sequence, f.epoch, f.partition, f.offset) for _, f in found],
            )
            moved.append(head)
    return moved

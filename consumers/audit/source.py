"""Where a replay reads records from: Kafka (no group, nothing committed), or memory for tests.

A source reads **one partition at a time**, in offset order, from a start offset up to an end
offset fixed when the replay began. Reading partition by partition (not interleaved as a group
consumer would) makes a replay deterministic: two replays, or a replay resumed from a
checkpoint, judge the same records in the same order and reach the same findings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from intelbus.errors import KafkaUnavailableError
from intelbus.transport import kafka as transport
from intelbus.transport.client import KafkaClient
from intelbus.transport.kafka import Message
from intelbus.transport.security import TransportSecurity

STALL_TIMEOUT_S = 60.0


class RecordSource(Protocol):
    """Read-only access to one topic's partitions."""

    topic: str

    def bounds(self) -> dict[int, tuple[int, int]]:
        """partition -> (first offset held, end offset)."""
        ...

    def offsets_at(self, at: datetime) -> dict[int, int]:
        """partition -> first offset appended at or after ``at`` (absent: none)."""
        ...

    def read(self, partition: int, start: int, end: int, batch: int) -> Iterator[list[Message]]:
        """Batches of the records in ``[start, end)`` of one partition, in offset order."""
        ...

    def close(self) -> None: ...


class KafkaSource:
    """A topic on a real broker, read with a consumer of its own: no group id, manual assignment,
    auto-commit off, so a replay never commits an offset nor joins (or disturbs) any group."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client: KafkaClient | None = None,
        **overrides: object,
    ) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        security = overrides.get("security")
        self._security = security if isinstance(security, TransportSecurity) else None
        settings: dict[str, object] = {
            "group_id": None,
            "enable_auto_commit": False,
            "max_poll_records": 2000,
            "fetch_max_bytes": 64 * 1024 * 1024,
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
        }
        settings.update(overrides)
        # None: INTELBUS_KAFKA_CLIENT, else kafka-python (intelbus/transport/client.py).
        settings["client"] = KafkaClient.resolve(client)
        self._consumer = transport.make_consumer(bootstrap_servers, **settings)

    def bounds(self) -> dict[int, tuple[int, int]]:
        return transport.partition_bounds(self._consumer, self.topic)

    def timestamp_type(self) -> str:
        """The topic's ``message.timestamp.type`` (LogAppendTime on a bus topic)."""
        return transport.timestamp_types(self._bootstrap, [self.topic], security=self._security)[
            self.topic
        ]

    def offsets_at(self, at: datetime) -> dict[int, int]:
        return transport.offsets_at(self._consumer, self.topic, self.bounds(), at)

    def read(self, partition: int, start: int, end: int, batch: int) -> Iterator[list[Message]]:
        """Raises KafkaUnavailableError when no record arrives for :data:`STALL_TIMEOUT_S`."""
        if start >= end:
            return
        transport.assign_at(self._consumer, self.topic, partition, start)
        last_progress = time.monotonic()
        while True:
            messages = transport.poll(self._consumer, timeout_ms=500, max_records=batch)
            wanted = [m for m in messages if m.offset < end]
            if wanted:
                last_progress = time.monotonic()
                yield wanted
            # Control records (transaction markers) take offsets too: the position says when done.
            if transport.position(self._consumer, self.topic, partition) >= end:
                return
            if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                raise KafkaUnavailableError(
                    f"{self.topic}[{partition}]: no record for {STALL_TIMEOUT_S:.0f}s before "
                    f"offset {end}"
                )

    def close(self) -> None:
        self._consumer.close()


class MemorySource:
    """An in-memory topic (tests and tools): messages with their partitions and offsets."""

    def __init__(self, topic: str, messages: Sequence[Message]) -> None:
        self.topic = topic
        self._by_partition: dict[int, list[Message]] = {}
        for m in messages:
            if m.topic == topic:
                self._by_partition.setdefault(m.partition, []).append(m)
        for ms in self._by_partition.values():
            ms.sort(key=lambda m: m.offset)

    def bounds(self) -> dict[int, tuple[int, int]]:
        return {
            p: (ms[0].offset, ms[-1].offset + 1) if ms else (0, 0)
            for p, ms in sorted(self._by_partition.items())
        }

    def offsets_at(self, at: datetime) -> dict[int, int]:
        out: dict[int, int] = {}
        for p, ms in self._by_partition.items():
            found = next((m.offset for m in ms if m.appended_at and m.appended_at >= at), None)
            if found is not None:
                out[p] = found
        return out

    def read(self, partition: int, start: int, end: int, batch: int) -> Iterator[list[Message]]:
        wanted = [m for m in self._by_partition.get(partition, []) if start <= m.offset < end]
        for i in range(0, len(wanted), batch):
            yield wanted[i : i + batch]

    def close(self) -> None:
        return None

"""Which Kafka client library carries the records: the choice, and the interface both implement.

The bus speaks to Kafka through one adapter, :mod:`intelbus.transport.kafka`. Its data-path
functions (``send_and_wait``, ``send_many``, ``poll``, ``commit``, ``read_partition``...) take the
producer or consumer that ``make_producer`` / ``make_consumer`` built with one of two clients:

* ``kafka-python`` (the default): pure Python, a dependency of the package;
* ``confluent-kafka``: librdkafka, the optional ``rdkafka`` extra
  (``pip install 'intelbus[rdkafka]'``), faster per record; implemented by
  :mod:`intelbus.transport.rdkafka` as a :class:`ProducerClient` / :class:`ConsumerClient`.

Admin operations (topics, ACLs, configs) stay on kafka-python whichever client is chosen.

A config's ``kafka_client`` chooses; when it is not set, ``INTELBUS_KAFKA_CLIENT``; else
kafka-python. An unknown name is a :class:`~intelbus.errors.ConfigError` (exit 2), never a silent
fallback, and so is choosing confluent-kafka where it is not installed.
"""

from __future__ import annotations

import abc
import enum
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intelbus.errors import ConfigError, SendFailed

if TYPE_CHECKING:
    from intelbus.transport.kafka import Message

ENV_CLIENT = "INTELBUS_KAFKA_CLIENT"


class KafkaClient(enum.StrEnum):
    """The client library a producer or consumer is built with."""

    KAFKA_PYTHON = "kafka-python"
    CONFLUENT_KAFKA = "confluent-kafka"

    @classmethod
    def parse(cls, value: object, *, where: str) -> KafkaClient:
        """The client named ``value`` (``where`` names the setting in the error).

        Raises:
            ConfigError: an unknown name (one line, listing the known ones).
        """
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(repr(c.value) for c in cls)
            raise ConfigError(
                f"{where} = {value!r}: unknown Kafka client; expected {known}"
            ) from None

    @classmethod
    def resolve(
        cls, configured: KafkaClient | None = None, environ: Mapping[str, str] | None = None
    ) -> KafkaClient:
        """The config's choice, else ``INTELBUS_KAFKA_CLIENT``, else kafka-python; checked usable.

        Raises:
            ConfigError: an unknown name in the variable, or confluent-kafka chosen but not
                installed.
        """
        chosen = configured
        if chosen is None:
            env = os.environ if environ is None else environ
            raw = env.get(ENV_CLIENT, "").strip()
            chosen = cls.parse(raw, where=ENV_CLIENT) if raw else cls.KAFKA_PYTHON
        chosen.require_installed()
        return chosen

    def require_installed(self) -> None:
        """Raises ConfigError when this client's library is not importable."""
        if (
            self is KafkaClient.CONFLUENT_KAFKA
            and importlib.util.find_spec("confluent_kafka") is None
        ):
            raise ConfigError(
                "kafka_client = 'confluent-kafka' but confluent-kafka is not installed: "
                "install the extra with pip install 'intelbus[rdkafka]'"
            )


def parse_client_setting(raw: dict[str, Any], path: Path) -> None:
    """Check a config file's ``kafka_client`` in place before the model validates it, so a wrong
    name is one line naming the file, not a validation report.

    Raises:
        ConfigError: an unknown client name.
    """
    if "kafka_client" in raw:
        raw["kafka_client"] = KafkaClient.parse(raw["kafka_client"], where=f"{path}: kafka_client")


# --- The interface a non-default client implements (kafka-python objects are used as they are). ----


class ProducerClient(abc.ABC):
    """A producer with the bus's durable settings (acks=all, idempotent, no compression)."""

    @abc.abstractmethod
    def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        partition: int | None,
        timeout_s: float,
    ) -> tuple[int, int]:
        """As :func:`intelbus.transport.kafka.send_and_wait`."""

    @abc.abstractmethod
    def send_many(
        self,
        items: Sequence[tuple[str, bytes, int | None]],
        *,
        key: bytes | None,
        timeout_s: float | None,
    ) -> list[tuple[int, int] | SendFailed]:
        """As :func:`intelbus.transport.kafka.send_many`."""

    @abc.abstractmethod
    def partition_count(self, topic: str) -> int:
        """As :func:`intelbus.transport.kafka.partition_count`."""

    @abc.abstractmethod
    def close(self, timeout_s: float = 5.0) -> None:
        """Flush for at most ``timeout_s``, then abandon what is left. Never raises."""


class ConsumerClient(abc.ABC):
    """A consumer that never auto-commits (offsets are committed after the store commits)."""

    @abc.abstractmethod
    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assigned: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]],
        on_revoked: Callable[[], None],
    ) -> None:
        """As :func:`intelbus.transport.kafka.subscribe`."""

    @abc.abstractmethod
    def poll(self, *, timeout_ms: int, max_records: int) -> list[Message]:
        """As :func:`intelbus.transport.kafka.poll`."""

    @abc.abstractmethod
    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """As :func:`intelbus.transport.kafka.commit`."""

    @abc.abstractmethod
    def rewind(
        self, positions: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]]
    ) -> None:
        """As :func:`intelbus.transport.kafka.rewind`."""

    @abc.abstractmethod
    def has_assignment(self) -> bool:
        """True once the group has assigned this member at least one partition."""

    @abc.abstractmethod
    def partition_bounds(self, topic: str) -> dict[int, tuple[int, int]]:
        """As :func:`intelbus.transport.kafka.partition_bounds`."""

    @abc.abstractmethod
    def offsets_at(self, topic: str, partitions: Sequence[int], at: datetime) -> dict[int, int]:
        """As :func:`intelbus.transport.kafka.offsets_at`."""

    @abc.abstractmethod
    def assign_at(self, topic: str, partition: int, offset: int) -> None:
        """As :func:`intelbus.transport.kafka.assign_at`."""

    @abc.abstractmethod
    def position(self, topic: str, partition: int) -> int:
        """As :func:`intelbus.transport.kafka.position`."""

    @abc.abstractmethod
    def read_all(self, topic: str, *, timeout_s: float) -> Iterator[Message]:
        """As :func:`intelbus.transport.kafka.read_all`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group (if any) and close; commits nothing."""

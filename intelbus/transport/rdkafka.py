"""The only module that imports confluent-kafka: the librdkafka implementation of the data path.

Chosen with ``kafka_client = "confluent-kafka"`` (:mod:`intelbus.transport.client`); callers never
see it, only :mod:`intelbus.transport.kafka`'s functions, which hand these objects their work.

The semantics are kafka-python's, setting for setting: ``acks=all`` with idempotence, at most five
requests in flight, no compression, the same delivery timeout; consumers never auto-commit
(``enable.auto.commit`` and ``enable.auto.offset.store`` off) and commit exactly the offsets they are
given, synchronously, after the store has committed; a record's broker append time is carried
only when the topic stamps LogAppendTime. Errors map to the same :mod:`intelbus.errors` types.

librdkafka's own log lines go to structlog at warning and above (they name brokers and error
codes, never record contents); the key passphrase is in the client's config only, never logged.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import confluent_kafka as ck

from intelbus.errors import KafkaUnavailableError, SendFailed, TopicMissing
from intelbus.log import get_logger
from intelbus.transport.client import ConsumerClient, ProducerClient
from intelbus.transport.kafka import PRODUCER_DEFAULTS, Message, SendNotAuthorized, speaks_tls_hint
from intelbus.transport.security import (
    ClusterNotAuthorized,
    GroupNotAuthorized,
    TopicNotAuthorized,
    TransactionalIdNotAuthorized,
    TransportSecurity,
)

log = get_logger("intelbus.transport.rdkafka")

_E = ck.KafkaError

# A librdkafka error code -> the resource the authorizer denied (as kafka-python's error classes).
_DENIED: Mapping[int, type[TopicNotAuthorized | GroupNotAuthorized | ClusterNotAuthorized]] = {
    _E.TOPIC_AUTHORIZATION_FAILED: TopicNotAuthorized,
    _E.GROUP_AUTHORIZATION_FAILED: GroupNotAuthorized,
    _E.CLUSTER_AUTHORIZATION_FAILED: ClusterNotAuthorized,
}
_DENIED_TXN = _E.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

# Where the record may have been written anyway: resend the same bytes (kafka-python's
# KafkaTimeoutError and retriable errors). librdkafka reports its own delivery timeout as
# _MSG_TIMED_OUT, not retriable; a fatal idempotence error leaves the outcome unknown too.
_INDETERMINATE = frozenset(
    {
        _E._MSG_TIMED_OUT,
        _E._TIMED_OUT,
        _E._TRANSPORT,
        _E._ALL_BROKERS_DOWN,
        _E.REQUEST_TIMED_OUT,
        _E.NETWORK_EXCEPTION,
        _E._PURGE_INFLIGHT,
        # Retriable on the broker's side (kafka-python marks them so); listed as well because a
        # KafkaError only says retriable() when librdkafka set it.
        _E.NOT_ENOUGH_REPLICAS,
        _E.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        _E.NOT_LEADER_FOR_PARTITION,
        _E.LEADER_NOT_AVAILABLE,
    }
)

# kafka-python's setting names (what callers pass as overrides) -> librdkafka's.
_PRODUCER_NAMES: Mapping[str, str] = {
    "acks": "acks",
    "enable_idempotence": "enable.idempotence",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "compression_type": "compression.type",
    "linger_ms": "linger.ms",
    "retries": "retries",
    "delivery_timeout_ms": "delivery.timeout.ms",
    "request_timeout_ms": "request.timeout.ms",
    "batch_size": "batch.size",
    "client_id": "client.id",
    "retry_backoff_ms": "retry.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "max_request_size": "message.max.bytes",
}
_CONSUMER_NAMES: Mapping[str, str] = {
    "group_id": "group.id",
    "enable_auto_commit": "enable.auto.commit",
    "auto_offset_reset": "auto.offset.reset",
    "isolation_level": "isolation.level",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "client_id": "client.id",
}
# kafka-python settings with no librdkafka counterpart the data path needs: bounded here instead
# (max_poll_records: the default batch of poll; the timeouts: the connection check below).
_CONSUMER_LOCAL = frozenset(
    {"max_poll_records", "consumer_timeout_ms", "bootstrap_timeout_ms", "request_timeout_ms"}
)
_PRODUCER_LOCAL = frozenset({"bootstrap_timeout_ms", "max_block_ms"})

# Connection check at construction (kafka-python fails there too): bounded, as its bootstrap.
_CONNECT_TIMEOUT_S = 10.0


class _Reporter:
    """librdkafka's ``logger`` and ``error_cb`` for one client: warnings and above to structlog,
    each kind at most once a minute (a dead broker is retried every second or so, each attempt a
    line). Lines name brokers and error codes, never record contents."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def _due(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -self.EVERY_S) < self.EVERY_S:
            return False
        self._last[kind] = now
        return True

    def log(self, level: int, fmt: str, *args: object) -> None:
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, message), with
        # librdkafka's syslog level turned into the logging module's.
        if level < logging.WARNING:
            return
        facility = str(args[0]) if args else ""
        if self._due(f"log:{facility}"):
            log.warning(
                "librdkafka.log", facility=facility, detail=str(args[2]) if len(args) > 2 else fmt
            )

    def error(self, error: ck.KafkaError) -> None:
        # librdkafka retries transient errors itself; the data-path calls report what failed.
        if error.fatal() or self._due(f"error:{error.code()}"):
            log.warning("librdkafka.error", code=error.name(), fatal=error.fatal())


_SYSLOG_WARNING = 4  # librdkafka's levels are syslog's: 0 emergency ... 7 debug


def _base_config(bootstrap_servers: str, security: TransportSecurity | None) -> dict[str, Any]:
    chosen = TransportSecurity.from_env() if security is None else security
    reporter = _Reporter()
    return {
        "bootstrap.servers": bootstrap_servers,
        "logger": reporter,
        "log_level": _SYSLOG_WARNING,  # nothing below warning is even formatted
        "error_cb": reporter.error,
        **chosen.librdkafka_config(),
    }


def _translate(
    overrides: Mapping[str, Any], names: Mapping[str, str], local: frozenset[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in local:
            continue
        if key not in names:
            raise TypeError(f"the confluent-kafka transport has no setting {key!r}")
        if key == "compression_type" and value is None:
            out[names[key]] = "none"
        elif key == "acks" and value == "all":
            out[names[key]] = -1
        else:
            out[names[key]] = value
    return out


def _denied(error: ck.KafkaError, what: str) -> Exception | None:
    code = error.code()
    if code in _DENIED:
        return _DENIED[code](f"{what}: not authorized ({error.name()})")
    if code == _DENIED_TXN:
        return TransactionalIdNotAuthorized(f"{what}: not authorized ({error.name()})")
    return None


def _resource(error: ck.KafkaError) -> str:
    denied = _denied(error, "")
    return str(getattr(denied, "resource_type", "unknown"))


def _send_failed(topic: str, error: ck.KafkaError) -> SendFailed:
    if _denied(error, "send") is not None:
        return SendNotAuthorized(
            f"send to {topic}: not authorized",
            denied=ck.KafkaException(error),
            resource_type=_resource(error),
        )
    indeterminate = error.retriable() or error.fatal() or error.code() in _INDETERMINATE
    return SendFailed(f"send to {topic} failed: {error.name()}", indeterminate=indeterminate)


def _raise(error: ck.KafkaError, what: str) -> Exception:
    denied = _denied(error, what)
    if denied is not None:
        return denied
    return KafkaUnavailableError(f"{what}: {error.name()}")


def _check_reachable(
    client: ck.Producer | ck.Consumer, bootstrap_servers: str, plaintext: bool, timeout_s: float
) -> None:
    try:
        client.list_topics(timeout=timeout_s)
    except ck.KafkaException as e:
        message = f"cannot reach Kafka at {bootstrap_servers}: {e.args[0].name()}"
        if plaintext:
            message += speaks_tls_hint(bootstrap_servers)
        raise KafkaUnavailableError(message) from None


def producer_config(
    bootstrap_servers: str, security: TransportSecurity | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """librdkafka's settings for a producer: the bus's (kafka.PRODUCER_DEFAULTS), then
    ``overrides`` (kafka-python's names), then TLS.

    Raises:
        TypeError: an override this transport does not know.
        ConfigError: the TLS settings are unusable.
    """
    config = _base_config(bootstrap_servers, security)
    config.update(_translate({**PRODUCER_DEFAULTS, **overrides}, _PRODUCER_NAMES, _PRODUCER_LOCAL))
    return config


# As kafka.make_consumer's: never auto-commit, from the start, committed transactions only.
CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "isolation_level": "read_committed",
}


def consumer_config(
    bootstrap_servers: str, security: TransportSecurity | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """librdkafka's settings for a consumer (see :func:`producer_config`).

    With no ``group_id`` it gets a throwaway one (librdkafka requires a group id) that is never
    joined nor committed to: such a consumer is only assigned partitions by hand.

    Raises:
        ValueError: auto-commit asked for (offsets follow the store's commits, never a timer).
        TypeError: an override this transport does not know.
    """
    settings = {**CONSUMER_DEFAULTS, **overrides}
    if settings.get("enable_auto_commit"):
        raise ValueError("consumers never auto-commit: offsets follow the store's commits")
    if settings.get("group_id") is None:
        settings["group_id"] = f"intelbus.unjoined.{uuid.uuid4().hex}"
    config = _base_config(bootstrap_servers, security)
    config.update(_translate(settings, _CONSUMER_NAMES, _CONSUMER_LOCAL))
    # Offsets are committed explicitly, exactly those given: nothing is stored behind our back.
    config["enable.auto.offset.store"] = False
    return config


def _appended_at(message: ck.Message) -> datetime | None:
    kind, ms = message.timestamp()
    # As kafka-python's timestamp_type == 1: only the broker's LogAppendTime counts.
    return datetime.fromtimestamp(ms / 1000, UTC) if kind == ck.TIMESTAMP_LOG_APPEND_TIME else None


class RdkafkaProducer(ProducerClient):
    """A librdkafka producer with the bus's settings (module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        security: TransportSecurity | None,
        overrides: Mapping[str, Any],
    ) -> None:
        settings = {**PRODUCER_DEFAULTS, **overrides}
        config = producer_config(bootstrap_servers, security, overrides)
        self._delivery_timeout_s = float(settings["delivery_timeout_ms"]) / 1000
        self._bootstrap = bootstrap_servers
        self._producer: ck.Producer | None = ck.Producer(config)
        connect_s = float(settings.get("bootstrap_timeout_ms", _CONNECT_TIMEOUT_S * 1000)) / 1000
        try:
            _check_reachable(
                self._producer,
                bootstrap_servers,
                config["security.protocol"] == "PLAINTEXT",
                connect_s,
            )
        except KafkaUnavailableError:
            self.close(0)
            raise

    def __repr__(self) -> str:
        return f"RdkafkaProducer({self._bootstrap!r})"

    def _live(self) -> ck.Producer:
        if self._producer is None:
            raise KafkaUnavailableError("the producer is closed")
        return self._producer

    def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int | None,
        on_delivery: Callable[[ck.KafkaError | None, ck.Message], None],
    ) -> None:
        producer = self._live()
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                else:
                    producer.produce(
                        topic, value=value, key=key, partition=partition, on_delivery=on_delivery
                    )
            except BufferError:
                producer.poll(0.05)  # the local queue is full: serve deliveries, then retry
            else:
                return

    def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        partition: int | None,
        timeout_s: float,
    ) -> tuple[int, int]:
        return _single(self.send_many([(topic, value, partition)], key=key, timeout_s=timeout_s))

    def send_many(
        self,
        items: Sequence[tuple[str, bytes, int | None]],
        *,
        key: bytes | None,
        timeout_s: float | None,
    ) -> list[tuple[int, int] | SendFailed]:
        if timeout_s is None:
            timeout_s = self._delivery_timeout_s + 5.0
        results: list[tuple[int, int] | SendFailed | None] = [None] * len(items)
        pending = len(items)

        def report(index: int, topic: str) -> Callable[[ck.KafkaError | None, ck.Message], None]:
            def done(error: ck.KafkaError | None, message: ck.Message) -> None:
                nonlocal pending
                pending -= 1
                if error is not None:
                    results[index] = _send_failed(topic, error)
                else:
                    results[index] = (int(message.partition() or 0), int(message.offset() or 0))

            return done

        for index, (topic, value, partition) in enumerate(items):
            try:
                self._produce(topic, value, key, partition, report(index, topic))
            except ck.KafkaException as e:
                pending -= 1
                results[index] = _send_failed(topic, e.args[0])
        producer = self._live()
        deadline = time.monotonic() + timeout_s
        while pending > 0 and time.monotonic() < deadline:
            producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        return [
            r
            if r is not None
            else SendFailed(f"send to {t} failed: no acknowledgement in time", indeterminate=True)
            for r, (t, _, _) in zip(results, items, strict=True)
        ]

    def partition_count(self, topic: str) -> int:
        try:
            metadata = self._live().list_topics(topic, timeout=_CONNECT_TIMEOUT_S)
        except ck.KafkaException as e:
            raise KafkaUnavailableError(f"no metadata for {topic}: {e.args[0].name()}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicMissing(f"topic {topic} does not exist (create it first)")
        return len(found.partitions)

    def close(self, timeout_s: float = 5.0) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        left = producer.flush(timeout_s)
        if left:
            # Abandon what is unacknowledged: its callers were told it failed and resend the same
            # bytes with a fresh producer (as kafka_python's close_producer).
            log.info("producer.close_timed_out", timeout_s=timeout_s)
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.flush(0)


def _single(results: list[tuple[int, int] | SendFailed]) -> tuple[int, int]:
    result = results[0]
    if isinstance(result, SendFailed):
        raise result
    return result


class RdkafkaConsumer(ConsumerClient):
    """A librdkafka consumer that never auto-commits (module docstring).

    With no group (``group_id=None``) it gets a throwaway group id librdkafka insists on, and is
    only ever assigned partitions by hand: it never joins that group nor commits to it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        security: TransportSecurity | None,
        overrides: Mapping[str, Any],
    ) -> None:
        settings = {**CONSUMER_DEFAULTS, **overrides}
        self._grouped = settings.get("group_id") is not None
        config = consumer_config(bootstrap_servers, security, overrides)
        self.max_records = int(settings.get("max_poll_records", 500))
        self._bootstrap = bootstrap_servers
        self._consumer = ck.Consumer(config)
        # Where each manually assigned partition stands: librdkafka's position() is unknown until
        # a record of it has been consumed, kafka-python's is the offset sought.
        self._positions: dict[tuple[str, int], int] = {}
        connect_s = float(settings.get("bootstrap_timeout_ms", _CONNECT_TIMEOUT_S * 1000)) / 1000
        try:
            _check_reachable(
                self._consumer,
                bootstrap_servers,
                config["security.protocol"] == "PLAINTEXT",
                connect_s,
            )
        except KafkaUnavailableError:
            self._consumer.close()
            raise
        if topics:
            self._consumer.subscribe(list(topics))

    def __repr__(self) -> str:
        return f"RdkafkaConsumer({self._bootstrap!r})"

    # -- a consumer group ---------------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assigned: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]],
        on_revoked: Callable[[], None],
    ) -> None:
        def assigned(consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
            wanted = on_assigned([(tp.topic, tp.partition) for tp in partitions])
            for tp in partitions:
                # The store's offsets, else the start: Kafka's committed offsets are not used.
                tp.offset = wanted.get((tp.topic, tp.partition), ck.OFFSET_BEGINNING)
            consumer.assign(partitions)

        def revoked(consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
            del partitions
            on_revoked()
            consumer.unassign()

        self._consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked)

    def poll(self, *, timeout_ms: int, max_records: int) -> list[Message]:
        try:
            records = self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000)
        except ck.KafkaException as e:
            raise _raise(e.args[0], "poll failed") from None
        by_partition: dict[tuple[str, int], list[Message]] = {}
        for r in records:
            error = r.error()
            if error is not None:
                if error.code() == _E._PARTITION_EOF:
                    continue
                if not self._grouped and error.code() == _E.GROUP_AUTHORIZATION_FAILED:
                    continue  # the throwaway group id is never used: its ACLs do not matter
                raise _raise(error, "poll failed")
            topic, partition, offset = str(r.topic()), int(r.partition() or 0), int(r.offset() or 0)
            self._positions[(topic, partition)] = offset + 1
            by_partition.setdefault((topic, partition), []).append(
                Message(topic, partition, offset, r.value() or b"", _appended_at(r))
            )
        # Flattened partition by partition, as kafka-python's poll returns them.
        return [m for batch in by_partition.values() for m in batch]

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        if not offsets:
            return True
        try:
            self._consumer.commit(
                offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except ck.KafkaException:
            return False
        return True

    def rewind(
        self, positions: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]]
    ) -> None:
        tps = self._consumer.assignment()
        wanted = positions([(tp.topic, tp.partition) for tp in tps])
        for tp in tps:
            offset = wanted.get((tp.topic, tp.partition), ck.OFFSET_BEGINNING)
            self._consumer.seek(ck.TopicPartition(tp.topic, tp.partition, offset))

    def has_assignment(self) -> bool:
        return bool(self._consumer.assignment())

    # -- reading partitions without a group ---------------------------------------------------------

    def _partitions(self, topic: str) -> list[int]:
        try:
            metadata = self._consumer.list_topics(topic, timeout=_CONNECT_TIMEOUT_S)
        except ck.KafkaException as e:
            raise _raise(e.args[0], f"offsets of {topic}") from None
        found = metadata.topics.get(topic)
        if found is not None and found.error is not None:
            if found.error.code() == _E.TOPIC_AUTHORIZATION_FAILED:
                raise TopicNotAuthorized(f"topic {topic}: not authorized (or it does not exist)")
            raise TopicMissing(f"topic {topic} does not exist")
        if found is None or not found.partitions:
            raise TopicMissing(f"topic {topic} does not exist")
        return sorted(found.partitions)

    def partition_bounds(self, topic: str) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for p in self._partitions(topic):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    ck.TopicPartition(topic, p), timeout=_CONNECT_TIMEOUT_S, cached=False
                )
            except ck.KafkaException as e:
                raise _raise(e.args[0], f"offsets of {topic}") from None
            out[p] = (int(low), int(high))
        return out

    def offsets_at(self, topic: str, partitions: Sequence[int], at: datetime) -> dict[int, int]:
        ms = int(at.timestamp() * 1000)
        try:
            found = self._consumer.offsets_for_times(
                [ck.TopicPartition(topic, p, ms) for p in partitions], timeout=_CONNECT_TIMEOUT_S
            )
        except ck.KafkaException as e:
            raise KafkaUnavailableError(
                f"offsets for time in {topic}: {e.args[0].name()}"
            ) from None
        return {tp.partition: int(tp.offset) for tp in found if tp.offset >= 0}

    def assign_at(self, topic: str, partition: int, offset: int) -> None:
        self._consumer.assign([ck.TopicPartition(topic, partition, offset)])
        self._positions = {(topic, partition): offset}

    def position(self, topic: str, partition: int) -> int:
        known = self._positions.get((topic, partition), -1)
        try:
            reported = self._consumer.position([ck.TopicPartition(topic, partition)])[0].offset
        except ck.KafkaException:
            reported = -1
        # librdkafka moves its position past control records (transaction markers) too.
        return max(known, int(reported))

    def read_all(self, topic: str, *, timeout_s: float) -> Iterator[Message]:
        bounds = self.partition_bounds(topic)
        self._consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in bounds])
        self._positions = {}
        remaining = {p for p, (begin, end) in bounds.items() if end > begin}
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"could not read {topic} to its end within {timeout_s:.0f}s"
                )
            yield from self.poll(timeout_ms=500, max_records=self.max_records)
            for p in list(remaining):
                if self.position(topic, p) >= bounds[p][1]:
                    remaining.discard(p)

    def close(self) -> None:
        self._consumer.close()


def make_producer(
    bootstrap_servers: str, security: TransportSecurity | None, overrides: Mapping[str, Any]
) -> RdkafkaProducer:
    """A librdkafka producer (see :func:`intelbus.transport.kafka.make_producer`)."""
    return RdkafkaProducer(bootstrap_servers, security, overrides)


def make_consumer(
    bootstrap_servers: str,
    topics: Sequence[str],
    security: TransportSecurity | None,
    overrides: Mapping[str, Any],
) -> RdkafkaConsumer:
    """A librdkafka consumer (see :func:`intelbus.transport.kafka.make_consumer`)."""
    return RdkafkaConsumer(bootstrap_servers, topics, security, overrides)

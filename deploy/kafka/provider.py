"""Provide a Kafka cluster to tests, the demo and benchmarks: configured, else jars, else Docker.

Order of preference:

1. ``KAFKA_BOOTSTRAP_SERVERS`` set: use that existing cluster, start nothing.
2. Java 17+ and Maven: start a local KRaft cluster from the cached broker jars.
3. A Docker engine answers: testcontainers' ``KafkaContainer`` (single node only).

When none works, :class:`~intelbus.errors.KafkaUnavailableError` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.launcher import LocalKafka
from deploy.kafka.preflight import BOOTSTRAP_ENV, check
from intelbus.errors import KafkaUnavailableError, ToolMissingError
from intelbus.log import get_logger
from intelbus.transport.kafka import broker_ids

log = get_logger("deploy.kafka.provider")

CONFLUENT_IMAGE = "confluentinc/cp-kafka:7.9.0"


@dataclass(frozen=True, slots=True)
class ProvidedKafka:
    """A running cluster: how to reach it, how it was provided, and the launcher when it is ours."""

    bootstrap_servers: str
    provider: str  # "cluster" | "jars" | "docker"
    nodes: int
    launcher: LocalKafka | None = None


@contextlib.contextmanager
def provide_kafka(
    *, nodes: int = 1, state_dir: Path | None = None, heap_mb: int = 384
) -> Iterator[ProvidedKafka]:
    """Yield a reachable Kafka cluster; stop it on exit if this call started it.

    Raises:
        KafkaUnavailableError: nothing could provide a cluster (the message says what to install).
    """
    try:
        how = check()
    except ToolMissingError as e:
        raise KafkaUnavailableError(str(e)) from e
    if how == "cluster":
        bootstrap = os.environ[BOOTSTRAP_ENV].strip()
        seen = broker_ids(bootstrap, timeout_s=15.0)
        if len(seen) < nodes:
            raise KafkaUnavailableError(
                f"{BOOTSTRAP_ENV}={bootstrap} has {len(seen)} live broker(s); {nodes} needed"
            )
        yield ProvidedKafka(bootstrap, "cluster", len(seen))
        return
    if how == "jars":
        with contextlib.ExitStack() as stack:
            if state_dir is None:
                state_dir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="intelbus-kafka-"))
                )
            lk = LocalKafka(state_dir, nodes=nodes, heap_mb=heap_mb)
            try:
                bootstrap = lk.start()
            except ToolMissingError as e:
                raise KafkaUnavailableError(str(e)) from e
            try:
                yield ProvidedKafka(bootstrap, "jars", nodes, lk)
            finally:
                lk.stop()
        return
    if nodes != 1:
        raise KafkaUnavailableError(
            "a multi-node cluster needs Java 17+ and Maven (testcontainers gives one node only)"
        )
    with _docker_kafka() as bootstrap:
        yield ProvidedKafka(bootstrap, "docker", 1)


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:  # pragma: no cover - no Docker engine on the CI machine
    try:
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - optional, test-only dependency
    except ImportError as e:
        raise KafkaUnavailableError(
            "a Docker engine answers but testcontainers is not installed: pip install 'intelbus[test]'"
        ) from e
    container = KafkaContainer(CONFLUENT_IMAGE).with_kraft()
    container.start()
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()

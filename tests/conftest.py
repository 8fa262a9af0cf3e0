"""Session-wide test fixtures: one real Kafka cluster per session, never a mock.

The broker comes from ``KAFKA_BOOTSTRAP_SERVERS`` when set, else from the cached jars (Java 17+ and
Maven), else from testcontainers when a Docker engine answers. When none can be started, every test
that needs Kafka **fails** with the reason. The only way to skip them is the explicit opt-out
``INTELBUS_SKIP_KAFKA_TESTS=1``, and in CI (``CI=true``) a skipped Kafka test fails the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deploy.kafka.provider import ProvidedKafka, provide_kafka
from intelbus.errors import KafkaUnavailableError
from intelbus.transport.client import ENV_CLIENT, KafkaClient

#: PostgreSQL store fixtures (``postgres_url``, ``store_url``) for every test folder.
pytest_plugins = ["tests.pgfixtures"]

OPT_OUT_ENV = "INTELBUS_SKIP_KAFKA_TESTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transport",
        choices=[c.value for c in KafkaClient],
        default=None,
        help=(
            "the Kafka client every publisher, consumer, directory follower and auditor the tests "
            f"build uses unless a test names one (sets {ENV_CLIENT}; default: that variable, else "
            "kafka-python). scripts/test runs the transport-sensitive tests on confluent-kafka too."
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """``--transport`` is the environment's choice for the whole session, subprocesses included
    (every role resolves an unset client from INTELBUS_KAFKA_CLIENT)."""
    chosen = config.getoption("--transport")
    if chosen:
        os.environ[ENV_CLIENT] = chosen
    KafkaClient.resolve()  # an unknown name in the variable fails the session at once


def pytest_report_header() -> str:
    return f"kafka client (transport): {KafkaClient.resolve().value}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration need Kafka: mark them so skips can be counted."""
    for item in items:
        if "tests/integration/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka() -> Iterator[ProvidedKafka]:
    """A real Kafka cluster for the whole session (one broker; started once)."""
    if os.environ.get(OPT_OUT_ENV) == "1":
        pytest.skip(f"Kafka tests skipped on request ({OPT_OUT_ENV}=1)")
    try:
        with provide_kafka(nodes=1) as provided:
            yield provided
    except KafkaUnavailableError as e:
        pytest.fail(f"no Kafka broker could be started, and Kafka tests never skip silently: {e}")


@pytest.fixture(scope="session")
def bootstrap(kafka: ProvidedKafka) -> str:
    """Bootstrap servers of the session cluster."""
    return kafka.bootstrap_servers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly how many Kafka tests ran against a real broker, and how many were skipped."""
    stats = terminalreporter.stats
    ran = sum(
        1
        for key in ("passed", "failed")
        for rep in stats.get(key, [])
        if getattr(rep, "when", "call") == "call" and "kafka" in rep.keywords
    )
    skipped = sum(1 for rep in stats.get("skipped", []) if "kafka" in rep.keywords)
    terminalreporter.write_line(
        f"kafka: {ran} test(s) ran against a real Apache Kafka broker, {skipped} skipped "
        f"(transport {KafkaClient.resolve().value})"
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skipped Kafka test is a failure (it would hide a missing broker)."""
    del exitstatus
    if os.environ.get("CI", "").lower() not in {"1", "true", "yes"}:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = [rep for rep in reporter.stats.get("skipped", []) if "kafka" in rep.keywords]
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} Kafka test(s) were skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""The Kafka client choice (kafka-python or confluent-kafka) and the librdkafka transport's settings
and error mapping, without a broker (the delivery tests run on both in tests/integration)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import confluent_kafka as ck
import pytest

from intelbus.cli.exits import EXIT_USAGE, exit_code
from intelbus.errors import ConfigError, KafkaUnavailableError, SendFailed
from intelbus.transport import rdkafka
from intelbus.transport.client import ENV_CLIENT, KafkaClient
from intelbus.transport.kafka import SendNotAuthorized
from intelbus.transport.security import (
    ClusterNotAuthorized,
    GroupNotAuthorized,
    TlsFiles,
    TopicNotAuthorized,
    TransportSecurity,
)
from producers.config import ProducerConfig

PRODUCER_TOML = """
agency = "cst"
key_file = "k.key"
directory = "directory"
agreement = "agreement.toml"
state_file = "state.sqlite"
environment = "demo"
"""


def test_kafka_python_is_the_default_and_the_variable_chooses_when_the_config_does_not() -> None:
    assert KafkaClient.resolve(None, {}) is KafkaClient.KAFKA_PYTHON
    env = {ENV_CLIENT: "confluent-kafka"}
    assert KafkaClient.resolve(None, env) is KafkaClient.CONFLUENT_KAFKA
    # The config's own setting wins over the variable.
    assert KafkaClient.resolve(KafkaClient.KAFKA_PYTHON, env) is KafkaClient.KAFKA_PYTHON


def test_an_unknown_client_in_the_variable_is_a_one_line_usage_error() -> None:
    with pytest.raises(ConfigError) as refused:
        KafkaClient.resolve(None, {ENV_CLIENT: "librdkafka"})
    assert ENV_CLIENT in str(refused.value)
    assert "'kafka-python', 'confluent-kafka'" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert exit_code(refused.value) == EXIT_USAGE


@pytest.mark.parametrize("name", ["confluent-kafka", "kafka-python"])
def test_a_config_file_chooses_its_client(tmp_path: Path, name: str) -> None:
    path = tmp_path / "producer.toml"
    path.write_text(PRODUCER_TOML + f'kafka_client = "{name}"\n')
    config = ProducerConfig.load(path)
    assert config.transport_client({ENV_CLIENT: "nonsense-never-read"}) is KafkaClient(name)


def test_an_unknown_client_in_a_config_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "producer.toml"
    path.write_text(PRODUCER_TOML + 'kafka_client = "rdkafka"\n')
    with pytest.raises(ConfigError) as refused:
        ProducerConfig.load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: kafka_client = 'rdkafka': unknown Kafka client")
    assert "\n" not in message
    assert exit_code(refused.value) == EXIT_USAGE


def test_confluent_kafka_chosen_but_not_installed_says_to_install_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "confluent_kafka" else real(name, *a),
    )
    with pytest.raises(ConfigError) as refused:
        KafkaClient.resolve(KafkaClient.CONFLUENT_KAFKA, {})
    assert "pip install 'intelbus[rdkafka]'" in str(refused.value)
    assert "\n" not in str(refused.value)
    # kafka-python needs nothing more.
    assert KafkaClient.resolve(None, {}) is KafkaClient.KAFKA_PYTHON


def test_the_librdkafka_producer_has_the_bus_durability_settings() -> None:
    config = rdkafka.producer_config("b:9092", TransportSecurity.plaintext(), {})
    assert config["acks"] == -1  # "all"
    assert config["enable.idempotence"] is True
    assert config["max.in.flight.requests.per.connection"] <= 5
    assert config["compression.type"] == "none"
    assert config["delivery.timeout.ms"] == 120_000
    assert config["security.protocol"] == "PLAINTEXT"


def test_the_librdkafka_consumer_never_auto_commits_and_reads_committed_only() -> None:
    config = rdkafka.consumer_config("b:9092", TransportSecurity.plaintext(), {"group_id": "g"})
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["isolation.level"] == "read_committed"
    assert config["auto.offset.reset"] == "earliest"
    assert config["group.id"] == "g"
    with pytest.raises(ValueError, match="never auto-commit"):
        rdkafka.consumer_config("b:9092", None, {"enable_auto_commit": True})


def test_a_kafka_python_setting_the_librdkafka_transport_does_not_know_is_refused() -> None:
    with pytest.raises(TypeError, match="sasl_plain_password"):
        rdkafka.producer_config("b:9092", None, {"sasl_plain_password": "x"})


def test_tls_settings_map_to_librdkafka_names(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("pem")
    (tmp_path / "c.key").chmod(0o600)
    files = TlsFiles(
        tmp_path / "ca.pem",
        tmp_path / "c.pem",
        tmp_path / "c.key",
        "KEY_PASS",
        check_hostname=False,
    )
    security = TransportSecurity(tls=files)
    config = security.librdkafka_config({"KEY_PASS": "s3cret"})
    assert config == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "c.pem"),
        "ssl.key.location": str(tmp_path / "c.key"),
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.key.password": "s3cret",
    }
    # The passphrase is read at the last moment, never held by the settings object.
    assert "s3cret" not in repr(security)
    with pytest.raises(ConfigError, match="KEY_PASS"):
        security.librdkafka_config({})
    checked = TransportSecurity(tls=TlsFiles(files.ca_file, files.cert_file, files.key_file))
    assert checked.librdkafka_config()["ssl.endpoint.identification.algorithm"] == "https"


@pytest.mark.parametrize(
    ("code", "resource"),
    [
        (ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, "topic"),
        (ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED, "cluster"),
        (ck.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional_id"),
    ],
)
def test_a_refused_send_is_send_not_authorized_and_not_indeterminate(
    code: int, resource: str
) -> None:
    failed = rdkafka._send_failed("t", ck.KafkaError(code))
    assert isinstance(failed, SendNotAuthorized)
    assert failed.resource_type == resource
    assert failed.indeterminate is False


@pytest.mark.parametrize(
    ("code", "indeterminate"),
    [
        (ck.KafkaError._MSG_TIMED_OUT, True),  # librdkafka's delivery timeout
        (ck.KafkaError._TRANSPORT, True),
        (ck.KafkaError.REQUEST_TIMED_OUT, True),
        (ck.KafkaError.NOT_ENOUGH_REPLICAS, True),  # retriable
        (ck.KafkaError.MSG_SIZE_TOO_LARGE, False),  # the broker refused it: never written
    ],
)
def test_a_failed_send_says_whether_it_may_have_been_written(
    code: int, indeterminate: bool
) -> None:
    failed = rdkafka._send_failed("t", ck.KafkaError(code))
    assert type(failed) is SendFailed
    assert failed.indeterminate is indeterminate


def test_consumer_errors_map_to_the_typed_errors() -> None:
    assert isinstance(
        rdkafka._raise(ck.KafkaError(ck.KafkaError.GROUP_AUTHORIZATION_FAILED), "poll"),
        GroupNotAuthorized,
    )
    assert isinstance(
        rdkafka._raise(ck.KafkaError(ck.KafkaError.TOPIC_AUTHORIZATION_FAILED), "poll"),
        TopicNotAuthorized,
    )
    assert isinstance(
        rdkafka._raise(ck.KafkaError(ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED), "poll"),
        ClusterNotAuthorized,
    )
    other = rdkafka._raise(ck.KafkaError(ck.KafkaError._ALL_BROKERS_DOWN), "poll")
    assert type(other) is KafkaUnavailableError
    assert "_ALL_BROKERS_DOWN" in str(other)

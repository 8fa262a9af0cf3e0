"""A producer's configuration file (TOML), checked at load time; unknown keys are refused.

    agency = "cst"
    key_file = "keys/cst.key"
    directory = "directory"            # directory folder (v1.json ...)
    agreement = "agreement.toml"       # the sharing agreement
    state_file = "state/cst.sqlite"    # sequence numbers, hash chains, unacknowledged sends
    environment = "demo"
    bootstrap_servers = "127.0.0.1:9092"   # or KAFKA_BOOTSTRAP_SERVERS
    kafka_client = "kafka-python"      # or "confluent-kafka" (the rdkafka extra); INTELBUS_KAFKA_CLIENT
    topic_prefix = "intelbus"
    heartbeat_interval_s = 30
    security = "required"              # refuse plaintext (default "optional": local development)

    [tls]                              # mutual TLS (or INTELBUS_TLS_CA / _CERT / _KEY)
    ca_file = "tls/ca.pem"
    cert_file = "tls/clients/<agency>.pem"
    key_file = "tls/clients/<agency>.key"  # mode 0600

Relative paths are relative to the config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intelbus.errors import ConfigError
from intelbus.tomlfile import read_toml
from intelbus.transport.client import KafkaClient, parse_client_setting
from intelbus.transport.security import SecurityMode, TlsConfig, TransportSecurity
from intelbus.transport.topics import DEFAULT_PREFIX
from intelbus.web_config import WebConfig, resolve_paths


class ProducerConfig(BaseModel):
    """Validated producer settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    agency: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")]
    key_file: Path
    passphrase_env: str | None = None
    directory: Path
    agreement: Path
    state_file: Path
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    bootstrap_servers: str | None = None
    #: The client library that carries the records (None: INTELBUS_KAFKA_CLIENT, else kafka-python).
    kafka_client: KafkaClient | None = None
    topic_prefix: str = DEFAULT_PREFIX
    security: SecurityMode = SecurityMode.OPTIONAL
    tls: TlsConfig | None = None
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 30.0
    #: How long one record may take to be acknowledged, all attempts together, before the
    #: publish stops with one line and leaves it pending (``intelbus publish retry``).
    delivery_timeout_s: Annotated[float, Field(ge=1, le=600)] = 30.0
    #: The report form (``intelbus web``); the publisher itself ignores it.
    web: WebConfig | None = None

    @classmethod
    def load(cls, path: Path) -> ProducerConfig:
        """Read and validate; relative paths resolve against the file's folder.

        Raises:
            ConfigError: unreadable or invalid.
        """
        raw = read_toml(path, "producer config")
        base = path.resolve().parent
        for key in ("key_file", "directory", "agreement", "state_file"):
            if key in raw:
                raw[key] = str(base / raw[key])
        tls = raw.get("tls")
        if isinstance(tls, dict):
            for key in ("ca_file", "cert_file", "key_file"):
                if key in tls:
                    tls[key] = str(base / tls[key])
        web = raw.get("web")
        if isinstance(web, dict):
            resolve_paths(web, base)
        parse_client_setting(raw, path)
        try:
            config = cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"invalid producer config {path}: {e}") from e
        config.transport_client()  # an unknown INTELBUS_KAFKA_CLIENT, or a missing extra: now
        if config.security is SecurityMode.REQUIRED:
            config.transport_security()  # refuse plaintext now, not at the first connection
        return config

    def transport_security(self, environ: Mapping[str, str] | None = None) -> TransportSecurity:
        """TLS settings from ``security`` and ``[tls]``, overridden by ``INTELBUS_*`` variables.

        Raises:
            ConfigError: ``security = "required"`` without a client certificate, or unusable files.
        """
        return TransportSecurity.build(mode=self.security, tls=self.tls, environ=environ)

    def transport_client(self, environ: Mapping[str, str] | None = None) -> KafkaClient:
        """The Kafka client library: ``kafka_client``, else ``INTELBUS_KAFKA_CLIENT``, else
        kafka-python.

        Raises:
            ConfigError: an unknown name in the variable, or confluent-kafka not installed.
        """
        return KafkaClient.resolve(self.kafka_client, environ)

    def bootstrap(self) -> str:
        """Bootstrap servers from the config, else KAFKA_BOOTSTRAP_SERVERS.

        Raises:
            ConfigError: neither is set.
        """
        value = self.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not value:
            raise ConfigError(
                "no bootstrap_servers in the config and KAFKA_BOOTSTRAP_SERVERS is unset"
            )
        return value

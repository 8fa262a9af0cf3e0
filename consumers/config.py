"""An agency consumer's configuration file (TOML), checked at load time; unknown keys are refused.

    agency = "herts-police"
    key_file = "keys/herts-police.key"
    directory = "directory"           # directory folder (or pinned v1 + the directory topic)
    policy = "policies/herts.toml"    # the sharing policy
    store = "stores/herts.sqlite"     # a path (SQLite) or a postgresql:// URL
    environment = "demo"
    bootstrap_servers = "127.0.0.1:9092"   # or KAFKA_BOOTSTRAP_SERVERS
    kafka_client = "kafka-python"      # or "confluent-kafka" (the rdkafka extra); INTELBUS_KAFKA_CLIENT
    group_id = "herts-police"
    topic_prefix = "intelbus"
    families = ["sightings", "incidents", "heartbeats"]
    batch_size = 500
    prepare_workers = 2                # intake on N forked processes; 0 or 1: serial (the default)
    security = "required"              # refuse plaintext (default "optional": local development)

    [tls]                              # mutual TLS (or INTELBUS_TLS_CA / _CERT / _KEY)
    ca_file = "tls/ca.pem"
    cert_file = "tls/clients/<agency>.pem"
    key_file = "tls/clients/<agency>.key"  # mode 0600

    [taxii]                            # `intelbus taxii serve` (intelbus/interop/taxii_config.py)
    users_file = "taxii-users.json"

Relative paths are relative to the config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intelbus.errors import ConfigError
from intelbus.interop.taxii_config import PATH_KEYS as TAXII_PATH_KEYS
from intelbus.interop.taxii_config import TaxiiConfig
from intelbus.kinds import Family
from intelbus.tomlfile import read_toml
from intelbus.transport.client import KafkaClient, parse_client_setting
from intelbus.transport.security import SecurityMode, TlsConfig, TransportSecurity
from intelbus.transport.topics import DEFAULT_PREFIX
from intelbus.web_config import WebConfig, resolve_paths


class ConsumerConfig(BaseModel):
    """Validated consumer settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    agency: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")]
    key_file: Path
    passphrase_env: str | None = None
    directory: Path
    policy: Path
    store: str
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    bootstrap_servers: str | None = None
    #: The client library that carries the records (None: INTELBUS_KAFKA_CLIENT, else kafka-python).
    kafka_client: KafkaClient | None = None
    group_id: str | None = None
    topic_prefix: str = DEFAULT_PREFIX
    security: SecurityMode = SecurityMode.OPTIONAL
    tls: TlsConfig | None = None
    families: tuple[Family, ...] = (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    #: Worker processes that verify, decrypt and decode records (consumers/prepare_pool.py) while
    #: this process judges and commits the batch before in order; 0 or 1: all in this process.
    #: Default 0: on a 2-core host shared with its broker, workers measured no faster than serial
    #: (docs/performance.md); they pay where the consumer has cores to itself.
    prepare_workers: Annotated[int, Field(ge=0, le=64)] = 0
    #: Seconds between the running consumer's retention prunes (issue 16); 0: never (then run
    #: ``intelbus store prune`` from a scheduler).
    prune_every_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 3600.0
    #: The read-only TAXII 2.1 server over this store (``intelbus taxii serve``); the consumer
    #: itself ignores it.
    taxii: TaxiiConfig | None = None
    #: The analyst's and operator's console (``intelbus web``); the consumer itself ignores it.
    web: WebConfig | None = None

    @classmethod
    def load(cls, path: Path) -> ConsumerConfig:
        """Read and validate; relative paths resolve against the file's folder.

        Raises:
            ConfigError: unreadable or invalid.
        """
        raw = read_toml(path, "consumer config")
        base = path.resolve().parent
        for key in ("key_file", "directory", "policy"):
            if key in raw:
                raw[key] = str(base / raw[key])
        if "store" in raw and "://" not in raw["store"]:
            raw["store"] = str(base / raw["store"])
        tls = raw.get("tls")
        if isinstance(tls, dict):
            for key in ("ca_file", "cert_file", "key_file"):
                if key in tls:
                    tls[key] = str(base / tls[key])
        taxii = raw.get("taxii")
        if isinstance(taxii, dict):
            for key in TAXII_PATH_KEYS:
                if key in taxii:
                    taxii[key] = str(base / taxii[key])
        web = raw.get("web")
        if isinstance(web, dict):
            resolve_paths(web, base)
        parse_client_setting(raw, path)
        try:
            config = cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"invalid consumer config {path}: {e}") from e
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

    @property
    def group(self) -> str:
        # <prefix>.<agency>: the one group name the directory-derived ACLs grant (deploy/kafka/acls.py).
        return self.group_id or f"{self.topic_prefix}.{self.agency}"

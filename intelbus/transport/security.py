"""Transport security settings: mutual TLS between every client and the brokers.

End-to-end encryption protects record contents; TLS keeps strangers off the brokers, and the
certificate a client presents is what the brokers' ACLs judge (CN = agency id). This module owns:

* :class:`TlsConfig`, the ``[tls]`` section of a producer, consumer or auditor config file;
* :class:`TransportSecurity`, the frozen, checked settings a client is built with, from a config
  section and ``INTELBUS_*`` environment variables, turned into kafka-python keyword arguments
  (or librdkafka's settings, for the confluent-kafka transport);
* the typed errors the transport boundary (:mod:`intelbus.transport.kafka`) maps kafka-python's
  authorization failures to.

It imports nothing from kafka-python: the keyword arguments are plain values.

Precedence: environment variables override the config file field by field, and ``security`` can
only be tightened by the environment (``required`` anywhere wins): an operator can force TLS on a
host without editing every config, and a stray variable cannot switch it off.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from intelbus.errors import (
    ConfigError,
    NotAuthorized,
)
from intelbus.files import check_private

ENV_SECURITY = "INTELBUS_SECURITY"
ENV_CA = "INTELBUS_TLS_CA"
ENV_CERT = "INTELBUS_TLS_CERT"
ENV_KEY = "INTELBUS_TLS_KEY"
ENV_KEY_PASSWORD = "INTELBUS_TLS_KEY_PASSWORD"  # noqa: S105 - the variable's name, not a secret
ENV_CHECK_HOSTNAME = "INTELBUS_TLS_CHECK_HOSTNAME"


class SecurityMode(enum.StrEnum):
    """Whether plaintext is acceptable."""

    REQUIRED = "required"  # TLS with a client certificate, or the client refuses to start
    OPTIONAL = "optional"  # TLS when configured, else plaintext (local development only)


class TlsConfig(BaseModel):
    """The ``[tls]`` section of a config file (relative paths resolved by the config's loader)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # The *name* of an environment variable holding the key's passphrase, never the passphrase.
    key_password_env: str | None = None
    check_hostname: bool = True


# --- Typed errors raised at the transport boundary. --------------------------------------------------


class TopicNotAuthorized(NotAuthorized):
    """No READ, WRITE or DESCRIBE ACL on a topic (kafka-python's TopicAuthorizationFailedError)."""

    resource_type = "topic"


class GroupNotAuthorized(NotAuthorized):
    """No READ ACL on the consumer group (GroupAuthorizationFailedError)."""

    resource_type = "group"


class ClusterNotAuthorized(NotAuthorized):
    """A cluster-level operation was denied (ClusterAuthorizationFailedError), e.g. an idempotent
    producer's InitProducerId for a principal that may write to no topic at all."""

    resource_type = "cluster"


class TransactionalIdNotAuthorized(NotAuthorized):
    """A transactional id was denied (TransactionalIdAuthorizationFailedError)."""

    resource_type = "transactional_id"


# --- Settings. ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of one client: the CA it trusts, its certificate chain and its private key.

    Checked when built: every file exists, and the key is not readable by group or others (the
    same rule ssh applies to its keys). ``repr`` shows paths only; the passphrase is never held,
    only the name of the variable that holds it.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    key_password_env: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for label, path in (("CA", self.ca_file), ("certificate", self.cert_file)):
            if not path.is_file():
                raise ConfigError(f"TLS {label} file {path} does not exist")
        if not self.key_file.is_file():
            raise ConfigError(f"TLS key file {self.key_file} does not exist")
        # The one private-key check of the project (intelbus/files.py), as for agency keys.
        check_private(self.key_file, what="TLS key file")


@dataclass(frozen=True, slots=True)
class TransportSecurity:
    """How a client connects: mutual TLS with :attr:`tls`, or plaintext when it is None.

    Plaintext exists for local development only; :attr:`mode` ``required`` refuses it when built.
    """

    mode: SecurityMode = SecurityMode.OPTIONAL
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        if self.mode is SecurityMode.REQUIRED and self.tls is None:
            raise ConfigError(
                'security = "required" but no TLS client certificate is configured: set '
                f"[tls] ca_file, cert_file and key_file (or {ENV_CA}, {ENV_CERT}, {ENV_KEY}); "
                "plaintext connections are for local development only"
            )

    @classmethod
    def plaintext(cls) -> TransportSecurity:
        """No TLS (a local development broker)."""
        return cls(SecurityMode.OPTIONAL, None)

    @property
    def protocol(self) -> str:
        """Kafka's ``security.protocol`` for these settings."""
        return "PLAINTEXT" if self.tls is None else "SSL"

    def client_kwargs(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients (producer, consumer, admin).

        The key passphrase, when there is one, is read from its variable here, at the last moment,
        so it is never stored in this object.

        Raises:
            ConfigError: the named passphrase variable is not set.
        """
        if self.tls is None:
            return {"security_protocol": "PLAINTEXT"}
        kwargs: dict[str, Any] = {
            "security_protocol": "SSL",
            "ssl_cafile": str(self.tls.ca_file),
            "ssl_certfile": str(self.tls.cert_file),
            "ssl_keyfile": str(self.tls.key_file),
            "ssl_check_hostname": self.tls.check_hostname,
        }
        if self.tls.key_password_env is not None:
            env = os.environ if environ is None else environ
            password = env.get(self.tls.key_password_env)
            if password is None:
                raise ConfigError(
                    f"the TLS key passphrase variable {self.tls.key_password_env} is not set"
                )
            kwargs["ssl_password"] = password
        return kwargs

    def librdkafka_config(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The same settings under librdkafka's names (the confluent-kafka transport).

        As :meth:`client_kwargs`: the passphrase is read from its variable at the last moment and
        goes only into the client's config.

        Raises:
            ConfigError: the named passphrase variable is not set.
        """
        kwargs = self.client_kwargs(environ)
        if self.tls is None:
            return {"security.protocol": "PLAINTEXT"}
        config: dict[str, Any] = {
            "security.protocol": "SSL",
            "ssl.ca.location": kwargs["ssl_cafile"],
            "ssl.certificate.location": kwargs["ssl_certfile"],
            "ssl.key.location": kwargs["ssl_keyfile"],
            # kafka-python's ssl_check_hostname: the broker's name checked against its certificate.
            "ssl.endpoint.identification.algorithm": "https" if self.tls.check_hostname else "none",
        }
        if "ssl_password" in kwargs:
            config["ssl.key.password"] = kwargs["ssl_password"]
        return config

    @classmethod
    def build(
        cls,
        *,
        mode: SecurityMode = SecurityMode.OPTIONAL,
        tls: TlsConfig | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TransportSecurity:
        """Settings from a config's ``security`` and ``[tls]``, overridden by the environment.

        TLS is on when a CA, a certificate and a key are all known (from either source). Only
        some of them is a mistake, refused rather than silently falling back to plaintext.

        Raises:
            ConfigError: an unknown ``INTELBUS_SECURITY`` value, a partial TLS configuration, a
                missing file, a key readable by others, or ``required`` without TLS.
        """
        env = os.environ if environ is None else environ
        raw_mode = env.get(ENV_SECURITY, "").strip().lower()
        if raw_mode:
            try:
                env_mode = SecurityMode(raw_mode)
            except ValueError:
                raise ConfigError(
                    f"{ENV_SECURITY}={raw_mode!r}: expected 'required' or 'optional'"
                ) from None
            if env_mode is SecurityMode.REQUIRED:
                mode = SecurityMode.REQUIRED  # the environment may tighten, never loosen
        section = tls or TlsConfig()
        ca = _path(env.get(ENV_CA)) or section.ca_file
        cert = _path(env.get(ENV_CERT)) or section.cert_file
        key = _path(env.get(ENV_KEY)) or section.key_file
        password_env = (
            ENV_KEY_PASSWORD if env.get(ENV_KEY_PASSWORD) is not None else section.key_password_env
        )
        check = section.check_hostname
        if env.get(ENV_CHECK_HOSTNAME, "").strip().lower() in {"0", "false", "no"}:
            check = False
        if ca is not None and cert is not None and key is not None:
            return cls(mode, TlsFiles(ca, cert, key, password_env, check))
        given = {"CA": ca, "certificate": cert, "key": key}
        missing = [label for label, value in given.items() if value is None]
        if len(missing) < len(given):
            raise ConfigError(
                f"incomplete TLS settings: missing the {', '.join(missing)} file "
                f"(a client certificate needs ca_file, cert_file and key_file together)"
            )
        return cls(mode, None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TransportSecurity:
        """Settings from ``INTELBUS_*`` variables only (what a client gets when given none).

        Raises:
            ConfigError: as :meth:`build`.
        """
        return cls.build(environ=environ)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


# --- ACL bindings, in our own terms (kafka-python's ACL objects stay inside transport/kafka.py). -----


class AclResource(enum.StrEnum):
    """The kinds of Kafka resource the bus grants on."""

    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"
    TRANSACTIONAL_ID = "transactional_id"


class AclPattern(enum.StrEnum):
    """How a binding's resource name matches (KIP-290)."""

    LITERAL = "literal"  # exactly this name; "*" alone means every resource of the type
    PREFIXED = "prefixed"


class AclOperation(enum.StrEnum):
    """Operations the bus grants (a subset of Kafka's)."""

    ALL = "all"
    READ = "read"
    WRITE = "write"
    CREATE = "create"
    DELETE = "delete"
    ALTER = "alter"
    DESCRIBE = "describe"
    CLUSTER_ACTION = "cluster_action"
    DESCRIBE_CONFIGS = "describe_configs"
    ALTER_CONFIGS = "alter_configs"
    IDEMPOTENT_WRITE = "idempotent_write"


class AclPermission(enum.StrEnum):
    """Allow or deny."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    """One Kafka ACL: ``principal`` may (or may not) do ``operation`` on a resource, from ``host``."""

    principal: str  # "User:<agency id>"
    resource: AclResource
    name: str
    operation: AclOperation
    pattern: AclPattern = AclPattern.LITERAL
    permission: AclPermission = AclPermission.ALLOW
    host: str = "*"

    def __str__(self) -> str:
        return (
            f"{self.permission.value.upper()} {self.principal} {self.operation.value.upper()} "
            f"{self.resource.value}:{self.name}"
            f"{' (prefixed)' if self.pattern is AclPattern.PREFIXED else ''}"
            f"{'' if self.host == '*' else f' from {self.host}'}"
        )

"""The ``[taxii]`` section of a force's consumer config: where ``intelbus taxii serve`` listens.

    [taxii]
    bind = "127.0.0.1"                 # loopback unless said otherwise
    port = 9443
    users_file = "taxii-users.json"     # `intelbus taxii add-user` writes it (0600)
    cert_file = "tls/taxii.pem"         # the server's certificate (chain) and key: HTTPS
    key_file = "tls/taxii.key"
    ca_file = "tls/ca.pem"              # the bus CA: clients may present its certificates
    page_size = 100                     # most objects in one response

Relative paths are relative to the config file (resolved by the config loader).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intelbus.errors import ConfigError

DEFAULT_PORT = 9443
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class ListenerConfig(BaseModel):
    """What an HTTP(S) service of the bus is configured with (``[taxii]``, ``[web]``): where it
    listens, its users file, and its TLS files (a certificate and key together; a CA for client
    certificates only with them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bind: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    users_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_pairs(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the service's HTTPS identity)")
        if self.ca_file is not None and self.cert_file is None:
            raise ValueError("ca_file (client certificates) needs cert_file and key_file (HTTPS)")
        return self

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def serving(
        self, bind: str | None, port: int | None, *, what: str, section: str, secure: str
    ) -> Self:
        """These settings with ``--bind``/``--port`` applied, checked fit to listen with.

        Raises:
            ConfigError: a non-loopback address without TLS (credentials and records must not
                cross a network in the clear), or no users file.
        """
        changes = {k: v for k, v in (("bind", bind), ("port", port)) if v is not None}
        settings = self.model_copy(update=changes)
        if not settings.tls and not is_loopback(settings.bind):
            raise ConfigError(
                f"refusing to serve {what} on {settings.bind} without {secure}: set cert_file "
                f"and key_file in [{section}], or bind to 127.0.0.1"
            )
        if settings.users_file is None:
            raise ConfigError(
                f"no users_file in [{section}]: add users with `intelbus {section} add-user`"
            )
        return settings


class TaxiiConfig(ListenerConfig):
    """Validated ``[taxii]`` settings."""

    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    page_size: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


PATH_KEYS = ("users_file", "cert_file", "key_file", "ca_file")

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
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PORT = 9443
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class TaxiiConfig(BaseModel):
    """Validated ``[taxii]`` settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bind: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    users_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    page_size: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE

    @model_validator(mode="after")
    def _tls_pairs(self) -> TaxiiConfig:
        check_tls_files(self.cert_file, self.key_file, self.ca_file, "the server's")
        return self

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def check_tls_files(cert: Path | None, key: Path | None, ca: Path | None, whose: str) -> None:
    """An HTTPS server's files come as a certificate and key together; a CA (for client
    certificates) only with them.

    Raises:
        ValueError: they do not (pydantic reports it against the config section).
    """
    if (cert is None) != (key is None):
        raise ValueError(f"cert_file and key_file go together ({whose} HTTPS identity)")
    if ca is not None and cert is None:
        raise ValueError("ca_file (client certificates) needs cert_file and key_file (HTTPS)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


PATH_KEYS = ("users_file", "cert_file", "key_file", "ca_file")

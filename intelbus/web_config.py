"""The ``[web]`` section of an agency's config: where ``intelbus web`` serves its console.

    [web]
    bind = "127.0.0.1"                  # loopback unless said otherwise (TLS required elsewhere)
    port = 8800
    hosts = ["console.cst.internal"]    # names people reach it by (besides the bind address)
    users_file = "web-users.json"       # `intelbus web add-user` writes it (0600)
    cert_file = "tls/web.pem"           # HTTPS: the console's certificate (chain) and key
    key_file = "tls/web.key"
    ca_file = "tls/ca.pem"              # the bus CA: certificate-only users may sign in with one
    session_idle_minutes = 30           # a session ends after this long without a request
    session_hours = 10                  # and after this long whatever happens (one shift)
    tile_url = "https://tiles.force.internal/{z}/{x}/{y}.png"   # optional: a tile server of yours
    audit_reports = "reports/audit"     # the inspectorate's `audit replay --report` files
    [web.partner_policies]              # a producer's console: the recipients' published
    met-police = "policies/met.toml"    # sharing policies, for the preview of kept fields

The same section serves a producer's config (CST: the report form) and a force's consumer config
(the analyst's and the operator's pages). Relative paths are relative to the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from intelbus.interop.taxii_config import ListenerConfig

DEFAULT_PORT = 8800

AgencyId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")]


class WebConfig(ListenerConfig):
    """Validated ``[web]`` settings."""

    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    #: Host names the console answers to besides its address (and localhost when on loopback):
    #: a request naming any other host is refused, so a web page whose name an attacker points at
    #: 127.0.0.1 (DNS rebinding) cannot read the console from a browser on this machine.
    hosts: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")], ...] = ()
    session_idle_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 30.0
    session_hours: Annotated[float, Field(gt=0, le=24)] = 10.0
    tile_url: str | None = None
    audit_reports: Path | None = None
    partner_policies: dict[AgencyId, Path] = Field(default_factory=dict)

    @field_validator("tile_url")
    @classmethod
    def _tile_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("tile_url is an http(s) URL template")
        if not all(f"{{{k}}}" in value for k in ("z", "x", "y")):
            raise ValueError("tile_url holds {z}, {x} and {y}")
        if any(c in value for c in "'\"; <>\\"):
            raise ValueError("tile_url may not hold quotes, semicolons, spaces or angle brackets")
        return value

    @property
    def tile_origin(self) -> str | None:
        """``scheme://host[:port]`` of the tile server: the one other origin pages may load."""
        if self.tile_url is None:
            return None
        parts = urlsplit(self.tile_url)
        return f"{parts.scheme}://{parts.netloc}"


PATH_KEYS = ("users_file", "cert_file", "key_file", "ca_file", "audit_reports")


def resolve_paths(raw: dict[str, object], base: Path) -> None:
    """Make the relative paths of a raw ``[web]`` table relative to ``base`` (in place)."""
    for key in PATH_KEYS:
        value = raw.get(key)
        if isinstance(value, str):
            raw[key] = str(base / value)
    partners = raw.get("partner_policies")
    if isinstance(partners, dict):
        for agency, value in partners.items():
            if isinstance(value, str):
                partners[agency] = str(base / value)

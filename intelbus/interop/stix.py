"""Stored records as STIX 2.1 objects (the one mapping; the bundle export and TAXII both use it).

Interface kept stable for the TAXII server and the bundle export:

* :func:`record_entries` gives every STIX object version one stored record exports to, oldest
  first, with the objects it refers to (identity, location, attack-pattern, markings...), each with
  the time this force's store added it (TAXII's ``date_added``);
* :func:`stix_bundle` gives a bundle of the current version of every record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from intelbus.store.base import StoredRecordView

_STIX_NAMESPACE: Final = uuid.UUID("6f1f5c2e-3b0a-5d39-9a41-2c1f1f3e7a10")


@dataclass(frozen=True, slots=True)
class StixEntry:
    """One version of one STIX object, and when this force's store added it."""

    obj: Mapping[str, Any]
    date_added: datetime

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def version(self) -> str:
        """The object's ``modified`` (or ``created`` for objects without one)."""
        return str(self.obj.get("modified") or self.obj.get("created"))


def stix_id(kind: str, *parts: str) -> str:
    """A STIX id that is the same for the same parts in every export."""
    return f"{kind}--{uuid.uuid5(_STIX_NAMESPACE, '|'.join((kind, *parts)))}"


def stix_time(value: datetime) -> str:
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def record_entries(view: StoredRecordView) -> list[StixEntry]:
    """Every STIX object version ``view`` exports to (all its versions), oldest first."""
    raise NotImplementedError("being written (issue 17)")


def stix_bundle(views: Iterable[StoredRecordView], *, exported_at: datetime) -> dict[str, Any]:
    """A STIX 2.1 bundle of the current version of every record in ``views``."""
    raise NotImplementedError("being written (issue 17)")

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
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from intelbus.store.base import HistoryEntry, StoredRecordView

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


#: The producer identities' one version (shared by every record: the same (id, version)).
_IDENTITY_CREATED: Final = "2026-01-01T00:00:00.000Z"


def record_entries(view: StoredRecordView) -> list[StixEntry]:
    """Every STIX object version ``view`` exports to (all its versions), oldest first.

    MINIMAL STAND-IN written for the TAXII server's development (branch ``taxii``): one
    ``sighting`` or ``incident`` object per stored version (a correction is a later ``modified``,
    a retraction ``revoked``), and the producer's ``identity``. The real mapping (issue 17's STIX
    work) replaces this file at merge; the server relies only on the interface.
    """
    identity = stix_id("identity", view.producer_id)
    # date_added is this store's clock (when it stored the record or recorded the version), never
    # the producer's or the broker's: a record consumed late must still come after a client's
    # last `added_after`.
    added = view.stored_at or view.appended_at
    shared = StixEntry(
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": identity,
            "created": _IDENTITY_CREATED,
            "modified": _IDENTITY_CREATED,
            "name": view.producer_id,
            "identity_class": "organization",
        },
        added,
    )
    kind = "incident" if view.kind == "incident" else "sighting"
    oid = stix_id(kind, view.producer_id, view.record_id)
    created = stix_time(view.created_at)
    history = view.history or (
        HistoryEntry(
            1, "original", view.payload, view.record_id, "", view.appended_at, "", recorded_at=added
        ),
    )
    out = [shared]
    last: datetime | None = None
    for h in history:
        if h.payload is None and h.change != "retraction":
            continue
        when = view.created_at if h.change == "original" else h.at
        if last is not None and when <= last:  # versions must strictly increase
            when = last + timedelta(milliseconds=1)
        last = when
        obj: dict[str, Any] = {
            "type": kind,
            "spec_version": "2.1",
            "id": oid,
            "created": created,
            "modified": stix_time(when),
            "created_by_ref": identity,
        }
        if kind == "sighting":
            obj["sighting_of_ref"] = identity
        else:
            obj["name"] = f"incident {view.record_id}"
        description = (h.payload or {}).get("description")
        if isinstance(description, str):
            obj["description"] = description
        if h.change == "retraction":
            obj["revoked"] = True
        out.append(StixEntry(obj, h.recorded_at or added))
    return out


def stix_bundle(views: Iterable[StoredRecordView], *, exported_at: datetime) -> dict[str, Any]:
    """A STIX 2.1 bundle of the current version of every record in ``views``."""
    raise NotImplementedError("being written (issue 17)")

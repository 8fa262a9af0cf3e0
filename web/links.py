"""Links between records that share a vehicle registration, a person description or a site.

An analyst's first question about a sighting is "have we seen this before": the same car, the
same person, the same place. Keys are normalised so trivial differences in typing do not hide a
link (registration upper case without spaces; a person's summary case-folded with whitespace
collapsed; a site by its case-folded name within its force area, since two forces may each have
a "High Street Synagogue").

The payloads are what an agency's store shows, after its policy: a redacted field holds
``"[REDACTED]"`` or is absent. Nothing is ever linked on the placeholder or on an empty value,
which would join every redacted record into one false group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from intelbus.policy.redact import REDACTED

LinkKind = Literal["vehicle", "person", "site"]


@dataclass(frozen=True, slots=True, order=True)
class LinkKey:
    """What records share: its kind, the normalised key compared, and the text shown."""

    kind: LinkKind
    key: str
    shown: str


@dataclass(frozen=True, slots=True)
class LinkGroup:
    """Records (two or more distinct ids, sorted) that share one key."""

    key: LinkKey
    record_ids: tuple[str, ...]


def _usable(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return None if not text or text == REDACTED else text


def _records(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # A correction links through the record it carries.
    out = [payload]
    replacement = payload.get("replacement")
    if isinstance(replacement, Mapping):
        out.append(replacement)
    return out


def link_keys(payload: Mapping[str, Any]) -> frozenset[LinkKey]:
    """The keys a record (a JSON payload, possibly redacted) can be linked on."""
    keys: set[LinkKey] = set()
    for record in _records(payload):
        for vehicle in _list(record.get("vehicles")):
            reg = _usable(vehicle.get("registration"))
            if reg is not None:
                key = re.sub(r"[\s-]+", "", reg).upper()
                if key:
                    keys.add(LinkKey("vehicle", key, key))
        for person in _list(record.get("persons")):
            summary = _usable(person.get("summary"))
            if summary is not None:
                keys.add(LinkKey("person", summary.casefold(), summary))
        place = record.get("place")
        if isinstance(place, Mapping):
            name = _usable(place.get("site_name"))
            area = _usable(place.get("force_area"))
            if name is not None and area is not None:
                keys.add(LinkKey("site", f"{name.casefold()}|{area}", f"{name} ({area})"))
    return frozenset(keys)


def _list(value: object) -> list[Mapping[str, Any]]:
    # A redacted list is the placeholder string: nothing to link on.
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def link_groups(views: Iterable[tuple[str, Mapping[str, Any]]]) -> list[LinkGroup]:
    """Every key shared by two or more records, largest group first (then by kind and key)."""
    by_key: dict[tuple[str, str], set[str]] = {}
    shown: dict[tuple[str, str], LinkKey] = {}
    for record_id, payload in views:
        for k in link_keys(payload):
            ident = (k.kind, k.key)
            by_key.setdefault(ident, set()).add(record_id)
            shown.setdefault(ident, k)  # the first record's spelling is shown
    groups = [
        LinkGroup(shown[ident], tuple(sorted(ids))) for ident, ids in by_key.items() if len(ids) > 1
    ]
    groups.sort(key=lambda g: (-len(g.record_ids), g.key.kind, g.key.key))
    return groups


def links_for(record_id: str, views: Iterable[tuple[str, Mapping[str, Any]]]) -> list[LinkGroup]:
    """The groups ``record_id`` belongs to (what it shares, and with which records)."""
    return [g for g in link_groups(views) if record_id in g.record_ids]

"""A stored record for people: its payload as labelled items, a one-line summary, status flags.

The payload shown is the store's after the policy's redactions are enforced once more
(:func:`intelbus.store.subject.enforce_redactions`): a field the policy redacted is an item marked
``redacted`` whatever the stored value holds, and the page says "redacted by your policy". Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from intelbus.policy.redact import REDACTED
from intelbus.store import StoredRecordView
from intelbus.store.subject import enforce_redactions

_SUMMARY_CHARS: Final = 90
#: Labels for the fields whose names do not read well as they are.
_LABELS: Final = {
    "record_id": "Record id",
    "observed_at": "Observed",
    "occurred_at": "Occurred",
    "tlp": "TLP",
    "approx_age": "Approximate age",
    "reporter_ref": "Reporter reference",
    "police_crime_reference": "Police crime reference",
    "address_or_area": "Address or area",
    "force_area": "Force area",
    "site_kind": "Site kind",
    "site_name": "Site name",
    "source_evaluation": "Source evaluation",
    "handling_code": "Handling code",
    "handling_conditions": "Handling conditions",
    "victim_type": "Victim type",
    "victim_details": "Victim details",
    "offender_description": "Offender description",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One field: its label, its text (None for a group or nothing), nested items, redacted."""

    label: str
    text: str | None = None
    children: tuple[Item, ...] = ()
    redacted: bool = False


def label(name: str) -> str:
    """A field name as a label: ``site_kind`` -> ``Site kind``."""
    return _LABELS.get(name, name.replace("_", " ").capitalize())


def _item(name: str, value: Any) -> Item:  # noqa: ANN401 - any JSON value
    if value == REDACTED:
        return Item(name, redacted=True)
    if isinstance(value, Mapping):
        return Item(name, children=tuple(_item(label(k), v) for k, v in value.items()))
    if isinstance(value, list):
        if all(not isinstance(v, (Mapping, list)) for v in value):
            return Item(name, ", ".join(_text(v) for v in value) if value else "none")
        return Item(
            name,
            children=tuple(_item(f"{name.rstrip('s')} {i}", v) for i, v in enumerate(value, 1)),
        )
    return Item(name, _text(value))


def _text(value: object) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def payload_items(payload: Mapping[str, Any], redacted_fields: tuple[str, ...]) -> list[Item]:
    """The payload as items, the policy's redactions enforced."""
    shown = enforce_redactions(dict(payload), redacted_fields)
    return [_item(label(k), v) for k, v in shown.items()]


def summary(view: StoredRecordView) -> str:
    """One line: the site and the start of the description (call only for unrestricted records)."""
    p = view.payload or {}
    found = p.get("place")
    place: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    parts = [str(v) for v in (place.get("site_name"), p.get("description")) if v and v != REDACTED]
    text = ": ".join(parts)
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def position(view: StoredRecordView) -> tuple[float | None, float | None]:
    """The record's latitude and longitude (None when absent or redacted)."""
    place = (view.payload or {}).get("place")
    if not isinstance(place, Mapping):
        return None, None
    lat, lon = place.get("latitude"), place.get("longitude")
    ok = isinstance(lat, (int, float)) and isinstance(lon, (int, float))
    return (float(lat), float(lon)) if ok else (None, None)  # type: ignore[arg-type]

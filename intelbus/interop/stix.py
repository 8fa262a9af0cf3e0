"""Stored records as STIX 2.1 objects (the one mapping; the bundle export and TAXII both use it).

Interface kept stable for the TAXII server and the bundle export:

* :func:`record_entries` gives every STIX object version one stored record exports to, oldest
  first, with the objects it refers to (identities, locations, attack-patterns, TLP 2.0 marking
  definitions, extension definitions), each with the time this force's store added it (TAXII's
  ``date_added``);
* :func:`stix_bundle` gives a self-contained bundle of the current version of every record.

Everything passes ``stix2-validator --strict`` (no error, no warning) and loads with
``stix2.parse(allow_custom=False)``: no custom property, no custom object; what STIX has no
property for travels in one property-extension, :data:`EXTENSION_ID`, whose JSON schema ships as
``schemas/stix/intelbus-record.v1.schema.json`` (:data:`EXTENSION_SCHEMA`).

Structure
---------
* A **sighting record** becomes one ``sighting`` per observed behaviour, each the sighting of that
  behaviour's ``attack-pattern`` (one attack-pattern per behaviour, the same id in every export).
  A STIX sighting has exactly one ``sighting_of_ref``; one per behaviour keeps each behaviour a
  first-class, searchable fact: OpenCTI turns each into a sighting relationship from the
  attack-pattern to the location ("drone overhead, seen at Golders Green"), and MISP's STIX 2
  import keeps the attack-pattern as the sighted object. The sightings of one record share its
  record id (``external_references``: ``source_name`` ``intelbus``, ``external_id`` the record id)
  and carry the same extension, so the importer puts the record back together. A record whose
  behaviours were redacted gets one sighting of :data:`UNSPECIFIED` hostile reconnaissance.
* An **incident record** becomes an ``incident``, linked to its locations by ``related-to``
  relationships (the validator's strict mode suggests no other relationship type from incident).
* **Locations**: the force area as a ``location`` (``region`` northern-europe, ``country`` GB, named
  for the force area; shared by every record in that area), and, when the stored payload keeps
  the coordinates (the force's policy may redact them), a point ``location`` with latitude and
  longitude (its id derived from the record and its content). A sighting lists them in
  ``where_sighted_refs``.
* **Identities**: the producer (``created_by_ref`` of a record's objects), and intelbus itself,
  author of the shared attack-patterns, force-area locations and the extension definition.
* **TLP 2.0**: the five OASIS marking definitions (cti-stix-common-objects,
  extension-definition-specifications/tlp-2.0), with their TLP 2.0 extension definition; a record's
  objects carry its TLP in ``object_marking_refs``. The UK classification has no STIX marking:
  it is in the extension.

Versions
--------
Object ids are UUIDv4-shaped (version and variant bits set) from a SHA-256 of the object type
and what the object stands for (producer and record id, behaviour, force area...): the same in
every export, so a re-export updates rather than duplicates. Each stored version of a record is
one version of each of its objects (same id, later ``modified``; ``created`` is the record's
creation). A retraction is a last version with ``revoked: true``; an object a correction no longer
needs (a behaviour taken out, coordinates changed) is revoked at that version. Withdrawn versions
and versions this agency did not hold are left out. An erased or pruned record, or one that is
not visible (withheld, quarantined, withdrawn), exports nothing.

What goes in: every field the force's policy let it keep, people's free text included (the
description in ``description``, persons and vehicles, victim and offender details in the
extension), so a STIX round trip keeps the record whole; what must not travel on is for the policy
to redact. A field the policy redacted (the store keeps the ``[REDACTED]`` placeholder) is left
out, never exported as a placeholder; its dotted path is listed in the extension's
``redacted_fields``.

Mapping (schema field -> STIX)
------------------------------
==============================  ================================================================
record field                    STIX
==============================  ================================================================
record_id                       ``external_references`` [intelbus, record id]; ext. ``record_id``
producer (envelope)             ``created_by_ref`` identity; ext. ``producer_id``
observed_at (sighting)          sighting ``first_seen`` = ``last_seen``, ``count`` 1
occurred_at (incident)          ext. ``occurred_at`` (incident has no time property)
place.latitude, .longitude      point ``location`` ``latitude``/``longitude`` (if kept)
place.force_area                force-area ``location``; ext. ``place.force_area``
place.site_name, .site_kind,    ext. ``place`` (the point location's ``name`` is the site name or
place.address_or_area           the address or area, whichever the policy kept)
behaviours (sighting)           one ``attack-pattern`` each, one ``sighting`` each
description                     ``description`` of the sighting(s) / incident
persons, vehicles               ext. ``persons``, ``vehicles`` (whole, as in the record)
reporter_ref                    ext. ``reporter_ref``
police_crime_reference          ext. ``police_crime_reference``
category, mode (incident)       incident ``name`` (readable); ext. ``category``, ``mode``
victim_type, victim_details,    ext. ``victim_type``, ``victim_details``,
offender_description, status    ``offender_description``, ``status``
grading.source_evaluation,      ext. ``grading`` (3x5x2: S1-S3, A-E, P/C, conditions)
.assessment, .handling_code,
.handling_conditions
grading.tlp                     ``object_marking_refs`` TLP 2.0 marking; ext. ``tlp``
grading.classification          ext. ``classification``
version / correction            a new object version (``modified``); ext. ``record_version``
retraction                      last version with ``revoked`` true
redacted fields                 left out; ext. ``redacted_fields``
==============================  ================================================================
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from intelbus.policy.redact import REDACTED
from intelbus.store.base import StoredRecordView
from intelbus.store.subject import enforce_redactions
from schemas import schema_dir

#: The JSON schema of the intelbus property-extension (shipped with the package).
EXTENSION_SCHEMA: Final[Path] = schema_dir() / "stix" / "intelbus-record.v1.schema.json"
#: The intelbus record extension's definition id (fixed: receivers key the extension on it).
EXTENSION_ID: Final = "extension-definition--0d2fd2fd-045e-45eb-a2a5-74d072bfacf0"
#: intelbus, author of the mapping's shared objects (the extension definition, attack-patterns,
#: force-area locations).
INTELBUS_IDENTITY: Final = "identity--e7605daa-dabf-4b9a-967d-3f785ed27399"
#: When the mapping's shared objects were defined: their ``created`` and ``modified`` (a constant,
#: so they are the same object version in every export).
DEFINED: Final = "2026-11-01T00:00:00.000Z"

# TLP 2.0 as published by OASIS in oasis-open/cti-stix-common-objects
# (extension-definition-specifications/tlp-2.0: the marking-definition schema, the examples, and
# objects/marking-definition/*.json; objects/extension-definition/ for the extension definition).
TLP2_EXTENSION_ID: Final = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
_TLP2_CREATED: Final = "2022-10-01T00:00:00.000Z"
#: intelbus TLP label -> (marking-definition id, name, tlp_2_0 value).
TLP2_MARKINGS: Final[Mapping[str, tuple[str, str, str]]] = {
    "CLEAR": ("marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487", "TLP:CLEAR", "clear"),
    "GREEN": ("marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb", "TLP:GREEN", "green"),
    "AMBER": ("marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421", "TLP:AMBER", "amber"),
    "AMBER_STRICT": (
        "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        "TLP:AMBER+STRICT",
        "amber+strict",
    ),
    "RED": ("marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1", "TLP:RED", "red"),
}
#: The behaviour a sighting whose behaviours were redacted is a sighting of.
UNSPECIFIED: Final = "UNSPECIFIED"
#: ``source_name`` of the external reference naming a record (``external_id``: its record id)
#: and of the one naming a behaviour on its attack-pattern.
RECORD_SOURCE: Final = "intelbus"
BEHAVIOUR_SOURCE: Final = "intelbus-behaviour"


def tlp2_extension_definition() -> dict[str, Any]:
    """The OASIS TLP 2.0 extension definition (objects/extension-definition/ of
    cti-stix-common-objects), so a bundle is self-contained."""
    return {
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": TLP2_EXTENSION_ID,
        "created_by_ref": "identity--b3bca3c2-1f3d-4b54-b44f-dac42c3a8f01",
        "created": _TLP2_CREATED,
        "modified": _TLP2_CREATED,
        "name": "TLP 2.0",
        "description": "This defines TLP 2.0 as a STIX extension",
        "schema": "https://github.com/oasis-open/cti-stix-common-objects/tree/master/extension-definition-specifications/tlp-2.0",
        "version": "1.0.0",
        "extension_types": ["property-extension"],
    }


_BEHAVIOUR_TEXT: Final[Mapping[str, str]] = {
    "PHOTOGRAPHING_ENTRANCES": "Photographing a site's entrances, gates or approaches.",
    "FILMING": "Filming a site, its people or its surroundings.",
    "PHOTOGRAPHING_CCTV_OR_SECURITY": "Photographing cameras, guards or other security measures.",
    "LOITERING": "Loitering near a site without an evident reason.",
    "QUESTIONING_STAFF": "Asking staff or volunteers about routines, busy times or security.",
    "DRONE_OVERHEAD": "Flying a drone over or near a site.",
    "TESTING_SECURITY": "Testing doors, gates, guards or the response to an intrusion.",
    "VEHICLE_CIRCLING": "A vehicle circling, slowing or stopping repeatedly near a site.",
    "OTHER": "Another behaviour suggesting hostile reconnaissance (see the description).",
    UNSPECIFIED: "Hostile reconnaissance whose behaviours were not shared.",
}


#: Force areas whose name is not "<area> police force area".
_FORCE_AREA_NAMES: Final[Mapping[str, str]] = {
    "POLICE_SCOTLAND": "Police Scotland area",
    "PSNI": "Police Service of Northern Ireland area",
    "BRITISH_TRANSPORT_POLICE": "British Transport Police area",
    "DYFED_POWYS": "Dyfed-Powys police force area",
}


@dataclass(frozen=True, slots=True)
class StixEntry:
    """One version of one STIX object, and when this force's store added it."""

    obj: Mapping[str, Any] = field(repr=False)  # record contents stay out of logs and tracebacks
    date_added: datetime

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def version(self) -> str:
        """The object's ``modified`` (or ``created`` for objects without one)."""
        return str(self.obj.get("modified") or self.obj.get("created"))


#: The record's fields the extension carries as they are (the importer copies them back).
RECORD_FIELDS: Final = (
    "occurred_at",
    "persons",
    "vehicles",
    "reporter_ref",
    "police_crime_reference",
    "category",
    "mode",
    "victim_type",
    "victim_details",
    "offender_description",
    "status",
)


def stix_id(kind: str, *parts: str) -> str:
    """A STIX id that is the same for the same parts in every export.

    UUIDv4-shaped, as STIX 2.1 wants for domain and relationship objects (the validator's strict
    mode checks the version): the first 16 bytes of SHA-256 over the type and parts, with the
    version and variant bits set. Deterministic, so a re-export updates rather than duplicates.
    """
    digest = hashlib.sha256("\x1f".join((kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def stix_time(value: datetime) -> str:
    """A STIX timestamp, UTC with milliseconds."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _seen_time(value: datetime) -> str:
    """A time an event happened, to the microsecond where it has one (STIX allows any precision
    outside ``created``/``modified``): the round trip keeps it exactly."""
    utc = value.astimezone(UTC)
    if utc.microsecond % 1000 == 0:
        return stix_time(utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _label(value: str) -> str:
    return value.replace("_", " ").lower()


# --- Shared objects (the same object version in every export). -----------------------------------


def tlp_marking(tlp: str) -> dict[str, Any]:
    """The OASIS TLP 2.0 marking definition for an intelbus TLP label (``AMBER_STRICT``...)."""
    marking_id, name, value = TLP2_MARKINGS[tlp]
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": marking_id,
        "created": _TLP2_CREATED,
        "name": name,
        "extensions": {
            TLP2_EXTENSION_ID: {"extension_type": "property-extension", "tlp_2_0": value}
        },
    }


def _intelbus_identity() -> dict[str, Any]:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": INTELBUS_IDENTITY,
        "created": DEFINED,
        "modified": DEFINED,
        "name": "intelbus",
        "description": "The intelbus intelligence-sharing bus: author of its STIX mapping.",
        "identity_class": "system",
    }


def extension_definition() -> dict[str, Any]:
    """The intelbus record extension's definition object."""
    return {
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": EXTENSION_ID,
        "created_by_ref": INTELBUS_IDENTITY,
        "created": DEFINED,
        "modified": DEFINED,
        "name": "intelbus record",
        "description": (
            "What an intelbus sighting or incident carries that STIX 2.1 has no property for: "
            "the 3x5x2 grading (source evaluation, intelligence assessment, handling code and "
            "conditions), the UK security classification, the TLP 2.0 label, the place and the "
            "record's own fields. Redacted fields are absent and listed in redacted_fields."
        ),
        "schema": (
            "JSON Schema (draft 2020-12) shipped with intelbus as "
            "schemas/stix/intelbus-record.v1.schema.json"
        ),
        "version": "1.0.0",
        "extension_types": ["property-extension"],
    }


def _producer_identity(producer: str) -> dict[str, Any]:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": stix_id("identity", "producer", producer),
        "created": DEFINED,
        "modified": DEFINED,
        "name": producer,
        "identity_class": "organization",
        "external_references": [{"source_name": RECORD_SOURCE, "external_id": producer}],
    }


def behaviour_pattern(behaviour: str) -> dict[str, Any]:
    """The attack-pattern of one behaviour (``UNSPECIFIED`` when the behaviours were redacted)."""
    return {
        "type": "attack-pattern",
        "spec_version": "2.1",
        "id": stix_id("attack-pattern", "behaviour", behaviour),
        "created_by_ref": INTELBUS_IDENTITY,
        "created": DEFINED,
        "modified": DEFINED,
        "name": "Hostile reconnaissance: " + _label(behaviour),
        "description": _BEHAVIOUR_TEXT.get(behaviour, "Hostile reconnaissance."),
        "external_references": [{"source_name": BEHAVIOUR_SOURCE, "external_id": behaviour}],
    }


def force_area_location(force_area: str) -> dict[str, Any]:
    """A police force area as a location (shared by every record in the area)."""
    return {
        "type": "location",
        "spec_version": "2.1",
        "id": stix_id("location", "force-area", force_area),
        "created_by_ref": INTELBUS_IDENTITY,
        "created": DEFINED,
        "modified": DEFINED,
        "name": _FORCE_AREA_NAMES.get(force_area)
        or _label(force_area).title().replace(" And ", " and ").replace(" Of ", " of ")
        + " police force area",
        "region": "northern-europe",
        "country": "GB",
        "external_references": [{"source_name": "intelbus-force-area", "external_id": force_area}],
    }


# --- One record version. ---------------------------------------------------------------------------


def _unredacted(value: Any, path: str, found: list[str]) -> Any:  # noqa: ANN401 - JSON
    """``value`` without any redaction placeholder; the paths of those left out go to ``found``."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if item == REDACTED:
                if sub not in found:
                    found.append(sub)
                continue
            out[str(key)] = _unredacted(item, sub, found)
        return out
    if isinstance(value, list):
        if REDACTED in value and path not in found:
            found.append(path)
        return [_unredacted(item, path, found) for item in value if item != REDACTED]
    return value


@dataclass(frozen=True, slots=True)
class _Version:
    """One stored version of a record, as exported: its payload without redacted fields."""

    number: int
    payload: Mapping[str, Any] = field(repr=False)
    redacted: tuple[str, ...]
    at: datetime  # when the producer (or the broker, for an original) dated it: the modified
    added: datetime  # when this store added it (its own clock): TAXII's date_added
    revoked: bool = False


def _versions(view: StoredRecordView) -> list[_Version]:
    """The versions of a visible record this agency held, oldest first (a retraction repeats the
    last content, revoked)."""
    if not view.visible or view.payload is None:
        return []
    out: list[_Version] = []

    def add(
        number: int, payload: Mapping[str, Any], at: datetime, added: datetime, revoked: bool
    ) -> None:
        found: list[str] = []
        # The second lock the MISP and subject exports have too: a value a stored payload (of any
        # version) holds at a path the store lists as redacted does not go out.
        locked = enforce_redactions(dict(payload), view.redacted_fields)
        clean = _unredacted(locked, "", found)
        out.append(_Version(number, clean, tuple(found), at, added, revoked))

    # date_added is the store's clock, never the producer's or the broker's: a correction the
    # producer backdated, or a record consumed late, must still be "added after" a client's last
    # poll, or a TAXII client polling with added_after would miss it for good.
    stored = view.stored_at or view.appended_at
    if not view.history:
        add(view.version, view.payload, view.appended_at, stored, view.retracted)
        return out
    last: Mapping[str, Any] | None = None
    for h in view.history:
        if h.withdrawn:
            continue
        if h.change == "retraction":
            if last is not None:
                add(h.version, last, h.at, h.recorded_at or h.at, True)
            break  # a retraction is for good (intelbus.trust.versions)
        if h.payload is None:
            continue  # a version this agency did not hold (withheld or quarantined by policy)
        last = h.payload
        add(h.version, h.payload, h.at, h.recorded_at or h.at, False)
    if not out:  # a store without version rows for it: the current state alone
        add(view.version, view.payload, view.appended_at, stored, view.retracted)
    return out


def _place(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    place = payload.get("place")
    return place if isinstance(place, Mapping) else {}


def _extension(view: StoredRecordView, version: _Version, tlp: str) -> dict[str, Any]:
    p = version.payload
    ext: dict[str, Any] = {
        "extension_type": "property-extension",
        "record_id": view.record_id,
        "record_kind": view.kind,
        "producer_id": view.producer_id,
        "record_version": version.number,
    }
    grading = p.get("grading")
    if isinstance(grading, Mapping):
        ext["grading"] = {
            k: grading[k]
            for k in ("source_evaluation", "assessment", "handling_code", "handling_conditions")
            if k in grading
        }
        if "classification" in grading:
            ext["classification"] = grading["classification"]
    if "classification" not in ext and view.classification is not None:
        ext["classification"] = view.classification  # the label the store keeps beside it
    ext["tlp"] = tlp
    place = {
        k: v
        for k, v in _place(p).items()
        if k in ("site_name", "site_kind", "address_or_area", "force_area") and v is not None
    }
    if place:
        ext["place"] = place
    for key in RECORD_FIELDS:
        if p.get(key) is not None:
            ext[key] = p[key]
    if version.redacted:
        ext["redacted_fields"] = list(version.redacted)
    out: dict[str, Any] = _without_empty_lists(ext)
    return out


def _without_empty_lists(value: Any) -> Any:  # noqa: ANN401 - JSON
    """STIX forbids empty lists: an empty list (no vehicles, no conditions) is left out."""
    if isinstance(value, Mapping):
        return {k: _without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [_without_empty_lists(v) for v in value]
    return value


def _tlp_of(view: StoredRecordView, payload: Mapping[str, Any]) -> str | None:
    grading = payload.get("grading")
    tlp = grading.get("tlp") if isinstance(grading, Mapping) else None
    if isinstance(tlp, str) and tlp in TLP2_MARKINGS:
        return tlp
    return view.tlp if view.tlp in TLP2_MARKINGS else None


def _point(view: StoredRecordView, place: Mapping[str, Any]) -> dict[str, Any] | None:
    lat, lon = place.get("latitude"), place.get("longitude")
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return None
    loc: dict[str, Any] = {"latitude": float(lat), "longitude": float(lon)}
    name = place.get("site_name") or place.get("address_or_area")
    if isinstance(name, str) and name:
        loc["name"] = name
    loc["country"] = "GB"
    content = json.dumps(loc, sort_keys=True)
    return {"id": stix_id("location", "point", view.producer_id, view.record_id, content), **loc}


def _owned(
    view: StoredRecordView, version: _Version, tlp: str, shared: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The record's own objects at ``version`` (without the version properties), and the shared
    objects they refer to added to ``shared``."""
    p = version.payload
    marking = TLP2_MARKINGS[tlp][0]
    producer = _producer_identity(view.producer_id)
    shared.setdefault(producer["id"], producer)
    common: dict[str, Any] = {
        "created_by_ref": producer["id"],
        "object_marking_refs": [marking],
    }
    owned: list[dict[str, Any]] = []
    where: list[str] = []
    point = _point(view, _place(p))
    if point is not None:
        owned.append({"type": "location", **point, **common})
        where.append(point["id"])
    force_area = _place(p).get("force_area")
    if isinstance(force_area, str) and force_area:
        area = force_area_location(force_area)
        shared.setdefault(area["id"], area)
        where.append(area["id"])
    record_ref = {"source_name": RECORD_SOURCE, "external_id": view.record_id}
    ext = {EXTENSION_ID: _extension(view, version, tlp)}
    description = p.get("description")
    text = {"description": description} if isinstance(description, str) and description else {}
    if view.kind == "sighting":
        raw = p.get("behaviours")
        behaviours = [str(b) for b in raw] if isinstance(raw, list) and raw else [UNSPECIFIED]
        seen_at = p.get("observed_at")
        seen = _parse_time(seen_at) if isinstance(seen_at, str) else view.occurred_at
        seen = seen or view.created_at
        for behaviour in dict.fromkeys(behaviours):
            pattern = behaviour_pattern(behaviour)
            shared.setdefault(pattern["id"], pattern)
            sighting: dict[str, Any] = {
                "type": "sighting",
                "id": stix_id("sighting", view.producer_id, view.record_id, behaviour),
                **common,
                "sighting_of_ref": pattern["id"],
                "first_seen": _seen_time(seen),
                "last_seen": _seen_time(seen),
                "count": 1,
                **text,
                "external_references": [record_ref],
                "extensions": ext,
            }
            if where:
                sighting["where_sighted_refs"] = list(where)
            owned.append(sighting)
    else:
        incident_id = stix_id("incident", view.producer_id, view.record_id)
        owned.append(
            {
                "type": "incident",
                "id": incident_id,
                **common,
                "name": _incident_name(p),
                **text,
                "external_references": [record_ref],
                "extensions": ext,
            }
        )
        for target in where:
            owned.append(
                {
                    "type": "relationship",
                    "id": stix_id("relationship", incident_id, "related-to", target),
                    **common,
                    "relationship_type": "related-to",
                    "source_ref": incident_id,
                    "target_ref": target,
                }
            )
    # Each object its own nested values: a caller editing one object must not edit another.
    return [copy.deepcopy(o) for o in owned]


def _incident_name(payload: Mapping[str, Any]) -> str:
    parts = [_label(str(payload[k])) for k in ("category", "mode") if payload.get(k)]
    if not parts:
        return "Antisemitic incident"
    head = parts[0][:1].upper() + parts[0][1:]
    return f"Antisemitic incident: {head}" + (f" ({parts[1]})" if len(parts) > 1 else "")


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _timeline(
    view: StoredRecordView, versions: list[_Version], shared: dict[str, dict[str, Any]]
) -> list[tuple[dict[str, Any], datetime]]:
    """Every version of the record's own objects, oldest first, with when the store added it."""
    created = stix_time(view.created_at)
    latest: dict[str, dict[str, Any]] = {}  # id -> the last version emitted
    timeline: list[tuple[dict[str, Any], datetime]] = []
    previous = ""
    for version in versions:
        tlp = _tlp_of(view, version.payload)
        if tlp is None:
            continue  # no TLP, no export: fail closed rather than mark it wrongly
        # modified grows from version to version and never precedes created.
        modified = max(stix_time(version.at), created)
        if previous and modified <= previous:
            modified = stix_time(_from_stix(previous) + timedelta(milliseconds=1))
        previous = modified
        now: dict[str, dict[str, Any]] = {}
        for body in _owned(view, version, tlp, shared):
            obj = {
                "type": body["type"],
                "spec_version": "2.1",
                "id": body["id"],
                "created": created,
                "modified": modified,
                **{k: v for k, v in body.items() if k not in ("type", "id")},
            }
            if version.revoked:
                obj["revoked"] = True
            now[obj["id"]] = obj
        for gone_id, gone in latest.items():
            if gone_id not in now and not gone.get("revoked"):
                # No longer part of the record (a behaviour corrected away): revoked now.
                now[gone_id] = {**copy.deepcopy(gone), "modified": modified, "revoked": True}
        for obj in now.values():
            timeline.append((obj, version.added))
            latest[obj["id"]] = obj
    return timeline


def _entries(view: StoredRecordView) -> Iterator[StixEntry]:
    shared: dict[str, dict[str, Any]] = {}
    timeline = _timeline(view, _versions(view), shared)
    if not timeline:
        return
    first_added = timeline[0][1]
    # A shared object is added when the first version that refers to it was: an attack-pattern
    # a correction brought in is then "added after" the poll that fetched the original.
    needed: dict[str, datetime] = {}
    for obj, added in timeline:
        for ref in _refs(obj):
            needed[ref] = min(needed.get(ref, added), added)
    yield StixEntry(tlp2_extension_definition(), first_added)
    for tlp, (marking_id, _, _) in TLP2_MARKINGS.items():
        if marking_id in needed:
            yield StixEntry(tlp_marking(tlp), needed[marking_id])
    yield StixEntry(_intelbus_identity(), first_added)
    yield StixEntry(extension_definition(), first_added)
    for obj in shared.values():
        yield StixEntry(obj, needed.get(obj["id"], first_added))
    for obj, at in timeline:
        yield StixEntry(obj, at)


def _refs(obj: Mapping[str, Any]) -> Iterator[str]:
    """Every id ``obj`` refers to (``*_ref`` and ``*_refs`` properties)."""
    for key, value in obj.items():
        if key.endswith("_ref") and isinstance(value, str):
            yield value
        elif key.endswith("_refs") and isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def _from_stix(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def record_entries(view: StoredRecordView) -> list[StixEntry]:
    """Every STIX object version ``view`` exports to (all its versions), oldest first.

    The shared objects it refers to (TLP 2.0 marking definitions and their extension definition,
    identities, the intelbus extension definition, attack-patterns, force-area locations) come
    first, added when the record's first version was. Nothing for a record that is not visible
    (erased, pruned, withheld, quarantined, withdrawn).
    """
    return list(_entries(view))


def stix_bundle(views: Iterable[StoredRecordView], *, exported_at: datetime) -> dict[str, Any]:
    """A STIX 2.1 bundle of the current version of every record in ``views`` (sightings and
    incidents; a retracted record's objects revoked), with every object they refer to.

    ``exported_at`` does not change any object (their ids and versions are the store's); the
    bundle's id is random, as a bundle is a transport wrapper, not an object.
    """
    del exported_at  # kept in the signature for callers; objects are versioned by the store
    objects: dict[str, Mapping[str, Any]] = {}
    for view in views:
        for entry in _entries(view):
            objects[entry.id] = entry.obj  # oldest first: the last one seen is current
    return {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid4()}",
        "objects": list(objects.values()),
    }

"""Stored records as MISP events, and MISP events as producer input (the one PyMISP module).

One stored record is one MISP event, built with PyMISP's own classes and object templates (the
misp-objects bundled with PyMISP). The event's uuid is the same in every export of the record
(a UUIDv5 of its producer and record id), and its ``timestamp`` is when the store last changed it:
a MISP instance that pulls the export again (a feed) updates the event instead of duplicating it.

Field mapping (``schemas/records/sighting.v1.avsc``, ``incident.v1.avsc``,
``schemas/common/common.v1.avsc``). "tag ``intelbus:x``" means the event tag
``intelbus:x="VALUE"`` with the schema's enum symbol as the value; the ``intelbus`` namespace is a
MISP taxonomy shipped in ``docs/misp-taxonomy/intelbus/machinetag.json`` (:func:`taxonomy`).

=============================  ===================================================================
schema field                   MISP
=============================  ===================================================================
record_id                      object ``internal-reference``: identifier, type ``intelbus record``
                               (its comment holds producer, version, status, topic, partition,
                               offset, sequence); the event uuid is UUIDv5(producer, record_id)
observed_at / occurred_at      object ``geolocation``: first-seen and last-seen (the exact time);
                               Event ``date`` (the UTC day)
place.site_name                object ``geolocation``: text
place.site_kind                tag ``intelbus:site-kind``
place.address_or_area          object ``geolocation``: address
place.force_area               object ``geolocation``: region; tag ``intelbus:force-area``;
                               countrycode ``GB``
place.latitude, longitude      object ``geolocation``: latitude, longitude (WGS84)
behaviours[] (sighting)        one tag ``intelbus:behaviour`` each
description                    sighting: object ``annotation`` (type Annotation) text;
                               incident: object ``incident``: description
persons[] (sighting)           object ``person`` each: text = summary; comment
                               ``approximate age: ...`` (the template has no age); a reference
                               ``wears`` to an object ``cloth`` (description = clothing). No name:
                               the bus never carries one (docs/interop.md)
vehicles[] (sighting)          object ``vehicle`` each: license-plate-number, make, model,
                               exterior-color (when none is held, description ``no details
                               recorded`` or ``details withheld by policy``)
reporter_ref                   object ``internal-reference``: identifier, type ``reporter ref``
police_crime_reference         object ``internal-reference``: identifier, type
                               ``police crime reference``
category (incident)            tag ``intelbus:incident-category``; object ``incident``: name
mode (incident)                tag ``intelbus:incident-mode``
victim_type (incident)         tag ``intelbus:victim-type``; object ``victim``: classification
                               (individual / group / organization / unknown, MISP's coarser list)
victim_details (incident)      object ``victim``: description
offender_description           object ``person`` with role ``Culprit``: text
status (incident)              tag ``intelbus:incident-status``; object ``incident``:
                               investigation_status (new / open / closed); Event ``analysis``
grading.source_evaluation      tag ``intelbus:source-evaluation`` (S1, S2, S3)
grading.assessment             tag ``intelbus:intelligence-assessment`` (A to E)
grading.handling_code          tag ``intelbus:handling-code`` (P, C)
grading.handling_conditions[]  object ``annotation`` (type Disclaimer) each: text
grading.tlp                    tag ``tlp:clear|green|amber|amber+strict|red`` (MISP's tlp
                               taxonomy, TLP 2.0); Event ``distribution``
grading.classification         tag ``intelbus:classification``
(producer)                     Event ``Orgc``: name, uuid = UUIDv5(producer)
(kind)                         tag ``misp:event-type="observation"`` or ``"incident"``
(retracted)                    tag ``intelbus:status="retracted"``, info starts ``[RETRACTED]``
(redacted by policy)           tag ``intelbus:status="redacted"``; the record reference's comment
                               names the redacted fields
=============================  ===================================================================

Why these choices:

* The 3x5x2 grading is not MISP's ``admiralty-scale`` (A-F source reliability, 1-6 information
  credibility: the NATO 6x6 system). Translating S1/A into an admiralty value would invent a
  grade, so the exact values travel as ``intelbus:`` machine tags; no MISP taxonomy covers the
  UK Government Security Classification either (``nato`` is NATO's own markings).
* Event ``info`` is built from enumerations only (kind, behaviours or category, site kind, force
  area), never from free text, so no redacted or personal value can reach it.
* ``threat_level_id`` is 4 (undefined): the records carry no threat level, and one is not
  invented. ``published`` is false: the receiving analyst publishes in MISP after review.
* ``distribution``: CLEAR 3 (all communities), GREEN 1 (this community), AMBER, AMBER+STRICT, RED
  or any handling code but P (C, or one redacted by policy) 0 (your organisation only): MISP must
  never sync further than TLP and handling allow.
* A redacted field (``"[REDACTED]"`` in the store, listed in ``redacted_fields``) is left out:
  no attribute, never a placeholder. A retracted record is exported, tagged retracted, so a MISP
  instance that holds its earlier version learns of the retraction; erased and pruned records are
  not visible in the store and never exported.

Import (:func:`records_from_misp`) reads the same mapping back, and a reasonable event an analyst
made in MISP: it needs a ``tlp:`` tag and the four grading tags, and refuses the event otherwise
(the grading is never defaulted). A record id missing from the event is its event uuid; the time
may be the geolocation object's own first seen, the description a ``text`` attribute. An event
tagged retracted or redacted is refused: the one was withdrawn by its producer, the other lacks
what the exporting policy left out (read back, a missing list would claim "no persons"); so is one
whose title says ``[RETRACTED]`` or whose record reference or vehicles show a redaction with the
tag taken off. Conflicts are refused, never resolved: a TLP tag no TLP 2.0 value names beside a
known one (``tlp:ex:chr``), an attribute tagged another TLP than the event, or an event, object or
attribute MISP keeps within the organisation or a sharing group (distribution 0 or 4) while the
TLP says CLEAR or GREEN with handling code P.
"""

from __future__ import annotations

import enum
import json
import os
import re
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from pymisp import MISPEvent, MISPObject, MISPOrganisation
from pymisp.exceptions import PyMISPError

from intelbus.errors import InsecureFileError
from intelbus.files import PRIVATE_MODE, atomic_writer
from intelbus.policy.facts import Classification
from intelbus.policy.redact import REDACTED
from intelbus.records import (
    Behaviour,
    ForceArea,
    HandlingCode,
    IncidentCategory,
    IncidentMode,
    IncidentStatus,
    IntelligenceAssessment,
    SiteKind,
    SourceEvaluation,
    VictimType,
)
from intelbus.store.base import StoredRecordView
from intelbus.store.subject import enforce_redactions

#: The namespace of every uuid this module derives (an arbitrary, fixed UUID).
NAMESPACE: Final = uuid.UUID("0b7e4f3a-51c2-4d8e-a6f1-93c2d7e5b104")
#: The machine-tag namespace of the values no MISP taxonomy holds.
TAG_NAMESPACE: Final = "intelbus"

_TLP_TAGS: Final[Mapping[str, str]] = {
    "CLEAR": "tlp:clear",
    "GREEN": "tlp:green",
    "AMBER": "tlp:amber",
    "AMBER_STRICT": "tlp:amber+strict",
    "RED": "tlp:red",
}
# TLP 1.0's WHITE is TLP 2.0's CLEAR; an analyst's older event may still carry it.
_TLP_FROM_TAG: Final[Mapping[str, str]] = {
    **{v: k for k, v in _TLP_TAGS.items()},
    "tlp:white": "CLEAR",
}
# MISP distribution levels: 0 your organisation only, 1 this community only, 3 all communities.
_DISTRIBUTION: Final[Mapping[str, int]] = {
    "CLEAR": 3,
    "GREEN": 1,
    "AMBER": 0,
    "AMBER_STRICT": 0,
    "RED": 0,
}
_THREAT_UNDEFINED: Final = 4
# MISP analysis: 0 initial, 1 ongoing, 2 completed.
_ANALYSIS: Final[Mapping[str, int]] = {
    "REPORTED": 0,
    "REFERRED_TO_POLICE": 1,
    "UNDER_INVESTIGATION": 1,
    "CHARGED": 1,
    "CLOSED": 2,
}
_INVESTIGATION: Final[Mapping[str, str]] = {
    "REPORTED": "new",
    "REFERRED_TO_POLICE": "open",
    "UNDER_INVESTIGATION": "open",
    "CHARGED": "open",
    "CLOSED": "closed",
}
_VICTIM_CLASS: Final[Mapping[str, str]] = {
    "INDIVIDUAL": "individual",
    "PUBLIC_FIGURE": "individual",
    "GROUP": "group",
    "SYNAGOGUE": "organization",
    "SCHOOL": "organization",
    "CEMETERY": "organization",
    "COMMUNITY_ORGANISATION": "organization",
    "BUSINESS": "organization",
    "OTHER": "unknown",
}


class RecordState(enum.StrEnum):
    """The ``intelbus:status`` tag's values."""

    RETRACTED = "retracted"
    REDACTED = "redacted"


#: The ``intelbus`` taxonomy's predicates and the enumerations their values come from.
PREDICATES: Final[Mapping[str, tuple[str, type[Any]]]] = {
    "source-evaluation": (
        "3x5x2 source evaluation (S1 reliable, S2 untested, S3 not reliable)",
        SourceEvaluation,
    ),
    "intelligence-assessment": ("3x5x2 intelligence assessment (A to E)", IntelligenceAssessment),
    "handling-code": (
        "3x5x2 handling code (P lawful sharing, C sharing with conditions)",
        HandlingCode,
    ),
    "classification": ("UK Government Security Classification", Classification),
    "force-area": ("UK police force area", ForceArea),
    "site-kind": ("Kind of site", SiteKind),
    "behaviour": ("Hostile reconnaissance behaviour observed", Behaviour),
    "incident-category": ("CST incident category", IncidentCategory),
    "incident-mode": ("How the incident happened", IncidentMode),
    "victim-type": ("Who or what the incident targeted", VictimType),
    "incident-status": ("Where the case stands", IncidentStatus),
    "status": (
        "Status of the record on the bus (a retracted record is exported, tagged)",
        RecordState,
    ),
}
# Exclusive predicates: one value per event. Behaviours are many.
_EXCLUSIVE: Final = frozenset(PREDICATES) - {"behaviour", "status"}

_RECORD_REF: Final = "intelbus record"
_REPORTER_REF: Final = "reporter ref"
_CRIME_REF: Final = "police crime reference"
_CONDITION: Final = "Disclaimer"
_DESCRIPTION: Final = "Annotation"
_OFFENDER: Final = "Culprit"
_AGE: Final = "approximate age: "
_NO_DETAILS: Final = "no details recorded"
_WITHHELD: Final = "details withheld by policy"
_TAG: Final = re.compile(r'^(?P<ns>[^:="]+):(?P<pred>[^="]+?)(?:="(?P<value>[^"]*)")?$')


class MispFormatError(ValueError):
    """A MISP event that cannot become a record (the message says what is missing)."""


# --- export --------------------------------------------------------------------------------------


def event_uuid(producer_id: str, record_id: str) -> str:
    """The MISP event uuid of a record: the same in every export (a UUIDv5)."""
    return str(uuid.uuid5(NAMESPACE, f"event|{producer_id}|{record_id}"))


def org_uuid(producer_id: str) -> str:
    """The MISP organisation uuid of a producer."""
    return str(uuid.uuid5(NAMESPACE, f"org|{producer_id}"))


def _tag(predicate: str, value: str) -> str:
    return f'{TAG_NAMESPACE}:{predicate}="{value}"'


def _kept(value: object) -> Any:  # noqa: ANN401 - a payload value of any JSON type
    """``value``, or None when the policy redacted it (left out, never a placeholder)."""
    return None if value == REDACTED else value


def _text(value: object) -> str | None:
    kept = _kept(value)
    return kept if isinstance(kept, str) and kept != "" else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _changed_at(view: StoredRecordView) -> datetime:
    """When the store last changed the record: the MISP timestamps (a feed update key)."""
    times = [view.created_at, view.appended_at, *(h.at for h in view.history)]
    return max(t.astimezone(UTC) for t in times)


def _event_time(view: StoredRecordView, payload: Mapping[str, Any]) -> datetime:
    raw = payload.get("observed_at" if view.kind == "sighting" else "occurred_at")
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return (view.occurred_at or view.created_at).astimezone(UTC)


class _Builder:
    """One event under construction; every uuid derives from the event's."""

    def __init__(self, event: MISPEvent, at: datetime) -> None:
        self.event = event
        self.at = at
        self._count: dict[str, int] = {}

    def obj(self, name: str, values: Iterable[tuple[str, object]], comment: str = "") -> MISPObject:
        n = self._count.get(name, 0)
        self._count[name] = n + 1
        o = MISPObject(name, standalone=False, force_timestamps=True)
        o.uuid = str(uuid.uuid5(NAMESPACE, f"{self.event.uuid}|{name}|{n}"))
        o.timestamp = self.at
        o.distribution = 5  # inherit the event's
        o.sharing_group_id = 0
        if comment:
            o.comment = comment
        for relation, value in values:
            if value is None:
                continue
            o.add_attribute(
                relation,
                value=value,
                uuid=str(uuid.uuid5(NAMESPACE, f"{o.uuid}|{relation}")),
                timestamp=self.at,
                distribution=5,
                disable_correlation=relation not in ("license-plate-number",),
            )
        for a in o.attributes:
            a.force_timestamp = True
        self.event.add_object(o)
        return o


#: Tags from the grading and from an incident's enumerations: (tag predicate, payload key).
_GRADING_TAGS: Final = (
    ("source-evaluation", "source_evaluation"),
    ("intelligence-assessment", "assessment"),
    ("handling-code", "handling_code"),
    ("classification", "classification"),
)
_INCIDENT_TAGS: Final = (
    ("incident-category", "category"),
    ("incident-mode", "mode"),
    ("victim-type", "victim_type"),
    ("incident-status", "status"),
)


def misp_event(view: StoredRecordView) -> dict[str, Any]:
    """The MISP event (``{"Event": {...}}``) of one visible stored record.

    Raises:
        ValueError: the record holds no content (erased, pruned, withheld: never exported).
    """
    if not view.visible or view.payload is None:
        raise ValueError(f"record {view.record_id} holds no content to export")
    # A second check before anything leaves: every field the policy redacted is a placeholder
    # here, and placeholders are left out below.
    payload = enforce_redactions(dict(view.payload), view.redacted_fields)
    at = _changed_at(view)
    when = _event_time(view, payload)
    grading = _dict(payload.get("grading"))
    place = _dict(payload.get("place"))

    event = MISPEvent(force_timestamps=True)
    event.uuid = event_uuid(view.producer_id, view.record_id)
    org = MISPOrganisation()
    org.name = view.producer_id
    org.uuid = org_uuid(view.producer_id)
    event.Orgc = org
    event.date = when.date()
    event.timestamp = at
    # PyMISP would stamp "now": the export of one record version must be the same every time.
    event.publish_timestamp = at
    event.published = False
    event.threat_level_id = _THREAT_UNDEFINED
    status = _text(payload.get("status")) if view.kind == "incident" else None
    event.analysis = _ANALYSIS.get(status or "", 0)
    tlp = _text(grading.get("tlp")) or view.tlp or ""
    handling = _text(grading.get("handling_code"))
    # Only handling code P lets MISP share as far as the TLP says: C, and a code the export
    # cannot read (redacted by policy, missing), keep the event in the organisation, as the
    # store's own gate treats them as restricted (intelbus.cli.store_access).
    event.distribution = _DISTRIBUTION.get(tlp, 0) if handling == "P" else 0
    event.info = _info(view, payload, place)
    for name in _tags(view, payload, tlp):
        event.add_tag(name).force_timestamp = True

    b = _Builder(event, at)
    provenance = (
        f"producer {view.producer_id}; version {view.version}; status {view.status}; "
        f"topic {view.topic}; partition {view.partition}; offset {view.offset}; "
        f"sequence {view.sequence}"
        + (f"; redacted fields {', '.join(view.redacted_fields)}" if view.redacted_fields else "")
    )
    b.obj(
        "internal-reference",
        [("identifier", view.record_id), ("type", _RECORD_REF)],
        comment=provenance,
    )
    _place_object(b, place, when)
    if view.kind == "incident":
        _incident_objects(b, payload, _text(place.get("force_area")))
    elif (description := _text(payload.get("description"))) is not None:
        b.obj("annotation", [("text", description), ("type", _DESCRIPTION), ("format", "text")])
    _people_objects(b, payload)
    for condition in _items(_kept(grading.get("handling_conditions"))):
        if (text := _text(condition)) is not None:
            b.obj("annotation", [("text", text), ("type", _CONDITION), ("format", "text")])
    for ref_type, key in ((_REPORTER_REF, "reporter_ref"), (_CRIME_REF, "police_crime_reference")):
        if (ref_value := _text(payload.get(key))) is not None:
            b.obj("internal-reference", [("identifier", ref_value), ("type", ref_type)])
    return {"Event": event.to_feed(with_distribution=True)["Event"]}


def _tags(view: StoredRecordView, payload: Mapping[str, Any], tlp: str) -> list[str]:
    grading = _dict(payload.get("grading"))
    place = _dict(payload.get("place"))
    incident = view.kind == "incident"
    tags = [_TLP_TAGS[tlp]] if tlp in _TLP_TAGS else []
    tags.append(f'misp:event-type="{"incident" if incident else "observation"}"')
    values = [(pred, grading.get(key)) for pred, key in _GRADING_TAGS]
    values += [("force-area", place.get("force_area")), ("site-kind", place.get("site_kind"))]
    values += [("behaviour", b) for b in _items(_kept(payload.get("behaviours")))]
    if incident:
        values += [(pred, payload.get(key)) for pred, key in _INCIDENT_TAGS]
    if view.retracted:
        values.append(("status", RecordState.RETRACTED.value))
    if view.redacted_fields:
        values.append(("status", RecordState.REDACTED.value))
    tags.extend(_tag(pred, text) for pred, value in values if (text := _text(value)) is not None)
    return tags


def _place_object(b: _Builder, place: Mapping[str, Any], when: datetime) -> None:
    lat, lon = _kept(place.get("latitude")), _kept(place.get("longitude"))
    has_position = isinstance(lat, (int, float)) and isinstance(lon, (int, float))
    b.obj(
        "geolocation",
        [
            ("first-seen", when),
            ("last-seen", when),
            ("text", _text(place.get("site_name"))),
            ("address", _text(place.get("address_or_area"))),
            ("region", _text(place.get("force_area"))),
            ("countrycode", "GB"),
            ("latitude", float(lat) if has_position else None),
            ("longitude", float(lon) if has_position else None),
            ("spacial-reference", "WGS84 EPSG:4326" if has_position else None),
        ],
    )


def _incident_objects(b: _Builder, payload: Mapping[str, Any], area: str | None) -> None:
    category = _text(payload.get("category"))
    b.obj(
        "incident",
        [
            ("name", f"Antisemitic incident: {category or 'uncategorised'}"),
            ("description", _text(payload.get("description"))),
            ("investigation_status", _INVESTIGATION.get(_text(payload.get("status")) or "")),
        ],
    )
    b.obj(
        "victim",
        [
            ("classification", _VICTIM_CLASS.get(_text(payload.get("victim_type")) or "")),
            ("description", _text(payload.get("victim_details"))),
            ("regions", area),
        ],
    )
    if (offender := _text(payload.get("offender_description"))) is not None:
        b.obj("person", [("text", offender), ("role", _OFFENDER)])


def _people_objects(b: _Builder, payload: Mapping[str, Any]) -> None:
    for person in _items(_kept(payload.get("persons"))):
        p = _dict(person)
        # MISP's person template has no age: the approximate age is the object's comment.
        age = _text(p.get("approx_age"))
        o = b.obj(
            "person",
            [("text", _text(p.get("summary")))],
            comment="" if age is None else f"{_AGE}{age}",
        )
        if (clothing := _text(p.get("clothing"))) is not None:
            cloth = b.obj("cloth", [("description", clothing)])
            ref = o.add_reference(cloth.uuid, "wears")
            ref.uuid = str(uuid.uuid5(NAMESPACE, f"{o.uuid}|wears|{cloth.uuid}"))
            ref.timestamp = int(b.at.timestamp())
    for vehicle in _items(_kept(payload.get("vehicles"))):
        v = _dict(vehicle)
        values = [
            ("license-plate-number", _text(v.get("registration"))),
            ("make", _text(v.get("make"))),
            ("model", _text(v.get("model"))),
            ("exterior-color", _text(v.get("colour"))),
        ]
        if all(value is None for _, value in values):
            # A vehicle seen with nothing known (or kept) about it: still a vehicle, and MISP's
            # template needs one attribute (read back, the description is no field: all null).
            withheld = REDACTED in (v.get(k) for k in ("registration", "make", "model", "colour"))
            values.append(("description", _WITHHELD if withheld else _NO_DETAILS))
        b.obj("vehicle", values)


def _info(view: StoredRecordView, payload: Mapping[str, Any], place: Mapping[str, Any]) -> str:
    """A title from enumerations only: no free text, so nothing redacted or personal."""
    if view.kind == "incident":
        what = _text(payload.get("category")) or "incident"
        head = f"Antisemitic incident: {what}"
    else:
        behaviours = [str(x) for x in _items(_kept(payload.get("behaviours")))]
        head = "Hostile reconnaissance: " + (", ".join(behaviours) or "sighting")
    where = [w for w in (_text(place.get("site_kind")), _text(place.get("force_area"))) if w]
    info = head + (f" at {' in '.join(where)}" if where else "")
    return f"[RETRACTED] {info}" if view.retracted else info


def write_misp(views: Iterable[StoredRecordView], out: IO[str]) -> int:
    """``{"response": [{"Event": ...}, ...]}``, the shape of MISP's own JSON export, one event per
    record, streamed. Returns the number of events."""
    out.write('{"response": [')
    n = 0
    for view in views:
        out.write(("," if n else "") + "\n")
        out.write(json.dumps(misp_event(view), ensure_ascii=False, sort_keys=True))
        n += 1
    out.write("\n]}\n")
    return n


def write_misp_feed(views: Iterable[StoredRecordView], directory: Path) -> int:
    """A MISP feed in ``directory``: ``<uuid>.json`` per event, ``manifest.json``, ``hashes.csv``
    (what MISP's feed mechanism pulls). Files are created 0600. Returns the number of events.

    Written again into the same folder (a scheduled export), the event files an earlier
    ``manifest.json`` listed and this export does not (a record erased, pruned or filtered out
    since) are removed: an erased record's content must not linger in the folder served.

    Raises:
        OSError: the directory cannot be created or written.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_feed_directory(directory)
    earlier = _listed(directory / "manifest.json")
    manifest: dict[str, Any] = {}
    hashes: list[str] = []

    def put(name: str, text: str) -> None:
        with atomic_writer(directory / name, mode=PRIVATE_MODE) as fh:
            fh.write(text.encode("utf-8"))

    n = 0
    for view in views:
        text = json.dumps(misp_event(view), ensure_ascii=False, sort_keys=True) + "\n"
        event = MISPEvent()
        event.load(json.loads(text))  # PyMISP consumes the dict it loads: a copy
        put(f"{event.uuid}.json", text)
        manifest.update(event.manifest)
        hashes.extend(f"{h},{event.uuid}" for h in event.attributes_hashes("md5"))
        n += 1
    put("manifest.json", json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=1) + "\n")
    put("hashes.csv", "".join(f"{line}\n" for line in hashes))
    for gone in earlier - set(manifest):
        (directory / f"{gone}.json").unlink(missing_ok=True)
    return n


def _check_feed_directory(directory: Path) -> None:
    """Refuse a feed folder another local user could change: MISP pulls what ``manifest.json``
    and the event files say, so whoever may write the folder (its owner, or group and others
    with write permission), or whoever placed a symbolic link at its path, could swap in events
    that MISP would take for this force's.

    Raises:
        InsecureFileError: a link, not a folder, someone else's, or writable by group or others.
    """
    st = directory.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is a symbolic link or not a folder"
    elif st.st_uid != os.geteuid():
        problem = "belongs to another user"
    elif mode & 0o022:
        problem = f"has mode {mode:04o}, so group or others can change what MISP pulls"
    else:
        return
    raise InsecureFileError(
        f"MISP feed folder {directory} {problem}: export into a folder only you may write",
        path=directory,
        mode=mode,
    )


def _listed(path: Path) -> set[str]:
    """The event uuids an earlier manifest lists (only well-formed uuids: names of our files)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    found = set()
    for key in earlier if isinstance(earlier, dict) else ():
        try:
            found.add(str(uuid.UUID(str(key))))
        except ValueError:
            continue
    return found


def taxonomy() -> dict[str, Any]:
    """The ``intelbus`` MISP taxonomy (machinetag.json format) of every tag this module writes.

    Shipped as ``docs/misp-taxonomy/intelbus/machinetag.json`` for a MISP administrator to add
    (its uuids are fixed, so a newer version updates the one installed).
    """

    def uid(*parts: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "|".join(("taxonomy", TAG_NAMESPACE, *parts))))

    predicates = []
    values = []
    for name, (expanded, kind) in PREDICATES.items():
        entry: dict[str, Any] = {"value": name, "expanded": expanded, "uuid": uid(name)}
        if name in _EXCLUSIVE:
            entry["exclusive"] = True
        predicates.append(entry)
        values.append(
            {
                "predicate": name,
                "entry": [
                    {"value": m.value, "expanded": m.value, "uuid": uid(name, m.value)}
                    for m in kind
                ],
            }
        )
    return {
        "namespace": TAG_NAMESPACE,
        "description": "intelbus records in MISP: the UK 3x5x2 grading, the UK Government "
        "Security Classification and the record vocabularies no MISP taxonomy holds.",
        "version": 1,
        "uuid": uid(),
        "expanded": "intelbus",
        "refs": ["docs/interop.md"],
        "predicates": predicates,
        "values": values,
    }


# --- import --------------------------------------------------------------------------------------


def records_from_misp(text: str) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Record-shaped dicts from MISP JSON: (where, record, None) or (where, None, error) per event.

    Accepts ``{"response": [...]}`` (MISP's JSON export and this module's), ``{"Event": ...}``, a
    bare event, a list of those, or JSON Lines of them. The records are producer input: they are
    normalised and validated like a CSV row before anything is published.
    """
    docs = _documents(text)
    if isinstance(docs, str):
        yield ("document", None, docs)
        return
    for i, doc in enumerate(docs, 1):
        where = f"event {i}"
        if not isinstance(doc, dict):
            yield (where, None, "not a MISP event (an object with an Event)")
            continue
        raw = doc.get("Event", doc)
        if not isinstance(raw, dict) or ("info" not in raw and "Tag" not in raw):
            yield (where, None, "not a MISP event (an object with an Event)")
            continue
        try:
            event = MISPEvent()
            event.load({"Event": raw})
        except (
            PyMISPError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            RecursionError,  # an event nested deeper than PyMISP walks
        ) as e:
            # The type only: a message could quote the content.
            yield (where, None, f"not a MISP event PyMISP can read: {type(e).__name__}")
            continue
        where = f"event {i} ({event.uuid})" if getattr(event, "uuid", None) else where
        try:
            yield (where, record_from_event(event), None)
        except MispFormatError as e:
            yield (where, None, str(e))


def _documents(text: str) -> list[Any] | str:  # noqa: PLR0911 - one return per refusal
    """The events of a document (a list), or why it is not JSON (a string)."""
    text = text.removeprefix("\ufeff")
    try:
        doc = json.loads(text)
    except RecursionError:  # json's parser recurses: one line, never a traceback
        return "nested too deeply to be MISP events"
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            return f"not JSON: {whole.msg} at line {whole.lineno}"
        docs = []
        for n, line in lines:  # JSON Lines: one event per line
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                return f"not JSON, nor JSON Lines: line {n}: {e.msg}"
            except RecursionError:
                return f"line {n}: nested too deeply to be a MISP event"
        return docs
    if isinstance(doc, dict) and isinstance(doc.get("response"), list):
        return list(doc["response"])
    return doc if isinstance(doc, list) else [doc]


def _parse_tags(event: MISPEvent) -> dict[str, list[str]]:
    """Event tags as {"ns:predicate": [values]}; a tag without a value (``tlp:amber``) is
    {"tlp": ["amber"]}."""
    found: dict[str, list[str]] = {}
    for tag in event.tags:
        name = str(getattr(tag, "name", "")).strip()
        m = _TAG.match(name)
        if m is None:
            continue
        ns, pred, value = m["ns"].lower(), m["pred"], m["value"]
        if value is None:
            found.setdefault(ns, []).append(f"{ns}:{pred}".lower())
        else:
            found.setdefault(f"{ns}:{pred}", []).append(value)
    return found


def _tlp_tag(name: object) -> str | None:
    """A tag of the ``tlp`` namespace in any spelling (``TLP : red``, ``tlp:red="true"``), lower
    case without spaces; None for a tag of another namespace."""
    squeezed = re.sub(r"\s+", "", str(name)).lower()
    return squeezed if squeezed.startswith("tlp:") else None


def _odd_tlp_tags(event: MISPEvent) -> list[str]:
    """The event's ``tlp`` tags that are not plainly a TLP value (``tlp:red="yes"``, ``TLP :
    red``): :func:`_parse_tags` would not read them as TLP, so the TLP read would be another."""
    odd = []
    for tag in event.tags:
        raw = str(getattr(tag, "name", "")).strip().lower()
        if _tlp_tag(raw) is not None and raw not in _TLP_FROM_TAG:
            odd.append(raw)
    return odd


def _one(tags: Mapping[str, list[str]], predicate: str) -> str | None:
    values = sorted(set(tags.get(f"{TAG_NAMESPACE}:{predicate}", [])))
    if len(values) > 1:
        raise MispFormatError(f"conflicting tags {TAG_NAMESPACE}:{predicate}: {', '.join(values)}")
    return values[0] if values else None


def _live(items: Iterable[Any]) -> list[Any]:
    return [x for x in items if not getattr(x, "deleted", False)]


def _values(o: MISPObject) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for a in _live(o.attributes):
        out.setdefault(str(a.object_relation), []).append(a.value)
    return out


def _first(values: Mapping[str, list[Any]], relation: str) -> Any:  # noqa: ANN401 - a MISP value
    found = values.get(relation)
    return found[0] if found else None


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _grading(tags: Mapping[str, list[str]]) -> dict[str, Any]:
    tlps = sorted({_TLP_FROM_TAG[t] for t in tags.get("tlp", []) if t in _TLP_FROM_TAG})
    unknown = sorted(t for t in tags.get("tlp", []) if t not in _TLP_FROM_TAG)
    problems = []
    if unknown:
        # Even beside a known one: tlp:ex:chr or a misspelt tlp:amber-strict says something
        # stricter may apply, and reading only the known tag would resolve it to the weaker.
        problems.append(
            f"TLP tag {unknown[0]} is not TLP 2.0 (use tlp:clear|green|amber|amber+strict|red)"
        )
    elif not tlps:
        problems.append("no TLP tag (tlp:clear, tlp:green, tlp:amber, tlp:amber+strict or tlp:red)")
    elif len(tlps) > 1:
        problems.append(f"conflicting TLP tags ({', '.join(tlps)})")
    grading: dict[str, Any] = {"tlp": tlps[0] if len(tlps) == 1 else None}
    missing = []
    for predicate, key in (
        ("source-evaluation", "source_evaluation"),
        ("intelligence-assessment", "assessment"),
        ("handling-code", "handling_code"),
        ("classification", "classification"),
    ):
        value = _one(tags, predicate)
        if value is None:
            missing.append(_tag(predicate, "..."))
        grading[key] = value
    if missing:
        hint = ""
        if any(k.startswith("admiralty-scale:") for k in tags):
            hint = " (admiralty-scale grades are not 3x5x2 and are not converted)"
        problems.append("no grading: missing " + ", ".join(missing) + hint)
    if problems:
        raise MispFormatError("; ".join(problems))
    return grading


def record_from_event(event: MISPEvent) -> dict[str, Any]:
    """One record-shaped dict from a loaded MISP event (see the module docstring).

    Raises:
        MispFormatError: no TLP or grading tags, no time, or conflicting tags.
    """
    tags = _parse_tags(event)
    states = set(tags.get(f"{TAG_NAMESPACE}:status", []))
    if RecordState.RETRACTED.value in states:
        raise MispFormatError('a retracted record (tag intelbus:status="retracted"): not published')
    if RecordState.REDACTED.value in states:
        # Its redacted fields were left out: published, it would claim what was never said.
        raise MispFormatError(
            'a redacted export (tag intelbus:status="redacted"): fields were left out, not published'
        )
    if str(getattr(event, "info", "") or "").startswith("[RETRACTED]"):
        raise MispFormatError("a retracted record (its title says [RETRACTED]): not published")
    if odd := _odd_tlp_tags(event):
        raise MispFormatError(
            f"TLP tag {odd[0][:40]} is not TLP 2.0 (use tlp:clear|green|amber|amber+strict|red)"
        )
    grading = _grading(tags)
    _check_sharing(event, grading)
    objects: dict[str, list[MISPObject]] = {}
    for o in _live(event.objects):
        objects.setdefault(str(o.name), []).append(o)
    _check_not_redacted(objects)
    for single in ("geolocation", "incident", "victim"):
        # One record has one place, one incident, one victim: of two, reading the first would
        # drop the other without a word (another time, another place).
        if len(objects.get(single, [])) > 1:
            raise MispFormatError(f"{len(objects[single])} {single} objects: one record has one")
    refs = _references(objects)
    grading["handling_conditions"], descriptions = _annotations(objects)
    # An analyst may have written the description as a plain text attribute of the event.
    descriptions += [
        text
        for a in _live(event.attributes)
        if a.type == "text" and (text := _str_or_none(a.value)) is not None
    ]
    geo = _values(objects["geolocation"][0]) if objects.get("geolocation") else {}
    # The time as this module writes it, or as MISP's timeline sets it on the object itself.
    when = (
        _first(geo, "first-seen")
        or _first(geo, "last-seen")
        or (getattr(objects["geolocation"][0], "first_seen", None) if geo else None)
    )
    if when is None:
        raise MispFormatError(
            "no time: give the event a geolocation object with first-seen (an ISO 8601 time)"
        )
    incident = "incident" in tags.get("misp:event-type", []) or bool(objects.get("incident"))
    place: dict[str, Any] = {
        "site_name": _str_or_none(_first(geo, "text")),
        "site_kind": _one(tags, "site-kind"),
        "address_or_area": _str_or_none(_first(geo, "address")),
        "force_area": _str_or_none(_first(geo, "region")) or _one(tags, "force-area"),
        "latitude": _first(geo, "latitude"),
        "longitude": _first(geo, "longitude"),
    }
    record: dict[str, Any] = {
        "record_id": refs.get(_RECORD_REF) or str(event.uuid),
        "occurred_at" if incident else "observed_at": _str_or_none(when),
        "place": {k: v for k, v in place.items() if v is not None or k == "site_name"},
        "reporter_ref": refs.get(_REPORTER_REF),
        "police_crime_reference": refs.get(_CRIME_REF),
        "grading": grading,
    }
    persons, offender = _persons(objects)
    if incident:
        inc = _values(objects["incident"][0]) if objects.get("incident") else {}
        victim = _values(objects["victim"][0]) if objects.get("victim") else {}
        record.update(
            {key: _one(tags, pred) for pred, key in _INCIDENT_TAGS},
            victim_details=_str_or_none(_first(victim, "description")),
            offender_description=offender,
            description=_str_or_none(_first(inc, "description"))
            or (descriptions[0] if descriptions else None),
        )
    else:
        record.update(
            # In the tags' order, which is the record's (the export writes them in turn).
            behaviours=list(dict.fromkeys(tags.get(f"{TAG_NAMESPACE}:behaviour", []))),
            description=descriptions[0] if descriptions else None,
            persons=persons,
            vehicles=[
                {
                    "registration": _str_or_none(_first(v, "license-plate-number")),
                    "make": _str_or_none(_first(v, "make")),
                    "model": _str_or_none(_first(v, "model")),
                    "colour": _str_or_none(_first(v, "exterior-color")),
                }
                for v in map(_values, objects.get("vehicle", []))
            ],
        )
    # Absent required fields stay absent: the model names each one, with every other problem.
    return {k: v for k, v in record.items() if v is not None or k in _NULLABLE}


#: MISP distributions narrower than a community: 0 your organisation only, 4 a sharing group.
_NARROW: Final = frozenset({0, 4})


def _distribution(item: object) -> int | None:
    raw = getattr(item, "distribution", None)
    try:
        return None if raw is None or raw == "" else int(raw)
    except (TypeError, ValueError):
        return None


def _check_sharing(event: MISPEvent, grading: Mapping[str, Any]) -> None:
    """Refuse an event whose MISP sharing says something other than its TLP tag.

    The TLP tag is what the record is published with; an event (or one of its attributes or
    objects) that MISP keeps within the organisation or a sharing group while the tag says
    CLEAR or GREEN, or an attribute tagged with another TLP than the event, is a conflict: it is
    refused with its reason, never resolved to the wider of the two.

    Raises:
        MispFormatError: the conflict, named.
    """
    tlp = str(grading["tlp"])
    wide = tlp in ("CLEAR", "GREEN") and grading.get("handling_code") != "C"
    items: list[tuple[str, object]] = [("the event", event)]
    for o in _live(event.objects):
        items.append((f"object {o.name}", o))
        items.extend((f"an attribute of object {o.name}", a) for a in _live(o.attributes))
    items.extend((f"attribute {a.type}", a) for a in _live(event.attributes))
    for what, item in items:
        if wide and _distribution(item) in _NARROW:
            raise MispFormatError(
                f"{what} is shared only within an organisation or sharing group (distribution "
                f"{_distribution(item)}) but tagged TLP {tlp}: a conflict is refused, not resolved"
            )
        for tag in getattr(item, "tags", None) or ():
            name = _tlp_tag(getattr(tag, "name", ""))
            if name is not None and _TLP_FROM_TAG.get(name) != tlp:
                raise MispFormatError(
                    f"{what} is tagged {name} but the event TLP {tlp}: a conflict is refused, "
                    "not resolved"
                )


def _check_not_redacted(objects: Mapping[str, list[MISPObject]]) -> None:
    """Refuse a redacted export whose ``intelbus:status="redacted"`` tag was taken off: its
    record reference still names the redacted fields, or a vehicle says its details were
    withheld (the placeholder itself is refused for every input format by the publisher).

    Raises:
        MispFormatError: it is a redacted copy.
    """
    for o in objects.get("internal-reference", []):
        if "; redacted fields " in str(getattr(o, "comment", "") or ""):
            raise MispFormatError(
                "a redacted export (its record reference names redacted fields): not published"
            )
    for v in objects.get("vehicle", []):
        if _first(_values(v), "description") == _WITHHELD:
            raise MispFormatError(
                "a redacted export (a vehicle's details were withheld by policy): not published"
            )


def _references(objects: Mapping[str, list[MISPObject]]) -> dict[str, str]:
    """internal-reference objects by their type (lower case): record id, reporter, crime ref."""
    refs: dict[str, str] = {}
    for o in objects.get("internal-reference", []):
        v = _values(o)
        kind, ident = _str_or_none(_first(v, "type")), _str_or_none(_first(v, "identifier"))
        if kind is not None and ident is not None:
            refs.setdefault(kind.lower(), ident)
    return refs


def _annotations(objects: Mapping[str, list[MISPObject]]) -> tuple[list[str], list[str]]:
    """The handling conditions (Disclaimer annotations) and the other annotations' texts."""
    conditions: list[str] = []
    others: list[str] = []
    for o in objects.get("annotation", []):
        v = _values(o)
        text = _str_or_none(_first(v, "text"))
        if text is not None:
            is_condition = str(_first(v, "type") or "").lower() == _CONDITION.lower()
            (conditions if is_condition else others).append(text)
    return conditions, others


def _persons(objects: Mapping[str, list[MISPObject]]) -> tuple[list[dict[str, Any]], str | None]:
    """The persons seen and an incident's offender description (the person with role Culprit)."""
    by_uuid = {str(o.uuid): o for found in objects.values() for o in found}
    persons: list[dict[str, Any]] = []
    offender = None
    for o in objects.get("person", []):
        v = _values(o)
        summary = _str_or_none(_first(v, "text"))
        if str(_first(v, "role") or "") == _OFFENDER:
            if offender is not None:  # a second culprit would silently replace the first
                raise MispFormatError("two offender descriptions (person with role Culprit)")
            offender = summary
            continue
        clothing = None
        for ref in _live(getattr(o, "ObjectReference", [])):
            worn = by_uuid.get(str(ref.referenced_uuid))
            if worn is not None and worn.name == "cloth":
                clothing = _str_or_none(_first(_values(worn), "description"))
        persons.append({"summary": summary, "approx_age": _age(o), "clothing": clothing})
    return persons, offender


def _age(o: MISPObject) -> str | None:
    comment = str(getattr(o, "comment", "") or "")
    return comment.removeprefix(_AGE).strip() or None if comment.startswith(_AGE) else None


_NULLABLE: Final = frozenset({"police_crime_reference", "victim_details", "offender_description"})

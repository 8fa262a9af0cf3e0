"""Records to publish, read from a STIX 2.1 bundle (``intelbus publish ... --format stix``).

Reads what :mod:`intelbus.interop.stix` exports, or a bundle another tool (OpenCTI, MISP) made
of the same shape: ``sighting`` objects of ``attack-pattern``s with ``location``s, or
``incident`` objects, each with a TLP 2.0 marking and the intelbus record extension
(:data:`~intelbus.interop.stix.EXTENSION_ID`) holding the grading. Each record becomes the dict a
producer's JSON input would be (``producers.inputs``), to be made canonical and validated by the
record models like any other input: nothing here is trusted.

Fail closed: an object without the extension's grading, or without exactly one TLP 2.0 marking
(or whose marking and extension disagree), is refused with its own error; the grading and the TLP
are never defaulted. A TLP 1.0 marking is refused too: its AMBER cannot tell AMBER from
AMBER+STRICT; so is any other marking beside the TLP 2.0 one, or a granular marking (what it says
could not travel with the record). Objects of one record that disagree are refused, never
resolved. Revoked objects are skipped with an error (a revoked record is not to be
republished), and so is a force's redacted copy (the extension lists ``redacted_fields``): what a
policy left out must not be published as never there. The sightings of one record (one per behaviour) are put back together by the
record id in their extension.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from intelbus.interop.stix import (
    BEHAVIOUR_SOURCE,
    EXTENSION_ID,
    RECORD_FIELDS,
    RECORD_SOURCE,
    TLP2_MARKINGS,
    UNSPECIFIED,
)

#: marking-definition id -> intelbus TLP label.
_TLP_BY_MARKING = {marking: tlp for tlp, (marking, _, _) in TLP2_MARKINGS.items()}
_KINDS = ("sighting", "incident")
#: Extension properties copied back into the record as they are.
_COPIED = ("record_id", *RECORD_FIELDS)

Result = tuple[str, dict[str, Any] | None, str | None]


def records_from_stix(text: str, kind: str | None = None) -> Iterator[Result]:
    """(where, record-shaped dict, None) per record in a STIX bundle, or (where, None, error).

    ``where`` names the STIX object (``sighting--...``) or the document. With ``kind``
    (``sighting`` or ``incident``) only the records of that kind: a bundle from OpenCTI holds
    both, and ``intelbus publish sighting`` publishes its sightings.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        yield "document", None, f"not JSON: {e.msg} at line {e.lineno}"
        return
    except RecursionError:  # json's parser recurses: one line, never a traceback
        yield "document", None, "nested too deeply to be a STIX bundle"
        return
    if not isinstance(doc, Mapping) or doc.get("type") != "bundle":
        yield "document", None, "not a STIX bundle (an object with type 'bundle')"
        return
    raw = doc.get("objects")
    if not isinstance(raw, list):
        yield "document", None, "the bundle has no objects list"
        return
    objects = _latest(raw)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    wanted = (kind,) if kind is not None else _KINDS
    for obj in objects.values():
        if obj.get("type") not in wanted:
            continue
        groups.setdefault(f"{obj['type']}:{_record_key(obj)}", []).append(obj)
    if not groups:
        yield "document", None, f"no {' or '.join(wanted)} in the bundle"
        return
    related: dict[str, list[str]] = {}  # an incident's locations are related-to relationships
    for obj in objects.values():
        if obj.get("type") == "relationship" and not obj.get("revoked"):
            related.setdefault(str(obj.get("source_ref")), []).append(str(obj.get("target_ref")))
    for members in groups.values():
        yield _record(members, objects, related)


def _latest(raw: list[Any]) -> dict[str, Mapping[str, Any]]:
    """The latest version (``modified``) of each object of the bundle, by id."""
    objects: dict[str, Mapping[str, Any]] = {}
    revoked: set[str] = set()
    for obj in raw:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
            continue
        if obj.get("revoked") is True:
            # Revocation is for good (STIX 2.1, 3.6): a "later" unrevoked version of a revoked
            # object cannot bring a retracted record back.
            revoked.add(obj["id"])
        known = objects.get(obj["id"])
        if known is None or str(obj.get("modified", "")) >= str(known.get("modified", "")):
            objects[obj["id"]] = obj
    for oid in revoked:
        objects[oid] = {**objects[oid], "revoked": True}
    return objects


def _record_key(obj: Mapping[str, Any]) -> str:
    """The record an object belongs to: the record id in its extension or its intelbus external
    reference, else the object itself (another tool's sighting is one record)."""
    ext = _extension(obj)
    if ext is not None and isinstance(ext.get("record_id"), str):
        # With the producer: two forces' records may share a record id, and must not merge.
        return f"{ext.get('producer_id')}|{ext['record_id']}"
    for ref in obj.get("external_references") or ():
        if isinstance(ref, Mapping) and ref.get("source_name") == RECORD_SOURCE:
            return str(ref.get("external_id"))
    return str(obj["id"])


def _extension(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    exts = obj.get("extensions")
    ext = exts.get(EXTENSION_ID) if isinstance(exts, Mapping) else None
    return ext if isinstance(ext, Mapping) else None


def _record(  # noqa: PLR0911 - one return per refusal
    members: list[Mapping[str, Any]],
    objects: Mapping[str, Mapping[str, Any]],
    related: Mapping[str, list[str]],
) -> Result:
    where = str(members[0]["id"])
    # A sighting revoked beside live ones is a behaviour a correction took out; all revoked is
    # a retracted record.
    members = [o for o in members if o.get("revoked") is not True]
    if not members:
        return where, None, "revoked: a revoked record is not published again"
    first = members[0]
    problem = _disagreement(members)
    if problem is not None:
        return where, None, problem
    ext = _extension(first)
    if ext is None:
        return (
            where,
            None,
            f"no intelbus grading extension ({EXTENSION_ID}): grading is never defaulted",
        )
    if ext.get("redacted_fields"):
        # A force's redacted copy is not the record: publishing it would pass what was left out
        # as never there (no persons, no description).
        return where, None, "exported with fields redacted: publish the original record instead"
    tlp, problem = _tlp(members)
    if problem is not None:
        return where, None, problem
    grading, problem = _grading(ext, tlp)
    if grading is None:
        return where, None, problem
    record: dict[str, Any] = {k: ext[k] for k in _COPIED if k in ext}
    record["grading"] = grading
    place_in = ext.get("place")
    place: dict[str, Any] = dict(place_in) if isinstance(place_in, Mapping) else {}
    coordinates, problem = _coordinates(first, objects, related, tlp)
    if problem is not None:
        return where, None, problem
    place.update(coordinates)
    record["place"] = place
    description = first.get("description")
    if isinstance(description, str):
        record["description"] = description
    if first.get("type") == "sighting":
        seen = first.get("first_seen")
        if isinstance(seen, str):
            record["observed_at"] = seen
        patterns = [objects.get(str(o.get("sighting_of_ref"))) for o in members]
        if any(p is not None and _marked_otherwise(p, tlp) for p in patterns):
            return (
                where,
                None,
                "an attack-pattern is marked otherwise than its record: not published",
            )
        record["behaviours"] = [b for b in map(_behaviour, patterns) if b]
        # STIX has no empty list: none exported means none (redacted copies are refused above).
        record.setdefault("persons", [])
        record.setdefault("vehicles", [])
    return where, record, None


#: What every object of one record must say alike: only the first is read for them, so a second
#: saying otherwise (another grading, TLP, description) would be dropped without a word.
_RECORD_WIDE = ("extensions", "object_marking_refs", "description", "first_seen", "created_by_ref")


def _disagreement(members: list[Mapping[str, Any]]) -> str | None:
    """Why the objects of one record cannot be one record (they say different things), or None.

    Conflicts are refused, never resolved: taking the first object's grading would let a second
    sighting of the same record marked TLP:RED (or graded C) be published as the first says.
    """
    for key in _RECORD_WIDE:
        values = {json.dumps(o.get(key), sort_keys=True, default=str) for o in members}
        if len(values) > 1:
            return f"the record's objects disagree on {key}: a conflict is refused, not resolved"
    return None


def _grading(ext: Mapping[str, Any], tlp: str) -> tuple[dict[str, Any] | None, str]:
    """The record's grading from the extension and the TLP marking, or why there is none."""
    given = ext.get("grading")
    if not isinstance(given, Mapping) or not all(
        isinstance(given.get(k), str) for k in ("source_evaluation", "assessment", "handling_code")
    ):
        return None, "the extension's grading is incomplete: grading is never defaulted"
    if not isinstance(ext.get("classification"), str):
        return None, "the extension has no classification: it is never defaulted"
    if ext.get("tlp") is not None and ext.get("tlp") != tlp:
        return None, "the TLP marking and the extension's tlp disagree"
    conditions = given.get("handling_conditions", [])
    return {
        "source_evaluation": given["source_evaluation"],
        "assessment": given["assessment"],
        "handling_code": given["handling_code"],
        "handling_conditions": list(conditions) if isinstance(conditions, list) else conditions,
        "tlp": tlp,
        "classification": ext["classification"],
    }, ""


def _tlp(members: list[Mapping[str, Any]]) -> tuple[str, str | None]:
    found: set[str] = set()
    for obj in members:
        refs = obj.get("object_marking_refs")
        # Any other marking (TLP 1.0 RED beside TLP 2.0 GREEN, a statement, PAP) or a granular
        # marking on one property says something this importer cannot carry: dropped, the record
        # would travel under the weaker TLP alone. Refused instead.
        other = [r for r in refs or () if r not in _TLP_BY_MARKING]
        if other or obj.get("granular_markings"):
            what = f"marking {str(other[0])[:80]}" if other else "a granular marking"
            return "", f"{what} is not one TLP 2.0 marking of the whole object: not published"
        marks = {_TLP_BY_MARKING[r] for r in refs or () if r in _TLP_BY_MARKING}
        if len(marks) != 1:
            return "", "no single TLP 2.0 marking (object_marking_refs): TLP is never defaulted"
        found |= marks
    if len(found) != 1:
        return "", "the record's objects carry different TLP markings"
    return found.pop(), None


def _marked_otherwise(obj: Mapping[str, Any], tlp: str) -> bool:
    """Whether an object a record refers to (its location, its attack-pattern) carries a marking
    other than the record's TLP: what it holds would travel under the record's TLP alone."""
    marks = obj.get("object_marking_refs")
    return bool(obj.get("granular_markings")) or bool(
        marks and list(marks) != [TLP2_MARKINGS[tlp][0]]
    )


def _coordinates(
    main: Mapping[str, Any],
    objects: Mapping[str, Mapping[str, Any]],
    related: Mapping[str, list[str]],
    tlp: str,
) -> tuple[dict[str, float], str | None]:
    """Latitude and longitude of the point location the object refers to, or why not.

    Refused, not resolved: a point location marked otherwise than the record (its coordinates
    TLP:RED under a GREEN sighting would travel GREEN), and two point locations that disagree.
    """
    where = main.get("where_sighted_refs")
    refs = [str(r) for r in where] if isinstance(where, list) else []
    refs.extend(related.get(str(main.get("id")), ()))
    found: set[tuple[float, float]] = set()
    for ref in refs:
        loc = objects.get(ref)
        if loc is None or loc.get("type") != "location":
            continue
        lat, lon = loc.get("latitude"), loc.get("longitude")
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            continue
        if _marked_otherwise(loc, tlp):
            return {}, "a location is marked otherwise than its record: not published"
        found.add((float(lat), float(lon)))
    if len(found) > 1:
        return {}, "the record's point locations disagree: a conflict is refused, not resolved"
    if not found:
        return {}, None
    ((lat, lon),) = found
    return {"latitude": lat, "longitude": lon}, None


def _behaviour(pattern: Mapping[str, Any] | None) -> str | None:
    """The behaviour an attack-pattern stands for: its intelbus external id, else its name
    (made canonical, or refused, by the input normaliser and the model)."""
    if pattern is None or pattern.get("type") != "attack-pattern":
        return None
    for ref in pattern.get("external_references") or ():
        if isinstance(ref, Mapping) and ref.get("source_name") == BEHAVIOUR_SOURCE:
            value = ref.get("external_id")
            return None if value == UNSPECIFIED else str(value)
    name = pattern.get("name")
    if not isinstance(name, str):
        return None
    return name.removeprefix("Hostile reconnaissance: ").strip()

"""STIX 2.1 as the standard intends: the mapping (intelbus.interop.stix) and the importer.

Checked with the standard's own tools: the OASIS validator in strict mode (no error and no
warning), ``stix2.parse(allow_custom=False)``, and the extension's shipped JSON schema. Views are
built from the deterministic sample records as a store would hold them: corrected, retracted,
redacted by policy, erased, and graded AMBER+STRICT and RED.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stix2
from jsonschema import Draft202012Validator

from intelbus import samples
from intelbus.interop.stix import (
    EXTENSION_ID,
    EXTENSION_SCHEMA,
    TLP2_EXTENSION_ID,
    record_entries,
    stix_bundle,
    stix_id,
    tlp_marking,
)
from intelbus.interop.stix_import import records_from_stix
from intelbus.kinds import RecordKind
from intelbus.policy.redact import REDACTED, redact
from intelbus.records import Incident, Sighting
from intelbus.store import open_store
from intelbus.store.base import HistoryEntry, StoredRecordView
from intelbus.trust.model import (
    AmendmentStatus,
    Batch,
    Change,
    NewAmendment,
    NewVersion,
    Outcome,
    VersionDecision,
)
from producers.inputs import normalise, read_items
from tests.stixcheck import assert_strict
from tests.unit import test_store_cli as store_cli

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
#: What a force's policy redacts of the redacted record: coordinates, text, people, registrations.
POLICY_REDACTS = (
    "place.latitude",
    "place.longitude",
    "description",
    "persons",
    "vehicles.registration",
)
#: The OASIS TLP 2.0 marking definitions (cti-stix-common-objects, tlp-2.0), as published.
OASIS_TLP2 = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER_STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}


def _body(model: Sighting | Incident) -> dict[str, Any]:
    return json.loads(model.model_dump_json())


def _graded(model: Sighting | Incident, tlp: str) -> Sighting | Incident:
    data = _body(model)
    data["grading"]["tlp"] = tlp
    return type(model).model_validate(data)


def _view(
    model: Sighting | Incident,
    n: int,
    *,
    payload: dict[str, Any] | None = None,
    history: tuple[HistoryEntry, ...] = (),
    status: str = "live",
    version: int = 1,
    redacted: tuple[str, ...] = (),
) -> StoredRecordView:
    facts = model.facts()
    return StoredRecordView(
        record_id=str(model.record_id),
        topic=f"intelbus.{model.KIND}s",
        partition=0,
        offset=n,
        producer_id="cst",
        kind=model.KIND,
        sequence=n,
        digest=bytes(32),
        created_at=T0 + timedelta(minutes=n),
        appended_at=T0 + timedelta(minutes=n, seconds=1),
        policy_hash="a" * 64,
        rule_id="all",
        action="redact" if redacted else "store",
        redacted_fields=redacted,
        tlp=facts.tlp.value,
        classification=facts.classification.value,
        force_area=facts.force_area,
        occurred_at=facts.occurred_at,
        payload=_body(model) if payload is None else payload,
        version=version,
        status=status,
        history=history,
    )


def _entry(version: int, change: str, payload: dict[str, Any] | None, at: datetime) -> HistoryEntry:
    return HistoryEntry(version, change, payload, f"amendment-{version}", "store", at, "")


class Records:
    """The records under test, and their views."""

    def __init__(self) -> None:
        feed = samples.feed(seed=5, sightings=5, incidents=4)
        sightings = [m for m in feed if isinstance(m, Sighting)]
        incidents = [m for m in feed if isinstance(m, Incident)]
        self.plain = sightings[0]
        self.corrected = sightings[1]
        self.retracted = sightings[2]
        self.redacted = sightings[3]
        self.red = _graded(sightings[4], "RED")
        self.incident = _graded(incidents[0], "AMBER_STRICT")
        self.incident2 = incidents[1]
        self.erased = incidents[2]
        self.correction = _body(self.corrected)
        self.correction["description"] = "Corrected: two people, not one, filmed the entrance."
        self.correction["behaviours"] = ["FILMING"]  # a behaviour corrected away, one left
        v1 = _body(self.corrected)
        v1["behaviours"] = ["FILMING", "LOITERING"]
        t1, t2 = T0 + timedelta(minutes=1, seconds=1), T0 + timedelta(hours=2)
        body = _body(self.redacted)
        body["vehicles"] = [
            {"registration": "AB12CDE", "make": "Ford", "model": "Focus", "colour": "grey"}
        ]
        self.redacted = Sighting.model_validate(body)
        held, self.redacted_fields = redact(body, POLICY_REDACTS)
        self.views = [
            _view(self.plain, 0),
            _view(
                self.corrected,
                1,
                payload=self.correction,
                version=2,
                history=(
                    _entry(1, "original", v1, t1),
                    _entry(2, "correction", self.correction, t2),
                ),
            ),
            _view(
                self.retracted,
                2,
                status="retracted",
                version=2,
                history=(
                    _entry(
                        1, "original", _body(self.retracted), T0 + timedelta(minutes=2, seconds=1)
                    ),
                    _entry(2, "retraction", None, T0 + timedelta(hours=3)),
                ),
            ),
            _view(
                self.redacted,
                3,
                payload=held,
                redacted=self.redacted_fields,
            ),
            _view(self.red, 4),
            _view(self.incident, 5),
            _view(self.incident2, 6),
        ]
        # Erased: a tombstone, no payload: not visible, exported nowhere.
        self.erased_view = replace(_view(self.erased, 7), payload=None, status="erased")


@pytest.fixture(scope="module")
def records() -> Records:
    return Records()


@pytest.fixture(scope="module")
def bundle(records: Records) -> dict[str, Any]:
    return stix_bundle([*records.views, records.erased_view], exported_at=datetime.now(UTC))


def _main(objects: list[dict[str, Any]], record_id: str) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["type"] in ("sighting", "incident")
        and o["extensions"][EXTENSION_ID]["record_id"] == record_id
    ]


def test_the_bundle_passes_the_strict_validator_and_stix2_parse(bundle) -> None:
    assert_strict(bundle)
    parsed = stix2.parse(bundle, allow_custom=False)
    assert len(parsed.objects) == len(bundle["objects"])
    types = {o["type"] for o in bundle["objects"]}
    assert {"sighting", "incident", "attack-pattern", "location", "identity"} <= types
    assert {"marking-definition", "extension-definition", "relationship"} <= types


def test_every_object_version_of_every_record_passesassert_strict(records: Records) -> None:
    for view in records.views:
        entries = record_entries(view)
        assert entries
        for entry in entries:
            assert_strict(dict(entry.obj))
            stix2.parse(dict(entry.obj), allow_custom=False)


def test_no_custom_property_and_no_placeholder_anywhere(bundle, records: Records) -> None:
    text = json.dumps(bundle)
    assert "x_intelbus" not in text
    assert REDACTED not in text
    every = json.dumps([dict(e.obj) for v in records.views for e in record_entries(v)])
    assert REDACTED not in every


def test_ids_are_uuid4_and_stable_across_exports(records: Records, bundle) -> None:
    again = stix_bundle(records.views, exported_at=datetime.now(UTC) + timedelta(days=1))
    assert [o["id"] for o in again["objects"]] == [o["id"] for o in bundle["objects"]]
    assert again["objects"] == bundle["objects"]  # same versions too: nothing depends on the export
    assert again["id"] != bundle["id"]
    for obj in [*bundle["objects"], bundle]:
        assert obj["id"].split("--")[1][14] == "4"  # version 4
        assert obj["id"].split("--")[1][19] in "89ab"  # RFC 4122 variant
    assert stix_id("sighting", "cst", "r1", "FILMING") == stix_id(
        "sighting", "cst", "r1", "FILMING"
    )
    assert stix_id("sighting", "cst", "r1", "FILMING") != stix_id(
        "sighting", "gmp", "r1", "FILMING"
    )


def test_an_export_shares_no_object_with_another(records: Records) -> None:
    """Callers (the TAXII server, a test) may edit what they get: nothing is shared."""
    first = stix_bundle(records.views, exported_at=T0)
    pristine = copy.deepcopy(first)
    for obj in first["objects"]:
        obj.clear()
    again = stix_bundle(records.views, exported_at=T0)
    assert again["objects"] == pristine["objects"]


def test_one_attack_pattern_and_one_sighting_per_behaviour(bundle, records: Records) -> None:
    objects = {o["id"]: o for o in bundle["objects"]}
    mine = _main(bundle["objects"], str(records.plain.record_id))
    behaviours = [str(b) for b in records.plain.behaviours]
    assert len(mine) == len(behaviours)
    sighted = [objects[s["sighting_of_ref"]] for s in mine]
    assert sorted(p["external_references"][0]["external_id"] for p in sighted) == sorted(behaviours)
    assert len({p["id"] for p in sighted}) == len(behaviours)
    patterns = [o for o in bundle["objects"] if o["type"] == "attack-pattern"]
    assert len({p["name"] for p in patterns}) == len(patterns)  # one per behaviour, no combination
    for s in mine:
        assert s["description"] == records.plain.description
        assert s["first_seen"] == s["last_seen"]
        kinds = {objects[r]["type"] for r in s["where_sighted_refs"]}
        assert kinds == {"location"}
        points = [objects[r] for r in s["where_sighted_refs"] if "latitude" in objects[r]]
        assert [(p["latitude"], p["longitude"]) for p in points] == [
            (records.plain.place.latitude, records.plain.place.longitude)
        ]
        areas = [objects[r] for r in s["where_sighted_refs"] if "latitude" not in objects[r]]
        assert [a["country"] for a in areas] == ["GB"]
        assert "police force area" in areas[0]["name"]


def test_tlp_2_markings_are_the_oasis_objects(bundle, records: Records) -> None:
    objects = {o["id"]: o for o in bundle["objects"]}
    red = _main(bundle["objects"], str(records.red.record_id))
    strict = _main(bundle["objects"], str(records.incident.record_id))
    assert {m for s in red for m in s["object_marking_refs"]} == {OASIS_TLP2["RED"]}
    assert strict[0]["object_marking_refs"] == [OASIS_TLP2["AMBER_STRICT"]]
    assert objects[OASIS_TLP2["AMBER_STRICT"]] == {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        "created": "2022-10-01T00:00:00.000Z",
        "name": "TLP:AMBER+STRICT",
        "extensions": {
            "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                "extension_type": "property-extension",
                "tlp_2_0": "amber+strict",
            }
        },
    }
    tlp2 = objects[TLP2_EXTENSION_ID]
    assert (tlp2["name"], tlp2["version"], tlp2["extension_types"]) == (
        "TLP 2.0",
        "1.0.0",
        ["property-extension"],
    )
    # Every marking referred to is in the bundle: it is self-contained.
    refs = {m for o in bundle["objects"] for m in o.get("object_marking_refs", ())}
    assert refs <= set(objects)
    for tlp, marking in OASIS_TLP2.items():
        assert tlp_marking(tlp)["id"] == marking


def test_a_correction_is_a_new_version_of_the_same_objects(records: Records) -> None:
    view = records.views[1]
    entries = record_entries(view)
    rid = str(records.corrected.record_id)
    filming = stix_id("sighting", "cst", rid, "FILMING")
    loitering = stix_id("sighting", "cst", rid, "LOITERING")
    versions = [e for e in entries if e.id == filming]
    assert [e.obj["extensions"][EXTENSION_ID]["record_version"] for e in versions] == [1, 2]
    assert versions[0].version < versions[1].version
    assert versions[0].obj["created"] == versions[1].obj["created"]
    assert versions[1].obj["description"] == records.correction["description"]
    assert [e.date_added for e in versions] == [h.at for h in view.history]
    # The behaviour the correction took out: its sighting is revoked at the correction.
    gone = [e for e in entries if e.id == loitering]
    assert [e.obj.get("revoked", False) for e in gone] == [False, True]
    assert gone[1].version == versions[1].version
    # The bundle holds the current version only.
    current = _main(stix_bundle([view], exported_at=T0)["objects"], rid)
    assert {o["id"]: o.get("revoked", False) for o in current} == {filming: False, loitering: True}


def test_a_retraction_revokes_the_last_version(records: Records, bundle) -> None:
    view = records.views[2]
    rid = str(records.retracted.record_id)
    mains = [e for e in record_entries(view) if e.obj["type"] == "sighting"]
    ids = {e.id for e in mains}
    for sid in ids:
        chain = [e for e in mains if e.id == sid]
        assert [e.obj.get("revoked", False) for e in chain] == [False, True]
        assert chain[-1].date_added == view.history[-1].at
    assert all(o["revoked"] for o in _main(bundle["objects"], rid))


def test_redacted_fields_are_left_out(bundle, records: Records) -> None:
    objects = {o["id"]: o for o in bundle["objects"]}
    mine = _main(bundle["objects"], str(records.redacted.record_id))
    assert mine
    for s in mine:
        assert "description" not in s
        assert all("latitude" not in objects[r] for r in s["where_sighted_refs"])
        ext = s["extensions"][EXTENSION_ID]
        assert records.redacted_fields == POLICY_REDACTS  # each was there to redact
        assert sorted(ext["redacted_fields"]) == sorted(POLICY_REDACTS)
        assert "latitude" not in ext.get("place", {})
        assert "persons" not in ext
        assert ext["vehicles"] == [{"make": "Ford", "model": "Focus", "colour": "grey"}]


def test_an_erased_record_exports_nothing(records: Records, bundle) -> None:
    assert record_entries(records.erased_view) == []
    assert str(records.erased.record_id) not in json.dumps(bundle)


def test_every_extension_validates_against_the_shipped_schema(bundle, records: Records) -> None:
    assert EXTENSION_SCHEMA.is_file()
    schema = json.loads(EXTENSION_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    found = [
        obj["extensions"][EXTENSION_ID]
        for obj in [*bundle["objects"], *(e.obj for v in records.views for e in record_entries(v))]
        if EXTENSION_ID in obj.get("extensions", {})
    ]
    assert len(found) > len(records.views)
    for ext in found:
        errors = [e.message for e in validator.iter_errors(ext)]
        assert errors == [], errors
    # The schema does hold the grading to its values.
    bad = copy.deepcopy(found[0])
    bad["grading"]["source_evaluation"] = "S9"
    assert list(validator.iter_errors(bad))


def _published(data: dict[str, Any], kind: type[Sighting | Incident]) -> Sighting | Incident:
    canonical, generated = normalise(data)
    assert not generated
    return kind.model_validate(canonical)


def test_import_of_an_export_gives_back_the_records(records: Records, bundle) -> None:
    got = {}
    for where, data, error in records_from_stix(json.dumps(bundle)):
        if data is None:
            got[where] = error
            continue
        got[data["record_id"]] = data
    for model in (records.plain, records.red, records.incident, records.incident2):
        back = _published(got[str(model.record_id)], type(model))
        assert back == model, str(model.record_id)
    corrected = _published(got[str(records.corrected.record_id)], Sighting)
    assert corrected == Sighting.model_validate(records.correction)
    # The redacted copy and the retracted record are refused, not republished.
    refused = sorted(e for e in got.values() if isinstance(e, str))
    assert refused == [
        "exported with fields redacted: publish the original record instead",
        "revoked: a revoked record is not published again",
    ]
    assert str(records.redacted.record_id) not in got


def test_times_keep_their_precision_and_force_areas_their_names() -> None:
    model = samples.feed(seed=9, sightings=1, incidents=0)[0]
    data = _body(model)
    data["observed_at"] = "2026-09-03T10:11:12.345678Z"
    data["place"]["force_area"] = "CITY_OF_LONDON"
    precise = Sighting.model_validate(data)
    bundle = stix_bundle([_view(precise, 0)], exported_at=T0)
    assert_strict(bundle)
    stix2.parse(bundle, allow_custom=False)
    names = {o["name"] for o in bundle["objects"] if o["type"] == "location" and "region" in o}
    assert names == {"City of London police force area"}
    ((_, back, _),) = list(records_from_stix(json.dumps(bundle)))
    assert back is not None
    assert _published(back, Sighting) == precise


def _one_sighting_bundle(records: Records) -> dict[str, Any]:
    return stix_bundle([records.views[0]], exported_at=T0)


def test_import_refuses_a_bundle_without_grading_or_tlp(records: Records) -> None:
    no_grading = _one_sighting_bundle(records)
    for obj in no_grading["objects"]:
        if obj["type"] == "sighting":
            del obj["extensions"]
    out = list(records_from_stix(json.dumps(no_grading)))
    assert [d for _, d, _ in out] == [None]
    assert "grading is never defaulted" in str(out[0][2])

    no_tlp = _one_sighting_bundle(records)
    for obj in no_tlp["objects"]:
        obj.pop("object_marking_refs", None)
    out = list(records_from_stix(json.dumps(no_tlp)))
    assert [d for _, d, _ in out] == [None]
    assert "TLP" in str(out[0][2])

    tlp1 = _one_sighting_bundle(records)  # TLP 1.0 AMBER cannot tell AMBER from AMBER+STRICT
    for obj in tlp1["objects"]:
        if "object_marking_refs" in obj:
            obj["object_marking_refs"] = [
                "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"
            ]
    assert [d for _, d, _ in records_from_stix(json.dumps(tlp1))] == [None]

    half = _one_sighting_bundle(records)
    for obj in half["objects"]:
        if obj["type"] == "sighting":
            del obj["extensions"][EXTENSION_ID]["grading"]["assessment"]
    assert [d for _, d, _ in records_from_stix(json.dumps(half))] == [None]

    assert next(e for _, _, e in records_from_stix("{not json")).startswith("not JSON")
    assert [e for _, _, e in records_from_stix('{"type": "report"}')] == [
        "not a STIX bundle (an object with type 'bundle')"
    ]


def test_an_opencti_style_bundle_imports(records: Records) -> None:
    """A bundle another tool made: one sighting, attack-pattern by name only, no record id."""
    plain = records.plain
    pattern = {
        "type": "attack-pattern",
        "spec_version": "2.1",
        "id": "attack-pattern--2c4e2f57-5d1b-4d0e-9b3a-1d7b7f0a8e11",
        "created": "2026-10-01T00:00:00.000Z",
        "modified": "2026-10-01T00:00:00.000Z",
        "name": "Loitering",
    }
    place = {
        "type": "location",
        "spec_version": "2.1",
        "id": "location--7d0a1b1e-4c55-4b8e-8f0e-0b6c1f1e2a33",
        "created": "2026-10-01T00:00:00.000Z",
        "modified": "2026-10-01T00:00:00.000Z",
        "latitude": 51.5,
        "longitude": -0.2,
    }
    ext = {
        "extension_type": "property-extension",
        "grading": {"source_evaluation": "S2", "assessment": "B", "handling_code": "P"},
        "classification": "OFFICIAL",
        "place": {
            "site_kind": "SYNAGOGUE",
            "address_or_area": "Barnet",
            "force_area": "METROPOLITAN",
        },
        "reporter_ref": "OCTI-1",
    }
    sighting = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": "sighting--4f6a1c2d-8e9b-4a0c-b1d2-3e4f5a6b7c8d",
        "created": "2026-10-02T00:00:00.000Z",
        "modified": "2026-10-02T00:00:00.000Z",
        "sighting_of_ref": pattern["id"],
        "where_sighted_refs": [place["id"]],
        "first_seen": "2026-10-01T18:00:00Z",
        "description": "A man loitered by the gate.",
        "object_marking_refs": [OASIS_TLP2["GREEN"]],
        "extensions": {EXTENSION_ID: ext},
    }
    doc = {"type": "bundle", "id": "bundle--5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"}
    doc["objects"] = [pattern, place, sighting]  # type: ignore[assignment]
    items = list(read_items(json.dumps(doc), "stix"))
    assert [i.error for i in items] == [None]
    assert items[0].data is not None
    data, generated = normalise(items[0].data)
    assert generated  # no record id in the bundle: derived from the contents
    record = Sighting.model_validate(data)
    assert [str(b) for b in record.behaviours] == ["LOITERING"]
    assert (record.place.latitude, record.place.longitude) == (51.5, -0.2)
    assert record.grading.tlp.value == "GREEN"
    assert record.description == "A man loitered by the gate."
    assert plain.record_id != record.record_id


def test_read_items_stix_yields_one_item_per_record(records: Records, bundle) -> None:
    items = list(read_items(json.dumps(bundle), "stix"))
    assert len(items) == len(records.views)
    assert sum(i.data is not None for i in items) == len(records.views) - 2  # retracted, redacted
    # `publish incident` takes the incidents of a mixed bundle, `publish sighting` the sightings.
    incidents = list(read_items(json.dumps(bundle), "stix", "incident"))
    assert {i.data["record_id"] for i in incidents if i.data} == {
        str(records.incident.record_id),
        str(records.incident2.record_id),
    }
    sightings = list(read_items(json.dumps(bundle), "stix", "sighting"))
    assert len(sightings) == len(items) - 2
    only_sightings = stix_bundle(records.views[:1], exported_at=T0)
    assert [
        (i.data, i.error) for i in read_items(json.dumps(only_sightings), "stix", "incident")
    ] == [(None, "no incident in the bundle")]


def test_the_schema_file_ships_inside_the_schemas_package() -> None:
    import schemas  # noqa: PLC0415 - the package whose data it is

    assert EXTENSION_SCHEMA.parent.parent == Path(schemas.__file__).resolve().parent


# --- A real SQLite store, exported through the CLI. -----------------------------------------------

REDACTED_FIELDS = ("place.latitude", "place.longitude", "description")
CORRECTION_ID = "00000000-0000-4000-8000-0000000000c1"
RETRACTION_ID = "00000000-0000-4000-8000-0000000000c2"


def _demo_like_store(path: Path) -> dict[str, str]:
    """The demo's kinds of record in a SQLite store as a consumer commits them: the sample feed
    (AMBER+STRICT and RED among it), one sighting stored redacted (coordinates and description),
    one corrected, one retracted. Returns their record ids by role."""
    feed = samples.feed(seed=21, sightings=8, incidents=6)
    sightings = [m for m in feed if isinstance(m, Sighting)]
    feed = [_graded(m, "AMBER_STRICT") if m is sightings[4] else m for m in feed]
    feed = [_graded(m, "RED") if m is sightings[5] else m for m in feed]
    records = []
    redacted_id = str(sightings[0].record_id)
    for i, model in enumerate(feed):
        new = store_cli._stored(i, model)
        if str(model.record_id) == redacted_id:
            held, done = redact(new.decision.payload or {}, REDACTED_FIELDS)
            decision = replace(
                new.decision, outcome=Outcome.REDACT, payload=held, redacted_fields=done
            )
            new = replace(new, decision=decision)
        records.append(new)
    corrected, retracted = sightings[1], sightings[2]
    fixed = _body(corrected)
    fixed["description"] = "Corrected: the person filmed the side gate, not the entrance."
    correction = store_cli._source(
        200, CORRECTION_ID, store_cli.TOPIC, reason="wrong gate", amended_at=T0 + timedelta(hours=5)
    )
    retraction = store_cli._source(
        201,
        RETRACTION_ID,
        store_cli.TOPIC,
        reason="entered in error",
        amended_at=T0 + timedelta(hours=6),
    )
    labels = records[feed.index(corrected)].decision.labels
    versions = [
        NewVersion(
            "cst",
            str(corrected.record_id),
            Change.CORRECTION,
            correction,
            VersionDecision(Outcome.STORE, "all", store_cli.POLICY, fixed, (), labels),
        ),
        NewVersion(
            "cst",
            str(retracted.record_id),
            Change.RETRACTION,
            retraction,
            VersionDecision(Outcome.RETRACT, "retraction", store_cli.POLICY),
        ),
    ]
    amendments = [
        NewAmendment(
            "cst", CORRECTION_ID, RecordKind.CORRECTION, str(corrected.record_id),
            AmendmentStatus.APPLIED, correction,
        ),
        NewAmendment(
            "cst", RETRACTION_ID, RecordKind.RETRACTION, str(retracted.record_id),
            AmendmentStatus.APPLIED, retraction,
        ),
    ]  # fmt: skip
    store = open_store(str(path))
    try:
        store.commit(Batch(group_id="met", records=records))
        store.commit(Batch(group_id="met", amendments=amendments, versions=versions))
    finally:
        store.close()
    return {
        "redacted": redacted_id,
        "corrected": str(corrected.record_id),
        "retracted": str(retracted.record_id),
    }


def test_a_store_exported_with_the_cli_is_strict_stix(tmp_path: Path) -> None:
    path = tmp_path / "met.sqlite"
    ids = _demo_like_store(path)
    out = tmp_path / "met.stix.json"
    store_cli._run(
        "store", "export", "--store", str(path), "--format", "stix", "--out", str(out),
        *store_cli.WHY, *store_cli.TO,
    )  # fmt: skip
    text = out.read_text(encoding="utf-8")
    bundle = json.loads(text)
    assert_strict(bundle)
    assert len(stix2.parse(bundle, allow_custom=False).objects) == len(bundle["objects"])
    assert REDACTED not in text
    assert "x_intelbus" not in text
    objects = {o["id"]: o for o in bundle["objects"]}
    markings = {o["name"] for o in objects.values() if o["type"] == "marking-definition"}
    assert {"TLP:AMBER+STRICT", "TLP:RED"} <= markings
    corrected = _main(bundle["objects"], ids["corrected"])
    assert corrected
    for o in corrected:
        assert o["extensions"][EXTENSION_ID]["record_version"] == 2
        assert o["modified"] > o["created"]
        assert o["description"].startswith("Corrected:")
    assert all(o["revoked"] for o in _main(bundle["objects"], ids["retracted"]))
    for o in _main(bundle["objects"], ids["redacted"]):
        assert "description" not in o
        assert not any("latitude" in objects[r] for r in o["where_sighted_refs"])
    # A correction is a new version of the same objects: the record's entries hold both.
    store = open_store(str(path))
    try:
        view = store.get(ids["corrected"], "cst")
    finally:
        store.close()
    assert view is not None
    entries = [e for e in record_entries(view) if e.obj["type"] == "sighting"]
    assert {e.id for e in entries} == {o["id"] for o in corrected}
    for sid in {e.id for e in entries}:
        chain = [e for e in entries if e.id == sid]
        assert [e.obj["extensions"][EXTENSION_ID]["record_version"] for e in chain] == [1, 2]
        assert chain[0].version < chain[1].version == objects[sid]["modified"]
        assert chain[0].date_added == view.stored_at


def test_an_entry_keeps_record_contents_out_of_its_repr(records: Records) -> None:
    entries = record_entries(records.views[0])
    text = " ".join(repr(e) for e in entries)
    assert records.plain.description not in text
    assert str(records.plain.record_id) not in text

"""MISP events: ``store export --format misp|misp-feed`` and ``publish --format misp``'s reader.

A real SQLite store is filled as a consumer would have filled it (the sample feed with every TLP,
handling code C, a redacted sighting, a retracted one, a corrected incident, a withheld receipt),
exported through the CLI, and every event is loaded back with PyMISP and compared with the store;
tags are checked against MISP's own taxonomies (pytaxonomies ships them) and objects against the
misp-objects templates PyMISP ships. Reading the export back gives the same records.
"""

from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytaxonomies
import pytest
from pymisp import MISPEvent, MISPObject
from pytaxonomies import Taxonomies, Taxonomy
from typer.testing import CliRunner

from intelbus import samples
from intelbus.cli.main import app
from intelbus.interop.misp import (
    event_uuid,
    misp_event,
    org_uuid,
    records_from_misp,
    taxonomy,
)
from intelbus.kinds import RecordKind
from intelbus.policy.redact import REDACTED, redact
from intelbus.records import Incident, Sighting
from intelbus.store import open_store
from intelbus.store.base import StoredRecordView
from intelbus.trust.model import (
    AmendmentStatus,
    Batch,
    Change,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    VersionDecision,
)
from producers.inputs import normalise, read_items
from tests.unit.test_store_cli import INCIDENTS, POLICY, TOPIC, WITHHELD_ID, _source, _stored

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"INTELBUS_USER": "analyst.test"})
EXPORT = ("--to", "the MISP test", "--justification", "test of the MISP export")
REDACTED_PATHS = ("persons", "vehicles.registration", "place.latitude", "place.longitude")
MODELS = {"sighting": Sighting, "incident": Incident}


def _amend(n: int, target: str, kind: RecordKind, decision: VersionDecision, topic: str):
    s = _source(
        n,
        f"00000000-0000-4000-8000-{n:012d}",
        topic,
        reason="typo" if kind is RecordKind.CORRECTION else "entered in error",
        amended_at=datetime(2026, 11, 1, 15, 0, tzinfo=UTC) + timedelta(minutes=n),
    )
    change = Change.RETRACTION if kind is RecordKind.RETRACTION else Change.CORRECTION
    return (
        NewAmendment("cst", s.record_id, kind, target, AmendmentStatus.APPLIED, s),
        NewVersion("cst", target, change, s, decision),
    )


@pytest.fixture
def store(tmp_path: Path) -> dict[str, Any]:
    """A store with every case the export must handle; returns its path and the record ids."""
    path = tmp_path / "herts.sqlite"
    models = samples.feed(seed=11, sightings=8, incidents=6)
    records = [_stored(i, m) for i, m in enumerate(models)]
    sightings = [m for m in models if m.KIND == "sighting"]
    incidents = [m for m in models if m.KIND == "incident"]
    # A sighting stored under a policy that redacts the people, registrations and position.
    hidden = next(
        m
        for m in samples.feed(seed=12, sightings=20, incidents=0)
        if m.persons and any(v.registration for v in m.vehicles) and m.place.latitude is not None
    )
    full = hidden.model_dump(mode="json")
    kept, done = redact(full, REDACTED_PATHS)
    assert set(done) == set(REDACTED_PATHS)
    redacted = _stored(50, hidden, kept)
    redacted = NewRecord(
        redacted.producer_id,
        redacted.record_id,
        redacted.kind,
        redacted.source,
        VersionDecision(
            Outcome.REDACT, "redact-people", POLICY, kept, done, redacted.decision.labels
        ),
    )
    withheld = NewRecord(
        "cst",
        WITHHELD_ID,
        RecordKind.SIGHTING,
        _source(99, WITHHELD_ID, TOPIC),
        VersionDecision(Outcome.WITHHOLD, "red-withheld", POLICY),
    )
    retracted = sightings[0]
    retraction = _amend(
        101,
        str(retracted.record_id),
        RecordKind.RETRACTION,
        VersionDecision(Outcome.RETRACT, "retraction", POLICY),
        TOPIC,
    )
    corrected = incidents[0]
    fixed = corrected.model_dump(mode="json")
    fixed.update(description="Swastika painted on the synagogue's side gate.", status="CLOSED")
    labels = records[models.index(corrected)].decision.labels
    correction = _amend(
        102,
        str(corrected.record_id),
        RecordKind.CORRECTION,
        VersionDecision(Outcome.STORE, "all", POLICY, fixed, (), labels),
        INCIDENTS,
    )
    s = open_store(str(path))
    try:
        s.commit(
            Batch(
                group_id="herts",
                records=[*records, redacted, withheld],
                amendments=[retraction[0], correction[0]],
                versions=[retraction[1], correction[1]],
            )
        )
    finally:
        s.close()
    return {
        "path": path,
        "models": {str(m.record_id): m for m in [*models, hidden]},
        "redacted": str(hidden.record_id),
        "retracted": str(retracted.record_id),
        "corrected": str(corrected.record_id),
        "fixed": fixed,
    }


def _views(path: Path) -> dict[str, StoredRecordView]:
    s = open_store(str(path))
    try:
        return {v.record_id: v for v in s.iter_records()}
    finally:
        s.close()


def _export(path: Path, *args: str) -> str:
    result = runner.invoke(
        app,
        ["store", "export", "--store", str(path), "--format", "misp", *EXPORT, *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _events(text: str) -> list[MISPEvent]:
    doc = json.loads(text)
    assert set(doc) == {"response"}
    events = []
    for item in doc["response"]:
        assert set(item) == {"Event"}
        e = MISPEvent()
        e.load(item)
        events.append(e)
    return events


def _tags(e: MISPEvent) -> list[str]:
    return [t.name for t in e.tags]


def _objects(e: MISPEvent, name: str) -> list[MISPObject]:
    return [o for o in e.objects if o.name == name]


def _value(o: MISPObject, relation: str) -> Any:
    found = [a.value for a in o.attributes if a.object_relation == relation]
    assert len(found) <= 1
    return found[0] if found else None


def _record(data: dict[str, Any], kind: str) -> Sighting | Incident:
    return MODELS[kind].model_validate(normalise(data)[0])


def test_every_visible_record_is_one_event_that_pymisp_loads_and_matches_the_store(store) -> None:
    views = _views(store["path"])
    events = _events(_export(store["path"]))
    by_uuid = {e.uuid: e for e in events}
    visible = {rid: v for rid, v in views.items() if v.visible}
    assert WITHHELD_ID not in visible  # a receipt only: never exported
    assert len(events) == len(visible) == 15
    for rid, v in visible.items():
        e = by_uuid[event_uuid("cst", rid)]
        payload = v.payload
        assert payload is not None
        grading = payload["grading"]
        place = payload["place"]
        tags = _tags(e)
        assert e.Orgc.name == "cst"
        assert e.Orgc.uuid == org_uuid("cst")
        assert e.published is False
        assert int(e.threat_level_id) == 4
        when = datetime.fromisoformat(
            payload["observed_at" if v.kind == "sighting" else "occurred_at"]
        )
        assert e.date == when.date()
        tlp_tag = {"AMBER_STRICT": "tlp:amber+strict"}.get(v.tlp, f"tlp:{str(v.tlp).lower()}")
        assert [t for t in tags if t.startswith("tlp:")] == [tlp_tag]
        for pred, key in (
            ("source-evaluation", "source_evaluation"),
            ("intelligence-assessment", "assessment"),
            ("handling-code", "handling_code"),
            ("classification", "classification"),
        ):
            assert f'intelbus:{pred}="{grading[key]}"' in tags
        assert f'intelbus:force-area="{place["force_area"]}"' in tags
        assert f'intelbus:site-kind="{place["site_kind"]}"' in tags
        (ref,) = [
            o for o in _objects(e, "internal-reference") if _value(o, "type") == "intelbus record"
        ]
        assert _value(ref, "identifier") == rid
        assert f"version {v.version}" in ref.comment
        assert f"offset {v.offset}" in ref.comment
        (geo,) = _objects(e, "geolocation")
        assert _value(geo, "first-seen") == when
        assert _value(geo, "address") == place["address_or_area"]
        assert _value(geo, "text") == place["site_name"]
        assert _value(geo, "region") == place["force_area"]
        if place["latitude"] != REDACTED:
            assert (_value(geo, "latitude"), _value(geo, "longitude")) == (
                place["latitude"],
                place["longitude"],
            )
        refs = {
            _value(o, "type"): _value(o, "identifier") for o in _objects(e, "internal-reference")
        }
        assert refs.get("reporter ref") == payload["reporter_ref"]
        assert refs.get("police crime reference") == payload["police_crime_reference"]
        conditions = [
            _value(o, "text")
            for o in _objects(e, "annotation")
            if _value(o, "type") == "Disclaimer"
        ]
        assert conditions == grading["handling_conditions"]
        if v.kind == "sighting":
            assert 'misp:event-type="observation"' in tags
            behaviours = [t for t in tags if t.startswith("intelbus:behaviour=")]
            assert behaviours == [f'intelbus:behaviour="{b}"' for b in payload["behaviours"]]
            (note,) = [o for o in _objects(e, "annotation") if _value(o, "type") == "Annotation"]
            assert _value(note, "text") == payload["description"]
            plates = [_value(o, "license-plate-number") for o in _objects(e, "vehicle")]
            if payload["vehicles"] and payload["vehicles"][0]["registration"] != REDACTED:
                assert plates == [x["registration"] for x in payload["vehicles"]]
        else:
            assert 'misp:event-type="incident"' in tags
            (inc,) = _objects(e, "incident")
            assert _value(inc, "description") == payload["description"]
            assert f'intelbus:incident-category="{payload["category"]}"' in tags
            assert f'intelbus:incident-status="{payload["status"]}"' in tags
            (victim,) = _objects(e, "victim")
            assert _value(victim, "description") == payload["victim_details"]


def test_a_misp_export_is_logged_before_it_is_written(store, tmp_path: Path) -> None:
    """The access log names every exported record, the recipient and the format."""
    _export(store["path"])
    feed = runner.invoke(
        app,
        [
            "store", "export", "--store", str(store["path"]), "--format", "misp-feed",
            "--out", str(tmp_path / "feed"), *EXPORT,
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert feed.exit_code == 0, feed.output
    log = runner.invoke(
        app,
        ["store", "access-log", "--store", str(store["path"]), "--json"],
        catch_exceptions=False,
    )
    entries = [json.loads(line) for line in log.stdout.splitlines()]
    exports = [e for e in entries if e["action"] == "export"]
    assert [(e["query"]["format"], e["query"]["destination"]) for e in exports] == [
        ("misp", "stdout"),
        ("misp-feed", "file"),
    ]
    visible = {rid for rid, v in _views(store["path"]).items() if v.visible}
    for e in exports:
        assert e["recipient"] == "the MISP test"
        assert {tuple(r) for r in e["records"]} == {("cst", rid) for rid in visible}


def test_redacted_fields_are_left_out_never_exported_as_a_placeholder(store) -> None:
    text = _export(store["path"])
    assert REDACTED not in text
    assert "REDACTED]" not in text
    events = _events(text)
    (e,) = [x for x in events if x.uuid == event_uuid("cst", store["redacted"])]
    hidden = store["models"][store["redacted"]]
    assert 'intelbus:status="redacted"' in _tags(e)
    assert [x.uuid for x in events if 'intelbus:status="redacted"' in _tags(x)] == [e.uuid]
    (ref,) = [
        o for o in _objects(e, "internal-reference") if _value(o, "type") == "intelbus record"
    ]
    assert ref.comment.endswith("; redacted fields " + ", ".join(REDACTED_PATHS))
    assert not _objects(e, "person")  # persons redacted whole
    assert not _objects(e, "cloth")
    (geo,) = _objects(e, "geolocation")
    assert _value(geo, "latitude") is None
    assert _value(geo, "longitude") is None
    assert _value(geo, "spacial-reference") is None
    assert _value(geo, "address") == hidden.place.address_or_area  # not redacted: kept
    for vehicle, original in zip(_objects(e, "vehicle"), hidden.vehicles, strict=True):
        assert _value(vehicle, "license-plate-number") is None
        assert _value(vehicle, "make") == original.make
    own = json.dumps(json.loads(e.to_json()))
    for reg in (v.registration for v in hidden.vehicles if v.registration):
        assert reg not in text
    for person in hidden.persons:
        assert person.summary not in own
    assert str(hidden.place.latitude) not in own


def test_a_retracted_record_is_exported_tagged_retracted(store) -> None:
    events = {e.uuid: e for e in _events(_export(store["path"]))}
    e = events[event_uuid("cst", store["retracted"])]
    assert 'intelbus:status="retracted"' in _tags(e)
    assert e.info.startswith("[RETRACTED] ")
    others = [x for uid, x in events.items() if uid != e.uuid]
    assert not any('intelbus:status="retracted"' in _tags(x) for x in others)
    assert not any(x.info.startswith("[RETRACTED]") for x in others)


def test_a_corrected_record_exports_its_current_version_with_a_later_timestamp(store) -> None:
    views = _views(store["path"])
    v = views[store["corrected"]]
    assert v.version == 2
    events = {e.uuid: e for e in _events(_export(store["path"]))}
    e = events[event_uuid("cst", store["corrected"])]
    (inc,) = _objects(e, "incident")
    assert _value(inc, "description") == store["fixed"]["description"]
    assert _value(inc, "investigation_status") == "closed"
    assert 'intelbus:incident-status="CLOSED"' in _tags(e)
    assert int(e.analysis) == 2
    # The feed update key: later than the original's, so a MISP feed pull updates the event.
    assert e.timestamp > v.appended_at.replace(microsecond=0) - timedelta(seconds=1)
    assert e.timestamp >= max(h.at for h in v.history).replace(microsecond=0)


def test_distribution_never_syncs_further_than_tlp_allows(store) -> None:
    views = _views(store["path"])
    for e in _events(_export(store["path"])):
        (v,) = [x for x in views.values() if event_uuid("cst", x.record_id) == e.uuid]
        assert v.payload is not None
        code = v.payload["grading"]["handling_code"]
        expected = 0 if code == "C" else {"CLEAR": 3, "GREEN": 1}.get(str(v.tlp), 0)
        assert int(e.distribution) == expected, v.tlp


def test_every_tag_is_in_its_taxonomy_and_the_shipped_taxonomy_is_current(store) -> None:
    shipped_path = REPO / "docs" / "misp-taxonomy" / "intelbus" / "machinetag.json"
    shipped = json.loads(shipped_path.read_text())
    assert shipped == taxonomy()
    bundled = Taxonomies()
    data = Path(pytaxonomies.__file__).parent / "data" / "misp-taxonomies"
    schema = json.loads((data / "schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(shipped)
    known = {
        *bundled["tlp"].machinetags(),
        *bundled["misp"].machinetags(),
        *Taxonomy(shipped).machinetags(),
    }
    seen = set()
    for e in _events(_export(store["path"])):
        tags = _tags(e)
        seen.update(tags)
        assert set(tags) <= known, set(tags) - known
        # Exclusive predicates have one value per event.
        for pred in ("tlp", "intelbus:source-evaluation", "intelbus:classification"):
            assert sum(t.startswith(pred) for t in tags) == 1
    assert "tlp:amber+strict" in seen
    assert "tlp:red" in seen
    assert "tlp:clear" in seen
    # 3x5x2 is not the admiralty scale: no admiralty-scale tag is invented.
    assert not any(t.startswith("admiralty-scale:") for t in seen)


def test_every_object_follows_its_misp_template(store) -> None:
    for e in _events(_export(store["path"])):
        for o in e.objects:
            template = MISPObject(o.name, strict=True)
            assert o.template_uuid == template.template_uuid
            assert int(o.template_version) == int(template.template_version)
            relations = template._definition["attributes"]
            for a in o.attributes:
                assert a.object_relation in relations, (o.name, a.object_relation)
                assert a.type == relations[a.object_relation]["misp-attribute"]
                allowed = relations[a.object_relation].get("values_list")
                if allowed:
                    assert a.value in allowed, (o.name, a.object_relation, a.value)
            if o.name == "person":
                # MISP's person needs a name; the bus never carries one (a description only).
                assert not {a.object_relation for a in o.attributes} & {
                    "first-name",
                    "last-name",
                    "full-name",
                    "alias",
                    "handle",
                }
                continue
            rebuilt = MISPObject(o.name, strict=True)
            for a in o.attributes:
                rebuilt.add_attribute(a.object_relation, value=a.value)
            rebuilt.to_json(strict=True)  # raises InvalidMISPObject if required fields are missing


def test_the_export_is_the_same_every_time(store) -> None:
    assert _export(store["path"]) == _export(store["path"])


def test_reading_the_export_back_gives_the_same_records(store) -> None:
    text = _export(store["path"])
    views = {event_uuid("cst", rid): v for rid, v in _views(store["path"]).items()}
    read = list(records_from_misp(text))
    assert len(read) == 15
    compared = 0
    for where, data, error in read:
        v = views[where.split("(")[1].rstrip(")")]
        if v.redacted_fields:
            # Fields left out would read back as absent ("no persons"): refused, not guessed.
            assert error == (
                'a redacted export (tag intelbus:status="redacted"): fields were left out, '
                "not published"
            )
            continue
        if v.retracted:
            assert error == 'a retracted record (tag intelbus:status="retracted"): not published'
            continue
        assert error is None, (where, error)
        assert data is not None
        assert data["record_id"] == v.record_id
        assert v.payload is not None
        assert _record(data, v.kind) == MODELS[v.kind].model_validate(v.payload)
        compared += 1
    assert compared == 13
    # And through the producer's reader, as `intelbus publish --format misp` reads a file.
    items = list(read_items(text, "misp"))
    assert [(i.where, i.data, i.error) for i in items] == read


def _analyst_event(**drop: bool) -> dict[str, Any]:
    """A sighting an analyst made in MISP's UI: tags from the tlp and intelbus taxonomies, a
    geolocation with the time, an annotation, a vehicle; no intelbus record id."""
    e = MISPEvent()
    e.info = "Man filming the school gates from a parked van"
    e.date = datetime(2026, 10, 3, tzinfo=UTC).date()
    for tag in (
        "tlp:green",
        'intelbus:source-evaluation="S2"',
        'intelbus:intelligence-assessment="C"',
        'intelbus:handling-code="P"',
        'intelbus:classification="OFFICIAL"',
        'intelbus:site-kind="SCHOOL"',
        'intelbus:behaviour="FILMING"',
        'intelbus:behaviour="LOITERING"',
    ):
        if not drop.get(tag.split("=")[0].split(":")[-1] if "=" in tag else "tlp"):
            e.add_tag(tag)
    geo = e.add_object(name="geolocation")
    geo.add_attribute("first-seen", value="2026-10-03T15:20:00+01:00")
    geo.add_attribute("address", value="Station Road, Radlett")
    geo.add_attribute("region", value="Hertfordshire")
    geo.add_attribute("latitude", value=51.685)
    geo.add_attribute("longitude", value=-0.317)
    note = e.add_object(name="annotation")
    note.add_attribute("text", value="A man filmed the school gates for ten minutes from a van.")
    van = e.add_object(name="vehicle")
    van.add_attribute("license-plate-number", value="AB12CDE")
    van.add_attribute("make", value="Ford")
    ref = e.add_object(name="internal-reference")
    ref.add_attribute("identifier", value="CST-R-7781")
    ref.add_attribute("type", value="reporter ref")
    return json.loads(e.to_json())


def test_an_analysts_misp_event_becomes_a_valid_sighting() -> None:
    doc = _analyst_event()
    ((where, data, error),) = records_from_misp(json.dumps({"Event": doc}))
    assert error is None, error
    assert data is not None
    s = _record(data, "sighting")
    assert isinstance(s, Sighting)
    assert str(s.record_id) == doc["uuid"]  # the event's uuid: publishing it again is a no-op
    assert s.grading.tlp.value == "GREEN"
    assert (s.grading.source_evaluation.value, s.grading.assessment.value) == ("S2", "C")
    assert [b.value for b in s.behaviours] == ["FILMING", "LOITERING"]
    assert s.place.force_area.value == "HERTFORDSHIRE"  # "Hertfordshire" made canonical
    assert s.observed_at == datetime(2026, 10, 3, 14, 20, tzinfo=UTC)
    assert s.vehicles[0].registration == "AB12CDE"
    assert s.reporter_ref == "CST-R-7781"
    assert where.startswith("event 1 (")


def test_an_analysts_event_may_give_the_time_on_the_object_and_the_description_as_text() -> None:
    """MISP's timeline sets first_seen on the object itself; a plain text attribute is the
    simplest way to write a description in MISP's UI."""
    doc = _analyst_event()
    for o in doc["Object"]:
        if o["name"] == "geolocation":
            o["Attribute"] = [a for a in o["Attribute"] if a["object_relation"] != "first-seen"]
            o["first_seen"] = "2026-10-03T14:20:00+00:00"
    doc["Object"] = [o for o in doc["Object"] if o["name"] != "annotation"]
    doc["Attribute"] = [
        {"type": "text", "category": "Other", "value": "Filmed the gates from a van."}
    ]
    ((_, data, error),) = records_from_misp(json.dumps({"Event": doc}))
    assert error is None, error
    assert data is not None
    s = _record(data, "sighting")
    assert s.observed_at == datetime(2026, 10, 3, 14, 20, tzinfo=UTC)
    assert s.description == "Filmed the gates from a van."


@pytest.mark.parametrize(
    ("drop", "says"),
    [
        ("tlp", "no TLP tag"),
        ("source-evaluation", 'missing intelbus:source-evaluation="..."'),
        ("handling-code", 'missing intelbus:handling-code="..."'),
        ("classification", 'missing intelbus:classification="..."'),
    ],
)
def test_an_event_without_tlp_or_grading_is_refused_never_defaulted(drop: str, says: str) -> None:
    ((_, data, error),) = records_from_misp(json.dumps({"Event": _analyst_event(**{drop: True})}))
    assert data is None
    assert error is not None
    assert says in error


def test_admiralty_grades_are_refused_with_a_reason_not_converted() -> None:
    doc = _analyst_event(**{"source-evaluation": True, "intelligence-assessment": True})
    doc["Tag"] += [
        {"name": 'admiralty-scale:source-reliability="b"'},
        {"name": 'admiralty-scale:information-credibility="2"'},
    ]
    ((_, data, error),) = records_from_misp(json.dumps({"Event": doc}))
    assert data is None
    assert error is not None
    assert "admiralty-scale grades are not 3x5x2" in error


def test_conflicting_or_old_tlp_tags_are_refused() -> None:
    doc = _analyst_event()
    doc["Tag"].append({"name": "tlp:red"})
    ((_, _, error),) = records_from_misp(json.dumps({"Event": doc}))
    assert error is not None
    assert "conflicting TLP tags" in error
    doc = _analyst_event(tlp=True)
    doc["Tag"].append({"name": "tlp:ex:chr"})
    ((_, _, error),) = records_from_misp(json.dumps({"Event": doc}))
    assert error is not None
    assert "not TLP 2.0" in error


def test_unreadable_input_is_one_error_per_item() -> None:
    assert list(records_from_misp("{not json")) == [
        ("document", None, "not JSON: Expecting property name enclosed in double quotes at line 1")
    ]
    lines = json.dumps({"Event": _analyst_event()}) + "\n\n" + "{oops\n"
    assert list(records_from_misp(lines)) == [
        (
            "document",
            None,
            "not JSON, nor JSON Lines: line 3: Expecting property name enclosed in double quotes",
        )
    ]
    two = "\n".join(json.dumps({"Event": _analyst_event()}) for _ in range(2))
    assert [e for _, _, e in records_from_misp(two)] == [None, None]
    out = list(records_from_misp(json.dumps([{"Event": _analyst_event()}, 42, {"x": 1}])))
    assert [e for _, _, e in out] == [
        None,
        "not a MISP event (an object with an Event)",
        "not a MISP event (an object with an Event)",
    ]
    no_time = _analyst_event()
    for o in no_time["Object"]:
        o["Attribute"] = [a for a in o["Attribute"] if a["object_relation"] != "first-seen"]
    ((_, _, error),) = records_from_misp(json.dumps({"Event": no_time}))
    assert error is not None
    assert "no time" in error


def test_export_of_a_record_without_content_is_refused(store) -> None:
    s = open_store(str(store["path"]))
    try:
        withheld = s.get(WITHHELD_ID)
    finally:
        s.close()
    assert withheld is not None
    with pytest.raises(ValueError, match="holds no content"):
        misp_event(withheld)


def test_misp_feed_directory_is_what_misp_pulls(store, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    result = runner.invoke(
        app,
        [
            "store",
            "export",
            "--store",
            str(store["path"]),
            "--format",
            "misp-feed",
            "--out",
            str(out),
            *EXPORT,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted(p.name for p in out.glob("*.json") if p.name != "manifest.json")
    assert sorted(f"{u}.json" for u in manifest) == files
    assert len(files) == 15
    for name in [*files, "manifest.json", "hashes.csv"]:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    for uid, meta in manifest.items():
        e = MISPEvent()
        e.load_file(str(out / f"{uid}.json"))
        assert e.uuid == uid
        assert meta["info"] == e.info
        assert int(meta["timestamp"]) == int(e.timestamp.timestamp())
        assert "tlp:" in json.dumps(meta["Tag"])
    hashes = (out / "hashes.csv").read_text().splitlines()
    assert hashes
    assert {line.split(",")[1] for line in hashes} <= set(manifest)
    assert REDACTED not in "".join(p.read_text() for p in out.iterdir())


def test_a_feed_written_again_drops_the_events_no_longer_exported(store, tmp_path: Path) -> None:
    out = tmp_path / "feed"
    args = ["store", "export", "--store", str(store["path"]), "--format", "misp-feed"]
    result = runner.invoke(app, [*args, "--out", str(out), *EXPORT], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sightings = {
        f"{event_uuid('cst', rid)}.json"
        for rid, v in _views(store["path"]).items()
        if v.kind == "sighting"
    }
    assert sightings <= {p.name for p in out.iterdir()}
    (out / "notes.json").write_text("{}")  # not listed by a manifest: not ours, left alone
    result = runner.invoke(
        app, [*args, "--out", str(out), "--kind", "incident", *EXPORT], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    left = {p.name for p in out.iterdir()}
    assert left == {f"{u}.json" for u in manifest} | {"manifest.json", "hashes.csv", "notes.json"}
    assert not sightings & left
    assert len(manifest) == 6


def test_misp_feed_needs_a_directory() -> None:
    result = runner.invoke(
        app, ["store", "export", "--format", "misp-feed", *EXPORT], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 2
    assert "misp-feed writes a directory: name it with --out DIR" in result.output


def _view(record: Sighting | Incident) -> StoredRecordView:
    """A live stored record holding ``record`` in full (as a consumer storing everything would)."""
    payload = record.model_dump(mode="json")
    at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    return StoredRecordView(
        record_id=str(record.record_id),
        topic=TOPIC if record.KIND == "sighting" else INCIDENTS,
        partition=0,
        offset=1,
        producer_id="cst",
        kind=record.KIND,
        sequence=1,
        digest=b"\x00" * 32,
        created_at=at,
        appended_at=at,
        policy_hash=POLICY,
        rule_id="all",
        action="store",
        redacted_fields=(),
        tlp=payload["grading"]["tlp"],
        classification=payload["grading"]["classification"],
        force_area=payload["place"]["force_area"],
        occurred_at=None,
        payload=payload,
        version=1,
        status="live",
    )


def _varied(records: list[Sighting | Incident]) -> list[Sighting | Incident]:
    """The samples with what people leave out: no clothing or age, vehicles without a plate or
    with nothing known, no coordinates, no site name, nobody seen."""
    out = []
    for i, record in enumerate(records):
        data = record.model_dump(mode="json")
        if i % 5 == 0:
            data["place"].update(latitude=None, longitude=None)
        if i % 7 == 0:
            data["place"]["site_name"] = None
        if record.KIND == "sighting":
            for j, person in enumerate(data["persons"]):
                if (i + j) % 2:
                    person.update(clothing=None, approx_age=None)
            for j, vehicle in enumerate(data["vehicles"]):
                if (i + j) % 3 == 0:
                    vehicle["registration"] = None
                if (i + j) % 4 == 0:
                    vehicle.update(registration=None, make=None, model=None, colour=None)
            if i % 6 == 0:
                data["persons"] = []
        out.append(type(record).model_validate(data))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_every_sample_record_round_trips_through_a_misp_event(seed: int) -> None:
    """Hundreds of generated records, varied: export, load, read back: the same record."""
    records = _varied(samples.feed(seed=seed, sightings=60, incidents=60))
    text = json.dumps({"response": [misp_event(_view(r)) for r in records]})
    read = list(records_from_misp(text))
    assert len(read) == len(records)
    for record, (where, data, error) in zip(records, read, strict=True):
        assert error is None, (where, error)
        assert data is not None
        assert _record(data, record.KIND) == record
    # The variations happened (the test would prove little otherwise).
    sightings = [r for r in records if isinstance(r, Sighting)]
    assert any(v.registration is None and v.make is None for r in sightings for v in r.vehicles)
    assert any(p.clothing is None for r in sightings for p in r.persons)
    assert any(not r.persons for r in sightings)
    assert any(r.place.latitude is None for r in records)
    assert any(r.place.site_name is None for r in records)


def test_the_mapping_documents_every_schema_field() -> None:
    """docs/interop.md's table has a row for every field of both record schemas and of the
    common records they hold (people and vehicles: their fields named in their row)."""
    doc = (REPO / "docs" / "interop.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith(("| `", "| ("))]
    first = {
        name.removesuffix("[]")
        for line in rows
        for name in re.findall(r"`([a-z_.\[\]]+)`", line.split(" | ")[0])
    }
    schemas = REPO / "schemas"
    common = json.loads((schemas / "common" / "common.v1.avsc").read_text())
    named = {n["name"]: n for n in common if n["type"] == "record"}
    expected = set()
    for kind in ("sighting", "incident"):
        record = json.loads((schemas / "records" / f"{kind}.v1.avsc").read_text())
        expected |= {f["name"] for f in record["fields"]}
    expected |= {f"place.{f['name']}" for f in named["Place"]["fields"]}
    expected |= {f"grading.{f['name']}" for f in named["Grading"]["fields"]}
    expected -= {"place", "grading"}
    # place.latitude, place.longitude share a row, as observed_at / occurred_at do.
    assert expected <= first, expected - first
    for record, row_name in (("PersonDescription", "persons"), ("VehicleDescription", "vehicles")):
        (row,) = [line for line in rows if line.startswith(f"| `{row_name}[]`")]
        for field in named[record]["fields"]:
            words = {"summary": "summary", "approx_age": "age", "clothing": "clothing"}
            words |= {"registration": "license-plate-number", "colour": "exterior-color"}
            assert words.get(field["name"], field["name"]) in row, (record, field["name"])

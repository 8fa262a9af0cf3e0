"""Domain models: validation rules, and that they cannot drift from the .avsc files."""

from __future__ import annotations

import enum
import json
import types
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from intelbus.records import (
    _CONTROL,
    RECORD_TYPES,
    SCHEMA_NAMES,
    Behaviour,
    Correction,
    ForceArea,
    Grading,
    Heartbeat,
    Incident,
    IncidentCategory,
    Place,
    Retraction,
    Sighting,
    VehicleDescription,
    _printable,
    _uuid_text,
)
from intelbus.samples import correction_of, feed, one_incident_per_category, retraction_of
from intelbus.serde.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
GRADING = {
    "source_evaluation": "S2",
    "assessment": "B",
    "handling_code": "P",
    "handling_conditions": [],
    "tlp": "AMBER",
    "classification": "OFFICIAL",
}


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in defs:
        return defs[schema]
    if isinstance(schema, dict) and not isinstance(schema["type"], str):
        return _resolve(schema["type"], defs)
    return schema


def _collect(schema: Any, defs: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _collect(s, defs)
    elif isinstance(schema, dict):
        if schema["type"] in ("record", "enum", "fixed"):
            defs[schema["name"]] = schema
            for f in schema.get("fields", []):
                _collect(f["type"], defs)
        elif schema["type"] == "array":
            _collect(schema["items"], defs)


def _avro_shape(schema: Any, defs: dict[str, Any]) -> Any:
    s = _resolve(schema, defs)
    if isinstance(s, list):
        branches = [b for b in s if b != "null"]
        inner = [_avro_shape(b, defs) for b in branches]
        shape = inner[0] if len(inner) == 1 else ("union", tuple(sorted(map(str, inner))))
        return ("optional", shape) if "null" in s else shape
    if isinstance(s, str):
        return {"string": "str", "long": "int", "int": "int", "double": "float", "boolean": "bool"}[
            s
        ]
    kind = s["type"]
    if kind == "record":
        fields = ((f["name"], _avro_shape(f["type"], defs)) for f in s["fields"])
        return ("record", s["name"].rsplit(".", 1)[-1], tuple(sorted(fields, key=str)))
    if kind == "enum":
        return ("enum", tuple(s["symbols"]))
    if kind == "array":
        return ("array", _avro_shape(s["items"], defs))
    if kind == "long" and s.get("logicalType") == "timestamp-micros":
        return "datetime"
    return _avro_shape(kind, defs)


def _model_shape(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _model_shape(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = [_model_shape(a) for a in args]
        shape = inner[0] if len(inner) == 1 else ("union", tuple(sorted(map(str, inner))))
        return ("optional", shape) if type(None) in typing.get_args(tp) else shape
    if origin is tuple:
        return ("array", _model_shape(typing.get_args(tp)[0]))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ("enum", tuple(m.value for m in tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = ((name, _model_shape(hints[name])) for name in tp.model_fields)
        return ("record", tp.__name__, tuple(sorted(fields, key=str)))
    return {str: "str", int: "int", float: "float", bool: "bool", datetime: "datetime"}[tp]


@pytest.mark.parametrize("model", [Sighting, Incident, Correction, Retraction, Heartbeat])
def test_models_mirror_the_avsc_files(model: type[BaseModel]) -> None:
    """Field names, types, optionality and enum symbols agree (the .avsc files are the truth).

    Field order is not compared: values cross between the two as dicts keyed by field name.
    """
    schema = REGISTRY.current(model.SCHEMA).schema  # type: ignore[attr-defined]
    defs: dict[str, Any] = {}
    _collect(schema, defs)
    avro = _avro_shape(schema, defs)
    mirrored = _model_shape(model)
    assert avro == mirrored


def _sighting(**changes: Any) -> dict[str, Any]:
    base = {
        "record_id": str(uuid.uuid4()),
        "observed_at": "2026-10-01T09:30:00Z",
        "place": {
            "site_name": "Borehamwood synagogue",
            "site_kind": "SYNAGOGUE",
            "address_or_area": "Borehamwood",
            "force_area": "HERTFORDSHIRE",
        },
        "behaviours": ["PHOTOGRAPHING_ENTRANCES"],
        "description": "Photographed the entrance.",
        "reporter_ref": "CST-R-1",
        "grading": GRADING,
    }
    base.update(changes)
    return base


def test_a_human_written_json_sighting_validates() -> None:
    """The JSON an incident officer writes parses into a model with normalised fields."""
    s = Sighting.model_validate(_sighting(vehicles=[{"registration": "ab12 cde", "colour": "red"}]))
    assert s.vehicles[0].registration == "AB12CDE"
    assert s.observed_at.tzinfo is not None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"grading": None}, "grading"),
        ({"observed_at": "2026-10-01T09:30:00"}, "UTC"),
        ({"observed_at": datetime(2026, 10, 1, tzinfo=timezone(timedelta(hours=1)))}, "UTC"),
        ({"behaviours": []}, "behaviours"),
        ({"behaviours": ["WAVING"]}, "behaviours"),
        ({"description": "x" * 5000}, "description"),
        ({"record_id": "not-a-uuid"}, "record_id"),
        ({"unexpected": 1}, "unexpected"),
        (
            {
                "place": {
                    "site_name": None,
                    "site_kind": "SYNAGOGUE",
                    "address_or_area": "x",
                    "force_area": "NARNIA",
                }
            },
            "force_area",
        ),
        (
            {
                "place": {
                    "site_name": None,
                    "site_kind": "SYNAGOGUE",
                    "address_or_area": "x",
                    "force_area": "KENT",
                    "latitude": 95.0,
                    "longitude": 0.0,
                }
            },
            "latitude",
        ),
        (
            {
                "place": {
                    "site_name": None,
                    "site_kind": "SYNAGOGUE",
                    "address_or_area": "x",
                    "force_area": "KENT",
                    "latitude": 51.0,
                }
            },
            "both",
        ),
        ({"vehicles": [{"registration": "AB12 CDE!!"}]}, "registration"),
    ],
)
def test_invalid_records_are_refused(change: dict[str, Any], why: str) -> None:
    """Missing grading is invalid (never defaulted); naive or non-UTC times, bad enums and bounds too."""
    with pytest.raises(ValidationError, match=why):
        Sighting.model_validate(_sighting(**change))


def test_missing_grading_is_not_defaulted() -> None:
    """A record without its grading block cannot be built at all."""
    data = _sighting()
    del data["grading"]
    with pytest.raises(ValidationError, match="grading"):
        Sighting.model_validate(data)


@pytest.mark.parametrize(
    ("grading", "ok"),
    [
        ({"handling_code": "C", "handling_conditions": []}, False),
        ({"handling_code": "C", "handling_conditions": ["no-onward-disclosure"]}, True),
        ({"handling_code": "P", "handling_conditions": ["x"]}, False),
    ],
)
def test_handling_code_c_needs_its_conditions(grading: dict[str, Any], ok: bool) -> None:
    """Conditions must travel with code C, and only with it."""
    data = {**GRADING, **grading}
    if ok:
        assert Grading.model_validate(data).handling_conditions == tuple(
            grading["handling_conditions"]
        )
    else:
        with pytest.raises(ValidationError):
            Grading.model_validate(data)


def test_every_sample_round_trips_through_avro() -> None:
    """model -> Avro bytes -> model is the identity for the whole demo feed, corrections included."""
    for record in feed(seed=3):
        fp, payload = REGISTRY.encode(record.SCHEMA, record.to_avro())
        name, value = REGISTRY.decode(fp, payload)
        assert RECORD_TYPES[name].from_avro(value) == record
    original = feed(seed=3)[0]
    correction = Correction(
        record_id=str(uuid.uuid4()),
        corrects_record_id=original.record_id,
        corrected_at=datetime(2026, 10, 2, tzinfo=UTC),
        reason="wrong site",
        replacement=original,
        grading=original.grading,
    )
    fp, payload = REGISTRY.encode(Correction.SCHEMA, correction.to_avro())
    assert Correction.from_avro(REGISTRY.decode(fp, payload)[1]) == correction


def _walked(v: Any) -> Any:
    """The Avro value as the first codec built it: a field-by-field walk, enums as their symbols."""
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, BaseModel):
        out = {n: _walked(getattr(v, n)) for n in type(v).model_fields}
        if isinstance(v, Correction):
            out["replacement"] = (v.replacement.SCHEMA, out["replacement"])
        return out
    if isinstance(v, tuple):
        return [_walked(x) for x in v]
    return v


def test_the_compiled_avro_value_encodes_to_the_same_bytes_as_the_field_walk() -> None:
    """to_avro_dict (pydantic's dump) gives byte for byte the payload the field-by-field walk gave,
    for every kind, so a record published before still has the same content digest."""
    at = datetime(2026, 10, 2, tzinfo=UTC)
    records: list[Any] = list(feed(seed=3))
    records += [correction_of(r, description="moved", reason="wrong site", at=at) for r in records]
    records += [retraction_of(r, reason="mistaken", at=at) for r in records[:4]]
    records.append(
        Heartbeat.model_validate(
            {
                "producer_id": "cst",
                "sent_at": at,
                "interval_ms": 30_000,
                "streams": [
                    {"stream": "s", "last_sequence": 3, "partition": 1, "epoch": "ab" * 16}
                ],
            }
        )
    )
    kinds = {type(r) for r in records}
    assert kinds == {Sighting, Incident, Correction, Retraction, Heartbeat}
    for record in records:
        assert REGISTRY.encode(record.SCHEMA, record.to_avro_dict()) == REGISTRY.encode(
            record.SCHEMA, _walked(record)
        )


def test_a_correction_must_carry_the_corrected_id() -> None:
    """The replacement keeps the id of the record it corrects."""
    original = feed(seed=3)[0]
    other = feed(seed=4)[0]
    with pytest.raises(ValidationError, match="replacement"):
        Correction(
            record_id=str(uuid.uuid4()),
            corrects_record_id=original.record_id,
            corrected_at=datetime(2026, 10, 2, tzinfo=UTC),
            reason="x",
            replacement=other,
            grading=original.grading,
        )


def test_facts_carry_grading_and_area_but_no_text() -> None:
    """What policies see: the grading, kind, area and time, and nothing free-text."""
    s = Sighting.model_validate(_sighting())
    facts = s.facts()
    assert (facts.kind, facts.tlp.value, facts.source_evaluation, facts.force_area) == (
        "sighting",
        "AMBER",
        "2",
        "HERTFORDSHIRE",
    )
    assert "Photographed" not in repr(facts)


def test_place_and_vehicle_models_are_frozen() -> None:
    """Boundary objects are immutable."""
    v = VehicleDescription(registration="AB12CDE")
    with pytest.raises(ValidationError):
        v.registration = "X"  # type: ignore[misc]
    assert Place.model_config["frozen"] is True


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"description": 12}, "description"),
        ({"reporter_ref": b"CST-R-1"}, "reporter_ref"),
        ({"observed_at": 1_790_000_000}, "observed_at"),
        ({"observed_at": "2026-10-01"}, "UTC"),
        ({"observed_at": "2026-10-01T09:30:00+01:00"}, "UTC"),
        ({"police_crime_reference": 42}, "police_crime_reference"),
    ],
)
def test_models_are_strict_outside_enums_times_and_lists(change: dict[str, Any], why: str) -> None:
    """No number for a string, no bytes, no Unix-time number, no date without a time."""
    with pytest.raises(ValidationError, match=why):
        Sighting.model_validate(_sighting(**change))


def test_numbers_are_strict_too() -> None:
    """A heartbeat's counters are integers, not numeric strings."""
    good = {"producer_id": "cst", "sent_at": "2026-10-01T09:30:00Z", "interval_ms": 30000}
    beat = Heartbeat.model_validate({**good, "streams": [{"stream": "s", "last_sequence": 3}]})
    assert (beat.interval_ms, beat.streams[0].last_sequence) == (30000, 3)
    with pytest.raises(ValidationError, match="last_sequence"):
        Heartbeat.model_validate({**good, "streams": [{"stream": "s", "last_sequence": "3"}]})
    with pytest.raises(ValidationError, match="interval_ms"):
        Heartbeat.model_validate({**good, "interval_ms": "30000", "streams": []})


def test_a_human_written_json_file_validates_with_model_validate_json() -> None:
    """The CLI path: enums by symbol, an ISO time with Z, lists for arrays."""
    text = json.dumps(
        _sighting(
            persons=[{"summary": "Male, slim build", "approx_age": "20-30"}],
            vehicles=[{"registration": "ab12 cde", "make": "FORD"}],
        )
    )
    s = Sighting.model_validate_json(text)
    assert s.behaviours == (Behaviour.PHOTOGRAPHING_ENTRANCES,)
    assert s.place.force_area is ForceArea.HERTFORDSHIRE
    assert s.vehicles[0].registration == "AB12CDE"
    assert Sighting.model_validate_json(s.model_dump_json()) == s


def test_schema_names_map_each_model_to_its_schema() -> None:
    """Class -> full name, and back through RECORD_TYPES."""
    assert SCHEMA_NAMES[Sighting] == "org.intelbus.records.v1.Sighting"
    assert SCHEMA_NAMES[Heartbeat] == "org.intelbus.control.v1.Heartbeat"
    for cls, name in SCHEMA_NAMES.items():
        assert REGISTRY.current(name).full_name == name
        if cls is not Heartbeat:
            assert RECORD_TYPES[name] is cls


def test_samples_are_deterministic_and_cover_every_category() -> None:
    """Same seed, same records; one incident of each of CST's six categories."""
    assert feed(seed=5) == feed(seed=5)
    assert feed(seed=5) != feed(seed=6)
    assert [i.category for i in one_incident_per_category(2)] == list(IncidentCategory)
    original = feed(seed=5)[0]
    at = datetime(2026, 10, 2, tzinfo=UTC)
    fixed = correction_of(original, description="Corrected.", reason="typo", at=at)
    assert fixed.replacement.record_id == original.record_id
    assert fixed.replacement.description == "Corrected."
    gone = retraction_of(original, reason="duplicate", at=at)
    assert gone.retracts_record_id == original.record_id
    assert gone.grading == original.grading


def test_a_correction_replacement_cannot_break_model_rules() -> None:
    """correction_of validates the replacement (model_copy alone would not)."""
    original = feed(seed=5)[0]
    with pytest.raises(ValidationError):
        correction_of(
            original, description="x" * 5000, reason="r", at=datetime(2026, 10, 2, tzinfo=UTC)
        )


_UUID_LIKE = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.text(alphabet="0123456789abcdefABCDEF-{}:urn ", max_size=45),
    st.text(max_size=40),
)


@given(_UUID_LIKE)
def test_record_id_text_is_the_uuid_modules_canonical_form(value: str) -> None:
    """The record-id validator's fast path (already canonical text) gives exactly what
    str(uuid.UUID(value)) gives, and refuses exactly what it refuses."""
    try:
        expected: str | None = str(uuid.UUID(value))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):  # noqa: PT011 - the uuid module's own refusal
            _uuid_text(value)
    else:
        assert _uuid_text(value) == expected


def test_printable_fast_path_never_lets_a_control_character_through() -> None:
    """``str.isprintable`` (the fast path of the text check) is true for no character the exact
    check refuses, over every code point; and text refused either way is refused."""

    assert not [c for c in map(chr, range(0x110000)) if c.isprintable() and _CONTROL.search(c)]
    for text in ("tab\tand newline\n are fine", "plain", ""):
        assert _printable(text) == text
    for text in ("bell\x07", "nul\x00", "del\x7f", "surrogate\ud800", "esc\x1b[31m"):
        with pytest.raises(ValueError, match="control characters"):
            _printable(text)

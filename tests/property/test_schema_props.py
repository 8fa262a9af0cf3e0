"""Hypothesis properties of the wire contract: round trips, hostile bytes, and the lint.

* Any valid Sighting or Incident survives model -> Avro bytes -> model unchanged.
* Random bytes, and bit flips or truncations of real payloads, decode to a valid model or raise
  SchemaViolation: never another exception. (Only linted schemas are used, under the size cap.)
* On generated schemas, the lint refuses a collection exactly when fastavro's own encoder writes
  one of its items in zero bytes, and it always refuses a recursive named type.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelbus.errors import SchemaDefinitionError, SchemaViolation
from intelbus.policy.facts import Classification, Tlp
from intelbus.records import (
    MAX_SHORT,
    Behaviour,
    ForceArea,
    Grading,
    HandlingCode,
    Incident,
    IncidentCategory,
    IncidentMode,
    IncidentStatus,
    IntelligenceAssessment,
    PersonDescription,
    Place,
    Sighting,
    SiteKind,
    SourceEvaluation,
    VehicleDescription,
    VictimType,
)
from intelbus.samples import feed
from intelbus.serde import avro
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
FINGERPRINTS = [REGISTRY.current(name).fingerprint for name in REGISTRY.names()]
PAYLOADS = [REGISTRY.encode_model(r) for r in feed(seed=9, sightings=4, incidents=4)]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Avro strings are UTF-8: lone surrogates cannot be encoded, so they are not valid text here.
# No surrogates, and no control characters: the models refuse both (issue 20).
_chars = st.characters(blacklist_categories=("Cs", "Cc"))


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_chars, min_size=1, max_size=max_size)


# Hypothesis takes naive bounds and attaches the time zone itself.
_times = st.datetimes(
    min_value=datetime(1970, 1, 1),  # noqa: DTZ001
    max_value=datetime(2199, 12, 31),  # noqa: DTZ001 - the models refuse 2200 and later
    timezones=st.just(UTC),
)
_maybe = st.none
_grading = st.builds(
    Grading,
    source_evaluation=st.sampled_from(SourceEvaluation),
    assessment=st.sampled_from(IntelligenceAssessment),
    handling_code=st.just(HandlingCode.P),
    handling_conditions=st.just(()),
    tlp=st.sampled_from(Tlp),
    classification=st.sampled_from(Classification),
) | st.builds(
    Grading,
    source_evaluation=st.sampled_from(SourceEvaluation),
    assessment=st.sampled_from(IntelligenceAssessment),
    handling_code=st.just(HandlingCode.C),
    handling_conditions=st.lists(_text(40), min_size=1, max_size=3).map(tuple),
    tlp=st.sampled_from(Tlp),
    classification=st.sampled_from(Classification),
)
_position = st.tuples(
    st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False)
) | st.just((None, None))
_place = st.builds(
    lambda kind, area, force, name, pos: Place(
        site_name=name,
        site_kind=kind,
        address_or_area=area,
        force_area=force,
        latitude=pos[0],
        longitude=pos[1],
    ),
    st.sampled_from(SiteKind),
    _text(MAX_SHORT),
    st.sampled_from(ForceArea),
    _maybe() | _text(60),
    _position,
)
_person = st.builds(
    PersonDescription,
    summary=_text(80),
    approx_age=_maybe() | _text(50),
    clothing=_maybe() | _text(80),
)
_vehicle = st.builds(
    VehicleDescription,
    registration=_maybe() | st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True),
    make=_maybe() | _text(50),
    model=_maybe() | _text(50),
    colour=_maybe() | _text(50),
)
_ids = st.uuids().map(str)
sightings = st.builds(
    Sighting,
    record_id=_ids,
    observed_at=_times,
    place=_place,
    behaviours=st.lists(st.sampled_from(Behaviour), min_size=1, max_size=4).map(tuple),
    description=_text(300),
    persons=st.lists(_person, max_size=3).map(tuple),
    vehicles=st.lists(_vehicle, max_size=3).map(tuple),
    reporter_ref=_text(40),
    police_crime_reference=_maybe() | _text(40),
    grading=_grading,
)
incidents = st.builds(
    Incident,
    record_id=_ids,
    occurred_at=_times,
    place=_place,
    category=st.sampled_from(IncidentCategory),
    mode=st.sampled_from(IncidentMode),
    victim_type=st.sampled_from(VictimType),
    victim_details=_maybe() | _text(200),
    offender_description=_maybe() | _text(200),
    description=_text(300),
    police_crime_reference=_maybe() | _text(40),
    status=st.sampled_from(IncidentStatus),
    reporter_ref=_text(40),
    grading=_grading,
)


@SETTINGS
@given(record=sightings | incidents)
def test_models_round_trip_through_avro(record: Sighting | Incident) -> None:
    """model -> (fingerprint, bytes) -> model is the identity, via the dict form too."""
    fp, payload = REGISTRY.encode_model(record)
    assert REGISTRY.decode_model(fp, payload) == record
    assert type(record).from_avro_dict(record.to_avro_dict()) == record


def _decodes_or_violates(fp: bytes, data: bytes) -> None:
    with contextlib.suppress(SchemaViolation):
        REGISTRY.decode_model(fp, data)


@SETTINGS
@given(fp=st.sampled_from(FINGERPRINTS), data=st.binary(max_size=400))
def test_random_bytes_give_schema_violation_and_nothing_else(fp: bytes, data: bytes) -> None:
    """Whatever the bytes, the only error is SchemaViolation (any other exception fails here)."""
    _decodes_or_violates(fp, data)


@SETTINGS
@given(
    which=st.sampled_from(range(len(PAYLOADS))),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4),
    cut=st.none() | st.integers(0, 10**6),
)
def test_bit_flips_and_truncations_give_schema_violation_and_nothing_else(
    which: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """Damaged real payloads near the valid space exercise the deeper decoder paths."""
    fp, payload = PAYLOADS[which]
    data = bytearray(payload)
    for index, bit in flips:
        data[index % len(data)] ^= 1 << bit
    _decodes_or_violates(fp, bytes(data if cut is None else data[: cut % (len(data) + 1)]))


# --- The lint, on generated schemas ----------------------------------------------------------------

_PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


@st.composite
def _schemas(draw: st.DrawFn, depth: int = 0) -> Any:
    """Acyclic schemas; every named type is defined once, inline, with a fresh name."""
    counter = draw(st.shared(st.builds(itertools.count), key="names"))
    choices = (
        ["primitive"]
        if depth >= 3
        else ["primitive", "enum", "fixed", "record", "array", "map", "union"]
    )
    kind = draw(st.sampled_from(choices))
    if kind == "primitive":
        return draw(st.sampled_from(_PRIMITIVES))
    if kind == "enum":
        n = draw(st.integers(1, 3))
        return {
            "type": "enum",
            "name": f"g.E{next(counter)}",
            "symbols": [f"S{i}" for i in range(n)],
        }
    if kind == "fixed":
        return {"type": "fixed", "name": f"g.F{next(counter)}", "size": draw(st.integers(0, 2))}
    if kind == "record":
        name = f"g.R{next(counter)}"
        fields = [
            {"name": f"f{i}", "type": draw(_schemas(depth + 1))}
            for i in range(draw(st.integers(0, 3)))
        ]
        return {"type": "record", "name": name, "fields": fields}
    if kind == "array":
        return {"type": "array", "items": draw(_schemas(depth + 1))}
    if kind == "map":
        return {"type": "map", "values": draw(_schemas(depth + 1))}
    return draw(st.lists(st.sampled_from(_PRIMITIVES), min_size=1, max_size=3, unique=True))


def _minimal(s: Any) -> Any:
    """The smallest value of ``s`` (for a union, a value of its first branch)."""
    if isinstance(s, list):
        return _minimal(s[0])
    if isinstance(s, str):
        return {
            "null": None,
            "boolean": False,
            "int": 0,
            "long": 0,
            "float": 0.0,
            "double": 0.0,
            "bytes": b"",
            "string": "",
        }[s]
    kind = s["type"]
    if kind == "enum":
        return s["symbols"][0]
    if kind == "fixed":
        return b"\0" * s["size"]
    if kind == "record":
        return {f["name"]: _minimal(f["type"]) for f in s["fields"]}
    return [] if kind == "array" else {}


def _zero_byte_collections(s: Any) -> bool:
    """The oracle: does fastavro's encoder write some array/map item in zero bytes?"""
    if isinstance(s, list):
        return any(_zero_byte_collections(b) for b in s)
    if isinstance(s, str):
        return False
    kind = s["type"]
    if kind == "record":
        return any(_zero_byte_collections(f["type"]) for f in s["fields"])
    if kind in ("array", "map"):
        inner = s["items"] if kind == "array" else s["values"]
        wrapper = {"type": "record", "name": "oracle.W", "fields": [{"name": "x", "type": inner}]}
        empty = len(avro.encode(avro.parse_schema(wrapper), {"x": _minimal(inner)})) == 0
        return empty or _zero_byte_collections(inner)
    return False


@settings(max_examples=150, deadline=None)
@given(schema=_schemas())
def test_the_lint_refuses_exactly_the_zero_byte_collections(schema: Any) -> None:
    """Checked against fastavro's encoder, not against our own size arithmetic."""
    top = {"type": "record", "name": "g.Top", "fields": [{"name": "x", "type": schema}]}
    normalised = normalise(top, None, {})
    if _zero_byte_collections(schema):
        with pytest.raises(SchemaDefinitionError, match="zero bytes"):
            lint(normalised)
    else:
        lint(normalised)


@settings(max_examples=60, deadline=None)
@given(schema=_schemas(), wrap=st.sampled_from(["union", "array", "map", "field"]))
def test_the_lint_refuses_every_recursive_named_type(schema: Any, wrap: str) -> None:
    """A record that refers back to itself, at any depth and through any container, is refused."""
    back: Any = {
        "union": ["null", "g.Self"],
        "array": {"type": "array", "items": "g.Self"},
        "map": {"type": "map", "values": "g.Self"},
        "field": "g.Self",
    }[wrap]
    inner = {
        "type": "record",
        "name": "g.Inner",
        "fields": [{"name": "x", "type": schema}, {"name": "back", "type": back}],
    }
    top = {"type": "record", "name": "g.Self", "fields": [{"name": "inner", "type": inner}]}
    with pytest.raises(SchemaDefinitionError, match="recursive"):
        lint(normalise(top, None, {}))

"""The schema lint: the shapes that let hostile bytes crash or exhaust fastavro are never registered.

No test here hands a dangerous schema to the decoder: the lint (and so the registry) refuses it
first. The one decode below runs against a schema the lint accepts, and is bounded by the input.
"""

from __future__ import annotations

from typing import Any

import pytest

from intelbus.errors import SchemaDefinitionError, SchemaViolation
from intelbus.serde import avro
from intelbus.serde.compat import lint, min_encoded_size, normalise
from intelbus.serde.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()


def _with(field_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": "a.R", "fields": [{"name": "xs", "type": field_type}]}


def _array(items: Any) -> dict[str, Any]:
    return _with({"type": "array", "items": items})


EMPTY = {"type": "record", "name": "a.Empty", "fields": []}
NULLS = {
    "type": "record",
    "name": "a.Nulls",
    "fields": [{"name": "a", "type": "null"}, {"name": "b", "type": EMPTY}],
}


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(_array("null"), id="array<null>: 6 bytes declare 10^12 items"),
        pytest.param(_array(EMPTY), id="array<empty record>"),
        pytest.param(_array(NULLS), id="array<record of zero-byte fields>"),
        pytest.param(_array({"type": "fixed", "name": "a.F0", "size": 0}), id="array<fixed(0)>"),
        pytest.param(_array({"type": "array", "items": "null"}), id="nested array<null>"),
        pytest.param(_with({"type": "map", "values": "null"}), id="map<null>"),
        pytest.param(
            _with(["null", {"type": "array", "items": {"type": "null"}}]),
            id="array<null> inside a union",
        ),
        pytest.param(
            _with({"type": {"type": "array", "items": "null"}}), id="array<null> wrapped in type"
        ),
    ],
)
def test_collections_of_zero_byte_items_are_refused(schema: dict[str, Any]) -> None:
    """An array item that can encode in zero bytes is an allocation bomb waiting for its count."""
    with pytest.raises(SchemaDefinitionError, match="zero bytes"):
        lint(normalise(schema, None, {}))


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(
            {
                "type": "record",
                "name": "a.Node",
                "fields": [{"name": "next", "type": ["null", "a.Node"]}],
            },
            id="self-recursive",
        ),
        pytest.param(
            {
                "type": "record",
                "name": "a.A",
                "fields": [
                    {
                        "name": "b",
                        "type": {
                            "type": "record",
                            "name": "a.B",
                            "fields": [{"name": "a", "type": ["null", "a.A"]}],
                        },
                    }
                ],
            },
            id="mutually recursive",
        ),
        pytest.param(
            {
                "type": "record",
                "name": "a.Tree",
                "fields": [{"name": "children", "type": {"type": "array", "items": "a.Tree"}}],
            },
            id="recursive through an array",
        ),
        pytest.param(
            {
                "type": "record",
                "name": "a.M",
                "fields": [{"name": "m", "type": {"type": "map", "values": "M"}}],
            },
            id="recursive through a map, short name",
        ),
    ],
)
def test_recursive_named_types_are_refused(schema: dict[str, Any]) -> None:
    """A ~5 KB payload for a recursive schema segfaulted fastavro's C reader (SECURITY.md)."""
    with pytest.raises(SchemaDefinitionError, match="recursive"):
        lint(normalise(schema, None, {}))


def test_the_registry_refuses_what_the_lint_refuses() -> None:
    """register() lints first, so a dangerous schema never reaches the decoder."""
    registry = SchemaRegistry()
    with pytest.raises(SchemaDefinitionError, match="zero bytes"):
        registry.register("a.R", 1, normalise(_array("null"), None, {}))
    assert registry.names() == []


@pytest.mark.parametrize(
    ("schema", "size"),
    [
        ("null", 0),
        ("boolean", 1),
        ("long", 1),
        ("float", 4),
        ("double", 8),
        ("string", 1),
        ("bytes", 1),
        (["null", "string"], 1),
        ({"type": "enum", "name": "a.One", "symbols": ["ONLY"]}, 1),
        ({"type": "fixed", "name": "a.F3", "size": 3}, 3),
        (EMPTY, 0),
        (NULLS, 0),
        ({"type": "array", "items": "null"}, 1),
        ({"type": "map", "values": "long"}, 1),
        ({"type": "long", "logicalType": "timestamp-micros"}, 1),
    ],
)
def test_min_encoded_size_matches_avro(schema: Any, size: int) -> None:
    """The fewest bytes of each type, as the Avro binary encoding defines them."""
    assert min_encoded_size(normalise(schema, None, {}), {}) == size


@pytest.mark.parametrize(
    "items",
    [
        pytest.param({"type": "enum", "name": "a.One", "symbols": ["ONLY"]}, id="one-symbol enum"),
        pytest.param(["null", "string"], id="union with a null branch"),
        pytest.param({"type": "record", "name": "a.P", "fields": [{"name": "n", "type": "null"}, {"name": "b", "type": "boolean"}]}, id="record with one byte"),
        pytest.param({"type": "fixed", "name": "a.F1", "size": 1}, id="fixed(1)"),
    ],
)  # fmt: skip
def test_items_of_at_least_one_byte_are_accepted(items: Any) -> None:
    """A one-symbol enum still writes its index (0x00), a union its branch: one byte each."""
    lint(normalise(_array(items), None, {}))


def test_a_huge_count_of_one_byte_items_stops_at_the_end_of_input() -> None:
    """With one-byte items, 10^12 declared items end at EOF: the input bounds the work."""
    parsed = avro.parse_schema(
        normalise(_array({"type": "enum", "name": "a.One", "symbols": ["ONLY"]}), None, {})
    )
    count = b"\x80\x80\x80\x80\x80\x80\x80\x80\x01"  # zig-zag varint of 2^56 -> 2^55 items
    with pytest.raises(SchemaViolation) as caught:
        avro.decode(count + b"\x00" * 1000, parsed, parsed)
    # The end of the input stopped it (a MemoryError is a SchemaViolation too, but not this claim).
    assert isinstance(caught.value.__cause__, EOFError), repr(caught.value.__cause__)


def test_the_lint_accepts_the_bus_schemas() -> None:
    """Every registered schema passed the lint (arrays of strings, enums and non-empty records)."""
    for name in REGISTRY.names():
        for version in REGISTRY.versions(name):
            lint(version.schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "fields": []},
        {"type": "record", "name": "a.R"},
        {"type": "enum", "name": "a.E"},
        {"type": 42},
        {"no": "type"},
        _with("a.Undefined"),
    ],
)
def test_malformed_schemas_are_definition_errors(schema: Any) -> None:
    """A broken schema is a SchemaDefinitionError at registration, never a KeyError from a walk."""
    with pytest.raises(SchemaDefinitionError):
        SchemaRegistry().register("a.R", 1, normalise(schema, None, {}))

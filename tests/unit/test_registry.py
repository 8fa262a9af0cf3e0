"""The schema registry: fingerprints, backward compatibility, the lint, and hostile payloads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from intelbus.errors import SchemaDefinitionError, SchemaViolation, UnknownSchema
from intelbus.samples import feed
from intelbus.serde import avro
from intelbus.serde.compat import check_backward, lint, normalise
from intelbus.serde.registry import SchemaRegistry, fingerprint
from schemas import schema_dir

REGISTRY = SchemaRegistry.load()
SIGHTING = "org.intelbus.records.v1.Sighting"


def test_every_writer_schema_is_registered_by_fingerprint() -> None:
    """Each schema resolves from its own 32-byte fingerprint; an unknown one is refused."""
    for name in REGISTRY.names():
        current = REGISTRY.current(name)
        assert len(current.fingerprint) == 32
        assert REGISTRY.by_fingerprint(current.fingerprint) is current
    with pytest.raises(UnknownSchema):
        REGISTRY.by_fingerprint(b"\x00" * 32)


def _tree_with(tmp_path: Path, extra: dict[str, Any]) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schema_dir(), root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (root / "records" / "sighting.v2.avsc").write_text(json.dumps(extra))
    return root


def _sighting_v2(new_field: dict[str, Any]) -> dict[str, Any]:
    v1 = json.loads((schema_dir() / "records" / "sighting.v1.avsc").read_text())
    v1["fields"].append(new_field)
    return v1


def test_a_new_field_without_default_is_an_incompatible_change(tmp_path: Path) -> None:
    """v2 adding a required field could not read v1 records: refused at load."""
    root = _tree_with(tmp_path, _sighting_v2({"name": "weather", "type": "string"}))
    with pytest.raises(SchemaDefinitionError, match="weather: new field without a default"):
        SchemaRegistry.load(root)


def test_a_new_field_with_default_reads_old_records(tmp_path: Path) -> None:
    """v2 with a defaulted field loads, and v1 bytes decode into the v2 shape with the default."""
    root = _tree_with(
        tmp_path, _sighting_v2({"name": "weather", "type": ["null", "string"], "default": None})
    )
    registry = SchemaRegistry.load(root)
    record = feed(seed=1, sightings=1, incidents=0)[0]
    v1 = registry.versions(SIGHTING)[0]
    payload = avro.encode(v1.parsed, record.to_avro())
    name, value = registry.decode(v1.fingerprint, payload)
    assert name == SIGHTING
    assert registry.current(SIGHTING).version == 2
    assert value["weather"] is None
    assert value["record_id"] == record.record_id


def test_removing_an_enum_symbol_is_incompatible() -> None:
    """Old records with the removed symbol could not be read."""
    old = {"type": "enum", "name": "a.E", "symbols": ["X", "Y"]}
    new = {"type": "enum", "name": "a.E", "symbols": ["X"]}
    with pytest.raises(SchemaDefinitionError, match="removed"):
        check_backward(new, old)
    check_backward(old, new)


def test_type_promotion_is_compatible_and_narrowing_is_not() -> None:
    """int -> long is fine; long -> int is not."""
    rec = lambda t: {"type": "record", "name": "a.R", "fields": [{"name": "n", "type": t}]}  # noqa: E731
    check_backward(rec("long"), rec("int"))
    with pytest.raises(SchemaDefinitionError, match="cannot read"):
        check_backward(rec("int"), rec("long"))


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (
            {
                "type": "record",
                "name": "a.Node",
                "fields": [{"name": "next", "type": ["null", "a.Node"]}],
            },
            "recursive",
        ),
        (
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
            "recursive",
        ),
        (
            {
                "type": "record",
                "name": "a.R",
                "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}],
            },
            "zero bytes",
        ),
        (
            {
                "type": "record",
                "name": "a.R",
                "fields": [
                    {
                        "name": "xs",
                        "type": {
                            "type": "map",
                            "values": {"type": "record", "name": "a.Empty", "fields": []},
                        },
                    }
                ],
            },
            "zero bytes",
        ),
        (
            {
                "type": "record",
                "name": "a.R",
                "fields": [
                    {
                        "name": "xs",
                        "type": {
                            "type": "array",
                            "items": {"type": "enum", "name": "a.One", "symbols": ["ONLY"]},
                        },
                    }
                ],
            },
            "zero bytes",
        ),
        (
            {
                "type": "record",
                "name": "a.R",
                "fields": [
                    {
                        "name": "xs",
                        "type": {
                            "type": "array",
                            "items": {"type": "fixed", "name": "a.F0", "size": 0},
                        },
                    }
                ],
            },
            "zero bytes",
        ),
    ],
)
def test_the_lint_refuses_recursion_and_zero_byte_items(schema: dict[str, Any], why: str) -> None:
    """The shapes that let hostile bytes crash or exhaust the decoder never get registered."""
    with pytest.raises(SchemaDefinitionError, match=why):
        lint(normalise(schema, None, {}))


def test_the_lint_accepts_the_bus_schemas() -> None:
    """Arrays of strings, enums with several symbols and records with content are fine."""
    for name in REGISTRY.names():
        lint(REGISTRY.current(name).schema)


def test_two_schemas_with_one_fingerprint_are_refused() -> None:
    """The canonical form ignores docs and logical types: such a pair cannot both be registered."""
    registry = SchemaRegistry()
    a = {"type": "record", "name": "a.R", "fields": [{"name": "t", "type": "long"}]}
    b = {
        "type": "record",
        "name": "a.R",
        "doc": "x",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}],
    }
    assert fingerprint(a) == fingerprint(b)
    registry.register("a.R", 1, a)
    with pytest.raises(SchemaDefinitionError):
        registry.register("a.R2", 1, b)


def _payload() -> tuple[bytes, bytes]:
    record = feed(seed=2, sightings=1, incidents=0)[0]
    return REGISTRY.encode(SIGHTING, record.to_avro())


def test_trailing_garbage_is_refused() -> None:
    """fastavro would ignore trailing bytes; the codec refuses them."""
    fp, payload = _payload()
    with pytest.raises(SchemaViolation, match="trailing"):
        REGISTRY.decode(fp, payload + b"GARBAGE")


def test_a_huge_declared_length_is_a_schema_violation_not_an_allocation() -> None:
    """A string claiming 2^62 bytes fails fast with a typed error."""
    fp, payload = _payload()
    # The record id is the first field: a zig-zag varint length, then its bytes.
    huge = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    with pytest.raises(SchemaViolation):
        REGISTRY.decode(fp, huge + payload[37:])


def test_an_oversized_payload_is_refused_before_decoding() -> None:
    """The size cap is checked first."""
    fp, _ = _payload()
    with pytest.raises(SchemaViolation, match="exceeds"):
        REGISTRY.decode(fp, b"\x00" * (avro.MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("cut", [0, 1, 5, 20, 60])
def test_truncated_payloads_are_schema_violations(cut: int) -> None:
    """Every truncation gives the typed error."""
    fp, payload = _payload()
    with pytest.raises(SchemaViolation):
        REGISTRY.decode(fp, payload[:cut])

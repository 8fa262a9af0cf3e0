"""The schema registry: fingerprints, backward compatibility, and hostile payloads.

The lint has its own file (test_schema_lint.py). Hostile decodes here only ever run against the
registered (linted) schemas, under the payload cap, so none of them can take the process down.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from intelbus.errors import SchemaDefinitionError, SchemaViolation, UnknownSchema
from intelbus.records import SCHEMA_NAMES, Heartbeat, Retraction, StreamHead
from intelbus.samples import feed
from intelbus.serde import avro
from intelbus.serde.compat import check_backward
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
    with pytest.raises(SchemaDefinitionError, match=r"has the fingerprint of a\.R v1"):
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
    """A string claiming 2^62 bytes fails fast with a typed error, without allocating it."""
    fp, payload = _payload()
    # The record id is the first field: a zig-zag varint length (36 -> 0x48), then its 36 bytes.
    assert payload[0] == 0x48
    huge = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(SchemaViolation) as caught:
        REGISTRY.decode(fp, huge + payload[37:])
    assert isinstance(caught.value.__cause__, EOFError)
    assert time.perf_counter() - start < 1.0
    # ru_maxrss is in KiB on Linux: the peak grew by less than 64 MiB.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_a_huge_array_count_against_a_real_schema_fails_at_the_end_of_input() -> None:
    """Every item of our arrays costs a byte, so 10^12 declared behaviours stop at the input's end."""
    record = feed(seed=2, sightings=1, incidents=0)[0]
    fp, payload = REGISTRY.encode_model(record)
    # The behaviours array follows record_id, observed_at and place: measure those three.
    full = REGISTRY.current(SIGHTING).schema
    head = {**full, "name": "p.Head", "fields": full["fields"][:3]}
    value = record.to_avro_dict()
    prefix = avro.encode(
        avro.parse_schema(head), {f["name"]: value[f["name"]] for f in head["fields"]}
    )
    assert payload.startswith(prefix)
    n, varint = 10**12 * 2, bytearray()  # the zig-zag varint of a positive count is count * 2
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    start = time.perf_counter()
    with pytest.raises(SchemaViolation) as caught:
        REGISTRY.decode(fp, prefix + bytes(varint) + b"\x02" * 1000)
    assert isinstance(caught.value.__cause__, EOFError)
    assert time.perf_counter() - start < 1.0


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


@pytest.mark.parametrize(
    ("reader", "writer", "ok"),
    [
        ("string", "bytes", True),
        ("bytes", "string", True),
        ("double", "int", True),
        ("float", "long", True),
        ("int", "float", False),
        (["null", "string"], "string", True),
        ("string", ["null", "string"], False),
        (["null", "string", "long"], ["null", "string"], True),
        (["null", "string"], ["null", "string", "long"], False),
        (
            {"type": "long", "logicalType": "timestamp-micros"},
            {"type": "long", "logicalType": "timestamp-millis"},
            False,
        ),
        ({"type": "array", "items": "long"}, {"type": "array", "items": "int"}, True),
        ({"type": "map", "values": "int"}, {"type": "map", "values": "long"}, False),
    ],
)
def test_avro_resolution_rules(reader: Any, writer: Any, ok: bool) -> None:
    """Promotions, string<->bytes, unions and logical types, inside a record field."""

    def rec(t: Any) -> dict[str, Any]:
        return {"type": "record", "name": "a.R", "fields": [{"name": "x", "type": t}]}

    if ok:
        check_backward(rec(reader), rec(writer))
    else:
        with pytest.raises(SchemaDefinitionError, match=r"\.x"):
            check_backward(rec(reader), rec(writer))


def test_an_enum_with_a_default_may_drop_symbols() -> None:
    """Avro maps an unknown writer symbol to the reader's default."""
    old = {"type": "enum", "name": "a.E", "symbols": ["X", "Y"]}
    check_backward({"type": "enum", "name": "a.E", "symbols": ["X"], "default": "X"}, old)
    with pytest.raises(SchemaDefinitionError, match="default"):
        check_backward({"type": "enum", "name": "a.E", "symbols": ["X"], "default": "Z"}, old)


def test_removed_fields_and_renames_by_alias_are_compatible() -> None:
    """The decoder skips a field only the writer has; an alias finds a renamed one."""
    old = {
        "type": "record",
        "name": "a.R",
        "fields": [{"name": "gone", "type": "string"}, {"name": "old_name", "type": "long"}],
    }
    new = {
        "type": "record",
        "name": "a.R",
        "fields": [{"name": "new_name", "type": "long", "aliases": ["old_name"]}],
    }
    check_backward(new, old)


def test_a_renamed_record_is_incompatible() -> None:
    """Named types match by name (or alias)."""
    old = {"type": "record", "name": "a.R", "fields": []}
    with pytest.raises(SchemaDefinitionError, match="does not match"):
        check_backward({"type": "record", "name": "a.S", "fields": []}, old)
    check_backward({"type": "record", "name": "a.S", "aliases": ["a.R"], "fields": []}, old)


@pytest.mark.parametrize(
    ("field_type", "default"),
    [("string", None), (["null", "string"], "x"), ("long", "1"), ("boolean", 0)],
)
def test_a_new_field_whose_default_does_not_fit_is_refused(field_type: Any, default: Any) -> None:
    """A default the decoder could not use would break old records at read time."""
    old = {"type": "record", "name": "a.R", "fields": []}
    new = {
        "type": "record",
        "name": "a.R",
        "fields": [{"name": "n", "type": field_type, "default": default}],
    }
    with pytest.raises(SchemaDefinitionError, match="default does not fit"):
        check_backward(new, old)


def test_every_problem_is_listed() -> None:
    """One error lists all incompatibilities, by field path."""
    old = {"type": "record", "name": "a.R", "fields": [{"name": "n", "type": "long"}]}
    new = {
        "type": "record",
        "name": "a.R",
        "fields": [{"name": "n", "type": "int"}, {"name": "m", "type": "string"}],
    }
    with pytest.raises(SchemaDefinitionError) as caught:
        check_backward(new, old)
    assert ".n: reader int cannot read writer long" in str(caught.value)
    assert ".m: new field without a default" in str(caught.value)


def test_a_version_must_be_newer_than_the_last() -> None:
    """Versions only go up."""
    registry = SchemaRegistry()
    registry.register("a.R", 2, {"type": "record", "name": "a.R", "fields": []})
    with pytest.raises(SchemaDefinitionError, match="not newer"):
        registry.register(
            "a.R", 1, {"type": "record", "name": "a.R", "fields": [{"name": "x", "type": "long"}]}
        )


def test_models_encode_and_decode_through_the_registry() -> None:
    """encode_model / decode_model: the whole feed, a correction, a retraction and a heartbeat."""
    records: list[Any] = list(feed(seed=5))
    records.append(
        Retraction(
            record_id=str(uuid.uuid4()),
            retracts_record_id=records[0].record_id,
            retracted_at=datetime(2026, 10, 3, tzinfo=UTC),
            reason="duplicate",
            grading=records[0].grading,
        )
    )
    records.append(
        Heartbeat(
            producer_id="cst",
            sent_at=datetime(2026, 10, 3, tzinfo=UTC),
            interval_ms=30_000,
            streams=(StreamHead(stream="intelbus.sightings", last_sequence=41),),
        )
    )
    for record in records:
        fp, payload = REGISTRY.encode_model(record)
        assert REGISTRY.by_fingerprint(fp).full_name == SCHEMA_NAMES[type(record)]
        assert REGISTRY.decode_model(fp, payload) == record


def test_a_payload_that_breaks_a_model_rule_is_a_schema_violation_without_contents() -> None:
    """Avro accepts an empty behaviour list; the model does not. The message has no contents."""
    record = feed(seed=6, sightings=1, incidents=0)[0]
    value = record.to_avro_dict() | {"behaviours": [], "description": "SECRET-TEXT"}
    fp, payload = REGISTRY.encode(SIGHTING, value)
    with pytest.raises(SchemaViolation, match="rule") as caught:
        REGISTRY.decode_model(fp, payload)
    assert "SECRET-TEXT" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_value_that_does_not_fit_the_schema_is_refused_at_encode() -> None:
    """Strict writing: a missing field is an error, never a silent null."""
    value = feed(seed=6, sightings=1, incidents=0)[0].to_avro_dict()
    del value["grading"]
    with pytest.raises(SchemaViolation):
        REGISTRY.encode(SIGHTING, value)


def test_an_unknown_schema_name_is_refused() -> None:
    """No reader schema for a name nobody registered."""
    with pytest.raises(UnknownSchema):
        REGISTRY.current("org.intelbus.records.v1.Nothing")

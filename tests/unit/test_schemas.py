"""The .avsc files themselves: released schemas never change, and they say what the domain needs.

The fingerprints of every released schema version are pinned here. A failure means a released
writer schema changed (an edited file, a changed shared type, or a reference that now resolves to
another version): old records on the bus would become unreadable. Add a new version instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from intelbus.errors import SchemaDefinitionError
from intelbus.serde.registry import FINGERPRINT_BYTES, SchemaRegistry
from schemas import schema_dir

REGISTRY = SchemaRegistry.load()

RELEASED = {
    ("org.intelbus.control.v1.Heartbeat", 1): (
        "cd12b45176e4749e2877f90332eb1782bb5ee3da5a1b2733deb3a3c2a894c8ab"
    ),
    ("org.intelbus.control.v1.Heartbeat", 2): (
        "19f1fa8be5bc936ea94f7e6f29295a72f512e99283247774e993f79ff4b6216b"
    ),
    ("org.intelbus.records.v1.Correction", 1): (
        "8f6f2c639a8aa7c1c3f75cab76b968f42f775941ac4cf3512e35c45098690e44"
    ),
    ("org.intelbus.records.v1.Incident", 1): (
        "dca6d88ca7b9d25b21cc0e213574eea2ceba744fa977cadec83dcf2a781a4f09"
    ),
    ("org.intelbus.records.v1.Retraction", 1): (
        "6e7ea6ebeb1bc09236de427d84b48a4aa67de01626b63a201e7283ef462c0b4f"
    ),
    ("org.intelbus.records.v1.Sighting", 1): (
        "cb207ad47403fc0ca1f2eb8dc8ab0345bf5ae7fe0cbc2e1b5150979f05cd1d5c"
    ),
}


def _registered() -> dict[tuple[str, int], str]:
    return {
        (name, v.version): v.fingerprint.hex()
        for name in REGISTRY.names()
        for v in REGISTRY.versions(name)
    }


def test_released_fingerprints_never_change() -> None:
    """Every released (name, version) keeps its fingerprint, and none disappears."""
    registered = _registered()
    assert {k: registered.get(k) for k in RELEASED} == RELEASED


def test_every_fingerprint_is_32_bytes_and_distinct() -> None:
    """SHA-256 of the Parsing Canonical Form: fixed size, one per schema version."""
    fps = [bytes.fromhex(h) for h in _registered().values()]
    assert {len(fp) for fp in fps} == {FINGERPRINT_BYTES}
    assert len(set(fps)) == len(fps)


def _named(schema: Any, out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(schema, list):
        for s in schema:
            _named(s, out)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            out[schema["name"]] = schema
            for f in schema.get("fields", []):
                _named(f["type"], out)
        elif kind == "array":
            _named(schema["items"], out)
        elif kind == "map":
            _named(schema["values"], out)
        elif isinstance(kind, (dict, list)):
            _named(kind, out)
    return out


def _all_named() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in REGISTRY.names():
        _named(REGISTRY.current(name).schema, out)
    return out


def test_namespaces_are_versioned() -> None:
    """Records, control messages and shared types live in their own versioned namespaces."""
    namespaces = {name.rsplit(".", 1)[0] for name in _all_named()}
    assert namespaces == {
        "org.intelbus.common.v1",
        "org.intelbus.records.v1",
        "org.intelbus.control.v1",
    }


def test_grading_is_required_everywhere_and_never_defaulted() -> None:
    """Every record carries a grading field, and neither it nor its parts have a default."""
    named = _all_named()
    grading = named["org.intelbus.common.v1.Grading"]
    assert [f["name"] for f in grading["fields"]] == [
        "source_evaluation",
        "assessment",
        "handling_code",
        "handling_conditions",
        "tlp",
        "classification",
    ]
    assert all("default" not in f for f in grading["fields"])
    for name in ("Sighting", "Incident", "Correction", "Retraction"):
        fields = {f["name"]: f for f in named[f"org.intelbus.records.v1.{name}"]["fields"]}
        assert "default" not in fields["grading"]
        assert fields["grading"]["type"] in ("org.intelbus.common.v1.Grading", grading)


@pytest.mark.parametrize(
    ("enum", "symbols"),
    [
        ("common.v1.SourceEvaluation", ["S1", "S2", "S3"]),
        ("common.v1.IntelligenceAssessment", ["A", "B", "C", "D", "E"]),
        ("common.v1.HandlingCode", ["P", "C"]),
        ("common.v1.Tlp", ["CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED"]),
        (
            "common.v1.Classification",
            ["OFFICIAL", "OFFICIAL_SENSITIVE", "SECRET", "TOP_SECRET"],
        ),
        (
            "records.v1.IncidentCategory",
            [
                "EXTREME_VIOLENCE",
                "ASSAULT",
                "DAMAGE_AND_DESECRATION",
                "THREATS",
                "ABUSIVE_BEHAVIOUR",
                "ABUSIVE_LITERATURE",
            ],
        ),
    ],
)
def test_closed_sets_are_exactly_the_uk_practice(enum: str, symbols: list[str]) -> None:
    """3x5x2, TLP 2.0, the Government Security Classifications and CST's six categories."""
    assert _all_named()[f"org.intelbus.{enum}"]["symbols"] == symbols


def test_force_areas_cover_the_uk_forces() -> None:
    """43 territorial forces of England and Wales, Police Scotland, PSNI and BTP."""
    symbols = _all_named()["org.intelbus.common.v1.ForceArea"]["symbols"]
    assert len(symbols) == len(set(symbols)) == 46
    assert {
        "METROPOLITAN",
        "CITY_OF_LONDON",
        "HERTFORDSHIRE",
        "GREATER_MANCHESTER",
        "WEST_YORKSHIRE",
        "POLICE_SCOTLAND",
        "PSNI",
        "BRITISH_TRANSPORT_POLICE",
    } <= set(symbols)


def test_the_sighting_behaviours_are_the_reconnaissance_signs() -> None:
    """Behaviours are a non-empty array of the closed set (non-empty is enforced by the model)."""
    named = _all_named()
    assert named["org.intelbus.records.v1.Behaviour"]["symbols"] == [
        "PHOTOGRAPHING_ENTRANCES",
        "FILMING",
        "PHOTOGRAPHING_CCTV_OR_SECURITY",
        "LOITERING",
        "QUESTIONING_STAFF",
        "DRONE_OVERHEAD",
        "TESTING_SECURITY",
        "VEHICLE_CIRCLING",
        "OTHER",
    ]


def test_every_time_is_timestamp_micros() -> None:
    """Times on the wire are UTC microseconds since the epoch."""
    checked = set()
    for name in REGISTRY.names():
        for f in REGISTRY.current(name).schema["fields"]:
            if f["name"].endswith("_at"):
                assert f["type"] == {"type": "long", "logicalType": "timestamp-micros"}, f["name"]
                checked.add(f["name"])
    # Each record's own time was among them (a loop that matched nothing would check nothing).
    assert {"observed_at", "occurred_at", "corrected_at", "retracted_at", "sent_at"} <= checked


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schema_dir(), root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def _sighting_v2(**change: Any) -> dict[str, Any]:
    v2 = json.loads((schema_dir() / "records" / "sighting.v1.avsc").read_text())
    v2["fields"].append({"name": "weather", "type": ["null", "string"], "default": None})
    v2.update(change)
    return v2


def test_a_new_version_of_one_record_leaves_the_others_unchanged(tmp_path: Path) -> None:
    """Sighting v2 does not change the released Correction v1 that carries a Sighting."""
    root = _copy_tree(tmp_path)
    (root / "records" / "sighting.v2.avsc").write_text(json.dumps(_sighting_v2()))
    registry = SchemaRegistry.load(root)
    correction = "org.intelbus.records.v1.Correction"
    assert registry.current(correction).fingerprint.hex() == RELEASED[(correction, 1)]
    sighting = "org.intelbus.records.v1.Sighting"
    assert [v.version for v in registry.versions(sighting)] == [1, 2]
    assert registry.versions(sighting)[0].fingerprint.hex() == RELEASED[(sighting, 1)]


def test_a_new_version_under_a_new_name_is_refused(tmp_path: Path) -> None:
    """A v2 in a new namespace would escape the compatibility check against v1: refused."""
    root = _copy_tree(tmp_path)
    v2 = _sighting_v2(namespace="org.intelbus.records.v2")
    (root / "records" / "sighting.v2.avsc").write_text(json.dumps(v2))
    with pytest.raises(SchemaDefinitionError, match="keep one name"):
        SchemaRegistry.load(root)


def test_a_badly_named_schema_file_is_refused(tmp_path: Path) -> None:
    """Every record file is <name>.v<N>.avsc."""
    root = _copy_tree(tmp_path)
    (root / "records" / "sighting-latest.avsc").write_text("{}")
    with pytest.raises(SchemaDefinitionError, match=r"v<N>"):
        SchemaRegistry.load(root)


def test_a_redefined_shared_type_is_refused(tmp_path: Path) -> None:
    """One named type, one definition: a record cannot quietly redefine the shared Grading."""
    root = _copy_tree(tmp_path)
    rogue = {
        "type": "record",
        "name": "Rogue",
        "namespace": "org.intelbus.records.v1",
        "fields": [
            {
                "name": "grading",
                "type": {
                    "type": "record",
                    "name": "Grading",
                    "namespace": "org.intelbus.common.v1",
                    "fields": [{"name": "tlp", "type": "string"}],
                },
            }
        ],
    }
    (root / "records" / "rogue.v1.avsc").write_text(json.dumps(rogue))
    with pytest.raises(SchemaDefinitionError, match="defined twice"):
        SchemaRegistry.load(root)

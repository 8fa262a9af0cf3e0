"""docs/interop.md maps every schema field to STIX and to MISP: a field added to a record schema
without a row (with both columns filled) fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = "## Every schema field, in STIX and in MISP"


def _schema_fields() -> set[str]:
    schemas = REPO / "schemas"
    common = json.loads((schemas / "common" / "common.v1.avsc").read_text(encoding="utf-8"))
    named = {n["name"]: n for n in common if n["type"] == "record"}
    fields: set[str] = set()
    for kind in ("sighting", "incident"):
        record = json.loads((schemas / "records" / f"{kind}.v1.avsc").read_text(encoding="utf-8"))
        fields |= {f["name"] for f in record["fields"]}
    fields |= {f"place.{f['name']}" for f in named["Place"]["fields"]}
    fields |= {f"grading.{f['name']}" for f in named["Grading"]["fields"]}
    return fields - {"place", "grading"}


def _rows() -> dict[str, tuple[str, str]]:
    doc = (REPO / "docs" / "interop.md").read_text(encoding="utf-8")
    section = doc.split(TABLE, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        # The field names are the backquoted words before any parenthesis in the first cell.
        for name in re.findall(r"`([a-z_.]+)`", cells[0].split("(", 1)[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def test_every_schema_field_has_a_stix_and_a_misp_mapping() -> None:
    rows = _rows()
    missing = _schema_fields() - set(rows)
    assert not missing, f"docs/interop.md has no row for {sorted(missing)}"
    for name in _schema_fields():
        stix, misp = rows[name]
        assert stix.strip("- "), f"{name}: no STIX mapping"
        assert misp.strip("- "), f"{name}: no MISP mapping"


def test_the_people_and_vehicle_rows_name_every_field_they_hold() -> None:
    common = json.loads(
        (REPO / "schemas" / "common" / "common.v1.avsc").read_text(encoding="utf-8")
    )
    named = {n["name"]: n for n in common if n["type"] == "record"}
    doc = (REPO / "docs" / "interop.md").read_text(encoding="utf-8")
    section = doc.split(TABLE, 1)[1].split("\n## ", 1)[0]
    for record, field in (("PersonDescription", "persons"), ("VehicleDescription", "vehicles")):
        (row,) = [line for line in section.splitlines() if line.startswith(f"| `{field}` (")]
        held = row.split(" | ")[0]
        for f in named[record]["fields"]:
            assert f["name"] in held, (record, f["name"])

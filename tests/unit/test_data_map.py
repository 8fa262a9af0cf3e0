"""docs/data-protection.md maps every field the bus carries: a new field needs a row there."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from intelbus.directory.model import SignedDirectory

REPO = Path(__file__).parents[2]
DOC = (REPO / "docs" / "data-protection.md").read_text()
#: The data-map rows: the first cell of each table row, split where a row names several fields.
ROW_FIELDS = {
    name
    for line in DOC.splitlines()
    if line.startswith("| `")
    for name in re.findall(r"`([A-Za-z]+\.[a-z_]+)`", line.split(" | ")[0])
}


def _avro_fields(node: Any) -> Iterator[str]:
    """``Record.field`` for every field of every named record in a parsed schema, at any depth."""
    if isinstance(node, list):
        for item in node:
            yield from _avro_fields(item)
    elif isinstance(node, dict):
        if node.get("type") == "record":
            for field in node["fields"]:
                yield f"{node['name']}.{field['name']}"
                yield from _avro_fields(field["type"])
        elif "items" in node:
            yield from _avro_fields(node["items"])


def _model_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[str]:
    """``Model.field`` for a pydantic model and every model it holds."""
    if model in seen:
        return
    seen.add(model)
    for name, info in model.model_fields.items():
        yield f"{model.__name__}.{name}"
        for inner in _models(info.annotation):
            yield from _model_fields(inner, seen)


def _models(annotation: object) -> list[type[BaseModel]]:
    if get_origin(annotation) is None and isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [m for arg in get_args(annotation) for m in _models(arg)]


SCHEMA_FIELDS = sorted(
    {
        field
        for path in sorted((REPO / "schemas").rglob("*.avsc"))
        for field in _avro_fields(json.loads(path.read_text()))
    }
)
DIRECTORY_FIELDS = sorted(set(_model_fields(SignedDirectory, set())))


def test_the_scan_finds_the_schemas_and_the_directory() -> None:
    """The walk itself works: known fields of each schema and of the directory are found."""
    assert {
        "Sighting.persons",
        "Incident.victim_details",
        "Correction.replacement",
        "Retraction.reason",
        "Place.address_or_area",
        "VehicleDescription.registration",
        "StreamHead.epoch",
    } <= set(SCHEMA_FIELDS)
    assert {"AdminKey.holder", "Revocation.reason", "Agency.display_name"} <= set(DIRECTORY_FIELDS)


@pytest.mark.parametrize("field", SCHEMA_FIELDS)
def test_every_avro_field_has_a_row(field: str) -> None:
    assert field in ROW_FIELDS, f"docs/data-protection.md has no row for {field}"


@pytest.mark.parametrize("field", DIRECTORY_FIELDS)
def test_every_directory_field_has_a_row(field: str) -> None:
    assert field in ROW_FIELDS, f"docs/data-protection.md has no row for {field}"


def test_every_row_names_a_real_field() -> None:
    """No row for a field that does not exist (a renamed field would leave a stale row)."""
    assert set(SCHEMA_FIELDS) | set(DIRECTORY_FIELDS) >= ROW_FIELDS


@pytest.mark.parametrize("section", ["Erasure", "Access log (section 62)", "Crypto-shredding"])
def test_the_sections_the_lead_fills_are_there(section: str) -> None:
    assert f"\n## {section}\n" in DOC


def test_the_readme_says_what_is_kept_for_how_long_and_how_to_erase() -> None:
    """A few lines in the README, naming the commands that exist (issue 16)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What the bus keeps, for how long, and how to erase", 1)[1]
    section = section.split("\n## ", 1)[0]
    for command in (
        "intelbus store prune",
        "intelbus publish erasure",
        "intelbus store access-log",
        "intelbus keys destroy-epoch",
    ):
        assert command in section, command
    assert "docs/data-protection.md" in section
    assert len(section.splitlines()) <= 30

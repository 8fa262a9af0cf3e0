"""Example input files a person can start from: ``intelbus publish template KIND``.

Each template is a real record of the demo's synthetic feed (no real person, place detail or
registration), without a ``record_id`` (one is generated when it is published), in the layout
docs/inputs.md describes: CSV with dotted column names (lists joined by ``;``, people and
vehicles as JSON cells), or JSON. A correction is JSON only: its replacement is a whole record.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from intelbus.errors import ConfigError
from intelbus.samples import feed

_KINDS = ("sighting", "incident", "correction", "retraction", "erasure")


def _example(kind: str) -> dict[str, Any]:
    records = feed(seed=7, sightings=1, incidents=1)
    sighting = next(r for r in records if type(r).__name__ == "Sighting")
    incident = next(r for r in records if type(r).__name__ == "Incident")
    if kind == "sighting":
        data = sighting.model_dump(mode="json")
    elif kind == "incident":
        data = incident.model_dump(mode="json")
    elif kind == "correction":
        replacement = sighting.model_dump(mode="json")
        replacement["description"] = "The corrected description, in full."
        data = {
            "corrects_record_id": sighting.record_id,
            "corrected_at": "2026-10-01T10:00:00Z",
            "reason": "Wrong street given in the first report.",
            "grading": replacement["grading"],
            "replacement": replacement,
        }
    elif kind == "erasure":
        data = {
            "erases_record_id": sighting.record_id,
            "erased_at": "2026-10-01T10:00:00Z",
            "legal_basis": "UK GDPR Art. 17(1)(d): processed unlawfully",
            "reason": "Shared with the wrong forces; the data protection officer asked for erasure.",
            "grading": sighting.model_dump(mode="json")["grading"],
        }
    else:
        data = {
            "retracts_record_id": sighting.record_id,
            "retracted_at": "2026-10-01T10:00:00Z",
            "reason": "Reported in error.",
            "grading": sighting.model_dump(mode="json")["grading"],
        }
    data.pop("record_id", None)
    return data


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            if value and all(isinstance(v, str) for v in value):
                out[name] = ";".join(value)
            else:
                out[name] = json.dumps(value) if value else ""
        else:
            out[name] = "" if value is None else str(value)
    return out


def template_text(kind: str, fmt: str) -> str:
    """The template of ``kind`` in ``fmt`` (csv or json).

    Raises:
        ConfigError: an unknown kind or format, or a correction asked for as CSV.
    """
    if kind not in _KINDS:
        raise ConfigError(f"unknown kind {kind!r}: use {', '.join(_KINDS)}")
    if fmt not in ("csv", "json"):
        raise ConfigError(f"unknown --format {fmt!r}: use csv or json")
    data = _example(kind)
    if fmt == "json":
        return json.dumps([data], indent=2) + "\n"
    if kind == "correction":
        raise ConfigError("a correction is written as JSON (its replacement is a whole record)")
    row = _flatten(data)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return buffer.getvalue()

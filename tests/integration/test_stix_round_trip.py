"""STIX -> publish -> consume -> STIX on the real broker keeps every field the policy allows.

A CST analyst who works in OpenCTI publishes a STIX bundle with ``intelbus publish KIND FILE
--format stix``; the Met consumes under its own policy (it stores its own area's records whole);
the Met's ``store export --format stix`` gives back the same STIX objects, ids included (the
record ids and the producer are the same), versions apart (created and modified are the bus's).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.interop.stix import stix_bundle
from intelbus.records import Incident
from intelbus.samples import feed
from tests.federation import Federation, sighting_for
from tests.stixcheck import assert_strict
from tests.unit.test_stix import _view

pytestmark = pytest.mark.kafka

runner = CliRunner(env={"INTELBUS_USER": "analyst.test"})
_VERSIONED = ("created", "modified")


def _met_incident() -> Incident:
    base = next(r for r in feed(seed=23, sightings=0, incidents=8) if r.victim_details)
    data = base.model_dump(mode="json")
    data["place"]["force_area"] = "METROPOLITAN"
    data["grading"].update(tlp="AMBER", handling_code="P", handling_conditions=[])
    return Incident.model_validate(data)


def _unversioned(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["id"]: {k: v for k, v in o.items() if k not in _VERSIONED} for o in objects}


def test_stix_publish_consume_stix_keeps_every_field(tmp_path: Path, bootstrap: str) -> None:
    fed = Federation(tmp_path, bootstrap, "sqlite")
    sightings = [sighting_for("METROPOLITAN", "GREEN"), sighting_for("METROPOLITAN", "AMBER")]
    incident = _met_incident()
    assert incident.victim_details  # a field other policies redact: the Met keeps it here
    # One bundle of both kinds, as OpenCTI exports it: each command publishes its own kind.
    models = [*sightings, incident]
    bundle = stix_bundle([_view(m, i) for i, m in enumerate(models)], exported_at=datetime.now(UTC))
    sent: list[dict[str, Any]] = bundle["objects"]
    path = tmp_path / "opencti.stix.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    for kind, count in (("sighting", len(sightings)), ("incident", 1)):
        result = runner.invoke(
            app,
            ["publish", kind, str(path), "--config", str(tmp_path / "producer.toml"),
             "--format", "stix", "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert lines[-1]["summary"]["published"] == count, result.output

    stats = fed.consume("met-police")
    assert stats.stored == 3

    out = tmp_path / "met.stix.json"
    result = runner.invoke(
        app,
        ["store", "export", "--config", str(tmp_path / "met-police.toml"), "--format", "stix",
         "--out", str(out), "--justification", "round trip test", "--to", "the test suite"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    back = json.loads(out.read_text(encoding="utf-8"))
    assert_strict(back)
    before, after = _unversioned(sent), _unversioned(back["objects"])
    assert set(after) == set(before)
    for oid, obj in before.items():
        assert after[oid] == obj, oid

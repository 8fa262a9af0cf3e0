"""MISP round trip on the real broker: a CST analyst publishes MISP events with
``intelbus publish sighting|incident FILE --format misp``, Hertfordshire consumes them under its
policy, and ``intelbus store export --format misp`` gives back the same records, less what Herts'
policy redacts (left out, and the event refused if read back)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.interop.misp import event_uuid, misp_event, records_from_misp
from intelbus.records import Incident, Sighting
from intelbus.samples import feed
from intelbus.store.base import StoredRecordView
from producers.inputs import normalise
from tests.federation import Federation, sighting_for
from tests.unit.test_misp import _analyst_event

pytestmark = pytest.mark.kafka

runner = CliRunner(env={"INTELBUS_USER": "analyst.test"})
T = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def _as_exported(record: Sighting | Incident) -> dict[str, object]:
    """The MISP event another force's export of ``record`` would hold (as CST's analyst got it)."""
    payload = record.model_dump(mode="json")
    view = StoredRecordView(
        record_id=str(record.record_id),
        topic="elsewhere",
        partition=0,
        offset=7,
        producer_id="met-police",
        kind=record.KIND,
        sequence=7,
        digest=b"\x00" * 32,
        created_at=T,
        appended_at=T,
        policy_hash="0" * 64,
        rule_id="all",
        action="store",
        redacted_fields=(),
        tlp=payload["grading"]["tlp"],
        classification=payload["grading"]["classification"],
        force_area=payload["place"]["force_area"],
        occurred_at=None,
        payload=payload,
        version=1,
        status="live",
    )
    return misp_event(view)


def _publish(kind: str, path: Path, config: Path) -> list[dict[str, object]]:
    result = runner.invoke(
        app,
        ["publish", kind, str(path), "--format", "misp", "--config", str(config), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"summary": {"published": len(lines) - 1, "already": 0, "failed": 0}}
    return lines[:-1]


def test_misp_events_published_consumed_and_exported_keep_every_field(
    tmp_path: Path, bootstrap: str
) -> None:
    fed = Federation(tmp_path, bootstrap, "sqlite")
    config = tmp_path / "producer.toml"
    ours = [sighting_for("HERTFORDSHIRE", "GREEN"), sighting_for("HERTFORDSHIRE", "AMBER")]
    analyst = _analyst_event()  # made in MISP's UI: no intelbus record id, the event uuid is used
    sightings = tmp_path / "sightings.misp.json"
    sightings.write_text(
        json.dumps({"response": [*map(_as_exported, ours), {"Event": analyst}]}), encoding="utf-8"
    )
    base = next(r for r in feed(seed=22, sightings=0, incidents=8) if r.victim_details)
    data = base.model_dump(mode="json")
    data["place"]["force_area"] = "HERTFORDSHIRE"
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[], assessment="B")
    incident = Incident.model_validate(data)
    incidents = tmp_path / "incidents.misp.json"
    incidents.write_text(json.dumps(_as_exported(incident)), encoding="utf-8")

    published = _publish("sighting", sightings, config) + _publish("incident", incidents, config)
    expected_ids = [*(str(r.record_id) for r in ours), analyst["uuid"], str(incident.record_id)]
    assert [p["record_id"] for p in published] == expected_ids
    assert {p["status"] for p in published} == {"published"}
    # Publishing the same file again is recognised: the ids come from the events.
    again = runner.invoke(
        app,
        ["publish", "sighting", str(sightings), "--format", "misp", "--config", str(config)],
        catch_exceptions=False,
    )
    assert again.exit_code == 0, again.output
    assert "0 published, 3 already published, 0 not published" in again.stdout

    # An event without TLP or grading is refused, with its reason, and nothing else is affected.
    bare = _analyst_event(tlp=True, classification=True)
    refused = tmp_path / "refused.misp.json"
    refused.write_text(json.dumps({"Event": bare}), encoding="utf-8")
    result = runner.invoke(
        app,
        ["publish", "sighting", str(refused), "--format", "misp", "--config", str(config)],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert (
        f"event 1 ({bare['uuid']}): not published: no TLP tag (tlp:clear, tlp:green, tlp:amber, "
        'tlp:amber+strict or tlp:red); no grading: missing intelbus:classification="..."'
    ) in result.stdout
    assert "Traceback" not in result.output

    stats = fed.consume("herts-police")
    assert (stats.stored, stats.redacted) == (3, 1)
    exported = runner.invoke(
        app,
        [
            "store", "export", "--store", fed.stores["herts-police"], "--format", "misp",
            "--to", "the round trip test", "--justification", "test",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert "[REDACTED]" not in exported.stdout
    read = {
        where.split("(")[1].rstrip(")"): (data, error)
        for where, data, error in records_from_misp(exported.stdout)
    }
    assert len(read) == 4
    for record in ours:
        data, error = read[event_uuid("cst", str(record.record_id))]
        assert error is None, error
        assert data is not None
        assert Sighting.model_validate(normalise(data)[0]) == record
    data, error = read[event_uuid("cst", analyst["uuid"])]
    assert error is None, error
    assert data is not None
    mine = Sighting.model_validate(normalise(data)[0])
    assert mine.description == "A man filmed the school gates for ten minutes from a van."
    assert mine.grading.source_evaluation.value == "S2"
    # Herts redacts an incident's victim details and reporter reference: both left out of the
    # MISP event, and the event refused when read back (its fields would be missing, not empty).
    data, error = read[event_uuid("cst", str(incident.record_id))]
    assert data is None
    assert error is not None
    assert "redacted export" in error
    doc = json.loads(exported.stdout)
    (event,) = [
        e["Event"]
        for e in doc["response"]
        if e["Event"]["uuid"] == event_uuid("cst", str(incident.record_id))
    ]
    text = json.dumps(event)
    assert incident.victim_details is not None
    assert incident.victim_details not in text
    assert incident.reporter_ref not in text
    assert incident.description in text

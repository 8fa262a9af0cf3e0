"""Data protection on the real broker (issue 16): erasure that propagates, and the audit after it.

A demo-shaped federation on the session broker, with three forces whose policies keep every
record, so each of the three stores holds the payload. CST publishes a sighting, each force
consumes it; CST publishes a signed erasure, each force runs one consume cycle, and the payload
is gone from all three stores, leaving tombstones. The inspectorate's replay of the topic is
still clean and counts the erasure. An insider producer's erasure of CST's record is refused
with ``foreign_target`` by every force and reported by the auditor at the same offset.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.errors import ReasonCode
from intelbus.federation import FORCES
from intelbus.kinds import Family
from intelbus.records import Sighting
from intelbus.samples import erasure_of
from intelbus.store import open_store
from tests.federation import Federation, sighting_for

pytestmark = pytest.mark.kafka
runner = CliRunner()
PERSONAL = "Sighted by Ruth Abrahams of 9 Cedar Road"


# Herts's policy; each force gets it with its own id and areas.
KEEP_EVERYTHING = """agency = "herts-police"
own_force_areas = ["HERTFORDSHIRE"]
[[rules]]
id = "everything"
action = "store"
"""


def _keep_everything(fed: Federation) -> None:
    for force, (_, areas) in FORCES.items():
        (fed.root / f"{force}.policy.toml").write_text(
            KEEP_EVERYTHING.replace('"herts-police"', f'"{force}"').replace(
                '["HERTFORDSHIRE"]', json.dumps(areas)
            )
        )


def _personal() -> Sighting:
    data = sighting_for("HERTFORDSHIRE", "GREEN").model_dump(mode="json")
    data["description"] = f"Two men filming the gates. {PERSONAL}"
    return Sighting.model_validate(data)


def _audit(fed: Federation, report: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            f"{fed.prefix}.sightings",
            "--directory",
            str(fed.root / "directory"),
            "--bootstrap-server",
            fed.bootstrap,
            "--report",
            str(report),
            *extra,
        ],
    )
    return result.exit_code, json.loads(report.read_text()), result.output


@pytest.fixture
def fed(tmp_path: Path, bootstrap: str) -> Federation:
    federation = Federation(tmp_path, bootstrap, "sqlite")
    _keep_everything(federation)
    return federation


def test_an_erasure_by_cst_empties_three_forces_stores_and_the_audit_stays_clean(
    fed: Federation, tmp_path: Path
) -> None:
    record = _personal()
    other = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([record, other])
    for force in FORCES:
        stats = fed.consume(force)
        assert stats.stored == 2, force
        with open_store(fed.stores[force]) as store:
            view = store.get(record.record_id, "cst")
            assert view is not None
            assert PERSONAL in json.dumps(view.payload)

    erasure = erasure_of(record, at=datetime.now(UTC))
    fed.publish([erasure])
    for force in FORCES:
        stats = fed.consume(force)  # one consume cycle each
        assert stats.erased == 1, force
        assert not stats.quarantined, force
        with open_store(fed.stores[force]) as store:
            view = store.get(record.record_id, "cst")
            assert view is not None
            assert (view.status, view.payload) == ("erased", None)
            assert all(h.payload is None for h in view.history)
            (tomb,) = store.tombstones()
            assert (tomb.record_id, tomb.reason, tomb.erasure_record_id) == (
                record.record_id,
                "erasure",
                erasure.record_id,
            )
            assert tomb.digest == view.digest
            assert store.summary()["erased"] == 1
            assert record.record_id not in {v.record_id for v in store.iter_records()}
            still = store.get(other.record_id, "cst")
            assert still is not None
            assert still.status == "live"
        assert b"Ruth Abrahams" not in Path(fed.stores[force]).read_bytes()

    code, report, output = _audit(
        fed, tmp_path / "audit.json", "--store", fed.stores["herts-police"]
    )
    assert code == 0, output
    summary = report["summary"]
    assert summary["verdict"] == "clean"
    assert summary["erasures"] == 1
    assert summary["records"] == 3
    assert "1 erasure record(s)" in output
    # Herts's store, tombstone included, is exactly what the topic holds.
    assert summary["store"]["erased"] == 1
    assert (summary["store"]["rows"], summary["store"]["mismatched"]) == (2, 0)

    # An insider producer erases CST's other record: refused by every force, found by the audit.
    fed.add_producer("rogue")
    forged = erasure_of(other, at=datetime.now(UTC), seed=77)
    fed.publish_as("rogue", [forged], family=Family.SIGHTINGS)
    for force in FORCES:
        stats = fed.consume(force)
        assert stats.quarantined == {ReasonCode.FOREIGN_TARGET.value: 1}, force
        with open_store(fed.stores[force]) as store:
            view = store.get(other.record_id, "cst")
            assert view is not None
            assert view.status == "live"
            assert view.payload is not None
            (row,) = store.quarantine_entries()
            assert (row.reason, row.record_id, row.producer_id) == (
                "foreign_target",
                forged.record_id,
                "rogue",
            )
    code, report, output = _audit(fed, tmp_path / "audit2.json")
    assert code == 1, output
    summary = report["summary"]
    assert summary["erasures"] == 1
    findings = report["findings"]
    assert [f["reason"] for f in findings] == ["foreign_target"]

    # CST's genuine feed still flows to every force afterwards.
    fresh = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([fresh])
    for force in FORCES:
        assert fed.consume(force).stored == 1, force


def test_prune_past_retention_then_the_audit_is_clean_and_counts_the_pruned(
    fed: Federation, tmp_path: Path
) -> None:
    """Herts prunes both records past its retention (the default for sightings: a year from the
    event), then the inspectorate replays the topic holding Herts's store to it: clean, with two
    pruned tombstones, each the record the topic holds at its position. A tombstone whose digest
    was edited afterwards is a store_mismatch finding."""
    records = [_personal(), sighting_for("HERTFORDSHIRE", "GREEN")]
    fed.publish(records)
    assert fed.consume("herts-police").stored == 2
    config = str(fed.root / "herts-police.toml")
    soon = runner.invoke(app, ["store", "prune", "--config", config, "--json"])
    assert soon.exit_code == 0, soon.output
    assert json.loads(soon.stdout)["pruned"] == 0
    later = (datetime.now(UTC) + timedelta(days=800)).isoformat()
    dry = runner.invoke(app, ["store", "prune", "--config", config, "--as-of", later, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would prune 2" in dry.output
    done = runner.invoke(app, ["store", "prune", "--config", config, "--as-of", later, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["pruned"] == 2
    store_path = fed.stores["herts-police"]
    with open_store(store_path) as store:
        assert store.summary()["pruned"] == 2
        assert list(store.iter_records()) == []
        assert {t.reason for t in store.tombstones()} == {"retention"}
    assert b"Ruth Abrahams" not in Path(store_path).read_bytes()
    listed = runner.invoke(app, ["store", "tombstones", "--store", store_path, "--json"])
    assert listed.exit_code == 0, listed.output
    assert {json.loads(line)["record_id"] for line in listed.stdout.splitlines()} == {
        r.record_id for r in records
    }

    code, report, output = _audit(fed, tmp_path / "audit.json", "--store", store_path)
    assert code == 0, output
    summary = report["summary"]
    assert summary["verdict"] == "clean"
    store_section = summary["store"]
    assert {k: store_section[k] for k in ("rows", "matched", "mismatched", "missing")} == {
        "rows": 2,
        "matched": 2,
        "mismatched": 0,
        "missing": 0,
    }
    assert (store_section["by_status"], store_section["pruned"]) == ({"pruned": 2}, 2)
    assert "2 pruned" in output

    # A local user edits one tombstone's digest and deletes the other tombstone outright: the
    # auditor finds the first no longer matches the topic, and the second missing.
    con = sqlite3.connect(store_path)
    try:
        con.execute(
            "UPDATE records SET digest = ? WHERE record_id = ?", (bytes(32), records[0].record_id)
        )
        for table in ("tombstones", "record_versions", "records"):
            con.execute(f"DELETE FROM {table} WHERE record_id = ?", (records[1].record_id,))  # noqa: S608
        con.commit()
    finally:
        con.close()
    code, report, output = _audit(fed, tmp_path / "audit2.json", "--store", store_path)
    assert code == 1, output
    assert sorted((f["reason"], f["record_id"]) for f in report["findings"]) == sorted(
        [("store_mismatch", records[0].record_id), ("store_mismatch", records[1].record_id)]
    )
    assert (report["summary"]["store"]["mismatched"], report["summary"]["store"]["missing"]) == (
        2,
        1,
    )

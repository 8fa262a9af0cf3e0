"""The analyst's commands: ``intelbus store list|show|search|export|quarantine|summary|feeds``.

A real SQLite store is filled with the deterministic sample feed (as a consumer would have stored
it), then read back through the CLI; exports are parsed again and compared with the store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus import samples
from intelbus.cli.main import app
from intelbus.records import Sighting
from intelbus.store import (
    Amendment,
    Batch,
    FeedBeat,
    QuarantineEntry,
    StoredRecord,
    WithheldReceipt,
    open_store,
)
from intelbus.store.export import CSV_COLUMNS, stix_bundle

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TOPIC = "intelbus.sightings"


def _stored(n: int, model: samples.Sighting | samples.Incident) -> StoredRecord:
    facts = model.facts()
    payload = json.loads(model.model_dump_json())
    return StoredRecord(
        record_id=str(model.record_id),
        topic=TOPIC if isinstance(model, Sighting) else "intelbus.incidents",
        partition=0,
        offset=n,
        producer_id="cst",
        kind=model.KIND,
        sequence=n,
        digest=hashlib.sha256(str(model.record_id).encode()).digest(),
        created_at=T0 + timedelta(minutes=n),
        appended_at=T0 + timedelta(minutes=n, seconds=1),
        policy_hash="a" * 64,
        rule_id="all",
        action="store",
        redacted_fields=(),
        tlp=facts.tlp.value,
        classification=facts.classification.value,
        force_area=facts.force_area,
        occurred_at=facts.occurred_at,
        payload=payload,
    )


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[StoredRecord]]:
    path = tmp_path / "herts.sqlite"
    feed = samples.feed(seed=11, sightings=8, incidents=6)
    rows = [_stored(i, m) for i, m in enumerate(feed)]
    first_sighting = next(r for r in rows if r.kind == "sighting")
    store = open_store(str(path))
    try:
        store.commit(
            Batch(
                group_id="herts",
                records=rows,
                withheld=[
                    WithheldReceipt(
                        "00000000-0000-4000-8000-000000000001",
                        TOPIC,
                        0,
                        99,
                        "cst",
                        b"\x01" * 32,
                        "red-withheld",
                        "a" * 64,
                    )
                ],
                quarantined=[
                    QuarantineEntry(
                        TOPIC, 0, 100, b"\x00garbage", "malformed", "truncated", None, None
                    )
                ],
                amendments=[
                    Amendment(
                        "retraction",
                        "00000000-0000-4000-8000-000000000002",
                        first_sighting.record_id,
                        "cst",
                        T0 + timedelta(hours=5),
                        "entered in error",
                    )
                ],
            )
        )
    finally:
        store.close()
    return path, rows


runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_filters_by_kind_area_and_time(filled) -> None:
    path, rows = filled
    out = _run("store", "list", "--store", str(path), "--kind", "incident", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert {r["record_id"] for r in listed} == {r.record_id for r in rows if r.kind == "incident"}
    # Newest event first.
    times = [r["occurred_at"] for r in listed]
    assert times == sorted(times, reverse=True)

    area = next(r.force_area for r in rows if r.force_area)
    out = _run("store", "list", "--store", str(path), "--area", str(area), "--json")
    assert {json.loads(x)["record_id"] for x in out.splitlines()} == {
        r.record_id for r in rows if r.force_area == area
    }

    events = sorted(r.occurred_at for r in rows if r.occurred_at)
    cut = events[len(events) // 2]
    out = _run("store", "list", "--store", str(path), "--since", cut.isoformat(), "--json")
    expected = {r.record_id for r in rows if r.occurred_at and r.occurred_at >= cut}
    assert {json.loads(x)["record_id"] for x in out.splitlines()} == expected
    assert 0 < len(expected) < len(rows)


def test_list_table_shows_whole_record_ids(filled) -> None:
    path, rows = filled
    out = _run("store", "list", "--store", str(path), "--limit", "3")
    ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out)
    assert len(ids) == 3
    assert set(ids) <= {r.record_id for r in rows}


def test_show_prints_the_record_with_its_history(filled) -> None:
    path, rows = filled
    retracted = next(r for r in rows if r.kind == "sighting")
    shown = json.loads(_run("store", "show", retracted.record_id, "--store", str(path)))
    assert shown["retracted"] is True
    assert shown["version"] == 2
    assert shown["history"][0]["reason"] == "entered in error"
    assert shown["payload"] == retracted.payload
    assert shown["digest"] == retracted.digest.hex()


def test_show_tells_withheld_from_unknown(filled) -> None:
    path, _ = filled
    withheld = runner.invoke(
        app, ["store", "show", "00000000-0000-4000-8000-000000000001", "--store", str(path)]
    )
    assert withheld.exit_code == 1
    assert "withheld" in withheld.output
    unknown = runner.invoke(app, ["store", "show", "nope", "--store", str(path)])
    assert unknown.exit_code == 1
    assert "no record nope" in unknown.output


def test_a_missing_store_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite"
    result = runner.invoke(app, ["store", "list", "--store", str(missing)])
    assert result.exit_code == 2
    assert "no store at" in result.output
    assert not missing.exists()


def test_search_finds_text_in_payloads(filled) -> None:
    path, rows = filled
    word = rows[0].payload["description"].split()[-1].strip(".").lower()  # type: ignore[union-attr]
    out = _run("store", "search", word, "--store", str(path), "--json")
    found = {json.loads(x)["record_id"] for x in out.splitlines()}
    expected = {r.record_id for r in rows if word in json.dumps(r.payload).lower()}
    assert rows[0].record_id in found
    assert found == expected


def test_export_jsonl_has_every_record_once(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = tmp_path / "export.jsonl"
    _run("store", "export", "--store", str(path), "--format", "jsonl", "--out", str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(e["record_id"] for e in exported) == sorted(r.record_id for r in rows)
    by_id = {e["record_id"]: e for e in exported}
    for r in rows:
        assert by_id[r.record_id]["payload"] == r.payload
        assert by_id[r.record_id]["policy_hash"] == r.policy_hash
    assert not (tmp_path / "export.jsonl.partial").exists()


def test_export_csv_filters_and_neutralises_formulas(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = _run("store", "export", "--store", str(path), "--format", "csv", "--kind", "sighting")
    table = list(csv.DictReader(io.StringIO(out)))
    assert tuple(table[0].keys()) == CSV_COLUMNS
    assert sorted(r["record_id"] for r in table) == sorted(
        r.record_id for r in rows if r.kind == "sighting"
    )

    # A value an attacker controls that a spreadsheet would evaluate.
    evil = tmp_path / "evil.sqlite"
    s = open_store(str(evil))
    try:
        bad = _stored(0, samples.feed(seed=3, sightings=1, incidents=0)[0])
        payload = dict(bad.payload)
        payload["place"] = {**payload["place"], "address_or_area": '=HYPERLINK("http://x")'}  # type: ignore[dict-item]
        s.commit(
            Batch(
                group_id="g",
                records=[
                    StoredRecord(
                        **{**{f: getattr(bad, f) for f in bad.__slots__}, "payload": payload}
                    )
                ],
            )
        )
    finally:
        s.close()
    out = _run("store", "export", "--store", str(evil), "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["address_or_area"].startswith("'=")


def test_export_stix_bundle_is_well_formed(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = tmp_path / "bundle.json"
    _run("store", "export", "--store", str(path), "--format", "stix", "--out", str(out))
    bundle = json.loads(out.read_text())
    assert bundle["type"] == "bundle"
    objects = {o["id"]: o for o in bundle["objects"]}
    sightings = [o for o in objects.values() if o["type"] == "sighting"]
    live = [r for r in rows if r.kind == "sighting"][1:]  # the first one was retracted
    assert sorted(s["x_intelbus_record_id"] for s in sightings) == sorted(r.record_id for r in live)
    for s in sightings:
        assert s["spec_version"] == "2.1"
        assert objects[s["sighting_of_ref"]]["type"] == "attack-pattern"
        assert objects[s["created_by_ref"]]["type"] == "identity"
        for ref in s.get("where_sighted_refs", []):
            assert objects[ref]["type"] == "location"
        assert s["modified"] >= s["created"]
        assert s["object_marking_refs"][0].startswith("marking-definition--")
        # Free text written by people stays out of STIX.
        assert "description" not in s
    # The same record always gets the same STIX id.
    store = open_store(str(path))
    try:
        again = stix_bundle(store.iter_records(), exported_at=datetime.now(UTC))
    finally:
        store.close()
    assert {o["id"] for o in again["objects"] if o["type"] == "sighting"} == {
        s["id"] for s in sightings
    }


def test_quarantine_and_summary(filled) -> None:
    path, rows = filled
    out = _run("store", "quarantine", "--store", str(path))
    assert "malformed" in out
    assert "1 entry" in out
    out = _run("store", "summary", "--store", str(path))
    assert re.search(rf"stored\s*│\s*{len(rows)}\b", out)
    assert re.search(r"withheld\s*│\s*1\b", out)
    assert re.search(r"quarantined:malformed\s*│\s*1\b", out)


def test_feeds_report_each_producer_and_fail_while_one_is_stale(tmp_path: Path) -> None:
    """A monitoring check: exit 0 while every feed is on time, 1 once one is overdue."""
    path = tmp_path / "herts.sqlite"
    now = datetime.now(UTC)
    store = open_store(str(path))
    try:
        store.commit(
            Batch(
                "herts",
                beats=[
                    FeedBeat("cst", "intelbus.heartbeats", now - timedelta(seconds=10), 30_000),
                    FeedBeat("gmp", "intelbus.heartbeats", now - timedelta(minutes=2), 60_000),
                ],
            )
        )
    finally:
        store.close()
    out = _run("store", "feeds", "--store", str(path), "--tolerance", "3")  # gmp: 120 s <= 180 s
    assert re.search(r"cst\s*│.*│\s*ok", out)
    assert re.search(r"gmp\s*│.*│\s*ok", out)
    result = runner.invoke(app, ["store", "feeds", "--store", str(path), "--json"])
    assert result.exit_code == 1  # gmp: 120 s > 60 s x 1.5
    lines = {j["producer"]: j for j in map(json.loads, result.stdout.splitlines())}
    assert (lines["cst"]["stale"], lines["gmp"]["stale"]) == (False, True)
    assert lines["gmp"]["interval_s"] == 60
    assert lines["gmp"]["silent_s"] >= 120

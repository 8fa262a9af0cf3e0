"""The analyst's commands: ``intelbus store list|show|search|export|quarantine|summary|feeds``.

A real SQLite store is filled with the deterministic sample feed (as a consumer would have stored
it), then read back through the CLI; exports are parsed again and compared with the store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stix2
from typer.testing import CliRunner

from intelbus import samples
from intelbus.cli.main import app
from intelbus.interop.stix import stix_bundle
from intelbus.kinds import KIND_BY_LABEL, RecordKind
from intelbus.records import Sighting
from intelbus.store import open_store
from intelbus.store.export import CSV_COLUMNS
from intelbus.trust.model import (
    AmendmentStatus,
    Batch,
    Change,
    FeedBeat,
    Labels,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    Quarantined,
    VersionDecision,
    VersionSource,
)
from tests.stixcheck import assert_strict

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TOPIC = "intelbus.sightings"
INCIDENTS = "intelbus.incidents"
POLICY = "a" * 64
KEY = bytes(range(16))
WITHHELD_ID = "00000000-0000-4000-8000-000000000001"
RETRACTION_ID = "00000000-0000-4000-8000-000000000002"


@dataclass(frozen=True)
class Row:
    """A record as the judge decided to store it, with the fields the tests compare."""

    new: NewRecord

    @property
    def record_id(self) -> str:
        return self.new.record_id

    @property
    def kind(self) -> str:
        return self.new.kind.label

    @property
    def payload(self) -> dict[str, Any]:
        assert self.new.decision.payload is not None
        return self.new.decision.payload

    @property
    def digest(self) -> bytes:
        return self.new.source.digest

    @property
    def policy_hash(self) -> str:
        return self.new.decision.policy_hash

    @property
    def force_area(self) -> str | None:
        assert self.new.decision.labels is not None
        return self.new.decision.labels.force_area

    @property
    def occurred_at(self) -> datetime | None:
        assert self.new.decision.labels is not None
        return self.new.decision.labels.occurred_at


def _source(n: int, record_id: str, topic: str, **kw: Any) -> VersionSource:
    return VersionSource(
        record_id=record_id,
        key_id=KEY,
        sequence=n,
        digest=hashlib.sha256(record_id.encode()).digest(),
        topic=topic,
        partition=0,
        offset=n,
        created_at=T0 + timedelta(minutes=n),
        appended_at=T0 + timedelta(minutes=n, seconds=1),
        **kw,
    )


def _stored(
    n: int,
    model: samples.Sighting | samples.Incident,
    payload: dict[str, Any] | None = None,
    *,
    producer: str = "cst",
    outcome: Outcome = Outcome.STORE,
) -> NewRecord:
    """The record a consumer whose policy stores everything would have committed."""
    facts = model.facts()
    body = payload if payload is not None else json.loads(model.model_dump_json())
    labels = Labels(
        facts.tlp.value, facts.classification.value, facts.force_area, facts.occurred_at
    )
    held = outcome in (Outcome.STORE, Outcome.REDACT)
    decision = VersionDecision(outcome, "all", POLICY, body if held else None, (), labels)
    topic = TOPIC if isinstance(model, Sighting) else INCIDENTS
    rid = str(model.record_id)
    return NewRecord(producer, rid, KIND_BY_LABEL[model.KIND], _source(n, rid, topic), decision)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[Row]]:
    """A store with the sample feed, a withheld record, a quarantined one and a retraction of
    the first sighting."""
    path = tmp_path / "herts.sqlite"
    feed = samples.feed(seed=11, sightings=8, incidents=6)
    rows = [Row(_stored(i, m)) for i, m in enumerate(feed)]
    first_sighting = next(r for r in rows if r.kind == "sighting")
    withheld = NewRecord(
        "cst",
        WITHHELD_ID,
        RecordKind.SIGHTING,
        _source(99, WITHHELD_ID, TOPIC),
        VersionDecision(Outcome.WITHHOLD, "red-withheld", POLICY),
    )
    retraction = _source(
        101,
        RETRACTION_ID,
        TOPIC,
        reason="entered in error",
        amended_at=T0 + timedelta(hours=5),
    )
    raw = b"\x00garbage"
    store = open_store(str(path))
    try:
        store.commit(
            Batch(
                group_id="herts",
                records=[*(r.new for r in rows), withheld],
                quarantined=[
                    Quarantined(
                        TOPIC,
                        0,
                        100,
                        raw,
                        len(raw),
                        hashlib.blake2b(raw, digest_size=32).digest(),
                        "malformed",
                        "truncated",
                        None,
                        None,
                    )
                ],
                amendments=[
                    NewAmendment(
                        "cst",
                        RETRACTION_ID,
                        RecordKind.RETRACTION,
                        first_sighting.record_id,
                        AmendmentStatus.APPLIED,
                        retraction,
                    )
                ],
                versions=[
                    NewVersion(
                        "cst",
                        first_sighting.record_id,
                        Change.RETRACTION,
                        retraction,
                        VersionDecision(Outcome.RETRACT, "retraction", POLICY),
                    )
                ],
            )
        )
    finally:
        store.close()
    return path, rows


def _store_with(path: Path, *records: NewRecord) -> Path:
    s = open_store(str(path))
    try:
        s.commit(Batch(group_id="g", records=records))
    finally:
        s.close()
    return path


# Every read names its user (the access log, docs/access-log.md); a justification and a recipient
# are given where a command needs them (the sample feed has TLP:RED and handling-code C records).
runner = CliRunner(env={"INTELBUS_USER": "analyst.test"})
WHY = ("--justification", "test of the store commands")
TO = ("--to", "the test suite")


def _run(*args: str) -> str:
    # A wide terminal, so that no table cell is cut short whatever columns a table has.
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_filters_by_kind_area_and_time(filled) -> None:
    path, rows = filled
    out = _run("store", "list", "--store", str(path), "--kind", "incident", "--json", *WHY)
    listed = [json.loads(line) for line in out.splitlines()]
    assert {r["record_id"] for r in listed} == {r.record_id for r in rows if r.kind == "incident"}
    # Newest event first.
    times = [r["occurred_at"] for r in listed]
    assert times == sorted(times, reverse=True)

    area = next(r.force_area for r in rows if r.force_area)
    out = _run("store", "list", "--store", str(path), "--area", str(area), "--json", *WHY)
    assert {json.loads(x)["record_id"] for x in out.splitlines()} == {
        r.record_id for r in rows if r.force_area == area
    }

    events = sorted(r.occurred_at for r in rows if r.occurred_at)
    cut = events[len(events) // 2]
    out = _run("store", "list", "--store", str(path), "--since", cut.isoformat(), "--json", *WHY)
    expected = {r.record_id for r in rows if r.occurred_at and r.occurred_at >= cut}
    assert {json.loads(x)["record_id"] for x in out.splitlines()} == expected
    assert 0 < len(expected) < len(rows)


def test_list_table_shows_whole_record_ids(filled) -> None:
    path, rows = filled
    out = _run("store", "list", "--store", str(path), "--limit", "3", *WHY)
    ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out)
    assert len(ids) == 3
    assert set(ids) <= {r.record_id for r in rows}


def test_show_prints_the_record_with_its_history(filled) -> None:
    path, rows = filled
    retracted = next(r for r in rows if r.kind == "sighting")
    shown = json.loads(_run("store", "show", retracted.record_id, "--store", str(path), *WHY))
    assert shown["retracted"] is True
    assert shown["version"] == 2
    assert [(h["version"], h["kind"]) for h in shown["history"]] == [
        (1, "original"),
        (2, "retraction"),
    ]
    assert shown["history"][1]["reason"] == "entered in error"
    assert shown["history"][1]["amendment_record_id"] == RETRACTION_ID
    assert shown["history"][0]["payload"] == retracted.payload
    assert shown["payload"] == retracted.payload
    assert shown["digest"] == retracted.digest.hex()


def test_show_tells_withheld_from_unknown(filled) -> None:
    path, _ = filled
    withheld = runner.invoke(app, ["store", "show", WITHHELD_ID, "--store", str(path)])
    assert withheld.exit_code == 1
    assert "withheld" in withheld.output
    assert "no content is held" in withheld.output
    assert withheld.stdout == ""  # reported, not shown
    unknown = runner.invoke(app, ["store", "show", "nope", "--store", str(path)])
    assert unknown.exit_code == 1
    assert "no record nope" in unknown.output


def test_show_prints_every_producers_record_with_that_id(tmp_path: Path) -> None:
    """A record is (producer, id): with several producers' records under one id, ``show`` prints
    them all as a JSON array, by producer; --producer picks one."""
    model = samples.feed(seed=5, sightings=1, incidents=0)[0]
    rid = str(model.record_id)
    theirs = json.loads(model.model_dump_json())
    theirs["description"] = "gmp's own account"
    path = _store_with(
        tmp_path / "s.sqlite", _stored(0, model), _stored(1, model, theirs, producer="gmp")
    )
    shown = json.loads(_run("store", "show", rid, "--store", str(path), *WHY))
    assert isinstance(shown, list)
    assert [(r["producer_id"], r["record_id"]) for r in shown] == [("cst", rid), ("gmp", rid)]
    assert shown[1]["payload"]["description"] == "gmp's own account"
    one = json.loads(_run("store", "show", rid, "--store", str(path), "--producer", "gmp", *WHY))
    assert isinstance(one, dict)
    assert (one["producer_id"], one["payload"]) == ("gmp", theirs)
    nobody = runner.invoke(app, ["store", "show", rid, "--store", str(path), "--producer", "x"])
    assert nobody.exit_code == 1
    assert f"no record {rid}" in nobody.output


def test_show_reports_a_producers_record_held_without_content(tmp_path: Path) -> None:
    """--producer naming a record whose current version is withheld: reported, no JSON."""
    model = samples.feed(seed=5, sightings=1, incidents=0)[0]
    rid = str(model.record_id)
    path = _store_with(
        tmp_path / "s.sqlite",
        _stored(0, model),
        _stored(1, model, producer="mallory", outcome=Outcome.WITHHOLD),
    )
    result = runner.invoke(
        app, ["store", "show", rid, "--store", str(path), "--producer", "mallory"]
    )
    assert result.exit_code == 1
    assert "mallory" in result.output
    assert "withheld" in result.output
    assert result.stdout == ""
    cst = json.loads(_run("store", "show", rid, "--store", str(path), "--producer", "cst", *WHY))
    assert cst["producer_id"] == "cst"


def test_a_missing_store_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite"
    result = runner.invoke(app, ["store", "list", "--store", str(missing)])
    assert result.exit_code == 2
    assert "no store at" in result.output
    assert not missing.exists()


def test_search_finds_text_in_payloads(filled) -> None:
    path, rows = filled
    word = rows[0].payload["description"].split()[-1].strip(".").lower()  # type: ignore[union-attr]
    out = _run("store", "search", word, "--store", str(path), "--json", *WHY)
    found = {json.loads(x)["record_id"] for x in out.splitlines()}
    expected = {r.record_id for r in rows if word in json.dumps(r.payload).lower()}
    assert rows[0].record_id in found
    assert found == expected


def test_export_jsonl_has_every_record_once(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = tmp_path / "export.jsonl"
    _run("store", "export", "--store", str(path), "--format", "jsonl", "--out", str(out), *WHY, *TO)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(e["record_id"] for e in exported) == sorted(r.record_id for r in rows)
    by_id = {e["record_id"]: e for e in exported}
    for r in rows:
        assert by_id[r.record_id]["payload"] == r.payload
        assert by_id[r.record_id]["policy_hash"] == r.policy_hash
    assert not (tmp_path / "export.jsonl.partial").exists()
    # No temporary file is left beside the export.
    assert [p.name for p in tmp_path.iterdir() if "export" in p.name] == ["export.jsonl"]


def test_export_csv_filters_and_neutralises_formulas(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = _run(
        "store", "export", "--store", str(path), "--format", "csv", "--kind", "sighting", *WHY, *TO
    )
    table = list(csv.DictReader(io.StringIO(out)))
    assert tuple(table[0].keys()) == CSV_COLUMNS
    assert sorted(r["record_id"] for r in table) == sorted(
        r.record_id for r in rows if r.kind == "sighting"
    )

    # A value an attacker controls that a spreadsheet would evaluate.
    model = samples.feed(seed=3, sightings=1, incidents=0)[0]
    payload = json.loads(model.model_dump_json())
    payload["place"] = {**payload["place"], "address_or_area": '=HYPERLINK("http://x")'}
    evil = _store_with(tmp_path / "evil.sqlite", _stored(0, model, payload))
    out = _run("store", "export", "--store", str(evil), "--format", "csv", *WHY, *TO)
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["address_or_area"].startswith("'=")


def test_export_csv_keeps_a_record_with_line_breaks_on_one_row(tmp_path: Path) -> None:
    """A lone CR, LF or CRLF in a value stays inside its cell, and a formula on a later line of
    the cell is neutralised too."""
    address = 'a\rb\nc\r\n=HYPERLINK("http://x")\r @SUM(1)'
    model = samples.feed(seed=3, sightings=1, incidents=0)[0]
    payload = json.loads(model.model_dump_json())
    payload["place"] = {**payload["place"], "address_or_area": address}
    evil = _store_with(tmp_path / "evil.sqlite", _stored(0, model, payload))
    out = tmp_path / "evil.csv"
    _run("store", "export", "--store", str(evil), "--format", "csv", "--out", str(out), *WHY, *TO)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 2  # the header and the one record
    assert len(rows[1]) == len(CSV_COLUMNS)
    cell = rows[1][CSV_COLUMNS.index("address_or_area")]
    assert cell == "a\nb\nc\n'=HYPERLINK(\"http://x\")\n' @SUM(1)"


def test_export_file_is_0600_and_never_written_through_a_link(filled, tmp_path: Path) -> None:
    """Another local user cannot read the export, nor make it overwrite a file of theirs choosing."""
    path, rows = filled
    victim = tmp_path / "victim"
    victim.write_text("the analyst's own file\n")
    out = tmp_path / "export.csv"
    out.symlink_to(victim)
    (tmp_path / "export.csv.partial").symlink_to(victim)  # the fixed temporary name used before
    old = os.umask(0)  # so a mode taken from the umask would show as 0666
    try:
        _run(
            "store", "export", "--store", str(path), "--format", "csv", "--out", str(out), *WHY, *TO
        )
    finally:
        os.umask(old)
    assert victim.read_text() == "the analyst's own file\n"
    assert not out.is_symlink()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)


def test_export_stix_bundle_is_strict_stix(filled, tmp_path: Path) -> None:
    path, rows = filled
    out = tmp_path / "bundle.json"
    _run("store", "export", "--store", str(path), "--format", "stix", "--out", str(out), *WHY, *TO)
    bundle = json.loads(out.read_text())
    assert_strict(bundle)
    assert len(stix2.parse(bundle, allow_custom=False).objects) == len(bundle["objects"])
    objects = {o["id"]: o for o in bundle["objects"]}
    mains = [o for o in objects.values() if o["type"] in ("sighting", "incident")]
    by_record: dict[str, list[dict[str, Any]]] = {}
    for o in mains:
        (ref,) = o["external_references"]
        assert ref["source_name"] == "intelbus"
        by_record.setdefault(ref["external_id"], []).append(o)
    # Sightings and incidents, the retracted one included (revoked).
    assert sorted(by_record) == sorted(r.record_id for r in rows)
    retracted = next(r for r in rows if r.kind == "sighting").record_id
    assert all(o.get("revoked") is True for o in by_record[retracted])
    assert not any(
        o.get("revoked") for rid, os in by_record.items() if rid != retracted for o in os
    )
    for rid, found in by_record.items():
        row = next(r for r in rows if r.record_id == rid)
        for o in found:
            assert o["type"] == row.kind
            assert o["spec_version"] == "2.1"
            assert objects[o["created_by_ref"]]["type"] == "identity"
            assert o["modified"] >= o["created"]
            # The TLP 2.0 marking, included in the bundle.
            (marking,) = o["object_marking_refs"]
            assert objects[marking]["name"] == "TLP:" + row.payload["grading"]["tlp"].replace(
                "_", "+"
            )
            # Free text travels now (the policy kept it): the round trip keeps every field.
            assert o["description"] == row.payload["description"]
            if o["type"] == "sighting":
                assert objects[o["sighting_of_ref"]]["type"] == "attack-pattern"
                assert {objects[ref]["type"] for ref in o["where_sighted_refs"]} == {"location"}
        if row.kind == "sighting":
            assert len(found) == len(row.payload["behaviours"])  # one sighting per behaviour
    assert "x_intelbus" not in out.read_text()
    # The same record always gets the same STIX ids.
    store = open_store(str(path))
    try:
        again = stix_bundle(store.iter_records(), exported_at=datetime.now(UTC))
    finally:
        store.close()
    assert {o["id"] for o in again["objects"]} == set(objects)


def test_quarantine_and_summary(filled) -> None:
    path, rows = filled
    out = _run("store", "quarantine", "--store", str(path))
    assert "malformed" in out
    assert "1 entry" in out
    out = _run("store", "summary", "--store", str(path))
    assert re.search(rf"stored\s*│\s*{len(rows) - 1}\b", out)  # one was retracted
    assert re.search(r"retracted\s*│\s*1\b", out)
    assert re.search(r"withheld\s*│\s*1\b", out)
    assert re.search(r"amendments_applied\s*│\s*1\b", out)
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

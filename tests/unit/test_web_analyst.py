"""The analyst's pages of a force's console, against a real store and a real console on loopback.

Each page is fetched by a signed-in user (and refused to a stranger); the store's access log is
read back after each page: one entry, with the user, the records shown and no search text; a
restricted record needs a justification typed on its page; an export gives the bytes the CLI's
``intelbus store export`` gives for the same options.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.kinds import RecordKind
from intelbus.policy.redact import REDACTED
from intelbus.store import open_store
from intelbus.store.access import AccessEntry, AccessLog, restriction, text_digest
from intelbus.trust.model import Batch, Labels, NewRecord, Outcome, VersionDecision
from tests.taxii_store import (
    KEY,
    POLICY,
    PRODUCER,
    SIGHTINGS,
    T0,
    Filled,
    _source,
    correct,
    fill,
    force_config,
    users_file,
)
from tests.webconsole import Client, RunningConsole, web_section
from web.filters import parse_filters
from web.links import link_keys
from web.recordview import payload_items, summary

USER, PASSWORD = "ana.analyst", "correct horse battery"
PAGES = ("/records", "/timeline", "/map", "/links")
REDACTED_ID = "00000000-0000-4000-8000-0000000000cc"
WHY = "case 4411: linked incidents"
TO = "Herts MASH"
runner = CliRunner()


@dataclass
class Setup:
    filled: Filled
    console: RunningConsole
    client: Client

    @property
    def store(self) -> str:
        return str(self.filled.path)

    def entries(self) -> list[AccessEntry]:
        store = open_store(self.store)
        try:
            return AccessLog(store).entries()
        finally:
            store.close()

    def views(self) -> list[Any]:
        store = open_store(self.store)
        try:
            return list(store.iter_records())
        finally:
            store.close()


def _redacted_record(path: Path) -> None:
    """A sighting the policy redacted: description held as the placeholder, and reporter_ref
    listed as redacted although its stored value is not (the page must still not show it)."""
    payload = {
        "record_id": REDACTED_ID,
        "grading": {
            "source_evaluation": "S1",
            "assessment": "A",
            "handling_code": "P",
            "handling_conditions": [],
            "tlp": "GREEN",
            "classification": "OFFICIAL",
        },
        "observed_at": "2026-09-02T10:00:00Z",
        "place": {
            "site_name": "Radlett synagogue",
            "site_kind": "SYNAGOGUE",
            "address_or_area": "Radlett",
            "force_area": "HERTFORDSHIRE",
            "latitude": 51.685,
            "longitude": -0.318,
        },
        "behaviours": ["LOITERING"],
        "description": REDACTED,
        "persons": [],
        "vehicles": [],
        "reporter_ref": "SECRET-REF-77",
        "police_crime_reference": None,
    }
    labels = Labels("GREEN", "OFFICIAL", "HERTFORDSHIRE", datetime(2026, 9, 2, 10, tzinfo=UTC))
    decision = VersionDecision(
        Outcome.REDACT, "redact-herts", POLICY, payload, ("description", "reporter_ref"), labels
    )
    record = NewRecord(
        PRODUCER, REDACTED_ID, RecordKind.SIGHTING, _source(950, REDACTED_ID, SIGHTINGS), decision
    )
    store = open_store(str(path))
    try:
        store.commit(Batch(group_id="herts", records=[record]))
    finally:
        store.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    filled = fill(tmp_path / "herts.sqlite")
    _redacted_record(filled.path)
    users = users_file(tmp_path / "web-users.json", (USER, PASSWORD, None))
    config = force_config(tmp_path, filled.path, 'users_file = "taxii-users.json"')
    config.write_text(config.read_text() + "\n" + web_section(users))
    running = RunningConsole(config)
    client = running.client()
    assert client.sign_in(USER, PASSWORD).status == 303
    try:
        yield Setup(filled, running, client)
    finally:
        running.stop()


def _unrestricted(s: Setup) -> Any:
    return next(
        v
        for v in s.views()
        if restriction(v) is None
        and not v.redacted_fields
        and v.version == 1
        and v.kind == "sighting"
    )


def _restricted(s: Setup) -> Any:
    return next(v for v in s.views() if restriction(v) is not None)


def _ids(body: str) -> set[str]:
    """The records a page links to, or marks on its map."""
    linked = set(re.findall(r'href="/records/([0-9a-f-]{36})"', body))
    marks = re.findall(r'data-record-ids="([^"]+)"', body)
    return linked | {rid for m in marks for rid in m.split()}


# --- without a session --------------------------------------------------------------------------


def test_no_page_without_signing_in(setup: Setup) -> None:
    stranger = setup.console.client()
    rid = _unrestricted(setup).record_id
    for path in (*PAGES, "/export", f"/records/{rid}"):
        reply = stranger.get(path)
        assert reply.status == 303, path
        assert reply.location is not None
        assert reply.location.startswith("/signin?next="), path
    assert stranger.post("/export", {"format": "jsonl", "to": TO}).status == 403
    assert stranger.post(f"/records/{rid}", {"justification": WHY}).status == 403
    assert setup.entries() == []  # nothing read, nothing logged


# --- every page, one entry each -------------------------------------------------------------------


def test_each_page_renders_and_writes_one_entry_with_the_user(setup: Setup) -> None:
    expected = {"/records": "list", "/timeline": "timeline", "/map": "map", "/links": "links"}
    for path, action in expected.items():
        before = len(setup.entries())
        reply = setup.client.get(path)
        assert reply.status == 200, (path, reply.body[:300])
        # Nothing the strict CSP would block: no inline style or script.
        for inline in ("<style", 'style="', "<script"):
            assert inline not in reply.body, (path, inline)
        after = setup.entries()
        assert len(after) == before + 1, path
        assert (after[-1].user, after[-1].action) == (USER, action)
        # The entry names exactly the records the page links to.
        assert {r for _, r in after[-1].records} == _ids(reply.body), path
    rid = _unrestricted(setup).record_id
    reply = setup.client.get(f"/records/{rid}")
    assert reply.status == 200
    last = setup.entries()[-1]
    assert (last.user, last.action, last.query["record_id"]) == (USER, "show", rid)
    assert (PRODUCER, rid) in last.records
    export = setup.client.get("/export")
    assert export.status == 200
    assert 'name="to"' in export.body
    assert setup.entries()[-1].seq == last.seq  # the form shows no record: nothing to log


def test_the_list_hides_restricted_contents_but_names_them(setup: Setup) -> None:
    body = setup.client.get("/records?limit=500").body
    restricted = _restricted(setup)
    assert restricted.record_id in body
    assert str(restricted.payload["description"]) not in body
    open_ = _unrestricted(setup)
    assert summary(open_)[:40] in body


# --- filters and search -----------------------------------------------------------------------------


def test_filters_narrow_the_list(setup: Setup) -> None:
    views = setup.views()
    all_ids = _ids(setup.client.get("/records?limit=500").body)
    incidents = _ids(setup.client.get("/records?kind=incident&limit=500").body)
    assert incidents
    assert incidents < all_ids
    assert incidents == {v.record_id for v in views if v.kind == "incident"}
    herts = _ids(setup.client.get("/records?area=hertfordshire").body)
    assert herts == {v.record_id for v in views if v.force_area == "HERTFORDSHIRE"}
    assert len(_ids(setup.client.get("/records?limit=2").body)) == 2
    red = _ids(setup.client.get("/records?tlp=TLP:RED").body)
    assert red == {v.record_id for v in views if v.tlp == "RED"}
    entry = setup.entries()[-1]
    assert entry.query["tlp"] == "RED"
    assert entry.action == "list"


def test_a_bad_date_is_shown_beside_its_field(setup: Setup) -> None:
    before = len(setup.entries())
    reply = setup.client.get("/records?since=yesterday&kind=incident")
    assert reply.status == 400
    field = re.search(
        r'<div class="field invalid">\s*<label for="f-since">.*?</div>', reply.body, re.S
    )
    assert field is not None
    assert "not an ISO 8601 date" in field.group(0)
    assert 'value="yesterday"' in reply.body  # kept for correcting
    assert _ids(reply.body) == set()
    assert len(setup.entries()) == before  # nothing shown, nothing logged


def test_search_finds_by_text_and_logs_only_its_digest(setup: Setup) -> None:
    target = _unrestricted(setup)
    text = str(target.payload["reporter_ref"])
    reply = setup.client.post(
        "/records", {"csrf": setup.client.get("/records").csrf(), "q": text.lower()}
    )
    assert reply.status == 200
    assert _ids(reply.body) == {target.record_id}
    entry = setup.entries()[-1]
    assert entry.action == "search"
    assert entry.user == USER
    assert entry.records == ((PRODUCER, target.record_id),)
    assert entry.query["text_blake2b"] == text_digest(text.lower())["text_blake2b"]
    assert text.lower() not in json.dumps(entry.body()).lower()


# --- one record ---------------------------------------------------------------------------------------


def test_a_record_page_shows_provenance_and_history(setup: Setup) -> None:
    original = next(
        r for r in setup.filled.records if r.record_id == _unrestricted(setup).record_id
    )
    correct(
        setup.filled.path,
        original,
        description="Corrected: two people, not one.",
        n=960,
        at=T0 + timedelta(days=1),
    )
    view = next(v for v in setup.views() if v.record_id == original.record_id)
    assert view.version == 2
    body = setup.client.get(f"/records/{original.record_id}").body
    for shown in (
        view.producer_id,
        KEY.hex(),
        view.digest.hex(),
        f"sequence {view.sequence}",
        f"{view.topic} / {view.partition} / {view.offset}",
        view.rule_id,
        view.policy_hash,
        "Directory version",
        "Broker time",
        "Corrected: two people, not one.",
        "correction",
        "detail",  # the correction's reason
    ):
        assert shown in body, shown
    assert "v2" in body
    # The earlier payload, inside <details>.
    details = re.findall(r"<details>.*?</details>", body, re.S)
    assert any(str(original.decision.payload["description"]) in d for d in details)


def test_a_restricted_record_needs_a_justification_and_the_refusal_is_logged(setup: Setup) -> None:
    view = _restricted(setup)
    page = setup.client.get(f"/records/{view.record_id}")
    assert page.status == 403
    assert 'name="justification"' in page.body
    assert str(view.payload["description"]) not in page.body
    refused = setup.entries()[-1]
    assert (refused.action, refused.user, refused.justification) == ("show_refused", USER, None)
    blank = setup.client.post(
        f"/records/{view.record_id}", {"csrf": page.csrf(), "justification": "  "}
    )
    assert blank.status == 403
    assert str(view.payload["description"]) not in blank.body
    assert setup.entries()[-1].action == "show_refused"
    shown = setup.client.post(
        f"/records/{view.record_id}", {"csrf": page.csrf(), "justification": WHY}
    )
    assert shown.status == 200
    assert str(view.payload["description"]) in shown.body
    entry = setup.entries()[-1]
    assert (entry.action, entry.user, entry.justification) == ("show", USER, WHY)
    # Without the session's token the justification form is refused (CSRF).
    assert (
        setup.client.post(f"/records/{view.record_id}", {"csrf": "x", "justification": WHY}).status
        == 403
    )


def test_a_redacted_field_shows_as_redacted(setup: Setup) -> None:
    body = setup.client.get(f"/records/{REDACTED_ID}").body
    assert "SECRET-REF-77" not in body  # listed as redacted: not shown whatever is stored
    assert REDACTED not in body
    redacted = re.findall(
        r"<dt>([^<]+)</dt>\s*<dd>\s*<span class=\"redacted\">redacted by your policy</span>", body
    )
    assert set(redacted) == {"Description", "Reporter reference"}


def test_record_ids_are_validated_and_unknown_ones_are_404(setup: Setup) -> None:
    assert setup.client.get("/records/not-a-uuid").status == 404
    assert setup.client.get("/records/00000000-0000-4000-8000-00000000ffff").status == 404


# --- map, links -----------------------------------------------------------------------------------


def test_the_map_leaves_restricted_records_out_and_counts_them(setup: Setup) -> None:
    views = setup.views()
    hidden = sum(1 for v in views if restriction(v) is not None)
    assert hidden > 0
    body = setup.client.get("/map").body
    assert f"{hidden} restricted records not shown" in body
    points = re.findall(r'data-record-ids="([^"]+)"', body)
    on_map = {rid for p in points for rid in p.split()}
    assert on_map == {v.record_id for v in views if restriction(v) is None}
    assert setup.entries()[-1].query["restricted_left_out"] == hidden


def test_links_group_records_that_share_a_key(setup: Setup) -> None:
    body = setup.client.get("/links").body
    groups = re.findall(r'<section class="panel link-group".*?</section>', body, re.S)
    assert groups, "the sample feed has records at one site"
    by_id = {v.record_id: v for v in setup.views()}
    for g in groups:
        ids = _ids(g)
        assert len(ids) >= 2
        shared = set.intersection(*(set(link_keys(by_id[i].payload)) for i in ids))
        assert shared
        assert all(restriction(by_id[i]) is None for i in ids)


# --- export ---------------------------------------------------------------------------------------


def _cli_export(store: str, fmt: str, *extra: str) -> str:
    args = [
        "store",
        "export",
        "--store",
        store,
        "--format",
        fmt,
        "--user",
        USER,
        "--to",
        TO,
        *extra,
    ]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _without_times(value: Any) -> Any:
    """STIX/MISP documents with the values that depend on when they were made blanked."""
    if isinstance(value, dict):
        return {
            k: _without_times(v)
            for k, v in value.items()
            if k != "id" or not str(v).startswith("bundle--")
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("jsonl", "application/x-ndjson"),
        ("csv", "text/csv; charset=utf-8"),
        ("geojson", "application/geo+json"),
        ("stix", "application/stix+json;version=2.1"),
        ("misp", "application/json"),
    ],
)
def test_export_gives_what_the_cli_gives(setup: Setup, fmt: str, content_type: str) -> None:
    form = setup.client.get("/export")
    fields = {
        "csrf": form.csrf(),
        "format": fmt,
        "kind": "sighting",
        "since": "2026-01-01",
        "to": TO,
        "justification": WHY,
    }
    reply = setup.client.post("/export", fields)
    assert reply.status == 200, reply.body[:400]
    assert reply.headers["content-type"] == content_type
    assert reply.headers["content-disposition"].startswith('attachment; filename="intelbus-export-')
    cli = _cli_export(
        setup.store, fmt, "--kind", "sighting", "--since", "2026-01-01", "--justification", WHY
    )
    if fmt in ("stix",):
        assert _without_times(json.loads(reply.body)) == _without_times(json.loads(cli))
    else:
        assert reply.body == cli
    web_entry, cli_entry = [e for e in setup.entries() if e.action == "export"][-2:]
    assert (web_entry.user, web_entry.recipient, web_entry.justification) == (USER, TO, WHY)
    assert web_entry.records == cli_entry.records
    assert web_entry.query["format"] == fmt
    assert web_entry.query["kind"] == "sighting"


def test_export_of_restricted_records_needs_a_justification_and_a_recipient(setup: Setup) -> None:
    form = setup.client.get("/export")
    no_to = setup.client.post("/export", {"csrf": form.csrf(), "format": "jsonl", "to": ""})
    assert no_to.status == 400
    assert "name to whom" in no_to.body
    refused = setup.client.post("/export", {"csrf": form.csrf(), "format": "jsonl", "to": TO})
    assert refused.status == 403
    assert "give a justification" in refused.body
    entry = setup.entries()[-1]
    assert (entry.action, entry.recipient, entry.user) == ("export_refused", TO, USER)
    # Only unrestricted records asked for: no justification needed.
    views = setup.views()
    combos = {(v.kind, v.tlp) for v in views}
    kind, tlp = next(
        (k, t)
        for k, t in sorted(combos, key=str)
        if all(restriction(v) is None for v in views if (v.kind, v.tlp) == (k, t))
    )
    fields = {"csrf": form.csrf(), "format": "jsonl", "tlp": str(tlp), "kind": kind, "to": TO}
    ok = setup.client.post("/export", fields)
    assert ok.status == 200
    rows = [json.loads(line) for line in ok.body.splitlines()]
    assert rows
    assert all((r["kind"], r["tlp"]) == (kind, tlp) for r in rows)
    entry = setup.entries()[-1]
    assert (entry.action, entry.justification, entry.recipient) == ("export", None, TO)


# --- the pure helpers -------------------------------------------------------------------------------


def test_filters_parse_like_the_cli() -> None:
    args = {
        "kind": "Incidents",
        "since": "2026-09-01",
        "until": "2026-09-02T12:00+01:00",
        "area": "hertfordshire",
        "tlp": "tlp:amber+strict",
        "limit": "5",
    }
    f = parse_filters(args.get)
    assert f.ok
    assert (f.kind, f.area, f.tlp, f.limit) == ("incident", "HERTFORDSHIRE", "AMBER_STRICT", 5)
    assert f.since == datetime(2026, 9, 1, tzinfo=UTC)
    assert f.until == datetime(2026, 9, 2, 11, tzinfo=UTC)
    bad = parse_filters({"since": "soon", "area": "gotham", "limit": "-1", "kind": "x"}.get)
    assert set(bad.errors) == {"since", "area", "limit", "kind"}
    order = parse_filters({"since": "2026-09-02", "until": "2026-09-01"}.get)
    assert set(order.errors) == {"until"}


def test_payload_items_enforce_the_redactions() -> None:
    items = payload_items(
        {"a": "x", "place": {"site_name": "S", "latitude": 1.0}, "b": "secret"},
        ("b", "place.latitude"),
    )
    by = {i.label: i for i in items}
    assert by["B"].redacted
    assert by["B"].text is None
    place = {i.label: i for i in by["Place"].children}
    assert place["Latitude"].redacted
    assert place["Site name"].text == "S"
    assert by["A"].text == "x"

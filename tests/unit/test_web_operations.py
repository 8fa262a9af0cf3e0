"""The operations pages of a force's console: feeds, quarantine, lag and audit reports.

A real console on a loopback port, a store filled through the store's own commit API (as a
consumer fills it), a real audit report written by the auditor's own code path, and a broker
address nothing listens on for the lag page's warning. Lag against a real broker is
tests/integration/test_web_lag.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intelbus.store import open_store
from intelbus.store.access import AccessLog
from intelbus.trust.model import Batch, FeedBeat, Quarantined, VouchedHead
from tests.simulator import BusSimulator
from tests.taxii_store import fill, users_file
from tests.unit.test_audit import _hostile_topic, _run
from tests.webconsole import Client, RunningConsole, web_section
from web import ops

USER, PASSWORD = "dave", "correct horse battery staple"
SIGHTINGS = "intelbus.sightings"
GROUP = "intelbus.herts-police"
RAW = b"\x00not an envelope"


@dataclass
class Setup:
    console: RunningConsole
    store: Path
    reports: Path

    def signed_in(self) -> Client:
        client = self.console.client()
        assert client.sign_in(USER, PASSWORD).status == 303
        return client


def _commit_operations_rows(store_path: Path) -> None:
    """Heartbeats (one fresh, one stale), two quarantined records and stored offsets, committed
    as the consumer commits them."""
    now = datetime.now(UTC)
    store = open_store(str(store_path))
    try:
        store.commit(
            Batch(
                GROUP,
                beats=[
                    FeedBeat("cst", "intelbus.heartbeats", now - timedelta(seconds=5), 30_000),
                    FeedBeat("gmp", "intelbus.heartbeats", now - timedelta(hours=2), 60_000),
                ],
                quarantined=[
                    Quarantined(
                        SIGHTINGS,
                        0,
                        100,
                        RAW,
                        len(RAW),
                        hashlib.blake2b(RAW, digest_size=32).digest(),
                        "malformed",
                        "not an envelope",
                        None,
                        None,
                    ),
                    Quarantined(
                        SIGHTINGS,
                        1,
                        7,
                        RAW,
                        len(RAW),
                        hashlib.blake2b(RAW + b"x", digest_size=32).digest(),
                        "bad_signature",
                        "signature does not verify",
                        "00000000-0000-4000-8000-00000000beef",
                        "cst",
                    ),
                ],
                offsets={(SIGHTINGS, 0): 12, (SIGHTINGS, 1): 7},
            )
        )
    finally:
        store.close()


def _config(folder: Path, store: Path, users: Path, reports: Path | None) -> Path:
    config = folder / "herts.toml"
    extra = "" if reports is None else f'audit_reports = "{reports}"\n'
    config.write_text(
        f"""agency = "herts-police"
key_file = "keys/herts.key"
directory = "directory"
policy = "policy.toml"
store = "{store}"
environment = "test"
bootstrap_servers = "127.0.0.1:1"

{web_section(users, extra)}"""
    )
    return config


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    store = fill(tmp_path / "herts.sqlite").path
    _commit_operations_rows(store)
    users = users_file(tmp_path / "users.toml", (USER, PASSWORD, None))
    reports = tmp_path / "reports"
    reports.mkdir()
    running = RunningConsole(_config(tmp_path, store, users, reports))
    try:
        yield Setup(running, store, reports)
    finally:
        running.stop()


PAGES = ("/feeds", "/quarantine", "/lag", "/audit")


@pytest.mark.parametrize("path", PAGES)
def test_each_page_needs_a_session(setup: Setup, path: str) -> None:
    reply = setup.console.client().get(path)
    assert reply.status == 303
    assert reply.location is not None
    assert reply.location.startswith("/signin?next=")


def test_the_nav_names_the_operations_pages(setup: Setup) -> None:
    body = setup.signed_in().get("/feeds").body
    for path, label in (
        ("/feeds", "Feeds"),
        ("/quarantine", "Quarantine"),
        ("/lag", "Lag"),
        ("/audit", "Audit"),
    ):
        assert f'href="{path}"' in body
        assert label in body


def test_feeds_show_the_stale_feed_and_the_alive_one(setup: Setup) -> None:
    reply = setup.signed_in().get("/feeds")
    assert reply.status == 200
    assert "1 stale of 2 feed(s)" in reply.body
    rows = re.findall(r"<tr[^>]*>\s*<td>(\w+)</td>.*?</tr>", reply.body, re.S)
    assert rows == ["gmp", "cst"]  # stale first
    gmp = reply.body[reply.body.index("<td>gmp</td>") : reply.body.index("<td>cst</td>")]
    assert "stale" in gmp
    assert "<td>2 h 0 min</td>" in gmp  # silent for
    assert "<td>1 min 0 s</td>" in gmp  # its interval
    assert "alive" not in gmp
    assert "alive" in reply.body[reply.body.index("<td>cst</td>") :]


def test_feeds_write_no_access_log_entry(setup: Setup) -> None:
    """As `intelbus store feeds`: heartbeats are not records, nothing is logged."""
    setup.signed_in().get("/feeds")
    store = open_store(str(setup.store))
    try:
        assert AccessLog(store).entries(user=USER) == []
    finally:
        store.close()


def test_the_quarantine_shows_reasons_and_writes_the_access_log(setup: Setup) -> None:
    reply = setup.signed_in().get("/quarantine")
    assert reply.status == 200
    assert "2 quarantined record(s): bad_signature 1, malformed 1" in reply.body
    assert '<span class="badge bad">malformed</span>' in reply.body
    assert '<span class="badge bad">bad_signature</span>' in reply.body
    assert "not an envelope" in reply.body  # the reason's message, not the record's bytes
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(re.findall(rf"<td>{today} \d\d:\d\d UTC</td>", reply.body)) == 2  # when
    store = open_store(str(setup.store))
    try:
        entries = AccessLog(store).entries(user=USER, action="quarantine")
    finally:
        store.close()
    assert len(entries) == 1
    assert entries[0].records == (("cst", "00000000-0000-4000-8000-00000000beef"),)
    assert entries[0].query["entries"] == 2


def test_the_quarantine_filters_by_reason_code(setup: Setup) -> None:
    client = setup.signed_in()
    reply = client.get("/quarantine?reason=malformed")
    assert reply.status == 200
    assert '<span class="badge bad">malformed</span>' in reply.body
    assert '<span class="badge bad">bad_signature</span>' not in reply.body
    assert client.get("/quarantine?reason=..%2Fx").status == 400


def test_lag_with_the_broker_down_warns_and_shows_the_stored_offsets(setup: Setup) -> None:
    reply = setup.signed_in().get("/lag")
    assert reply.status == 200
    assert "the broker at 127.0.0.1:1 cannot be reached: lag unknown" in reply.body
    assert GROUP in reply.body
    cells = re.findall(
        r"<tr>\s*<td>([\w.]+)</td>\s*<td>(\d+)</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>", reply.body
    )
    assert (SIGHTINGS, "0", "12", "unknown") in cells
    assert (SIGHTINGS, "1", "7", "unknown") in cells


def _report(tmp_path: Path, folder: Path, name: str) -> dict[str, object]:
    """A report written by the auditor's own code path (a replay of a topic with a hole, a
    replay and garbage)."""
    sim = BusSimulator(tmp_path / "sim")
    _run(sim, _hostile_topic(sim), report=folder / name)
    return json.loads((folder / name).read_text())


def test_an_audit_report_renders_with_its_figures(setup: Setup, tmp_path: Path) -> None:
    data = _report(tmp_path, setup.reports, "sightings-2026-12.json")
    summary = data["summary"]
    assert isinstance(summary, dict)
    client = setup.signed_in()
    listing = client.get("/audit")
    assert 'href="/audit/sightings-2026-12.json"' in listing.body
    reply = client.get("/audit/sightings-2026-12.json")
    assert reply.status == 200
    assert "Verified: the report matches its own digest" in reply.body
    assert "FAILS VERIFICATION" not in reply.body
    assert f'<dd class="ops-records">{summary["records"]}</dd>' in reply.body
    assert f'<dd class="ops-authentic">{summary["authentic"]}</dd>' in reply.body
    assert summary["verdict"] in reply.body
    assert summary["digest"]["value"] in reply.body
    for reason, n in summary["findings"]["by_reason"].items():
        assert f"<tr><td>{reason}</td><td>{n}</td></tr>" in reply.body
    for producer in summary["producers"]:
        assert f"<tr><td>{producer}</td>" in reply.body


def test_a_tampered_audit_report_is_shown_as_failing_verification(
    setup: Setup, tmp_path: Path
) -> None:
    data = _report(tmp_path, setup.reports, "genuine.json")
    findings = data["findings"]
    assert isinstance(findings, list)
    assert findings
    summary = data["summary"]
    assert isinstance(summary, dict)
    # A finding dropped and the count lowered to match, so only the digest can tell.
    summary["findings"]["integrity"] -= 1
    tampered = {**data, "findings": findings[1:], "summary": summary}
    (setup.reports / "edited.json").write_text(json.dumps(tampered))
    reply = setup.signed_in().get("/audit/edited.json")
    assert reply.status == 200
    assert "FAILS VERIFICATION" in reply.body
    assert "does not match its digest" in reply.body
    assert str(setup.reports) not in reply.body  # named by its file name only
    assert "Verified:" not in reply.body


@pytest.mark.parametrize(
    "path",
    [
        "/audit/../../etc/passwd",
        "/audit/..%2F..%2Fetc%2Fpasswd",
        "/audit/%2Fetc%2Fpasswd",
        "/audit/passwd",
        "/audit/.hidden.json",
        "/audit/..",
    ],
)
def test_a_report_name_outside_the_listing_is_refused(setup: Setup, path: str) -> None:
    (setup.reports / ".hidden.json").write_text("{}")
    reply = setup.signed_in().get(path)
    assert reply.status == 404
    assert "root:" not in reply.body


def test_a_report_that_links_elsewhere_is_not_listed(setup: Setup, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (setup.reports / "link.json").symlink_to(outside)
    assert ops.list_reports(setup.reports) == []
    assert setup.signed_in().get("/audit/link.json").status == 404


def test_the_audit_page_says_how_to_configure_its_folder(tmp_path: Path) -> None:
    store = fill(tmp_path / "herts.sqlite").path
    users = users_file(tmp_path / "users.toml", (USER, PASSWORD, None))
    running = RunningConsole(_config(tmp_path, store, users, None))
    try:
        client = running.client()
        assert client.sign_in(USER, PASSWORD).status == 303
        reply = client.get("/audit")
        assert reply.status == 200
        assert "audit_reports" in reply.body
        assert "[web]" in reply.body
        assert client.get("/audit/anything.json").status == 404
    finally:
        running.stop()


def test_the_feeds_headline_and_lag_arithmetic() -> None:
    now = datetime.now(UTC)
    alive = ops.FeedsView((), (), now, 1.5)
    assert alive.headline == "no heartbeat seen yet"
    assert not alive.ok
    row = ops.LagRow("t", 0, None, 5)
    assert row.lag == 5
    assert ops.LagRow("t", 0, 7, 5).lag == 0  # a store ahead of a truncated log is not negative
    assert ops.LagRow("t", 0, 3, None).lag is None
    view = ops.LagView("g", "b", (row, ops.LagRow("t", 1, 2, 4)))
    assert view.total == 7
    assert ops.LagView("g", "b", (row, ops.LagRow("t", 1, 2, None))).total is None


def test_missing_records_show_on_the_feeds_page(setup: Setup) -> None:
    """A heartbeat vouching for sequence numbers the store does not hold: a missing range."""
    now = datetime.now(UTC)
    store = open_store(str(setup.store))
    try:
        store.commit(
            Batch(
                GROUP,
                beats=[
                    FeedBeat(
                        "wmp",
                        "intelbus.heartbeats",
                        now - timedelta(minutes=1),
                        30_000,
                        (VouchedHead(SIGHTINGS, 0, "e" * 64, 4),),
                    )
                ],
            )
        )
    finally:
        store.close()
    reply = setup.signed_in().get("/feeds")
    assert "1 missing range(s), 5 record(s) vouched for and not held" in reply.body
    assert "0&ndash;4" in reply.body
    assert "5 missing" in reply.body


def test_the_quarantine_shows_nothing_when_the_access_log_cannot_be_written(setup: Setup) -> None:
    """Fail closed: an entry that cannot be written (here: a user name the log refuses) means
    no rows are returned."""
    store = open_store(str(setup.store))
    try:
        with pytest.raises(ops.AccessNotLogged, match="nothing is shown"):
            ops.read_quarantine(store, "", None)
        assert AccessLog(store).entries(action="quarantine") == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (725, "12 min 5 s"), (12000, "3 h 20 min"), (187200, "2 d 4 h")],
)
def test_durations_read_as_a_person_says_them(seconds: int, text: str) -> None:
    assert ops.span(timedelta(seconds=seconds)) == text

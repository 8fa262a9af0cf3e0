"""The access log (section 62): every read of a store is logged first, and tampering is found.

Each store command that reads records writes an entry naming its user (and justification and
recipient where given) before it shows anything; a missing user or a missing justification where
one is required is exit 2 with nothing shown; a log that cannot be written shows nothing (exit 3).
``store access-log --verify`` finds an edited, deleted or moved row, and with ``--expect`` a cut
tail or a rewritten chain. Tampering and concurrent appends run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intelbus import samples
from intelbus.cli.main import app
from intelbus.store import open_store
from intelbus.store.access import (
    GENESIS,
    AccessEntry,
    AccessLog,
    NewAccess,
    entry_hash,
    text_digest,
)
from intelbus.trust.model import Batch
from tests.unit.test_store_cli import _stored

REPO = Path(__file__).resolve().parents[2]
USER = "analyst.jones"
WHY = "op BRIDGE: checking a reported vehicle"
runner = CliRunner(env={"COLUMNS": "250"})


# --- A store with restricted and unrestricted records. -------------------------------------------


def _graded(model: Any, tlp: str, code: str) -> dict[str, Any]:
    body = json.loads(model.model_dump_json())
    body["grading"] = {
        **body["grading"],
        "tlp": tlp,
        "handling_code": code,
        "handling_conditions": ["no-onward-disclosure"] if code == "C" else [],
    }
    return body


def _fill(url: str) -> dict[str, str]:
    """Three sightings: GREEN/P (open), RED/P and GREEN/C (both restricted). Their ids by name."""
    models = samples.feed(seed=21, sightings=3, incidents=0)
    gradings = {"open": ("GREEN", "P"), "red": ("RED", "P"), "coded": ("GREEN", "C")}
    records, ids = [], {}
    for i, (name, (tlp, code)) in enumerate(gradings.items()):
        body = _graded(models[i], tlp, code)
        new = _stored(i, models[i], body)
        # The label the store filters on follows the payload's grading.
        labels = new.decision.labels
        assert labels is not None
        decision = new.decision.__class__(
            new.decision.outcome,
            new.decision.rule_id,
            new.decision.policy_hash,
            body,
            (),
            labels.__class__(tlp, labels.classification, labels.force_area, labels.occurred_at),
        )
        records.append(
            new.__class__(new.producer_id, new.record_id, new.kind, new.source, decision)
        )
        ids[name] = new.record_id
    s = open_store(url)
    try:
        s.commit(Batch(group_id="g", records=records))
    finally:
        s.close()
    return ids


@pytest.fixture
def sqlite_store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = str(tmp_path / "herts.sqlite")
    return url, _fill(url)


@pytest.fixture
def any_store(store_url: str) -> tuple[str, dict[str, str]]:
    """The same records on SQLite and on PostgreSQL."""
    return store_url, _fill(store_url)


def _store_cli(*args: str, user: str | None = USER) -> Any:
    env = {} if user is None else {"INTELBUS_USER": user}
    return runner.invoke(app, ["store", *args], env=env)


def _entries(url: str) -> list[AccessEntry]:
    s = open_store(url)
    try:
        return AccessLog(s).entries()
    finally:
        s.close()


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Tamper with the store behind intelbus's back, as a local user who can write it could."""
    if url.startswith("postgres"):
        import psycopg  # noqa: PLC0415 - PostgreSQL tests only

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s").encode(), params)
        return
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(statement, params)


# --- Each command logs its read, with user and justification. ------------------------------------


def test_every_reading_command_logs_its_user_justification_and_records(any_store) -> None:
    url, ids = any_store
    everyone = {("cst", i) for i in ids.values()}
    runs = [
        ("list", ["list", "--store", url]),
        ("list", ["list", "--store", url, "--json", "--justification", WHY]),
        ("show", ["show", ids["red"], "--store", url, "--justification", WHY]),
        ("search", ["search", "a", "--store", url, "--justification", WHY]),
        ("export", ["export", "--store", url, "--to", "Herts CID", "--justification", WHY]),
        ("quarantine", ["quarantine", "--store", url, "--justification", WHY]),
        ("subject", ["subject", "--text", "a", "--store", url, "--justification", WHY]),
    ]
    for _action, args in runs:
        result = _store_cli(*args)
        assert result.exit_code == 0, (args, result.output)
    entries = _entries(url)
    assert [e.action for e in entries] == [a for a, _ in runs]
    assert [e.seq for e in entries] == list(range(1, len(runs) + 1))
    assert all(e.user == USER for e in entries)
    assert entries[0].justification is None
    assert all(e.justification == WHY for e in entries[1:])
    assert set(entries[0].records) == everyone  # list names what it returned
    assert entries[2].records == (("cst", ids["red"]),)
    assert entries[2].query == {"record_id": ids["red"]}
    export = entries[4]
    assert set(export.records) == everyone
    assert export.recipient == "Herts CID"
    assert export.query["destination"] == "stdout"
    assert entries[5].records == ()  # no quarantined record in this store
    # Every entry is chained to the one before.
    assert entries[0].prev == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.hash
        assert entry_hash(after.body()) == after.hash


def test_the_user_may_come_from_the_environment_and_is_validated(sqlite_store) -> None:
    url, _ = sqlite_store
    assert _store_cli("list", "--store", url, user="dc.smith").exit_code == 0
    assert _entries(url)[-1].user == "dc.smith"
    bad = _store_cli("list", "--store", url, "--user", "eve\x1b[2Jroot")
    assert bad.exit_code == 2
    assert "control characters" in bad.output
    assert len(_entries(url)) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "x"],
        ["search", "x"],
        ["export", "--to", "x"],
        ["quarantine"],
        ["subject", "--name", "x", "--justification", "y"],
    ],
)
def test_a_read_without_a_named_user_is_refused_and_shows_nothing(sqlite_store, args) -> None:
    url, _ = sqlite_store
    result = _store_cli(*args, "--store", url, user=None)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "--user" in result.output
    assert _entries(url) == []


@pytest.mark.parametrize("which", ["red", "coded"])
def test_show_of_a_restricted_record_needs_a_justification_and_the_refusal_is_logged(
    any_store, which
) -> None:
    url, ids = any_store
    refused = _store_cli("show", ids[which], "--store", url)
    assert refused.exit_code == 2
    assert refused.stdout == ""  # nothing shown
    assert "--justification" in refused.output
    assert ("TLP:RED" if which == "red" else "handling code C") in refused.output
    (entry,) = _entries(url)
    assert (entry.action, entry.user, entry.records) == (
        "show_refused",
        USER,
        (("cst", ids[which]),),
    )
    # An open record needs none.
    shown = _store_cli("show", ids["open"], "--store", url)
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["record_id"] == ids["open"]
    assert _entries(url)[-1].action == "show"


def test_export_needs_a_recipient_and_for_restricted_records_a_justification(
    any_store, tmp_path: Path
) -> None:
    url, ids = any_store
    out = tmp_path / "out.jsonl"
    no_to = _store_cli("export", "--store", url, "--out", str(out))
    assert no_to.exit_code == 2
    assert "--to" in no_to.output
    assert _entries(url) == []  # a usage error: nothing was read

    refused = _store_cli("export", "--store", url, "--out", str(out), "--to", "GMP")
    assert refused.exit_code == 2
    assert not out.exists()  # nothing written
    assert [e.action for e in _entries(url)] == ["export_refused"]

    done = _store_cli(
        "export", "--store", url, "--out", str(out), "--to", "GMP", "--justification", WHY
    )
    assert done.exit_code == 0, done.output
    exported = [json.loads(x)["record_id"] for x in out.read_text().splitlines()]
    assert sorted(exported) == sorted(ids.values())
    last = _entries(url)[-1]
    assert (last.action, last.recipient, last.justification) == ("export", "GMP", WHY)
    assert {r for _p, r in last.records} == set(ids.values())


def test_list_json_prints_whole_records_so_it_needs_a_justification_like_show(
    sqlite_store,
) -> None:
    url, _ = sqlite_store
    table = _store_cli("list", "--store", url)
    assert table.exit_code == 0  # ids, TLP and area only
    whole = _store_cli("list", "--store", url, "--json")
    assert whole.exit_code == 2
    assert whole.stdout == ""
    assert [e.action for e in _entries(url)] == ["list", "list_refused"]


def test_nothing_is_shown_when_the_access_log_cannot_be_written(sqlite_store) -> None:
    url, ids = sqlite_store
    assert _store_cli("list", "--store", url).exit_code == 0  # the table exists now
    _sql(
        url,
        "CREATE TRIGGER no_log BEFORE INSERT ON access_log BEGIN SELECT RAISE(ABORT, 'full'); END",
    )
    for args in (["list"], ["show", ids["open"]], ["search", "a"], ["export", "--to", "x"]):
        result = _store_cli(*args, "--store", url)
        assert result.exit_code == 3, (args, result.output)
        assert result.stdout == ""
        assert "nothing was shown" in result.output
        assert "Traceback" not in result.output


def test_search_text_is_never_stored_only_its_digest(sqlite_store) -> None:
    url, _ = sqlite_store
    term = "Zebedee Quartermaine-Unlikely"
    assert _store_cli("search", term, "--store", url).exit_code == 0
    (entry,) = _entries(url)
    assert entry.query["text_blake2b"] == text_digest(term)["text_blake2b"]
    assert entry.query["text_length"] == len(term)
    # Not in any column, not in the database file or its write-ahead log.
    raw = b"".join(
        p.read_bytes() for p in Path(url).parent.iterdir() if p.name.startswith("herts.sqlite")
    )
    for needle in (term, term.casefold(), "Zebedee", "Quartermaine"):
        assert needle.encode() not in raw
        assert needle.casefold() not in json.dumps(entry.as_json()).casefold()


def _dump(url: str) -> str:
    """Every column of every access log row, as text."""
    if url.startswith("postgres"):
        import psycopg  # noqa: PLC0415 - PostgreSQL tests only

        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT * FROM access_log").fetchall()
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT * FROM access_log").fetchall()
    return repr(rows)


def test_search_and_subject_criteria_are_not_in_the_log_on_either_backend(any_store) -> None:
    url, _ = any_store
    term = "Zebedee Quartermaine"
    assert _store_cli("search", term, "--store", url).exit_code == 0
    subject = _store_cli("subject", "--name", term, "--store", url, "--justification", WHY)
    assert subject.exit_code == 0, subject.output
    dumped = _dump(url)
    assert text_digest(term)["text_blake2b"] in dumped  # what is kept instead
    for needle in ("Zebedee", "zebedee", "Quartermaine"):
        assert needle not in dumped


# --- Reviewing and verifying. -------------------------------------------------------------------------


def _three_reads(url: str) -> None:
    for user in ("a.one", "b.two", "a.one", "c.three"):
        assert _store_cli("list", "--store", url, user=user).exit_code == 0


def test_access_log_review_filters_and_prints_json_and_tsv(sqlite_store) -> None:
    url, ids = sqlite_store
    _three_reads(url)
    assert _store_cli("show", ids["open"], "--store", url, user="b.two").exit_code == 0
    mine = runner.invoke(app, ["store", "access-log", "--store", url, "--user", "a.one", "--json"])
    assert mine.exit_code == 0
    rows = [json.loads(x) for x in mine.stdout.splitlines()]
    assert [(r["seq"], r["user"]) for r in rows] == [(1, "a.one"), (3, "a.one")]
    about = runner.invoke(
        app, ["store", "access-log", "--store", url, "--record", ids["open"], "--json"]
    )
    # Every list named it; the show too.
    assert [json.loads(x)["action"] for x in about.stdout.splitlines()] == ["list"] * 4 + ["show"]
    later = runner.invoke(
        app, ["store", "access-log", "--store", url, "--since", "2999-01-01", "--json"]
    )
    assert (later.exit_code, later.stdout) == (0, "")
    tsv = runner.invoke(app, ["store", "access-log", "--store", url])
    lines = tsv.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["seq", "at", "user", "action"]
    assert len(lines) == 6
    # Reviewing is not itself logged.
    assert len(_entries(url)) == 5


def _verify(url: str, *extra: str) -> Any:
    return runner.invoke(app, ["store", "access-log", "--store", url, "--verify", *extra])


def _head(url: str) -> str:
    result = runner.invoke(app, ["store", "access-log", "--store", url, "--head"])
    assert result.exit_code == 0
    return result.stdout.strip()


@pytest.fixture
def logged(store_url: str) -> Iterator[str]:
    """A store (SQLite or PostgreSQL) whose access log holds four list entries."""
    _fill(store_url)
    _three_reads(store_url)
    return store_url


def test_an_intact_log_verifies_and_its_head_is_count_and_hash(logged) -> None:
    ok = _verify(logged)
    assert ok.exit_code == 0, ok.output
    head = _head(logged)
    count, digest = head.split(":")
    assert count == "4"
    assert digest == _entries(logged)[-1].hash.hex()
    assert f"access log intact: 4 entries, head {digest}" in ok.stdout
    assert _verify(logged, "--expect", head).exit_code == 0


def test_an_edited_row_is_found(logged) -> None:
    _sql(logged, "UPDATE access_log SET user_name = ? WHERE seq = 2", ("someone.else",))
    broken = _verify(logged)
    assert broken.exit_code == 1
    assert "broken at entry 2: edited" in broken.output


def test_an_edited_justification_or_record_list_is_found(logged) -> None:
    _sql(logged, "UPDATE access_log SET records = ? WHERE seq = 3", ("[]",))
    assert "broken at entry 3: edited" in _verify(logged).output


def test_a_deleted_row_is_found(logged) -> None:
    _sql(logged, "DELETE FROM access_log WHERE seq = 2")
    broken = _verify(logged)
    assert broken.exit_code == 1
    assert "broken at entry 2: missing" in broken.output


def test_a_deleted_row_with_the_rest_renumbered_is_found(logged) -> None:
    _sql(logged, "DELETE FROM access_log WHERE seq = 2")
    _sql(logged, "UPDATE access_log SET seq = seq - 1 WHERE seq > 2")
    broken = _verify(logged)
    assert broken.exit_code == 1
    assert "broken at entry 2: missing" in broken.output


def test_two_rows_swapped_are_found(logged) -> None:
    _sql(logged, "UPDATE access_log SET seq = 100 WHERE seq = 2")
    _sql(logged, "UPDATE access_log SET seq = 2 WHERE seq = 3")
    _sql(logged, "UPDATE access_log SET seq = 3 WHERE seq = 100")
    broken = _verify(logged)
    assert broken.exit_code == 1
    assert "broken at entry 2: reordered" in broken.output


def test_a_cut_tail_is_found_against_the_head_written_down(logged) -> None:
    head = _head(logged)
    _sql(logged, "DELETE FROM access_log WHERE seq = 4")
    assert _verify(logged).exit_code == 0  # the rest is a valid chain: only the head tells
    cut = _verify(logged, "--expect", head)
    assert cut.exit_code == 1
    assert "truncated" in cut.output
    assert "expected 4, found 3" in cut.output


def test_a_chain_rewritten_from_scratch_is_found_against_the_head(logged) -> None:
    """Someone who can write the database rebuilds the whole chain without entry 2: a valid chain
    again. Only the head kept elsewhere shows it."""
    head = _head(logged)
    entries = _entries(logged)
    _sql(logged, "DELETE FROM access_log")
    s = open_store(logged)
    try:
        book = AccessLog(s)
        for e in (entries[0], entries[2], entries[3], entries[3]):
            book.append(NewAccess(e.user, e.action, e.records, e.query))
    finally:
        s.close()
    assert _verify(logged).exit_code == 0
    rewritten = _verify(logged, "--expect", head)
    assert rewritten.exit_code == 1
    assert "broken at entry 4: rewritten" in rewritten.output


def test_a_malformed_expected_head_is_a_usage_error(logged) -> None:
    result = _verify(logged, "--expect", "four:abc")
    assert result.exit_code == 2
    assert "COUNT:HASH" in result.output


def test_concurrent_appends_from_two_processes_keep_one_chain(store_url: str) -> None:
    _fill(store_url)
    script = textwrap.dedent(
        """
        import sys
        from intelbus.store import open_store
        from intelbus.store.access import AccessLog, NewAccess
        s = open_store(sys.argv[1])
        book = AccessLog(s)
        for i in range(int(sys.argv[3])):
            book.append(NewAccess(sys.argv[2], "list", (("cst", str(i)),), {"n": i}))
        s.close()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    n = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", script, store_url, user, str(n)], env=env)
        for user in ("proc.one", "proc.two")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = open_store(store_url)
    try:
        book = AccessLog(s)
        result = book.verify()
        entries = book.entries()
    finally:
        s.close()
    assert result.ok, (result.problem, result.detail)
    assert result.count == 2 * n
    assert [e.seq for e in entries] == list(range(1, 2 * n + 1))
    assert sorted(e.user for e in entries) == ["proc.one"] * n + ["proc.two"] * n


def test_times_are_utc_and_stored_exactly(store_url: str) -> None:
    _fill(store_url)
    s = open_store(store_url)
    try:
        book = AccessLog(s)
        before = datetime.now(UTC)
        written = book.append(NewAccess("u", "list"))
        (read,) = book.entries()
    finally:
        s.close()
    assert read == written
    assert before - timedelta(seconds=1) <= read.at <= datetime.now(UTC)
    assert read.at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad",
    [
        {"user": ""},
        {"user": "x" * 129},
        {"user": "two\nlines"},
        {"action": "Drop Table"},
        {"justification": "a\x00b"},
        {"recipient": " "},
        {"query": {"x": float("nan")}},
    ],
)
def test_entries_are_validated_before_anything_is_written(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"user": "u", "action": "list", **bad}
    with pytest.raises(ValueError):  # noqa: PT011 - the message differs per field
        NewAccess(**fields)

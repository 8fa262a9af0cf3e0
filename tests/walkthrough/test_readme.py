"""The README's "Getting started on a real bus", run as the four people it is written for.

One run of the README's commands (tests/walkthrough/workspace.py) on the session's real broker,
in an empty folder: the operator's topics, the admins' directory, CST's officer publishing a file
(and publishing it again), Hertfordshire's analyst consuming and reading, the inspectorate's
auditor replaying. Each test asserts one person's outcome from what that run left behind, then
goes on as that person would (a retry, a broker that is down, a filter typed as people type it).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.walkthrough.workspace import Walked

pytestmark = pytest.mark.kafka
#: The README's analyst (its walkthrough exports INTELBUS_USER; later commands name the user).
ANALYST = "analyst.patel"


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text[-2000:]


def test_the_operator_gets_the_bus_topics_with_the_settings_auditors_rely_on(
    walked: Walked,
) -> None:
    _no_traceback(walked.output)
    check = walked.run("topics", "check", "--prefix", walked.prefix, "--json")
    assert check.returncode == 0, check.stderr
    states = {json.loads(x)["topic"]: json.loads(x)["state"] for x in check.stdout.splitlines()}
    assert states == {
        f"{walked.prefix}.{f}": "ok" for f in ("sightings", "incidents", "directory", "heartbeats")
    }
    # Creating again changes nothing and says so.
    again = walked.run("topics", "create", "--prefix", walked.prefix)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout


def test_the_cst_officer_publishes_once_and_a_retry_of_the_same_file_publishes_nothing_twice(
    walked: Walked,
) -> None:
    assert "1 published, 0 already published, 0 not published" in walked.output
    assert "0 published, 1 already published, 0 not published" in walked.output
    retry = walked.run("publish", "sighting", "sightings.csv", "--config", "cst.toml", "--json")
    assert retry.returncode == 0, retry.stderr
    lines = [json.loads(x) for x in retry.stdout.splitlines()]
    assert lines[0]["status"] == "already published"
    assert lines[-1] == {"summary": {"published": 0, "already": 1, "failed": 0}}
    pending = walked.run("publish", "pending", "--config", "cst.toml", "--json")
    assert (pending.returncode, pending.stdout) == (0, "")


def test_a_publish_with_the_broker_down_fails_in_one_line_and_loses_nothing(
    walked: Walked,
) -> None:
    """A broker that does not answer (here: nothing listens at the address): one line, exit 3,
    nothing reserved or half-written; with the broker back, the same file publishes."""
    down = Walked(walked.root, walked.prefix, "127.0.0.1:1", walked.output)
    extra = walked.root / "more.csv"
    template = walked.run("publish", "template", "sighting").stdout
    extra.write_text(
        template.replace("METROPOLITAN", "HERTFORDSHIRE").replace("CST-R-4517", "CST-R-9001")
    )
    state = walked.root / "state" / "cst.sqlite"
    before = state.read_bytes()
    result = down.run("publish", "sighting", "more.csv", "--config", "cst.toml")
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "127.0.0.1:1" in errors[0]
    _no_traceback(result.stdout, result.stderr)
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT count(*) FROM sends WHERE status = 'pending'").fetchone() == (0,)
    assert len(state.read_bytes()) == len(before)
    back = walked.run("publish", "sighting", "more.csv", "--config", "cst.toml")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "1 published" in back.stdout


def test_the_analyst_reads_what_the_policy_kept_with_filters_as_people_type_them(
    walked: Walked,
) -> None:
    for spelling in ("TLP:GREEN", "green", "Green"):
        listed = walked.run(
            "store", "list", "--config", "herts.toml", "--tlp", spelling, "--area", "Hertfordshire",
            "--user", ANALYST,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()
        assert rows[0].split("\t")[:3] == ["when", "kind", "record_id"]  # plain rows in a pipe
        assert len(rows) >= 2
    wrong = walked.run(
        "store", "list", "--config", "herts.toml", "--tlp", "PURPLE", "--user", ANALYST
    )
    assert wrong.returncode == 2
    assert "CLEAR, GREEN, AMBER, AMBER_STRICT, RED" in wrong.stderr
    found = walked.run("store", "search", "grading", "--config", "herts.toml", "--user", ANALYST)
    assert found.returncode == 0
    assert len(found.stdout.splitlines()) == 1  # a field name finds nothing: header only
    geo = json.loads((walked.root / "herts-sightings.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    assert len(geo["features"]) >= 1
    assert geo["features"][0]["geometry"]["type"] == "Point"
    exported = walked.run(
        "store", "export", "--config", "herts.toml", "--format", "csv", "--user", ANALYST,
        "--to", "the walkthrough",
    )  # fmt: skip
    header = exported.stdout.splitlines()[0]
    for column in ("description", "site_name", "latitude", "persons", "vehicles"):
        assert f'"{column}"' in header
    # Every read above, the README's own included, was logged under the analyst's name first.
    logged = walked.run("store", "access-log", "--config", "herts.toml", "--json")
    assert logged.returncode == 0, logged.stderr
    entries = [json.loads(x) for x in logged.stdout.splitlines()]
    assert {e["user"] for e in entries} == {ANALYST}
    actions = [e["action"] for e in entries]
    assert {"list", "search", "export"} <= set(actions)
    assert "Herts neighbourhood policing team" in {e["recipient"] for e in entries}
    verified = walked.run("store", "access-log", "--config", "herts.toml", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "access log intact" in verified.stdout


def test_the_auditor_finds_the_topic_clean_and_complete(walked: Walked) -> None:
    report = json.loads((walked.root / "audit.json").read_text())
    assert report["summary"]["verdict"].startswith("clean"), report["summary"]
    assert report["summary"]["records"] >= 1
    again = walked.run(
        "audit",
        "replay",
        "--topic",
        f"{walked.prefix}.sightings",
        "--directory",
        "directory",
        "--key-file",
        "keys/inspectorate.key",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    _no_traceback(again.stdout, again.stderr)


def test_no_step_printed_a_traceback_and_private_keys_stayed_private(walked: Walked) -> None:
    _no_traceback(walked.output)
    for key in Path(walked.root / "keys").glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key


def test_a_second_state_file_for_cst_is_refused_until_resynchronised(walked: Walked) -> None:
    """CST's state file lost and made again (here: a second config with its own state file). It
    must not publish records that reuse the topic's sequence numbers (every force would
    quarantine them as replays while the officer read "published")."""
    second = (
        (walked.root / "cst.toml").read_text().replace("state/cst.sqlite", "state/cst-2.sqlite")
    )
    (walked.root / "cst-2.toml").write_text(second)
    extra = walked.root / "second.csv"
    template = walked.run("publish", "template", "sighting").stdout
    extra.write_text(
        template.replace("METROPOLITAN", "HERTFORDSHIRE").replace("CST-R-4517", "CST-R-5150")
    )
    refused = walked.run("publish", "sighting", "second.csv", "--config", "cst-2.toml")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "publish resync" in refused.stderr, refused.stderr
    _no_traceback(refused.stdout, refused.stderr)
    synced = walked.run("publish", "resync", "--config", "cst-2.toml")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "resynchronised" in synced.stdout
    again = walked.run("publish", "sighting", "second.csv", "--config", "cst-2.toml")
    assert again.returncode == 0, again.stdout + again.stderr
    # The first file, published by the first state file, is known now: already published.
    first = walked.run("publish", "sighting", "sightings.csv", "--config", "cst-2.toml")
    assert "already published" in first.stdout, first.stdout + first.stderr
    consumed = walked.run(
        "consume", "--agency", "herts-police", "--config", "herts.toml", "--until-idle"
    )
    assert consumed.returncode == 0, consumed.stdout + consumed.stderr
    quarantine = walked.run("store", "quarantine", "--config", "herts.toml", "--user", ANALYST)
    assert "chain_replay" not in quarantine.stdout, quarantine.stdout


def test_the_auditor_replays_the_whole_bus_in_one_run(walked: Walked) -> None:
    """--prefix: the bus's sightings, incidents and heartbeats, one report each. Without the key
    the heartbeats cannot be judged: reported as unverifiable (exit 1), never as clean."""
    run = walked.run(
        "audit",
        "replay",
        "--prefix",
        walked.prefix,
        "--directory",
        "directory",
        "--key-file",
        "keys/inspectorate.key",
        "--report",
        "bus.json",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for family in ("sightings", "incidents", "heartbeats"):
        report = json.loads((walked.root / f"bus.{walked.prefix}.{family}.json").read_text())
        assert report["summary"]["verdict"].startswith("clean"), (family, report["summary"])
    blind = walked.run("audit", "replay", "--prefix", walked.prefix, "--directory", "directory")
    assert blind.returncode == 1, blind.stdout + blind.stderr
    assert f"{walked.prefix}.heartbeats: heartbeats unverifiable" in blind.stderr
    _no_traceback(blind.stdout, blind.stderr)

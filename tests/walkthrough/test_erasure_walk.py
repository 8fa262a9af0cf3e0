"""After the README's walkthrough (tests/walkthrough/workspace.py), CST's officer erases the
sighting they published, as docs/data-protection.md says, and Hertfordshire's analyst sees only a
tombstone after the next consume; each command a separate process, as people run them."""

from __future__ import annotations

import json

import pytest

from tests.walkthrough.workspace import Walked

pytestmark = pytest.mark.kafka
ANALYST = "analyst.patel"


def test_the_cst_officer_erases_a_record_and_the_analyst_keeps_only_a_tombstone(
    walked: Walked,
) -> None:
    listed = walked.run(
        "store", "list", "--config", "herts.toml", "--user", ANALYST, "--kind", "sighting",
        "--json",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    target = json.loads(listed.stdout.splitlines()[0])["record_id"]

    template = walked.run("publish", "template", "erasure", "--format", "json")
    assert template.returncode == 0, template.stderr
    (erasure,) = json.loads(template.stdout)  # a list of items, one here
    erasure["erases_record_id"] = target
    (walked.root / "erase.json").write_text(json.dumps(erasure))
    published = walked.run("publish", "erasure", "erase.json", "--config", "cst.toml")
    assert published.returncode == 0, published.stdout + published.stderr
    assert "1 published" in published.stdout

    consumed = walked.run(
        "consume", "--agency", "herts-police", "--config", "herts.toml", "--until-idle", "--json"
    )
    assert consumed.returncode == 0, consumed.stdout + consumed.stderr
    assert json.loads(consumed.stdout.splitlines()[-1])["erased"] == 1

    shown = walked.run("store", "show", target, "--config", "herts.toml", "--user", ANALYST)
    assert shown.returncode == 1
    assert shown.stdout == ""
    assert "erased by its producer; only a tombstone is kept" in shown.stderr
    tombs = walked.run("store", "tombstones", "--config", "herts.toml", "--json")
    assert tombs.returncode == 0, tombs.stderr
    (tomb,) = [json.loads(x) for x in tombs.stdout.splitlines()]
    assert (tomb["record_id"], tomb["reason"]) == (target, "erasure")
    assert tomb["legal_basis"] == erasure["legal_basis"]
    searched = walked.run(
        "store", "list", "--config", "herts.toml", "--user", ANALYST, "--kind", "sighting",
        "--json",
    )  # fmt: skip
    assert target not in searched.stdout

    # An erasure of a record this producer's state never published, without --family: one line.
    erasure["erases_record_id"] = "00000000-0000-4000-8000-000000000001"
    (walked.root / "erase-unknown.json").write_text(json.dumps(erasure))
    unknown = walked.run("publish", "erasure", "erase-unknown.json", "--config", "cst.toml")
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert "needs the family" in unknown.stdout
    assert "Traceback" not in unknown.stdout + unknown.stderr

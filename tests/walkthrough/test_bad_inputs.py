"""Bad input, as people really give it, to every command that reads it: one clear line, the
documented exit code, no traceback, and nothing lost or half-written.

Every case runs the installed ``intelbus`` command in the README walkthrough's folder (a real
federation on the session's broker) and asserts: the exit code (1 refused, 2 usage, 3
environment), exactly one ``error:`` line (or, for a publish, one line per item) naming the
problem, no ``Traceback``, and that the producer's state file and the force's store are unchanged
unless the case publishes something on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.walkthrough.workspace import Walked

pytestmark = pytest.mark.kafka


def _fingerprint(root: Path) -> tuple[str, str]:
    """What must not change when a command refuses: CST's state and Herts' store, byte for byte
    (their WAL files included, so a write not yet checkpointed still counts)."""

    def digest(*paths: Path) -> str:
        h = hashlib.sha256()
        for p in paths:
            h.update(p.read_bytes() if p.exists() else b"-")
        return h.hexdigest()

    state = root / "state" / "cst.sqlite"
    store = root / "herts.sqlite"
    return (
        digest(state, Path(f"{state}-wal")),
        digest(store, Path(f"{store}-wal")),
    )


def _row(walked: Walked, **changes: str) -> str:
    """The template's CSV with cells replaced (a header and one row)."""
    text = walked.run("publish", "template", "sighting").stdout
    header, row = text.splitlines()[:2]
    cells = dict(zip(header.split(","), _split(row), strict=True))
    cells.update(changes)
    return header + "\n" + ",".join(_quote(cells[c]) for c in header.split(",")) + "\n"


def _split(row: str) -> list[str]:
    import csv  # noqa: PLC0415

    return next(csv.reader([row]))


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


@dataclass(frozen=True)
class Case:
    """One bad input: the command, the files it needs, and what it must answer."""

    name: str
    args: tuple[str, ...]
    code: int
    says: str  # a fragment of the one error line (case-insensitive)
    files: Callable[[Walked], dict[str, bytes]] = field(default=lambda _w: {})
    changes_state: bool = False


def _future(w: Walked) -> dict[str, bytes]:
    ahead = (datetime.now(UTC) + timedelta(days=5 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"future.csv": _row(w, observed_at=ahead, reporter_ref="CST-F-1").encode()}


def _many_problems(w: Walked) -> dict[str, bytes]:
    row = _row(w, **{"grading.tlp": "PURPLE", "place.latitude": "north", "description": ""})
    return {"bad.csv": row.encode()}


CASES = [
    Case(
        "missing file",
        ("publish", "sighting", "nope.csv", "--config", "cst.toml"),
        3,
        "no such file: nope.csv",
    ),
    Case(
        "file not UTF-8",
        ("publish", "sighting", "latin1.csv", "--config", "cst.toml"),
        2,
        "not utf-8",
        lambda w: {"latin1.csv": "description\ncaf\xe9\n".encode("latin-1")},
    ),
    Case(
        "empty CSV (a header only)",
        ("publish", "sighting", "empty.csv", "--config", "cst.toml"),
        2,
        "no records in empty.csv",
        lambda w: {"empty.csv": b"record_id,description\n"},
    ),
    Case(
        "empty JSON list",
        ("publish", "incident", "empty.json", "--config", "cst.toml"),
        2,
        "no records",
        lambda w: {"empty.json": b"[]"},
    ),
    Case(
        "unknown format",
        ("publish", "sighting", "x.txt", "--config", "cst.toml", "--format", "xml"),
        2,
        "unknown --format 'xml'",
        lambda w: {"x.txt": b"anything"},
    ),
    Case(
        "a date five years ahead",
        ("publish", "sighting", "future.csv", "--config", "cst.toml"),
        1,
        "observed_at",
        _future,
    ),
    Case(
        "every problem of a row at once",
        ("publish", "sighting", "bad.csv", "--config", "cst.toml"),
        1,
        "grading.tlp",
        _many_problems,
    ),
    Case(
        "a config file that is not there",
        ("publish", "sighting", "sightings.csv", "--config", "nope.toml"),
        2,
        "nope.toml",
    ),
    Case("template of an unknown kind", ("publish", "template", "sightings2"), 2, "unknown kind"),
    Case(
        "a store filter with an unknown value",
        ("store", "list", "--config", "herts.toml", "--tlp", "PURPLE", "--user", "a.n"),
        2,
        "purple",
    ),
    Case(
        "a store filter with an unknown area",
        ("store", "list", "--config", "herts.toml", "--area", "gotham", "--user", "a.n"),
        2,
        "gotham",
    ),
    Case(
        "a store filter with an unknown kind",
        ("store", "list", "--config", "herts.toml", "--kind", "rumour", "--user", "a.n"),
        2,
        "rumour",
    ),
    Case(
        "a store that does not exist",
        ("store", "list", "--store", "nope.sqlite", "--user", "a.n"),
        2,
        "nope.sqlite",
    ),
    Case(
        "a store read without a named user",
        ("store", "list", "--config", "herts.toml"),
        2,
        "--user",
    ),
    Case(
        "an export without a recipient",
        ("store", "export", "--config", "herts.toml", "--user", "a.n"),
        2,
        "--to",
    ),
    Case(
        "an expected digest that is not one",
        ("audit", "digest", "--report", "audit.json", "--expect", "xyz"),
        2,
        "xyz",
    ),
    Case(
        "a malformed audit report",
        ("audit", "digest", "--report", "broken.json"),
        2,
        "broken.json",
        lambda w: {"broken.json": b'{"format": 3}'},
    ),
    Case(
        "an audit with no topic",
        ("audit", "replay", "--directory", "directory"),
        2,
        "--topic",
    ),
    Case(
        "abandoning a record that is not pending",
        ("publish", "abandon", "00000000-0000-4000-8000-000000000000", "--config", "cst.toml"),
        2,
        "not pending",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_loses_nothing(walked: Walked, case: Case) -> None:
    for name, data in case.files(walked).items():
        (walked.root / name).write_bytes(data)
    before = _fingerprint(walked.root)
    result = walked.run(*case.args)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.returncode == case.code, f"{case.name}: exit {result.returncode}\n{text}"
    if case.args[0] == "publish" and case.code == 1:
        problems = [x for x in result.stdout.splitlines() if "not published:" in x]
        assert len(problems) == 1, text
        assert case.says.lower() in problems[0].lower(), text
    else:
        errors = [x for x in result.stderr.splitlines() if x.strip()]
        assert len(errors) >= 1, text
        assert any(case.says.lower() in x.lower() for x in errors), text
    assert _fingerprint(walked.root) == before, f"{case.name}: state or store changed"


def test_every_problem_of_a_row_is_named_in_its_one_line(walked: Walked) -> None:
    (walked.root / "bad.csv").write_bytes(_many_problems(walked)["bad.csv"])
    result = walked.run("publish", "sighting", "bad.csv", "--config", "cst.toml", "--json")
    (item, summary) = [json.loads(x) for x in result.stdout.splitlines()]
    assert summary == {"summary": {"published": 0, "already": 0, "failed": 1}}
    for field_name in ("grading.tlp", "place.latitude", "description"):
        assert field_name in item["error"], item


def test_what_people_type_is_accepted(walked: Walked) -> None:
    """Excel's byte order mark, lower-case values, a +01:00 offset, numbers as text, no id."""
    row = _row(
        walked,
        **{
            "grading.tlp": "green",
            "grading.classification": "official",
            "place.force_area": "Hertfordshire",
            "place.site_kind": "synagogue",
            "observed_at": "2026-09-01T19:30:00+01:00",
            "place.latitude": "51.6572",
            "reporter_ref": "CST-R-7777",
        },
    )
    (walked.root / "typed.csv").write_bytes(b"\xef\xbb\xbf" + row.encode())
    result = walked.run("publish", "sighting", "typed.csv", "--config", "cst.toml", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    item = json.loads(result.stdout.splitlines()[0])
    assert item["status"] == "published", item
    assert item["record_id_generated"] is True

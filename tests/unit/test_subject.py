"""Subject access: ``intelbus store subject`` finds the records about a person or a vehicle.

It matches values in the fields that hold people, vehicles and references (never field names,
never a redacted value), normalises registrations, exports with the redactions applied, requires a
justification, and logs the disclosure with its recipient and digests of the criteria only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intelbus import samples
from intelbus.cli.main import app
from intelbus.policy.redact import REDACTED
from intelbus.store import open_store
from intelbus.store.access import AccessLog, text_digest
from intelbus.store.subject import (
    Criterion,
    SubjectQuery,
    about_subject,
    enforce_redactions,
    normalise_registration,
)
from intelbus.trust.model import Batch, NewRecord, Outcome
from tests.unit.test_store_cli import _stored

WHY = "SAR-2026-0042 from the data subject"
runner = CliRunner(env={"INTELBUS_USER": "dpo.clarke", "COLUMNS": "250"})


def _body(model: Any, **changes: Any) -> dict[str, Any]:
    body = json.loads(model.model_dump_json())
    body["grading"] = {**body["grading"], "tlp": "GREEN", "handling_code": "P"}
    body["grading"]["handling_conditions"] = []
    body.update(changes)
    return body


def _record(n: int, model: Any, body: dict[str, Any], redacted: tuple[str, ...] = ()) -> NewRecord:
    new = _stored(n, model, body, outcome=Outcome.REDACT if redacted else Outcome.STORE)
    return dataclasses.replace(
        new, decision=dataclasses.replace(new.decision, redacted_fields=redacted)
    )


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    sightings = samples.feed(seed=31, sightings=4, incidents=0)
    incidents = samples.feed(seed=32, sightings=0, incidents=3)
    car = {"registration": "AB12CDE", "make": "Ford", "model": "Focus", "colour": "blue"}
    bodies = {
        # The vehicle, in its structured field, and a person described by name.
        "car": (
            sightings[0],
            _body(
                sightings[0],
                vehicles=[car],
                persons=[
                    {
                        "summary": "man known locally as John Smith",
                        "approx_age": None,
                        "clothing": None,
                    }
                ],
            ),
            (),
        ),
        # The same vehicle written in free text, as people write it.
        "text_car": (
            sightings[1],
            _body(sightings[1], description="A car, reg ab12 cde, circled twice.", vehicles=[]),
            (),
        ),
        # A victim named in an incident.
        "victim": (incidents[0], _body(incidents[0], victim_details="Mrs Sarah Levy, aged 70"), ()),
        # The same victim, but this force's policy redacted the victim's details.
        "redacted": (
            incidents[1],
            _body(incidents[1], victim_details=REDACTED, description="Shouting in the street."),
            ("victim_details",),
        ),
        # A store that (wrongly) kept a value at a redacted path: it must not go out.
        "leaky": (
            incidents[2],
            _body(
                incidents[2],
                victim_details="lives at 9 Hidden Lane",
                description="Leaflets about Sarah Levy pushed through doors.",
            ),
            ("victim_details",),
        ),
        "unrelated": (
            sightings[2],
            _body(
                sightings[2], description="Someone photographed the gates.", vehicles=[], persons=[]
            ),
            (),
        ),
    }
    path = tmp_path / "herts.sqlite"
    s = open_store(str(path))
    ids = {}
    try:
        records = []
        for i, (name, (model, body, redacted)) in enumerate(bodies.items()):
            records.append(_record(i, model, body, redacted))
            ids[name] = str(model.record_id)
        s.commit(Batch(group_id="g", records=records))
    finally:
        s.close()
    return str(path), ids


def _subject(path: str, *args: str) -> Any:
    return runner.invoke(app, ["store", "subject", "--store", path, *args])


def _found(result: Any) -> set[str]:
    assert result.exit_code == 0, result.output
    return {r["record_id"] for r in json.loads(result.stdout)["records"]}


def test_a_vehicle_is_found_in_its_field_and_in_free_text_whatever_its_spelling(store) -> None:
    path, ids = store
    for spelling in ("AB12CDE", "ab12 cde", "Ab12-Cde"):
        found = _found(_subject(path, "--vehicle", spelling, "--justification", WHY))
        assert found == {ids["car"], ids["text_car"]}


def test_a_person_is_found_by_name_and_a_redacted_name_is_not(store) -> None:
    path, ids = store
    found = _found(_subject(path, "--name", "sarah levy", "--justification", WHY))
    # "redacted" held her name only in a redacted field: not found, not disclosed.
    assert found == {ids["victim"], ids["leaky"]}
    assert _found(_subject(path, "--name", "JOHN  smith", "--justification", WHY)) == {ids["car"]}


def test_criteria_are_alternatives(store) -> None:
    path, ids = store
    found = _found(
        _subject(path, "--name", "John Smith", "--vehicle", "AB12CDE", "--justification", WHY)
    )
    assert found == {ids["car"], ids["text_car"]}


def test_field_names_and_the_redaction_placeholder_match_nothing(store) -> None:
    path, _ = store
    for text in ("registration", "victim_details", "grading", "REDACTED", "handling_code"):
        assert _found(_subject(path, "--text", text, "--justification", WHY)) == set()


def test_a_reference_is_found_with_text(store) -> None:
    path, ids = store
    s = open_store(path)
    try:
        ref = s.get(ids["unrelated"]).payload["reporter_ref"]  # type: ignore[union-attr,index]
    finally:
        s.close()
    assert _found(_subject(path, "--text", str(ref), "--justification", WHY)) == {ids["unrelated"]}


def test_the_disclosure_has_redactions_applied_and_never_a_redacted_value(store) -> None:
    path, ids = store
    result = _subject(path, "--name", "Sarah Levy", "--justification", WHY)
    records = {r["record_id"]: r for r in json.loads(result.stdout)["records"]}
    leaky = records[ids["leaky"]]
    assert leaky["payload"]["victim_details"] == REDACTED
    assert leaky["redacted_fields"] == ["victim_details"]
    assert "Hidden Lane" not in result.stdout
    assert records[ids["victim"]]["payload"]["victim_details"] == "Mrs Sarah Levy, aged 70"


def test_csv_to_a_private_file(store, tmp_path: Path) -> None:
    path, ids = store
    out = tmp_path / "sar.csv"
    result = _subject(
        path, "--vehicle", "AB12CDE", "--justification", WHY, "--format", "csv", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["record_id"] for r in rows} == {ids["car"], ids["text_car"]}


def test_a_justification_is_always_required(store) -> None:
    path, _ = store
    result = _subject(path, "--name", "Sarah Levy")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--justification" in result.output
    nothing = _subject(path, "--justification", WHY)
    assert nothing.exit_code == 2
    assert "--name, --vehicle or --text" in nothing.output


def test_the_disclosure_is_logged_with_recipient_and_never_the_criteria(store) -> None:
    path, ids = store
    result = _subject(
        path, "--name", "Sarah Levy", "--vehicle", "AB12 CDE", "--justification", WHY,
        "--to", "the data subject",
    )  # fmt: skip
    assert result.exit_code == 0
    s = open_store(path)
    try:
        (entry,) = AccessLog(s).entries()
    finally:
        s.close()
    assert (entry.action, entry.user, entry.justification, entry.recipient) == (
        "subject",
        "dpo.clarke",
        WHY,
        "the data subject",
    )
    assert {r for _p, r in entry.records} == {
        ids["victim"],
        ids["leaky"],
        ids["car"],
        ids["text_car"],
    }
    assert entry.query["criteria"] == [
        {"criterion": "name", **text_digest("Sarah Levy")},
        {"criterion": "vehicle", **text_digest("AB12 CDE")},
    ]
    raw = b"".join(p.read_bytes() for p in Path(path).parent.glob("herts.sqlite*"))
    assert b"AB12 CDE" not in raw  # the criterion as typed (the record holds AB12CDE)
    assert json.dumps(entry.as_json()).find("Sarah") == -1


def test_matching_rules_directly() -> None:
    assert normalise_registration(" ab12-c de ") == "AB12CDE"
    payload = {"vehicles": [{"registration": "AB12CDE"}], "description": "nothing"}
    assert about_subject(payload, [SubjectQuery(Criterion.VEHICLE, "ab12 cde")])
    assert not about_subject(
        payload, [SubjectQuery(Criterion.NAME, "AB12CDE")]
    )  # not a person field
    assert about_subject(payload, [SubjectQuery(Criterion.TEXT, "ab12cde")])
    assert not about_subject(None, [SubjectQuery(Criterion.TEXT, "x")])
    with pytest.raises(ValueError, match="needs some text"):
        SubjectQuery(Criterion.NAME, "  ")
    leaked = {"victim_details": "9 Hidden Lane", "persons": [{"summary": "x"}]}
    assert enforce_redactions(leaked, ("victim_details", "persons.summary")) == {
        "victim_details": REDACTED,
        "persons": [{"summary": REDACTED}],
    }

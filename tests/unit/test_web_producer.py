"""The producer console's pages (web/pages/producer.py, web/publishing.py) without a broker:
the report form from the schemas, errors beside their fields, the recipients preview from the
sharing agreement and the partners' policies, the sent and pending pages; and the producer
state's console copies and their migration."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intelbus.cli import demo_cmd
from intelbus.federation import make_directory, make_keys
from producers import state as state_mod
from producers.state import STATE_VERSION, ProducerState, StreamHead
from tests.taxii_store import users_file
from tests.webconsole import Client, RunningConsole, web_section
from web.forms import correction_spec, form_spec, validate_form
from web.publishing import form_values

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's
MET_POLICY = """agency = "met-police"
own_force_areas = ["METROPOLITAN", "CITY_OF_LONDON"]
[[rules]]
id = "sightings-without-plates"
kinds = ["sighting"]
action = "redact"
redact = ["vehicles.registration", "reporter_ref"]
[[rules]]
id = "rest"
action = "store"
"""


@pytest.fixture(scope="module")
def cst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CST producer config with a [web] section (the broker address is never contacted)."""
    root = tmp_path_factory.mktemp("cst")
    ids = make_keys(root)
    make_directory(root, ids, "unit")
    (root / "agreement.toml").write_text(demo_cmd.AGREEMENT)
    (root / "met.policy.toml").write_text(MET_POLICY)
    users = users_file(root / "users.json", ("officer", PASSWORD, None))
    config = root / "producer.toml"
    config.write_text(
        'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
        'agreement = "agreement.toml"\nstate_file = "state/cst.sqlite"\n'
        f'environment = "{demo_cmd.ENVIRONMENT}"\nbootstrap_servers = "127.0.0.1:9"\n'
        'topic_prefix = "unit"\n'
        + web_section(users, '[web.partner_policies]\nmet-police = "met.policy.toml"\n')
    )
    return config


@pytest.fixture(scope="module")
def running(cst: Path) -> Iterator[RunningConsole]:
    console = RunningConsole(cst)
    yield console
    console.stop()


@pytest.fixture
def client(running: RunningConsole) -> Client:
    c = running.client()
    assert c.sign_in("officer", PASSWORD).status == 303
    return c


def _when() -> str:
    return (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")


def _sighting(**over: str | list[str]) -> dict[str, str | list[str]]:
    form: dict[str, str | list[str]] = {
        "observed_at": _when(),
        "place.site_name": "Shul",
        "place.site_kind": "SYNAGOGUE",
        "place.address_or_area": "High Street",
        "place.force_area": "METROPOLITAN",
        "place.latitude": "51.5",
        "place.longitude": "-0.12",
        "behaviours": ["FILMING", "LOITERING"],
        "description": "Filmed the entrance.",
        "vehicles.0.registration": "ab12 cde",
        "reporter_ref": "R-1",
        "grading.source_evaluation": "S2",
        "grading.assessment": "B",
        "grading.handling_code": "P",
        "grading.tlp": "GREEN",
        "grading.classification": "OFFICIAL",
    }
    form.update(over)
    return form


def _lists(form: dict[str, str | list[str]]) -> dict[str, list[str]]:
    return {k: [v] if isinstance(v, str) else v for k, v in form.items()}


def _post(client: Client, path: str, form: dict[str, str | list[str]], action: str) -> str:
    page = client.get("/report/sighting")
    reply = client.post(path, {**form, "csrf": page.csrf(), "action": action})
    return f"{reply.status}\n{reply.body}"


@pytest.mark.parametrize("kind", ["sighting", "incident"])
def test_the_form_renders_every_field_of_the_schema(client: Client, kind: str) -> None:
    page = client.get(f"/report/{kind}")
    assert page.status == 200
    for f in form_spec(kind).fields:
        assert f'name="{f.name}"' in page.body, f.name
        if f.help:
            assert f'id="help-{f.name}"' in page.body, f.name
    # The agencies that may be named: the directory's consumers and auditors.
    for agency in ("met-police", "herts-police", "gmp", "inspectorate"):
        assert f'name="to" value="{agency}"' in page.body
    assert 'name="to" value="cst"' not in page.body
    assert 'name="csrf"' in page.body
    assert "style=" not in page.body  # the CSP allows no inline style


def test_nav_and_report_home(client: Client) -> None:
    assert client.get("/report").location == "/report/sighting"
    page = client.get("/sent")
    for path in ("/report", "/sent", "/pending"):
        assert f'href="{path}"' in page.body


def test_an_invalid_field_shows_its_error_beside_it_and_in_the_summary(client: Client) -> None:
    out = _post(
        client,
        "/report/sighting",
        _sighting(**{"place.latitude": "north-ish", "description": ""}),
        "preview",
    )
    status, body = out.split("\n", 1)
    assert status == "422"
    for name in ("place.latitude", "description"):
        m = re.search(rf'<p class="field-error" id="error-{re.escape(name)}">([^<]+)</p>', body)
        assert m is not None, name
        assert f'href="#f-{name}"' in body  # the summary links to the field
        assert re.search(
            rf'aria-describedby="(help-{re.escape(name)} )?error-{re.escape(name)}"', body
        )
    assert body.count('class="field invalid"') == 2
    # What was typed is kept.
    assert 'value="High Street"' in body
    assert 'id="recipient-' not in body


def test_preview_lists_the_agreements_recipients_and_the_partners_redactions(
    client: Client,
) -> None:
    status, body = _post(client, "/report/sighting", _sighting(), "preview").split("\n", 1)
    assert status == "200", body[:2000]
    rows = set(re.findall(r'id="recipient-([a-z-]+)"', body))
    # GREEN: every member force, and the auditor (auditor_tlp lists GREEN).
    assert rows == {"met-police", "herts-police", "gmp", "inspectorate"}
    met = body.split('id="recipient-met-police"', 1)[1].split("</tr>", 1)[0]
    assert "redact" in met
    assert "vehicles.registration" in met
    assert "reporter_ref" in met
    assert "sightings-without-plates" in met
    herts = body.split('id="recipient-herts-police"', 1)[1].split("</tr>", 1)[0]
    assert "decided by herts-police&#39;s own policy; not held here" in herts
    assert 'value="publish"' in body
    # The validated values travel as hidden fields, to be validated again on publish.
    assert 'type="hidden" name="reporter_ref" value="R-1"' in body
    assert 'type="hidden" name="behaviours" value="LOITERING"' in body


def test_a_red_record_without_named_recipients_is_refused_in_the_preview(client: Client) -> None:
    status, body = _post(
        client, "/report/sighting", _sighting(**{"grading.tlp": "RED"}), "preview"
    ).split("\n", 1)
    assert status == "200"
    refusal = re.search(r'id="refusal">([^<]+)<', body)
    assert refusal is not None
    assert "RED records go only to named recipients; none named" in html.unescape(refusal.group(1))
    assert 'value="publish"' not in body  # nothing to publish
    status, body = _post(
        client,
        "/report/sighting",
        _sighting(**{"grading.tlp": "RED", "to": ["met-police"]}),
        "preview",
    ).split("\n", 1)
    assert set(re.findall(r'id="recipient-([a-z-]+)"', body)) == {"met-police"}
    assert 'type="hidden" name="to" value="met-police"' in body


def test_an_unknown_named_recipient_is_an_error(client: Client) -> None:
    status, body = _post(
        client, "/report/sighting", _sighting(to=["nobody-at-all"]), "preview"
    ).split("\n", 1)
    assert status == "422"
    assert "not agencies that may receive records: nobody-at-all" in body


def test_edit_goes_back_to_the_filled_form(client: Client) -> None:
    status, body = _post(client, "/report/sighting", _sighting(), "edit").split("\n", 1)
    assert status == "200"
    assert 'value="R-1"' in body
    assert 'class="field-error"' not in body


def test_form_values_fill_the_form_with_the_same_record() -> None:
    now = datetime.now(UTC)
    first = validate_form("sighting", _lists(_sighting()), now)
    assert first.record is not None
    spec = form_spec("sighting")
    again = validate_form("sighting", form_values(spec, first.record.model_dump(mode="json")), now)
    assert again.ok, again.errors
    assert again.record is not None
    # The same record but for its id, which is derived from the text as typed ("ab12 cde").
    dumped, redone = first.record.model_dump(mode="json"), again.record.model_dump(mode="json")
    assert {k: v for k, v in dumped.items() if k != "record_id"} == {
        k: v for k, v in redone.items() if k != "record_id"
    }
    values = form_values(correction_spec("sighting"), first.record.model_dump(mode="json"))
    assert values["behaviours"] == ("FILMING", "LOITERING")
    assert values["vehicles.0.registration"] == ("AB12CDE",)


def _reserve(cst: Path, record_id: str, *, pending: bool) -> None:
    state = ProducerState(cst.parent / "state" / "cst.sqlite")
    try:
        head = state.head("unit.sightings")
        head = StreamHead(head.stream, head.last_sequence, head.last_digest, 0, "e1")
        state.reserve(head, record_id=record_id, digest=record_id.encode()[:16], sealed=b"x")
        if not pending:
            state.acknowledge(record_id, 0, 41)
    finally:
        state.close()


def _keep(cst: Path, record_id: str) -> None:
    record = validate_form("sighting", _lists(_sighting()), datetime.now(UTC)).record
    assert record is not None
    data = record.model_dump(mode="json") | {"record_id": record_id}
    state = ProducerState(cst.parent / "state" / "cst.sqlite")
    try:
        state.keep_copy(record_id, "sighting", json.dumps(data))
    finally:
        state.close()


def test_sent_lists_the_sends_and_a_record_page_offers_correction_and_retraction(
    cst: Path, client: Client
) -> None:
    rid = "0b7c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d"
    _reserve(cst, rid, pending=False)
    _keep(cst, rid)
    sent = client.get("/sent")
    assert sent.status == 200
    assert f'href="/sent/{rid}"' in sent.body
    page = client.get(f"/sent/{rid}")
    assert page.status == 200
    assert 'id="status">acked<' in page.body
    assert f'action="/sent/{rid}/correct"' in page.body
    assert f'action="/sent/{rid}/retract"' in page.body
    assert 'name="reporter_ref"' in page.body
    assert 'value="R-1"' in page.body  # prefilled from the console's copy
    # A correction goes through the preview too (recipients of its replacement).
    reply = client.post(
        f"/sent/{rid}/correct",
        {
            **_sighting(description="Filmed the side door."),
            "reason": "wrong door",
            "csrf": page.csrf(),
            "action": "preview",
        },
    )
    assert reply.status == 200, reply.body[:3000]
    assert set(re.findall(r'id="recipient-([a-z-]+)"', reply.body)) == {
        "met-police",
        "herts-police",
        "gmp",
        "inspectorate",
    }
    assert 'type="hidden" name="reason" value="wrong door"' in reply.body
    # A correction without a reason: the error beside the reason.
    reply = client.post(
        f"/sent/{rid}/correct", {**_sighting(), "csrf": page.csrf(), "action": "preview"}
    )
    assert reply.status == 422
    assert 'id="error-reason"' in reply.body
    # A retraction's preview (its grading is the record's).
    reply = client.post(
        f"/sent/{rid}/retract", {"reason": "a duplicate", "csrf": page.csrf(), "action": "preview"}
    )
    assert reply.status == 200
    assert 'id="recipient-met-police"' in reply.body
    assert "a retraction always applies" in reply.body
    reply = client.post(f"/sent/{rid}/retract", {"csrf": page.csrf(), "action": "preview"})
    assert reply.status == 422
    assert 'id="retract-error-reason"' in reply.body


def test_records_this_producer_did_not_publish_are_refused(client: Client) -> None:
    other = "9f9f9f9f-0000-4000-8000-000000000001"
    assert client.get(f"/sent/{other}").status == 404
    csrf = client.get("/sent").csrf()
    reply = client.post(
        f"/sent/{other}/correct", {**_sighting(), "reason": "x", "csrf": csrf, "action": "preview"}
    )
    assert reply.status == 404
    reply = client.post(f"/sent/{other}/retract", {"reason": "x", "csrf": csrf})
    assert reply.status == 404


def test_pending_lists_unacknowledged_sends_and_abandons_one(cst: Path, client: Client) -> None:
    rid = "1c2d3e4f-5061-4728-9a3b-4c5d6e7f8091"
    _reserve(cst, rid, pending=True)
    page = client.get("/pending")
    assert f'id="pending-{rid}"' in page.body
    reply = client.post(f"/pending/{rid}/abandon", {"csrf": page.csrf()})
    assert reply.status == 303
    after = client.get("/pending")
    assert f'id="pending-{rid}"' not in after.body
    assert "abandoned" in after.body
    # Without the CSRF token, nothing happens.
    assert client.post(f"/pending/{rid}/abandon", {}).status == 403


def test_state_migrates_from_version_3_and_keeps_copies_until_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    for statement in state_mod._SCHEMA.split(";"):
        db.execute(statement)
    db.execute(state_mod._NOTES)
    db.execute(
        "INSERT INTO sends (stream, epoch, sequence, record_id, sealed, status, partition, "
        "offset) VALUES ('t', 'e', 0, 'r-1', x'', 'acked', 0, 5)"
    )
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    path.chmod(0o600)
    state = ProducerState(path)
    try:
        version = state._db.execute("PRAGMA user_version").fetchone()[0]
        assert version == STATE_VERSION == 4
        prior = state.prior("r-1")
        assert prior is not None
        assert (prior.status, prior.offset) == ("acked", 5)
        assert state.copy("r-1") is None
        state.keep_copy("r-1", "sighting", '{"a": 1}')
        assert state.copy("r-1") == ("sighting", '{"a": 1}')
        state.keep_copy("r-1", "sighting", '{"a": 2}')  # a correction replaces it
        assert state.copy("r-1") == ("sighting", '{"a": 2}')
        assert [p.record_id for p in state.sends(limit=10)] == ["r-1"]
        assert state.send_count() == 1
        assert state.send_count(exclude=("t",)) == 0
        assert state.forget("r-1") == "acked"  # an erasure removes the copy too
        assert state.copy("r-1") is None
    finally:
        state.close()
    again = ProducerState(path)  # opening a current state changes nothing
    try:
        assert again._db.execute("PRAGMA user_version").fetchone()[0] == 4
    finally:
        again.close()

"""CST's console on the real broker: a sighting typed into the report form, previewed, published,
and stored by the Met's consumer with the same record id and fields; then corrected from its
page on /sent, and the Met's store holds version 2."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intelbus.store import open_store
from tests.federation import Federation
from tests.taxii_store import users_file
from tests.webconsole import Client, Reply, RunningConsole, web_section
from web.publishing import Desk

pytestmark = pytest.mark.kafka

PASSWORD = "a long test password for the officer"  # noqa: S105 - a test user's


def _form(description: str) -> dict[str, str | list[str]]:
    return {
        "observed_at": (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
        "place.site_name": "North Shul",
        "place.site_kind": "SYNAGOGUE",
        "place.address_or_area": "Stamford Hill",
        # The Met's own area at TLP:AMBER: the agreement gives it to the Met (and the
        # inspectorate), and the Met's policy stores it whole.
        "place.force_area": "METROPOLITAN",
        "place.latitude": "51.57",
        "place.longitude": "-0.07",
        "behaviours": ["FILMING"],
        "description": description,
        "vehicles.0.registration": "LX19 ABC",
        "reporter_ref": "CST-24-0001",
        "grading.source_evaluation": "S2",
        "grading.assessment": "B",
        "grading.handling_code": "P",
        "grading.tlp": "AMBER",
        "grading.classification": "OFFICIAL",
    }


def _hidden(reply: Reply) -> dict[str, list[str]]:
    """The hidden fields of the page's own form (not the header's sign-out form)."""
    main = reply.body.split('<main id="main">', 1)[1]
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', main):
        fields.setdefault(html.unescape(name), []).append(html.unescape(value))
    return fields


def _preview_then_publish(client: Client, path: str, form: dict[str, str | list[str]]) -> str:
    csrf = client.get("/report/sighting").csrf()
    preview = client.post(path, {**form, "csrf": csrf, "action": "preview"})
    assert preview.status == 200, preview.body[:3000]
    assert set(re.findall(r'id="recipient-([a-z-]+)"', preview.body)) == {
        "met-police",
        "inspectorate",
    }
    carried = _hidden(preview)
    assert carried["csrf"] == [csrf]
    outcome = client.post(path, {**carried, "action": "publish"})
    assert outcome.status == 200, outcome.body[:3000]
    m = re.search(r'id="record-link">([0-9a-f-]{36})<', outcome.body)
    assert m is not None, outcome.body[:3000]
    assert "met-police" in outcome.body.split('id="recipients">', 1)[1].split("<", 1)[0]
    return m.group(1)


def test_a_sighting_from_the_form_is_stored_by_the_met_and_its_correction_too(
    tmp_path: Path, bootstrap: str
) -> None:
    fed = Federation(tmp_path, bootstrap, f"sqlite:///{tmp_path / 'unused.sqlite'}")
    users = users_file(tmp_path / "users.json", ("officer", PASSWORD, None))
    config = tmp_path / "producer.toml"
    config.write_text(config.read_text() + web_section(users))
    running = RunningConsole(config)
    try:
        client = running.client()
        assert client.sign_in("officer", PASSWORD).status == 303

        rid = _preview_then_publish(client, "/report/sighting", _form("Filmed the gates."))
        fed.consume("met-police")
        store = open_store(fed.stores["met-police"])
        try:
            view = store.get(rid, "cst")
            assert view is not None
            assert view.version == 1
            assert view.payload is not None
            assert view.payload["record_id"] == rid
            assert view.payload["description"] == "Filmed the gates."
            assert view.payload["reporter_ref"] == "CST-24-0001"
            vehicles = view.payload["vehicles"]
            assert isinstance(vehicles, list)
            assert vehicles[0]["registration"] == "LX19ABC"  # made canonical, as the CLI does
            assert view.payload["behaviours"] == ["FILMING"]
            place = view.payload["place"]
            assert isinstance(place, dict)
            assert (place["force_area"], place["site_name"]) == ("METROPOLITAN", "North Shul")
            assert view.redacted_fields == ()
        finally:
            store.close()

        page = client.get(f"/sent/{rid}")
        assert page.status == 200
        assert 'id="status">acked<' in page.body
        assert 'value="CST-24-0001"' in page.body  # the correction form starts from the copy
        fixed = _preview_then_publish(
            client,
            f"/sent/{rid}/correct",
            {**_form("Filmed the gates and the side door."), "reason": "the side door too"},
        )
        assert fixed != rid  # the correction is a record of its own
        fed.consume("met-police")
        store = open_store(fed.stores["met-police"])
        try:
            view = store.get(rid, "cst")
            assert view is not None
            assert view.version == 2
            assert view.payload is not None
            assert view.payload["description"] == "Filmed the gates and the side door."
        finally:
            store.close()
        assert client.get("/pending").body.count('id="pending-') == 0
    finally:
        running.stop()
        desk = next(v for v in running.console.settings.extras.values() if isinstance(v, Desk))
        desk.publisher().close()

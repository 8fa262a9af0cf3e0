"""The console's whole journey in real Chromium, on the real broker.

A CST officer signs in to CST's console, types a sighting into the report form, sees a mistake
flagged beside its field, previews who will receive it, and publishes it; the Met's consumer
(the real one, as `intelbus consume` runs it) stores it; a Met analyst signs in to the Met's
console, filters the list, opens the record with its provenance, and sees it on the map; the
engineer on call looks at feeds, quarantine, lag and the inspectorate's audit page. Every page
is checked at a phone's width and at 1920 px (nothing scrolls sideways), against Chromium's
network log (nothing loaded from anywhere but the console) and its console (no CSP violation),
and photographed for the README (docs/screenshots).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from intelbus.store import open_store
from tests.browser.kit import DESKTOP_WIDTH, PHONE_WIDTH, Browser
from tests.federation import Federation
from tests.taxii_store import users_file
from tests.webconsole import RunningConsole, web_section

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

OFFICER_PASSWORD = "the officer's long passphrase"  # noqa: S105 - a test user's
ANALYST_PASSWORD = "the analyst's long passphrase"  # noqa: S105 - a test user's
DESCRIPTION = f"Two men filmed the school gates for ten minutes ({uuid.uuid4().hex[:6]})."


@dataclass
class Journey:
    fed: Federation
    cst: RunningConsole
    root: Path
    record_id: str = ""


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory, bootstrap: str) -> Iterator[Journey]:
    root = tmp_path_factory.mktemp("journey")
    fed = Federation(root, bootstrap, f"sqlite:///{root / 'unused.sqlite'}")
    users = users_file(root / "cst-users.json", ("officer", OFFICER_PASSWORD, None))
    config = root / "producer.toml"
    policies = "".join(f'{f} = "{f}.policy.toml"\n' for f in ("met-police", "herts-police"))
    config.write_text(
        config.read_text() + web_section(users, f"[web.partner_policies]\n{policies}")
    )
    cst = RunningConsole(config)
    yield Journey(fed, cst, root)
    cst.stop()


def _check_page(browser: Browser, origin: str, name: str) -> None:
    """Nothing from elsewhere, no CSP violation, usable at a phone's width and at 1920 px; a
    screenshot at each width."""
    browser.assert_only_from(origin)
    assert browser.csp_violations() == [], name
    browser.screenshot(name)
    url = browser.driver.current_url
    for width, suffix in ((PHONE_WIDTH, "phone"), (DESKTOP_WIDTH, "wide")):
        with browser.at_width(width):
            browser.open(url)
            browser.wait_for("main")
            assert browser.horizontal_overflow() <= 0, f"{name} scrolls sideways at {width} px"
            if suffix == "phone":
                browser.screenshot(f"{name}-{suffix}")
    browser.assert_only_from(origin)


def _sign_in(browser: Browser, url: str, user: str, password: str) -> None:
    browser.open(url + "/signin")
    browser.fill("user", user)
    browser.fill("password", password)
    browser.click("button[type=submit].primary")
    browser.wait_for(".who")


def _set(browser: Browser, name: str, value: str) -> None:
    element = browser.driver.find_element(By.NAME, name)
    if element.tag_name == "select":
        Select(element).select_by_value(value)
    elif element.get_attribute("type") == "datetime-local":
        browser.driver.execute_script("arguments[0].value = arguments[1];", element, value)
    else:
        element.clear()
        element.send_keys(value)


def _tick(browser: Browser, name: str, value: str) -> None:
    box = browser.driver.find_element(By.CSS_SELECTOR, f"input[name='{name}'][value='{value}']")
    if not box.is_selected():
        box.click()


def test_1_cst_reports_a_sighting_through_the_form(journey: Journey, browser: Browser) -> None:
    url = journey.cst.url
    _sign_in(browser, url, "officer", OFFICER_PASSWORD)
    browser.open(url + "/report/sighting")
    browser.wait_for("form.report")
    _check_page(browser, url, "report-form")
    observed = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    for name, value in {
        "observed_at": observed,
        "place.site_name": "Beis Yaakov Primary",
        "place.site_kind": "SCHOOL",
        "place.address_or_area": "Edgware Road",
        "place.force_area": "METROPOLITAN",
        "place.latitude": "95",  # a slip of the finger: refused beside its field
        "place.longitude": "-0.27",
        "description": DESCRIPTION,
        "persons.0.summary": "man, dark coat, phone held up",
        "vehicles.0.registration": "LX19 ABC",
        "reporter_ref": "CST-LINE-0412",
        "grading.source_evaluation": "S1",
        "grading.assessment": "B",
        "grading.handling_code": "P",
        "grading.tlp": "AMBER",
        "grading.classification": "OFFICIAL",
    }.items():
        _set(browser, name, value)
    _tick(browser, "behaviours", "FILMING")
    browser.click("button[name=action][value=preview]")
    browser.wait_for(".error-summary")
    error = browser.text("[id='error-place.latitude']")
    assert "90" in error, error  # beside the latitude field, saying the bound
    field = browser.driver.find_element(By.ID, "f-place.latitude")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("value") == "95"  # what was typed is kept
    assert browser.driver.find_element(By.NAME, "description").get_attribute("value") == DESCRIPTION
    browser.screenshot("report-error")

    _set(browser, "place.latitude", "51.6")
    browser.click("button[name=action][value=preview]")
    browser.wait_for("[id='recipient-met-police']")
    recipients = {
        e.get_attribute("id")
        for e in browser.driver.find_elements(By.CSS_SELECTOR, "[id^='recipient-']")
    }
    assert recipients == {"recipient-met-police", "recipient-inspectorate"}
    browser.screenshot("report-preview")
    browser.click("button[name=action][value=publish]")
    browser.wait_for("#record-link")
    journey.record_id = browser.text("#record-link")
    assert len(journey.record_id) == 36
    assert "met-police" in browser.text("#recipients")
    browser.assert_only_from(url)
    assert browser.csp_violations() == []
    browser.screenshot("report-published")

    for page, name in (("/sent", "sent"), ("/pending", "pending")):
        browser.open(url + page)
        browser.wait_for("main h1")
        _check_page(browser, url, name)


@pytest.fixture(scope="module")
def met(journey: Journey) -> Iterator[RunningConsole]:
    assert journey.record_id, "the report step did not publish"
    stats = journey.fed.consume("met-police")
    assert stats.stored >= 1
    store = open_store(journey.fed.stores["met-police"])
    try:
        held = store.get(journey.record_id, "cst")
        assert held is not None
        assert held.payload is not None
        assert held.payload["description"] == DESCRIPTION
    finally:
        store.close()
    users = users_file(journey.root / "met-users.json", ("analyst", ANALYST_PASSWORD, None))
    config = journey.root / "met-police.toml"
    (journey.root / "reports" / "audit").mkdir(parents=True, exist_ok=True)
    config.write_text(config.read_text() + web_section(users, 'audit_reports = "reports/audit"\n'))
    running = RunningConsole(config)
    yield running
    running.stop()


def test_2_the_met_analyst_finds_it_in_the_list_and_opens_it(
    journey: Journey, met: RunningConsole, browser: Browser
) -> None:
    url = met.url
    _sign_in(browser, url, "analyst", ANALYST_PASSWORD)
    browser.open(url + "/records")
    browser.wait_for("table.records")
    _set(browser, "kind", "sighting")
    _set(browser, "area", "METROPOLITAN")
    browser.click("form.filters[method=get] button[type=submit]")
    browser.wait_for("table.records")
    assert "kind=sighting" in browser.driver.current_url
    ids = [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "td.record-id a")]
    assert journey.record_id in ids
    _check_page(browser, url, "records")
    # The search box: the term finds it and never reaches the address (browser history).
    token = DESCRIPTION.rsplit("(", 1)[1].rstrip(").")
    _set(browser, "q", token)
    browser.click("form.search button[type=submit]")
    browser.wait_for("table.records")
    ids = [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "td.record-id a")]
    assert journey.record_id in ids
    assert token not in browser.driver.current_url
    # Another area's filter leaves it out.
    browser.open(url + "/records?area=HERTFORDSHIRE")
    browser.wait_for("main h1")
    ids = [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "td.record-id a")]
    assert journey.record_id not in ids

    browser.open(url + f"/records/{journey.record_id}")
    browser.wait_for("section.provenance")
    provenance = browser.text("section.provenance")
    for expected in (
        "cst",
        "Topic, partition, offset",
        "Chain position",
        "Broker time",
        "Admitted by policy rule",
    ):
        assert expected in provenance, expected
    assert "(in force at broker time)" in provenance  # the directory version it was judged under
    assert "valid in directory v" in provenance
    assert DESCRIPTION in browser.text("article.record")
    _check_page(browser, url, "record")


def test_3_the_map_shows_the_sighting_and_the_other_pages_work(
    journey: Journey, met: RunningConsole, browser: Browser
) -> None:
    url = met.url
    _sign_in(browser, url, "analyst", ANALYST_PASSWORD)
    browser.open(url + "/map")
    browser.wait_for("svg.map")
    marks = browser.driver.find_elements(By.CSS_SELECTOR, "svg.map circle[data-record-ids]")
    on_map = {rid for m in marks for rid in (m.get_attribute("data-record-ids") or "").split()}
    assert journey.record_id in on_map
    _check_page(browser, url, "map")
    for page, name in (
        ("/timeline", "timeline"),
        ("/links", "links"),
        ("/export", "export"),
        ("/feeds", "feeds"),
        ("/quarantine", "quarantine"),
        ("/lag", "lag"),
        ("/audit", "audit"),
    ):
        browser.open(url + page)
        browser.wait_for("main h1")
        assert "Not shown" not in browser.text("main h1"), page
        _check_page(browser, url, name)

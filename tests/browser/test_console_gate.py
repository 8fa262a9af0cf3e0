"""The console's gate in real Chromium: sign-in, no page without it, forged forms, what loads.

A force's console (tests/webconsole.py) over a store filled as a consumer would fill it; the
browser signs in through the form as a person would. The end-to-end journey (a sighting from
CST's form to a force's map, on the real broker) is tests/browser/test_console_journey.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser.kit import PHONE_WIDTH, Browser
from tests.taxii_store import fill, users_file
from tests.webconsole import RunningConsole

pytestmark = pytest.mark.browser

PASSWORD = "an analyst's passphrase"  # noqa: S105 - a test user's


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    folder = tmp_path_factory.mktemp("gate")
    fill(folder / "herts.sqlite")
    users = users_file(folder / "users.json", ("analyst", PASSWORD, None))
    config = folder / "herts.toml"
    config.write_text(
        f'agency = "herts-police"\nkey_file = "k.key"\ndirectory = "d"\npolicy = "p.toml"\n'
        f'store = "{folder / "herts.sqlite"}"\nenvironment = "test"\n[web]\nusers_file = "{users}"\n'
    )
    running = RunningConsole(config)
    yield running
    running.stop()


def _sign_in(browser: Browser, url: str, password: str = PASSWORD) -> None:
    browser.open(url + "/signin")
    browser.fill("user", "analyst")
    browser.fill("password", password)
    browser.click("button[type=submit].primary")
    browser.wait_for("main")


def test_no_page_without_signing_in(browser: Browser, console: RunningConsole) -> None:
    for path in ("/", "/records", "/map", "/report/sighting", "/feeds", "/records/x"):
        browser.open(console.url + path)
        browser.wait_for("form[action='/signin']")
        assert browser.driver.current_url.startswith(console.url + "/signin"), path
        assert "Sign in to herts-police" in browser.text("h1")
    browser.screenshot("signin")
    browser.assert_only_from(console.url)
    assert browser.csp_violations() == []


def test_a_wrong_password_says_so_and_signs_nobody_in(
    browser: Browser, console: RunningConsole
) -> None:
    _sign_in(browser, console.url, "not it")
    assert "Wrong user name or password" in browser.text("#signin-error")
    browser.open(console.url + "/records")
    assert browser.driver.current_url.startswith(console.url + "/signin")


def test_sign_in_then_sign_out(browser: Browser, console: RunningConsole) -> None:
    _sign_in(browser, console.url)
    assert not browser.driver.current_url.startswith(console.url + "/signin")
    assert browser.text(".who") == "analyst"
    session = [c for c in browser.cookies() if c["name"] == "intelbus"]
    assert len(session) == 1
    assert session[0]["httpOnly"] is True
    assert session[0]["sameSite"] == "Strict"
    browser.click(".signout button")
    browser.wait_for("form[action='/signin']")
    browser.open(console.url + "/records")
    assert browser.driver.current_url.startswith(console.url + "/signin")
    browser.assert_only_from(console.url)


class _Forger(BaseHTTPRequestHandler):
    """Another site (another port is another origin) whose page posts a form to the console."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<!doctype html><form id="f" method="post" action="{self.target}/signout">'
            '<button id="go">win a prize</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def test_a_form_posted_from_another_site_is_refused(
    browser: Browser, console: RunningConsole, tmp_path: Path
) -> None:
    _sign_in(browser, console.url)
    _Forger.target = console.url
    forger = ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    try:
        browser.open(f"http://127.0.0.1:{forger.server_address[1]}/")
        browser.click("#go")
        browser.wait_for("p.error")
        assert "expired or came from elsewhere" in browser.text("p.error")
    finally:
        forger.shutdown()
        forger.server_close()
    # The forged sign-out did nothing: still signed in.
    browser.open(console.url + "/no-such-page")
    assert browser.text(".who") == "analyst"


def test_the_sign_in_page_fits_a_phone(browser: Browser, console: RunningConsole) -> None:
    with browser.at_width(PHONE_WIDTH):
        browser.open(console.url + "/signin")
        browser.wait_for("form[action='/signin']")
        assert browser.horizontal_overflow() <= 0  # negative: a vertical scrollbar
        browser.screenshot("signin-phone")

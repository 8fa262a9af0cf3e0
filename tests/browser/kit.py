"""The browser test kit: Debian's headless Chromium, driven by selenium through its chromedriver.

A page test gets a :class:`Browser` (the ``browser`` fixture in conftest.py) and checks what a user
would see, what the page fetched over the network, and what Chromium complained about:

    def test_login_page(browser: Browser, console_url: str) -> None:
        browser.open(console_url + "/login")
        browser.fill("username", "alice")
        browser.click("button[type=submit]")
        assert browser.text("h1") == "Records"
        browser.assert_only_from(console_url)
        assert browser.csp_violations() == []

The browser and its driver are the ones in /usr/bin (``scripts/chromium.sh install``): selenium is
given the driver's path, so it never asks Selenium Manager to download one (this machine's network
is closed, and CI must test the browser it installed).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "scripts/chromium.sh install"

#: Where README screenshots go (docs/screenshots under the repository).
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

#: The window a test starts with, and the widths a layout is checked at.
DEFAULT_SIZE = (1280, 900)
PHONE_WIDTH = 390
DESKTOP_WIDTH = 1920

# Every flag is needed here: the sandbox needs user namespaces a container lacks, there is no GPU,
# and the network is closed, so each background fetch (QUIC probes, component and sync updates,
# first-run pages) would only add noise to the request log or stall.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

# Schemes that fetch nothing from a server: a page may use them whatever its origin.
_LOCAL_SCHEMES = frozenset({"data", "about"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# How much of a data: URL a request list keeps (they can be megabytes of base64).
_DATA_URL_KEEP = 48


class ChromiumMissingError(RuntimeError):
    """Chromium or its driver is not installed, or did not start."""


@dataclass(frozen=True)
class Origin:
    """A URL's scheme, host and port, with the scheme's default port filled in."""

    scheme: str
    host: str
    port: int | None

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "blob":
            # blob:http://host:port/uuid belongs to the origin that created it.
            return cls.of(url[len("blob:") :])
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
        return cls(scheme, (parts.hostname or "").lower(), port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port is not None else "")


def _marked(url: str) -> str:
    """A data: URL shortened to its head and length; any other URL unchanged."""
    if url.startswith("data:") and len(url) > _DATA_URL_KEEP:
        return f"{url[:_DATA_URL_KEEP]}… ({len(url)} chars)"
    return url


class Browser:
    """One headless Chromium window, with its network and console logs kept for assertions."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        # Chromium hands each log out once (reading empties it): keep what was read until reset.
        self._performance: list[dict[str, Any]] = []
        self._console: list[dict[str, Any]] = []

    # -- navigation and forms --------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load url and wait for its load event."""
        self.driver.get(url)

    def fill(self, name: str, value: str) -> None:
        """Type value into the field named name; a <select> gets the option whose text is value."""
        field = self.driver.find_element(By.NAME, name)
        if field.tag_name.lower() == "select":
            Select(field).select_by_visible_text(value)
            return
        field.clear()
        field.send_keys(value)

    def click(self, selector: str) -> None:
        """Click the first element matching the CSS selector."""
        self.driver.find_element(By.CSS_SELECTOR, selector).click()

    def text(self, selector: str) -> str:
        """The visible text of the first element matching the CSS selector."""
        return self.driver.find_element(By.CSS_SELECTOR, selector).text

    def wait_for(self, selector: str, timeout: float = 5.0) -> None:
        """Wait until an element matches the CSS selector (after a click that navigates)."""
        WebDriverWait(self.driver, timeout).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, selector)) > 0,
            f"no element matches {selector!r} after {timeout}s",
        )

    # -- state -----------------------------------------------------------------------------

    def cookies(self) -> list[dict[str, Any]]:
        """The cookies visible to the current page (name, value, httpOnly, sameSite...)."""
        return list(self.driver.get_cookies())

    def clear_cookies(self) -> None:
        """Delete every cookie of every site (WebDriver's own call only reaches the current one)."""
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})

    def reset(self) -> None:
        """A fresh start for the next test: blank page, no cookies, no cache, empty logs, default size."""
        self.driver.get("about:blank")
        self.clear_cookies()
        # A cached asset may be served without a request being logged: every test fetches anew.
        self.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        self.resize(*DEFAULT_SIZE)
        self.clear_logs()

    # -- network and console logs ----------------------------------------------------------

    def _log(self, kind: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.driver.get_log(kind)  # type: ignore[no-untyped-call]
        return entries

    def _drain(self) -> None:
        for entry in self._log("performance"):
            self._performance.append(json.loads(entry["message"])["message"])
        self._console.extend(self._log("browser"))

    def clear_logs(self) -> None:
        """Forget every request and console message seen so far."""
        self._drain()
        self._performance.clear()
        self._console.clear()

    def requests(self) -> list[str]:
        """Every URL requested since the last reset, in order (Network.requestWillBeSent).

        data: URLs are kept but shortened to their first characters and marked with their length;
        Chromium logs them only when it decodes them (a broken data: image may be missing).
        """
        self._drain()
        return [
            _marked(str(event["params"]["request"]["url"]))
            for event in self._performance
            if event.get("method") == "Network.requestWillBeSent"
        ]

    def assert_only_from(self, origin: str) -> None:
        """Fail, listing them, when any request went anywhere but origin (data: and about: pass)."""
        allowed = Origin.of(origin)
        foreign = [
            url
            for url in self.requests()
            if urlsplit(url).scheme.lower() not in _LOCAL_SCHEMES and Origin.of(url) != allowed
        ]
        assert not foreign, f"requests outside {allowed}: " + ", ".join(foreign)

    def console_messages(self) -> list[str]:
        """Every console message since the last reset, as 'LEVEL message'."""
        self._drain()
        return [f"{entry['level']} {entry['message']}" for entry in self._console]

    def console_errors(self) -> list[str]:
        """The console's errors (failed loads, script errors, CSP refusals) since the last reset."""
        self._drain()
        return [str(entry["message"]) for entry in self._console if entry["level"] == "SEVERE"]

    def csp_violations(self) -> list[str]:
        """The Content Security Policy refusals Chromium logged since the last reset."""
        return [m for m in self.console_errors() if "Content Security Policy" in m]

    # -- layout and screenshots ------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        """Make the viewport (what a screenshot shows) width x height CSS pixels."""
        # Headless Chromium still reserves room for a toolbar it does not draw: grow the window by
        # whatever the viewport came out short, so sizes here are the page's own.
        self.driver.set_window_size(width, height)
        inner_width, inner_height = self.viewport()
        if (inner_width, inner_height) != (width, height):
            self.driver.set_window_size(2 * width - inner_width, 2 * height - inner_height)

    def viewport(self) -> tuple[int, int]:
        """The page's innerWidth and innerHeight."""
        size = self.driver.execute_script("return [window.innerWidth, window.innerHeight];")
        return int(size[0]), int(size[1])

    @contextmanager
    def at_width(self, width: int, height: int | None = None) -> Iterator[None]:
        """Lay the page out at width (PHONE_WIDTH, DESKTOP_WIDTH...); the size is restored after."""
        before = self.viewport()
        self.resize(width, height if height is not None else before[1])
        try:
            yield
        finally:
            self.resize(*before)

    def horizontal_overflow(self) -> int:
        """How many pixels the page is wider than the window (> 0: it scrolls sideways)."""
        return int(
            self.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth;"
            )
        )

    def screenshot(self, name: str, folder: Path = SCREENSHOT_DIR) -> Path:
        """Save the viewport as folder/name.png (name: lowercase letters, digits, - and _)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"screenshot name {name!r} is not lowercase letters, digits, - or _")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        path.write_bytes(self.driver.get_screenshot_as_png())
        return path


def _options(profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DEFAULT_SIZE[0]},{DEFAULT_SIZE[1]}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return options


@contextmanager
def start_chromium() -> Iterator[Browser]:
    """Headless Chromium with a fresh profile, quit (and its profile deleted) on exit.

    Raises ChromiumMissingError, in one line naming the install command, when /usr/bin/chromium
    or /usr/bin/chromedriver is missing or the pair does not start.
    """
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        raise ChromiumMissingError(f"{' and '.join(missing)} missing: run `{INSTALL_HINT}`")
    # Belt and braces: with the driver's path given selenium skips Selenium Manager, and offline
    # it could not download anything even if a later selenium consulted it.
    os.environ.setdefault("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory(prefix="intelbus-chromium-") as profile:
        try:
            driver = webdriver.Chrome(
                service=Service(executable_path=str(CHROMEDRIVER)), options=_options(Path(profile))
            )
        except WebDriverException as e:
            first = (e.msg or type(e).__name__).strip().splitlines()[0]
            raise ChromiumMissingError(
                f"{CHROMIUM} did not start through {CHROMEDRIVER} ({first}): run `{INSTALL_HINT}`"
            ) from e
        try:
            driver.set_page_load_timeout(30)
            browser = Browser(driver)
            browser.reset()
            yield browser
        finally:
            driver.quit()

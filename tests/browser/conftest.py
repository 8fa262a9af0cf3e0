"""Fixtures for the browser tests: one headless Chromium per session, a clean slate per test.

Chromium is never optional: when it or its driver is missing, every browser test fails with the
command that installs them (``scripts/chromium.sh install``; .ci/run calls it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.kit import Browser, ChromiumMissingError, start_chromium


@pytest.fixture(scope="session")
def chrome() -> Iterator[Browser]:
    """The session's headless Chromium (started once: a start takes about a second)."""
    try:
        with start_chromium() as browser:
            yield browser
    except ChromiumMissingError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def browser(chrome: Browser) -> Browser:
    """The session's Chromium on a blank page, without cookies, cache or logged requests."""
    chrome.reset()
    return chrome

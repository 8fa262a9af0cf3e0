"""Self-tests of the browser kit, on tiny pages served by a stdlib HTTP server on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import kit
from tests.browser.kit import DEFAULT_SIZE, PHONE_WIDTH, Browser, ChromiumMissingError

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A valid 1x1 GIF: Chromium logged no request for a truncated one.
GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="


@dataclass(frozen=True)
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Site:
    """A local web server; tests put pages in it by path."""

    origin: str
    pages: dict[str, Page] = field(default_factory=dict)

    def put(
        self,
        path: str,
        body: str,
        content_type: str = "text/html; charset=utf-8",
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> str:
        self.pages[path] = Page(body.encode(), content_type, headers)
        return self.origin + path


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    holder: list[Site] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = holder[0].pages.get(self.path.split("?")[0])
            if page is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", page.content_type)
            self.send_header("Content-Length", str(len(page.body)))
            for name, value in page.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(page.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            del format, args  # quiet: pytest shows its own output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Site(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago): a connection there is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return int(width), int(height)


def test_a_page_with_only_local_assets_passes(browser: Browser, site: Site) -> None:
    site.put("/style.css", "body { color: #222 }", "text/css")
    site.put("/app.js", "document.title = 'ran';", "text/javascript")
    url = site.put(
        "/local.html",
        '<link rel="stylesheet" href="/style.css"><script src="/app.js"></script>'
        f'<img src="{GIF}" alt="">',
    )
    browser.open(url)

    requests = browser.requests()
    assert url in requests
    assert site.origin + "/style.css" in requests
    assert site.origin + "/app.js" in requests
    assert any(r.startswith("data:image/gif") for r in requests)
    browser.assert_only_from(site.origin)
    browser.assert_only_from(site.origin + "/")  # a path on the origin names the same origin


def test_a_request_to_another_origin_fails_naming_it(browser: Browser, site: Site) -> None:
    foreign = f"http://127.0.0.2:{closed_port()}/x.png"
    browser.open(site.put("/foreign.html", f'<p>hi</p><img src="{foreign}" alt="">'))

    with pytest.raises(AssertionError) as failure:
        browser.assert_only_from(site.origin)
    assert foreign in str(failure.value)
    assert site.origin + "/foreign.html" not in str(failure.value)


def test_another_port_on_the_same_host_is_another_origin(browser: Browser, site: Site) -> None:
    browser.open(site.put("/port.html", "<p>port</p>"))
    other = site.origin.rsplit(":", 1)[0] + f":{closed_port()}"
    with pytest.raises(AssertionError, match=re.escape("/port.html")):
        browser.assert_only_from(other)


def test_reset_forgets_requests_and_cookies(browser: Browser, site: Site) -> None:
    url = site.put("/cookie.html", "<p>c</p>", headers=(("Set-Cookie", "session=abc; Path=/"),))
    browser.open(url)
    assert [c["name"] for c in browser.cookies()] == ["session"]
    assert browser.requests() != []

    browser.reset()
    assert browser.requests() == []
    browser.open(site.put("/after.html", "<p>after</p>"))
    assert browser.cookies() == []
    # Chromium may also ask for /favicon.ico, after the load event: only the start is certain.
    requests = browser.requests()
    assert requests[0] == site.origin + "/after.html"
    assert site.origin + "/cookie.html" not in requests


def test_clear_cookies(browser: Browser, site: Site) -> None:
    browser.open(site.put("/c2.html", "<p>c</p>", headers=(("Set-Cookie", "k=v; Path=/"),)))
    assert browser.cookies() != []
    browser.clear_cookies()
    assert browser.cookies() == []


def test_screenshot_is_a_png_of_the_window(browser: Browser, site: Site, tmp_path: Path) -> None:
    browser.open(site.put("/shot.html", "<h1>shot</h1>"))

    path = browser.screenshot("desktop", folder=tmp_path)
    assert path == tmp_path / "desktop.png"
    assert png_size(path) == DEFAULT_SIZE
    with browser.at_width(PHONE_WIDTH):
        assert png_size(browser.screenshot("phone", folder=tmp_path)) == (PHONE_WIDTH, 900)
    assert browser.viewport() == DEFAULT_SIZE
    with pytest.raises(ValueError, match="screenshot name"):
        browser.screenshot("../escape", folder=tmp_path)


def test_horizontal_overflow(browser: Browser, site: Site) -> None:
    browser.open(site.put("/wide.html", '<div style="width: 2000px">wide</div>'))
    with browser.at_width(PHONE_WIDTH):
        assert browser.horizontal_overflow() > 0

    fluid = "<meta name=viewport content='width=device-width'><p style='max-width: 100%'>fluid</p>"
    browser.open(site.put("/fluid.html", fluid))
    with browser.at_width(PHONE_WIDTH):
        assert browser.horizontal_overflow() == 0


def test_inline_script_refused_by_csp_is_reported(browser: Browser, site: Site) -> None:
    page = "<p>csp</p><script>document.title = 'inline ran';</script>"
    csp = (("Content-Security-Policy", "script-src 'self'"),)
    browser.open(site.put("/csp.html", page, headers=csp))
    assert browser.driver.title != "inline ran"
    violations = browser.csp_violations()
    assert violations, browser.console_messages()
    assert "inline script" in violations[0]

    # The same page without the header: the script runs and nothing is reported.
    browser.reset()
    browser.open(site.put("/no-csp.html", page))
    assert browser.driver.title == "inline ran"
    assert browser.csp_violations() == []


def test_console_errors_are_collected(browser: Browser, site: Site) -> None:
    site.put("/err.js", "console.error('kit self-test error');", "text/javascript")
    browser.open(site.put("/err.html", '<script src="/err.js"></script>'))
    assert any("kit self-test error" in m for m in browser.console_errors())
    assert browser.csp_violations() == []


def test_fill_click_text(browser: Browser, site: Site) -> None:
    site.put(
        "/form.js",
        "document.querySelector('button').addEventListener('click', () => {"
        " const f = document.forms[0];"
        " document.querySelector('#out').textContent = f.who.value + '/' + f.level.value; });",
        "text/javascript",
    )
    browser.open(
        site.put(
            "/form.html",
            '<form><input name="who" value="old">'
            '<select name="level"><option value="g">green</option><option value="a">amber</option>'
            '</select><button type="button">go</button></form><p id="out"></p>'
            '<script src="/form.js"></script>',
        )
    )
    browser.fill("who", "alice")
    browser.fill("level", "amber")
    browser.click("button")
    browser.wait_for("#out:not(:empty)")
    assert browser.text("#out") == "alice/a"


def test_a_missing_chromium_fails_naming_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(kit, "CHROMIUM", tmp_path / "chromium")
    hint = re.escape("run `scripts/chromium.sh install`")
    with pytest.raises(ChromiumMissingError, match=hint), kit.start_chromium():
        pass

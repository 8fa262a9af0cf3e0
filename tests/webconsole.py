"""A console running in a thread, and a small cookie-keeping HTTP client, for the console's tests.

The client is the standard library's (no browser): it follows no redirect by itself, so a test
sees every 303 and where it points; the browser tests (tests/browser) drive real Chromium.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from web.app import Console
from web.build import build_console, serve, settings_for
from web.server import WebServer


class RunningConsole:
    """``intelbus web`` for one config, on a free loopback port, until :meth:`stop`."""

    def __init__(self, config: Path) -> None:
        settings = settings_for(config, bind="127.0.0.1", port=0)
        self.console: Console = build_console(settings)
        self.server: WebServer = serve(self.console)
        self.url = self.server.url.rstrip("/")
        self.port = self.server.port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def client(self) -> Client:
        return Client(self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: str

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def csrf(self) -> str:
        """The CSRF token of the page's forms."""
        m = re.search(r'name="csrf" value="([^"]+)"', self.body)
        assert m is not None, "the page has no form with a CSRF token"
        return m.group(1)


@dataclass
class Client:
    """One browser-less visitor: keeps cookies, sends forms, follows nothing."""

    port: int
    host: str = "127.0.0.1"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        fields: Mapping[str, str | Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if fields is not None:
            body = urlencode(fields, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            sent.setdefault("Origin", f"http://{self.host}:{self.port}")
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                cname, _, rest = value.partition("=")
                cvalue = rest.split(";", 1)[0]
                if "Max-Age=0" in value:
                    self.cookies.pop(cname, None)
                else:
                    self.cookies[cname] = cvalue
        conn.close()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, fields: Mapping[str, str | Sequence[str]], **headers: str) -> Reply:
        return self.request("POST", path, fields, headers)

    def sign_in(self, user: str, password: str) -> Reply:
        page = self.get("/signin")
        m = re.search(r'name="signin_token" value="([^"]+)"', page.body)
        assert m is not None, page.body[:300]
        return self.post(
            "/signin", {"signin_token": m.group(1), "next": "/", "user": user, "password": password}
        )


def web_section(users_file: Path, extra: str = "") -> str:
    """A ``[web]`` section naming ``users_file`` (the port is chosen by the test: 0)."""
    return f'[web]\nusers_file = "{users_file}"\n{extra}'


def path_of(url: str) -> str:
    return urlsplit(url).path

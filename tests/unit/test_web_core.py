"""The console's gate, on a real server: sign-in, sessions, CSRF, hosts, headers, refusals.

Every test talks HTTP to a console listening on loopback (tests/webconsole.py); nothing inside the
server is replaced. The browser tests (tests/browser) repeat the user-facing parts in Chromium.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from intelbus.store import open_store
from intelbus.store.access import AccessLog
from tests.taxii_store import fill, users_file
from tests.webconsole import Client, RunningConsole
from web.app import Route
from web.sessions import SessionStore

PASSWORD = "correct horse battery"  # noqa: S105 - a test user's
CSP_PARTS = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "frame-ancestors 'none'",
)


def _config(folder: Path, store: Path, users: Path, extra: str = "") -> Path:
    config = folder / "herts.toml"
    config.write_text(
        f'agency = "herts-police"\nkey_file = "keys/herts.key"\ndirectory = "directory"\n'
        f'policy = "policy.toml"\nstore = "{store}"\nenvironment = "test"\n\n'
        f'[web]\nusers_file = "{users}"\n{extra}'
    )
    return config


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    folder = tmp_path_factory.mktemp("console")
    fill(folder / "herts.sqlite")
    users = users_file(folder / "users.json", ("ana", PASSWORD, None), ("bob", PASSWORD, None))
    console = RunningConsole(_config(folder, folder / "herts.sqlite", users))
    yield console
    console.stop()


def _signed_in(running: RunningConsole, user: str = "ana") -> Client:
    client = running.client()
    reply = client.sign_in(user, PASSWORD)
    assert reply.status == 303, reply.body[:500]
    return client


def _csrf(client: Client) -> str:
    # Any page with the layout carries the sign-out form and its token (a 404 page too).
    return client.get("/no-such-page").csrf()


def test_every_page_without_a_session_goes_to_sign_in_and_names_no_page(
    running: RunningConsole,
) -> None:
    client = running.client()
    for path in ("/", "/records", "/no-such-page", "/static/../web/app.py", "/signout"):
        reply = client.get(path)
        assert reply.status == 303, path
        assert reply.location is not None, path
        assert reply.location.startswith("/signin?next="), path
    # A POST without a session is refused outright (never performed, never redirected into).
    assert client.post("/signout", {"csrf": "x"}).status == 403
    assert client.post("/records", {"csrf": "x"}).status == 403


def test_sign_in_with_the_password_gives_a_fresh_http_only_strict_cookie(
    running: RunningConsole,
) -> None:
    client = running.client()
    client.cookies["intelbus"] = "planted-by-someone-else"
    page = client.get("/signin")
    assert page.status == 200
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    reply = client.sign_in("ana", PASSWORD)
    assert reply.status == 303
    assert reply.location == "/"
    assert client.cookies["intelbus"] != "planted-by-someone-else"
    set_cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie
    assert client.get("/no-such-page").status == 404  # signed in: now the page is looked up


def test_wrong_password_or_unknown_user_is_one_message_and_no_session(
    running: RunningConsole,
) -> None:
    for user, password in (("ana", "wrong"), ("nobody", PASSWORD), ("", PASSWORD), ("ana", "")):
        client = running.client()
        reply = client.sign_in(user, password)
        assert reply.status == 401
        assert "Wrong user name or password" in reply.body or "Give your user name" in reply.body
        assert "intelbus" not in client.cookies
        assert client.get("/records").status == 303


def test_sign_in_form_needs_its_own_token_login_csrf(running: RunningConsole) -> None:
    client = running.client()
    # A forged sign-in (another site posting its own credentials into our console): no token.
    reply = client.post("/signin", {"user": "ana", "password": PASSWORD, "next": "/"})
    assert reply.status == 403
    assert "intelbus" not in client.cookies
    client.get("/signin")
    reply = client.post(
        "/signin", {"signin_token": "guessed", "user": "ana", "password": PASSWORD, "next": "/"}
    )
    assert reply.status == 403
    assert "intelbus" not in client.cookies


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/x\r\nSet-Cookie: a=b",
    ],
)
def test_next_never_leaves_the_console(running: RunningConsole, target: str) -> None:
    client = running.client()
    page = client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.body)
    assert token is not None
    reply = client.post(
        "/signin",
        {"signin_token": token.group(1), "user": "ana", "password": PASSWORD, "next": target},
    )
    assert reply.status == 303
    assert reply.location == "/"


def test_posts_without_the_sessions_csrf_token_or_from_another_origin_are_refused(
    running: RunningConsole,
) -> None:
    client = _signed_in(running)
    token = _csrf(client)
    other = _signed_in(running, "bob")
    assert _csrf(other) != token  # per session
    refused = [
        client.post("/signout", {}),
        client.post("/signout", {"csrf": "x" + token[1:]}),
        client.post("/signout", {"csrf": _csrf(other)}),
        client.post("/signout", {"csrf": token}, Origin="https://evil.example"),
        client.post("/signout", {"csrf": token}, Origin="null"),
        client.post("/signout", {"csrf": token}, Origin="", Referer="http://evil.example/form"),
    ]
    for reply in refused:
        assert reply.status == 403
        assert "expired or came from elsewhere" in reply.body
    # Still signed in after every refusal; the genuine form works.
    assert client.get("/no-such-page").status == 404
    reply = client.post("/signout", {"csrf": token})
    assert reply.status == 303
    assert reply.location == "/signin"
    assert client.get("/no-such-page").status == 303
    assert other.get("/no-such-page").status == 404  # bob's session is his own


def test_a_host_name_that_is_not_the_consoles_is_refused_dns_rebinding(
    running: RunningConsole,
) -> None:
    client = _signed_in(running)
    client.host = "attacker.example"
    reply = client.get("/no-such-page")
    assert reply.status == 421
    assert "intelbus" in client.cookies  # the refusal did not touch the session
    client.host = "localhost"
    assert client.get("/no-such-page").status == 404


def test_security_headers_on_every_answer(running: RunningConsole) -> None:
    client = running.client()
    replies = [client.get("/signin"), client.get("/records"), client.get("/static/console.css")]
    signed = _signed_in(running)
    replies += [signed.get("/no-such-page"), signed.post("/signout", {"csrf": "no"})]
    for reply in replies:
        csp = reply.headers["content-security-policy"]
        assert all(part in csp for part in CSP_PARTS), csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["cache-control"] == "no-store"


def test_static_files_are_a_fixed_list(running: RunningConsole) -> None:
    client = _signed_in(running)
    assert client.get("/static/console.css").status == 200
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/app.py", "/static/"):
        assert client.get(path).status == 404, path


def _raw(running: RunningConsole, data: bytes) -> str:
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            got = sock.recv(65536)
            if not got:
                break
            chunks.append(got)
    return b"".join(chunks).decode("latin-1")


def test_bodies_it_will_not_read_are_refused_and_the_connection_closed(
    running: RunningConsole,
) -> None:
    host = f"127.0.0.1:{running.port}"
    chunked = _raw(
        running,
        f"POST /signin HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        f"0\r\n\r\nGET /records HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
    )
    assert chunked.startswith("HTTP/1.1 411")
    assert chunked.count("HTTP/1.1 ") == 1  # the smuggled request was not answered
    big = _raw(
        running,
        f"POST /signin HTTP/1.1\r\nHost: {host}\r\nContent-Length: 999999999\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode(),
    )
    assert big.startswith("HTTP/1.1 413")
    json_body = _raw(
        running,
        f"POST /signin HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{{}}".encode(),
    )
    assert json_body.startswith("HTTP/1.1 415")
    for method in ("PUT", "DELETE", "TRACE", "OPTIONS", "HEAD"):
        reply = _raw(running, f"{method} / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert reply.startswith("HTTP/1.1 405"), method


def test_a_removed_user_is_signed_out_at_the_next_request(
    tmp_path: Path,
) -> None:
    fill(tmp_path / "herts.sqlite")
    users = users_file(tmp_path / "users.json", ("ana", PASSWORD, None), ("bob", PASSWORD, None))
    running = RunningConsole(_config(tmp_path, tmp_path / "herts.sqlite", users))
    try:
        client = _signed_in(running, "bob")
        assert client.get("/no-such-page").status == 404
        data = json.loads(users.read_text())
        del data["users"]["bob"]
        users.write_text(json.dumps(data))
        assert client.get("/no-such-page").status == 303
        assert _signed_in(running, "ana").get("/no-such-page").status == 404
    finally:
        running.stop()


def test_the_sign_in_pages_write_no_access_log_and_show_no_records(
    running: RunningConsole, tmp_path: Path
) -> None:
    store_path = running.console.settings.store_location
    assert store_path is not None
    store = open_store(store_path)
    try:
        before = AccessLog(store).head()
    finally:
        store.close()
    client = running.client()
    client.get("/signin")
    client.sign_in("ana", "wrong")
    store = open_store(store_path)
    try:
        assert AccessLog(store).head() == before
    finally:
        store.close()


def test_sessions_end_when_idle_and_at_the_end_of_their_lifetime() -> None:
    now = [1000.0]
    table = SessionStore(idle_s=60, lifetime_s=300, clock=lambda: now[0])
    token, session = table.create("ana", "password")
    assert "csrf" not in repr(session)
    assert token not in repr(session)
    now[0] += 59
    assert table.get(token) is session
    now[0] += 61
    assert table.get(token) is None  # idle too long
    token, _ = table.create("ana", "password")
    for _ in range(6):
        now[0] += 55
        if now[0] - 1120 <= 300:
            assert table.get(token) is not None
    assert table.get(token) is None  # kept busy, still ends at its lifetime
    assert table.get("") is None
    assert table.get("x" * 500) is None


def test_a_defect_in_a_page_is_a_500_page_without_a_traceback(running: RunningConsole) -> None:
    def broken(page: object) -> object:
        raise RuntimeError("secret record text")

    console = running.console
    console.routes = (*console.routes, Route("GET", r"/broken", broken))  # type: ignore[arg-type]
    try:
        reply = _signed_in(running).get("/broken")
    finally:
        console.routes = console.routes[:-1]
    assert reply.status == 500
    assert "secret record text" not in reply.body
    assert "Traceback" not in reply.body
    assert "reference" in reply.body


def test_http_client_sees_the_console_on_loopback_only_by_default(running: RunningConsole) -> None:
    assert running.console.settings.web.bind == "127.0.0.1"
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
    conn.request("GET", "/signin", headers={"Host": f"127.0.0.1:{running.port}"})
    assert conn.getresponse().status == 200
    conn.close()

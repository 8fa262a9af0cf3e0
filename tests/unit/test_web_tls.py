"""The console over HTTPS, certificate sign-in, and one agency's console against another's.

The bus CA (deploy/tls/certs.py) issues the console's server certificate and the client
certificates; the console serves a force's store filled as a consumer would (tests/taxii_store.py).
"""

from __future__ import annotations

import http.client
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.tls.certs import CertificateAuthority, IssuedCert
from intelbus.cli.main import app
from intelbus.errors import ConfigError
from intelbus.store import open_store
from tests.taxii_store import fill, users_file
from tests.webconsole import RunningConsole
from web.app import PageError
from web.build import settings_for

PASSWORD = "a long shift password"  # noqa: S105 - a test user's


def _config(folder: Path, name: str, agency: str, store: Path, web: str) -> Path:
    config = folder / f"{name}.toml"
    config.write_text(
        f'agency = "{agency}"\nkey_file = "keys/k.key"\ndirectory = "directory"\n'
        f'policy = "policy.toml"\nstore = "{store}"\nenvironment = "test"\n\n[web]\n{web}\n'
    )
    return config


@dataclass
class Tls:
    console: RunningConsole
    ca: CertificateAuthority
    duty: IssuedCert  # a certificate-only user's
    ana: IssuedCert  # CN of a password user
    foreign: IssuedCert  # another CA's, CN of the certificate-only user


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    folder = tmp_path_factory.mktemp("tls")
    fill(folder / "herts.sqlite")
    ca = CertificateAuthority.create(folder / "ca")
    server = ca.issue_server("console")
    users = users_file(folder / "users.json", ("ana", PASSWORD, None), ("duty", None, None))
    web = (
        f'users_file = "{users}"\ncert_file = "{server.cert_file}"\n'
        f'key_file = "{server.key_file}"\nca_file = "{ca.ca_file}"\n'
    )
    running = RunningConsole(_config(folder, "herts", "herts-police", folder / "herts.sqlite", web))
    foreign = CertificateAuthority.create(folder / "foreign").issue_agency("duty")
    yield Tls(running, ca, ca.issue_agency("duty"), ca.issue_agency("ana"), foreign)
    running.stop()


def _context(ca: CertificateAuthority, client: IssuedCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    if client is not None:
        ctx.load_cert_chain(client.cert_file, client.key_file)
    return ctx


def _get(
    tls: Tls, path: str, client: IssuedCert | None = None, cookie: str | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", tls.console.port, context=_context(tls.ca, client), timeout=10
    )
    headers = {"Cookie": cookie} if cookie else {}
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def _certificate_sign_in(tls: Tls, client: IssuedCert) -> http.client.HTTPResponse:
    page = _get(tls, "/signin", client)
    body = page.read().decode()
    assert "Continue with the certificate of" in body
    token = re.search(r'name="signin_token" value="([^"]+)"', body)
    assert token is not None
    signin_cookie = page.getheader("Set-Cookie", "").split(";")[0]
    conn = http.client.HTTPSConnection(
        "127.0.0.1", tls.console.port, context=_context(tls.ca, client), timeout=10
    )
    origin = f"https://127.0.0.1:{tls.console.port}"
    conn.request(
        "POST",
        "/signin/certificate",
        body=f"signin_token={token.group(1)}&next=/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": signin_cookie,
            "Origin": origin,
        },
    )
    return conn.getresponse()


def test_https_only_with_host_cookies_and_hsts(tls: Tls) -> None:
    page = _get(tls, "/signin")
    assert page.status == 200
    cookie = page.getheader("Set-Cookie", "")
    assert cookie.startswith("__Host-intelbus-signin=")
    assert "Secure" in cookie
    assert page.getheader("Strict-Transport-Security") == "max-age=31536000"
    plain = http.client.HTTPConnection("127.0.0.1", tls.console.port, timeout=5)
    plain.request("GET", "/signin")
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.getresponse().read()


def test_a_certificate_only_user_signs_in_with_the_bus_cas_certificate(tls: Tls) -> None:
    reply = _certificate_sign_in(tls, tls.duty)
    assert reply.status == 303
    cookie = reply.getheader("Set-Cookie", "")
    assert cookie.startswith("__Host-intelbus=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    session = cookie.split(";")[0]
    assert _get(tls, "/no-such-page", tls.duty, session).status == 404


def test_a_password_users_name_on_a_certificate_does_not_sign_in(tls: Tls) -> None:
    # The bus CA's client certificates sit on every agency host for Kafka: one whose CN is a
    # password user's name must not stand in for the password.
    reply = _certificate_sign_in(tls, tls.ana)
    assert reply.status == 403
    assert "__Host-intelbus=" not in (reply.getheader("Set-Cookie") or "")


def test_another_cas_certificate_is_refused_at_the_handshake(tls: Tls) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _get(tls, "/signin", tls.foreign).read()
    assert _get(tls, "/signin").status == 200  # the console still serves


def test_no_https_no_listening_beyond_loopback(tmp_path: Path) -> None:
    fill(tmp_path / "s.sqlite")
    users = users_file(tmp_path / "u.json", ("ana", PASSWORD, None))
    config = _config(
        tmp_path, "c", "herts-police", tmp_path / "s.sqlite", f'users_file = "{users}"'
    )
    for bind in ("0.0.0.0", "192.0.2.10", "::", "localhost."):  # noqa: S104 - refused binds
        with pytest.raises(ConfigError, match="without HTTPS"):
            settings_for(config, bind=bind)
    assert settings_for(config, bind="127.0.0.1").web.bind == "127.0.0.1"


def test_no_store_at_the_path_is_refused_not_created(tmp_path: Path) -> None:
    users = users_file(tmp_path / "u.json", ("ana", PASSWORD, None))
    missing = tmp_path / "typo.sqlite"
    config = _config(tmp_path, "c", "herts-police", missing, f'users_file = "{users}"')
    with pytest.raises(ConfigError, match="no store at"):
        settings_for(config)
    assert not missing.exists()


def test_one_agencys_session_and_users_mean_nothing_to_anothers_console(tmp_path: Path) -> None:
    fill(tmp_path / "herts.sqlite")
    fill(tmp_path / "met.sqlite", seed=9)
    herts_users = users_file(tmp_path / "herts-users.json", ("ana", PASSWORD, None))
    met_users = users_file(tmp_path / "met-users.json", ("mo", "met's own password", None))
    herts = RunningConsole(
        _config(
            tmp_path,
            "herts",
            "herts-police",
            tmp_path / "herts.sqlite",
            f'users_file = "{herts_users}"',
        )
    )
    met = RunningConsole(
        _config(
            tmp_path, "met", "met-police", tmp_path / "met.sqlite", f'users_file = "{met_users}"'
        )
    )
    try:
        ana = herts.client()
        assert ana.sign_in("ana", PASSWORD).status == 303
        assert ana.get("/no-such-page").status == 404
        # Herts's cookie, replayed at the Met's console: no session there.
        stolen = met.client()
        stolen.cookies = dict(ana.cookies)
        reply = stolen.get("/records")
        assert reply.status == 303
        assert reply.location == "/signin?next=%2Frecords"
        # Herts's user and password are not the Met's.
        assert met.client().sign_in("ana", PASSWORD).status == 401
        assert herts.client().sign_in("mo", "met's own password").status == 401
    finally:
        herts.stop()
        met.stop()


def test_a_console_pointed_at_another_agencys_store_shows_nothing(tmp_path: Path) -> None:
    fill(tmp_path / "met.sqlite")
    open_store(str(tmp_path / "met.sqlite"), owner="met-police").close()  # the Met's consumer's
    users = users_file(tmp_path / "u.json", ("ana", PASSWORD, None))
    config = _config(
        tmp_path, "herts", "herts-police", tmp_path / "met.sqlite", f'users_file = "{users}"'
    )
    # `intelbus web` refuses to start: one line, exit 2.
    result = CliRunner().invoke(app, ["web", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "belongs to met-police" in result.output
    assert "Traceback" not in result.output
    # And a console started anyway (the store's owner bound after the start) shows nothing.
    running = RunningConsole(config)
    try:
        with pytest.raises(PageError, match="belongs to met-police"), running.console.store():
            pass
    finally:
        running.stop()

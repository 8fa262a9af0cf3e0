"""Sign-in, sign-out and the home page: the only pages a stranger may reach is the sign-in form.

Sign-in checks the user name and password against the users file (Argon2id, as slow for an
unknown name as for a known one), or, with HTTPS and the bus CA configured, a client certificate
whose CN is a certificate-only user (the same rule as the TAXII server: a certificate never
stands in for a password user). The sign-in form is protected against login CSRF by a token in a
short-lived cookie that must match the form's hidden field (there is no session to hold it yet).
A new session (and cookie) is made at every sign-in, so a cookie planted before cannot be adopted.
"""

from __future__ import annotations

import hmac
import re
import secrets

from intelbus.errors import IntelbusError
from intelbus.interop.taxii_auth import AuthFailed, Principal
from intelbus.log import get_logger
from web.app import Page, Route, origin_refusal
from web.http import Response, local_path, redirect

log = get_logger("web.signin")

_MAX_NAME = 128
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
_MAX_PASSWORD = 1024


def _signin_form(page: Page, status: int = 200, error: str | None = None) -> Response:
    console = page.console
    # One token per browser while its cookie lives: a second sign-in page in another tab (or a
    # favicon fetch that lands here) must not invalidate the form already on the screen.
    held = page.request.cookies.get(console.signin_cookie, "")
    token = held if _TOKEN.fullmatch(held) else secrets.token_urlsafe(24)
    secure = "; Secure" if console.tls else ""
    cookie = (
        "Set-Cookie",
        f"{console.signin_cookie}={token}; Path=/; Max-Age=900; HttpOnly; SameSite=Strict{secure}",
    )
    return page.render(
        "signin.html",
        status=status,
        signin_token=token,
        next=local_path(page.request.arg("next") or page.request.field("next")),
        error=error,
        certificate_user=page.request.certificate_user,
    ).with_headers(cookie)


def signin_page(page: Page) -> Response:
    if page.session is not None:
        return redirect(local_path(page.request.arg("next")))
    return _signin_form(page)


def _signin_token_ok(page: Page) -> bool:
    sent = page.request.field("signin_token") or ""
    held = page.request.cookies.get(page.console.signin_cookie) or ""
    if origin_refusal(page.request) is not None:
        # The token alone is not enough here: a local user's page on another port of this host
        # can set the sign-in cookie (cookies ignore ports) and post a matching token with their
        # own credentials, signing the analyst in as them (login CSRF).
        log.warning("web.csrf_refused", reason="origin", user=None)
        return False
    return bool(sent) and hmac.compare_digest(sent.encode(), held.encode())


def _start(page: Page, who: Principal) -> Response:
    console = page.console
    console.throttle.succeeded(page.request.peer, who.user)
    console.sessions.drop(page.request.cookies.get(console.cookie))
    token, _ = console.sessions.create(
        who.user,
        "certificate" if who.method == "certificate" else "password",
        console.credential(who.user) or b"",
    )
    log.info("web.signed_in", user=who.user, method=who.method)
    return redirect(
        local_path(page.request.field("next")),
        console.session_cookie(token),
        console.clear_cookie(console.signin_cookie),
    )


def signin(page: Page) -> Response:
    if not _signin_token_ok(page):
        return _signin_form(page, 403, "The sign-in form expired: try again.")
    name = (page.request.field("user") or "").strip()
    password = page.request.field("password") or ""
    if not name or not password or len(name) > _MAX_NAME or len(password) > _MAX_PASSWORD:
        return _signin_form(page, 401, "Give your user name and password.")
    throttle, peer = page.console.throttle, page.request.peer
    wait = throttle.wait_s(peer, name)
    if wait > 0:
        # Not even checked: the answer must not tell a guesser whether this try was right.
        log.warning("web.signin_throttled", method="password")
        minutes = max(1, round(wait / 60))
        return _signin_form(
            page,
            429,
            f"Too many failed sign-ins for this user from here: try again in {minutes} minute(s).",
        )
    try:
        who = page.console.auth.password(name, password)
    except AuthFailed:
        throttle.failed(peer, name)
        log.info("web.signin_refused", method="password")
        return _signin_form(page, 401, "Wrong user name or password.")
    except IntelbusError as e:
        log.warning("web.users_file_unreadable", error=type(e).__name__)
        return _signin_form(page, 503, "The console cannot read its users file: call its operator.")
    return _start(page, who)


def signin_certificate(page: Page) -> Response:
    if not _signin_token_ok(page):
        return _signin_form(page, 403, "The sign-in form expired: try again.")
    cn = page.request.certificate_user
    if cn is None:
        return _signin_form(page, 401, "Your browser sent no certificate from the bus CA.")
    try:
        who = page.console.auth.certificate(cn)
    except AuthFailed:
        log.info("web.signin_refused", method="certificate")
        return _signin_form(page, 403, "This certificate's user may not use this console.")
    except IntelbusError as e:
        log.warning("web.users_file_unreadable", error=type(e).__name__)
        return _signin_form(page, 503, "The console cannot read its users file: call its operator.")
    return _start(page, who)


def signout(page: Page) -> Response:
    console = page.console
    console.sessions.drop(page.request.cookies.get(console.cookie))
    log.info("web.signed_out", user=page.user)
    return redirect("/signin", console.clear_cookie(console.cookie))


def no_favicon(page: Page) -> Response:
    # Browsers ask for /favicon.ico on their own; answered here so the request never reaches
    # the sign-in redirect (the page names its icon: /static/favicon.svg).
    return Response(404, b"", "text/plain; charset=utf-8")


def home(page: Page) -> Response:
    if page.console.nav:
        return redirect(page.console.nav[0].path)
    return page.render("home.html")


ROUTES = (
    Route("GET", r"/signin", signin_page, public=True),
    Route("POST", r"/signin", signin, public=True),
    Route("POST", r"/signin/certificate", signin_certificate, public=True),
    Route("GET", r"/favicon\.ico", no_favicon, public=True),
    Route("POST", r"/signout", signout),
    Route("GET", r"/", home),
)

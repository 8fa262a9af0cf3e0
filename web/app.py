"""The console: routes, sign-in gate, CSRF check, security headers, and rendering.

:meth:`Console.handle` takes every request the server parsed, in this order:

1. ``/static/...`` is served from the package's own files (a fixed list read at start: no path
   from the request ever reaches the file system).
2. Every other path needs a live session, except the sign-in page itself: without one, a GET is
   sent to ``/signin?next=PATH`` and anything else is refused (403). This is checked before the
   path is looked up, so a stranger cannot even learn which pages exist.
3. Every POST must carry the session's CSRF token and, when the browser says where the form came
   from (``Origin``, else ``Referer``), come from this console's own origin.
4. The page's handler answers; a :class:`PageError` becomes an error page with its status and one
   line; anything else is a 500 page naming nothing but a reference, and a log line with its type.

Pages are grouped by role: every console has the sign-in pages; a producer's console (a config
with a sharing agreement) has the report pages; a force's console (a config with a store) has the
analyst's and the operator's pages.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from intelbus.errors import IntelbusError
from intelbus.interop.taxii_auth import Authenticator
from intelbus.interop.taxii_config import is_loopback
from intelbus.log import get_logger
from intelbus.store import Store, open_store
from intelbus.store.base import OWNER_META_KEY
from intelbus.web_config import WebConfig
from web.http import HTML, Request, Response, redirect, with_query
from web.sessions import Session, SessionStore
from web.throttle import SigninThrottle

log = get_logger("web.app")

PACKAGE: Final = Path(__file__).resolve().parent
STATIC: Final = PACKAGE / "static"
TEMPLATES: Final = PACKAGE / "templates"
_STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}
PRODUCER: Final = "producer"
FORCE: Final = "force"


class PageError(Exception):
    """A page cannot be shown: ``status`` and one line for the person (no record contents)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Route:
    """A page: method, path pattern (named groups become ``Page.params``), handler."""

    method: str
    pattern: str
    handler: Callable[[Page], Response]
    public: bool = False

    def match(self, path: str) -> Mapping[str, str] | None:
        m = re.fullmatch(self.pattern, path)
        return None if m is None else m.groupdict()


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    label: str


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """What one console serves: whose, which role, and the config it was started with."""

    agency: str
    role: str  # PRODUCER or FORCE
    web: WebConfig
    config_path: Path
    #: The force's store (a path or URL); None for a producer's console.
    store_location: str | None = None
    #: The loaded producer or consumer config (producers.config / consumers.config), for pages.
    config: Any = None
    #: Built lazily by the producer pages: a connected publisher (``producers.publisher``).
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """What a handler gets: the request, the session (None on public pages), path parameters."""

    console: Console
    request: Request
    session: Session | None
    params: Mapping[str, str]

    @property
    def user(self) -> str:
        if self.session is None:
            raise PageError(403, "sign in first")
        return self.session.user

    def render(self, template: str, status: int = 200, **context: Any) -> Response:  # noqa: ANN401
        return self.console.render(template, self, status=status, **context)

    def notice(self, text: str) -> None:
        """A one-line message shown on the next page (after a redirect)."""
        if self.session is not None:
            self.session.notices.append(text)


def _static_files() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC.iterdir()):
        kind = _STATIC_TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            files[f"/static/{path.name}"] = (path.read_bytes(), kind)
    return files


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def origin_refusal(request: Request) -> str | None:
    """ "origin" when a POST says it came from another origin (``Origin``, else ``Referer``), or
    from an opaque one (``null``); None when it names this console or nothing.

    Cookies are not isolated by port: a page served by a local user on another port of this
    host is "same site" (SameSite cookies go along) and can set cookies this console reads
    (even ``__Host-`` ones, over HTTPS). Only the origin tells its forms from this console's.
    """
    source = request.header("origin") or request.header("referer")
    if source == "null":
        return "origin"
    if source is not None:
        parts = urlsplit(source)
        if f"{parts.scheme}://{parts.netloc}".lower() != request.origin.lower():
            return "origin"
    return None


class Console:
    """One agency's console."""

    def __init__(
        self,
        settings: ConsoleSettings,
        auth: Authenticator,
        routes: Sequence[Route],
        nav: Sequence[NavItem],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.routes = tuple(routes)
        self.nav = tuple(nav)
        self.clock = clock
        self.sessions = SessionStore(
            idle_s=settings.web.session_idle_minutes * 60,
            lifetime_s=settings.web.session_hours * 3600,
        )
        self.tls = settings.web.tls
        # A cookie named __Host- is only accepted over HTTPS, for this host, path /: no other
        # site or sub-domain can plant or overwrite it.
        self.cookie = "__Host-intelbus" if self.tls else "intelbus"
        self.signin_cookie = "__Host-intelbus-signin" if self.tls else "intelbus-signin"
        self.throttle = SigninThrottle()
        self._static = _static_files()
        self._hosts = self._allowed_hosts()
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _iso

    # --- what every response carries ---------------------------------------------------------

    def content_security_policy(self) -> str:
        img = "'self' data:"
        if self.settings.web.tile_origin is not None:
            img += f" {self.settings.web.tile_origin}"
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src {img}; font-src 'self'; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )

    def security_headers(self, *, tls: bool) -> list[tuple[str, str]]:
        headers = [
            ("Content-Security-Policy", self.content_security_policy()),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on every
            # POST, and the CSRF check could not tell its own forms from a forged one.
            ("Referrer-Policy", "same-origin"),
            ("Cache-Control", "no-store"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
            ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
        ]
        if tls:
            headers.append(("Strict-Transport-Security", "max-age=31536000"))
        return headers

    def _allowed_hosts(self) -> frozenset[str]:
        web = self.settings.web
        names = {web.bind.lower(), *(h.lower() for h in web.hosts)}
        if is_loopback(web.bind) or web.bind in ("0.0.0.0", "::"):  # noqa: S104 - names, not binds
            names |= {"localhost", "127.0.0.1", "[::1]"}
        return frozenset(names)

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header names this console (with or without its port)."""
        name = host.strip().lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1] if "]" in name else name
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        return name in self._hosts

    # --- rendering ------------------------------------------------------------------------------

    def render(
        self,
        template: str,
        page: Page | None,
        status: int = 200,
        **context: Any,  # noqa: ANN401 - whatever the template shows
    ) -> Response:
        session = None if page is None else page.session
        notices: list[str] = []
        if session is not None:
            notices, session.notices[:] = list(session.notices), []
        body = self.env.get_template(template).render(
            agency=self.settings.agency,
            role=self.settings.role,
            nav=self.nav if session is not None else (),
            user=None if session is None else session.user,
            csrf=None if session is None else session.csrf,
            path="" if page is None else page.request.path,
            notices=notices,
            **context,
        )
        return Response(status, body.encode("utf-8"), HTML)

    def plain_error(self, status: int) -> Response:
        """A page for a request refused before it was understood (no session, no template data)."""
        messages = {
            400: "The request could not be read.",
            403: "Sign in first.",
            405: "This page does not take that method.",
            411: "Send a Content-Length (chunked bodies are refused).",
            413: "The form is too large.",
            414: "The address is too long.",
            415: "Forms are sent as application/x-www-form-urlencoded.",
            421: "This console does not answer to that host name.",
        }
        message = messages.get(status, "The console could not answer.")
        return self.render("error.html", None, status=status, message=message)

    # --- requests ---------------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[Response, str | None]:  # noqa: PLR0911 - one return per refusal
        """The response to ``request``, and the signed-in user it was for (for the log)."""
        static = self._static.get(request.path)
        if static is not None and request.method == "GET":
            return Response(200, static[0], static[1]), None
        session = self.sessions.get(request.cookies.get(self.cookie))
        user = None if session is None else session.user
        if session is not None:
            held = self.credential(session.user)
            if held is None:
                # Removed from the users file: every session of theirs ends now.
                self.sessions.drop_user(session.user)
                session, user = None, None
            elif not hmac.compare_digest(held, session.credential):
                # Their entry changed since this session signed in (a new password after a
                # leak): this session ends; one made with the new password lives on.
                self.sessions.drop(request.cookies.get(self.cookie))
                session, user = None, None
        route, params, allowed = self._route(request)
        if (route is None or not route.public) and session is None:
            if request.method == "GET":
                return redirect(with_query("/signin", next=request.path)), None
            return self.plain_error(403), None
        if route is None:
            status = 405 if allowed else 404
            message = "This page does not take that method." if allowed else "No such page."
            page = Page(self, request, session, {})
            return self.render("error.html", page, status=status, message=message), user
        page = Page(self, request, session, params)
        if request.method == "POST" and not route.public:
            refused = self._csrf_refusal(page)
            if refused is not None:
                log.warning("web.csrf_refused", reason=refused, user=user)
                message = (
                    "This form has expired or came from elsewhere: reload the page and try again."
                )
                return self.render("error.html", page, status=403, message=message), user
        try:
            return route.handler(page), user
        except PageError as e:
            return self.render("error.html", page, status=e.status, message=str(e)), user
        except IntelbusError as e:
            # Expected failures (a broker down, a store locked): one line, which names no
            # record contents (the error hierarchy's rule).
            log.warning("web.page_failed", error=type(e).__name__, user=user)
            return self.render("error.html", page, status=503, message=str(e)), user
        except Exception as e:  # noqa: BLE001 - a defect: still no traceback to the browser
            ref = secrets.token_hex(4)
            # Not log.exception: a traceback's lines can quote the values a page was handling.
            log.error("web.defect", error=type(e).__name__, ref=ref, user=user)  # noqa: TRY400
            message = f"The console could not answer (reference {ref} in its log)."
            return self.render("error.html", page, status=500, message=message), user

    def credential(self, user: str) -> bytes | None:
        """A digest of ``user``'s entry in the users file (None: no such user, or the file is
        unreadable, which signs everyone out: fail closed). A session remembers it at sign-in."""
        try:
            entry = self.auth.users().get(user)
        except IntelbusError:
            return None
        if entry is None:
            return None
        held = b"certificate only" if entry.password_hash is None else entry.password_hash
        return hashlib.blake2b(held, digest_size=32).digest()

    def _route(self, request: Request) -> tuple[Route | None, Mapping[str, str], bool]:
        allowed = False
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            if route.method == request.method:
                return route, params, True
            allowed = True
        return None, {}, allowed

    def _csrf_refusal(self, page: Page) -> str | None:
        """Why a POST is refused as possibly forged (None: it is not)."""
        session = page.session
        if session is None or not session.check_csrf(page.request.field("csrf")):
            return "token"
        return origin_refusal(page.request)

    # --- the store (a force's console) ---------------------------------------------------------

    @contextmanager
    def store(self) -> Iterator[Store]:
        """The force's store, opened for one request (the consumer may write it meanwhile)."""
        location = self.settings.store_location
        if location is None:
            raise PageError(404, "this console has no store")
        store = open_store(location)
        try:
            # A config pointing at another agency's store (a copied file, a wrong path): its
            # records are not this console's to show.
            owner = store.meta(OWNER_META_KEY)
            if owner is not None and owner != self.settings.agency:
                log.warning("web.foreign_store", owner=owner, agency=self.settings.agency)
                raise PageError(
                    403, f"this store belongs to {owner}, not {self.settings.agency}: nothing shown"
                )
            yield store
        finally:
            store.close()

    # --- sessions -------------------------------------------------------------------------------

    def session_cookie(self, token: str) -> tuple[str, str]:
        secure = "; Secure" if self.tls else ""
        return ("Set-Cookie", f"{self.cookie}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")

    def clear_cookie(self, name: str) -> tuple[str, str]:
        secure = "; Secure" if self.tls else ""
        return ("Set-Cookie", f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")

"""Signed-in sessions, held in the console's memory only.

A session is named by 32 random bytes (the cookie); the console keeps a BLAKE2b digest of them,
keyed with a key drawn at start, so neither a memory dump of the table nor a timing difference in
the lookup gives a usable cookie. A session ends after ``idle`` without a request, after ``lifetime``
whatever happens, at sign-out, and when the console stops (sessions are never written to disk:
a restart signs everyone out, which is what an operator restarting at 3 a.m. expects).

Each session carries its own CSRF token, compared in constant time on every form it posts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

#: Sessions held at once; the oldest is dropped beyond it (sign-ins are Argon2id-throttled).
MAX_SESSIONS: Final = 2000
#: Sessions one user holds at once (a few browsers, a phone); beyond it their own oldest ends.
#: Without it one user (or a thief with a leaked password: the Authenticator caches a verified
#: password, so repeated sign-ins are cheap) could sign in MAX_SESSIONS times and push every
#: other person's session out of the table.
MAX_PER_USER: Final = 16


@dataclass(slots=True)
class Session:
    """One signed-in person. ``repr`` shows neither token."""

    user: str
    method: str  # "password" or "certificate"
    created: float
    seen: float
    csrf: str = field(repr=False)
    #: A digest of the users file's entry the person signed in against (its password hash, or
    #: "certificate only"): when the operator changes that entry (a new password after a leak),
    #: the sessions made with the old one end instead of living on for the rest of the shift.
    credential: bytes = field(default=b"", repr=False)
    #: One-time messages for the next page (after a redirect).
    notices: list[str] = field(default_factory=list)

    def check_csrf(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    """The table of sessions; thread-safe."""

    def __init__(
        self, *, idle_s: float, lifetime_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._idle = idle_s
        self._lifetime = lifetime_s
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._sessions: dict[bytes, Session] = {}

    def _name(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._key, digest_size=32).digest()

    def create(self, user: str, method: str, credential: bytes = b"") -> tuple[str, Session]:
        """A new session for ``user`` (signed in against ``credential``, see
        :attr:`Session.credential`): (the cookie's value, the session)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(user, method, now, now, secrets.token_urlsafe(32), credential=credential)
        with self._lock:
            self._expire(now)
            own = sorted(
                (k for k, v in self._sessions.items() if v.user == user),
                key=lambda k: self._sessions[k].seen,
            )
            for k in own[: max(0, len(own) - MAX_PER_USER + 1)]:
                del self._sessions[k]
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                del self._sessions[oldest]
            self._sessions[self._name(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session named by ``token`` (its idle clock restarted), or None."""
        if not token or len(token) > 128:
            return None
        now = self._clock()
        name = self._name(token)
        with self._lock:
            session = self._sessions.get(name)
            if session is None:
                return None
            if self._ended(session, now):
                del self._sessions[name]
                return None
            session.seen = now
            return session

    def drop(self, token: str | None) -> None:
        """End the session named by ``token`` (sign-out); unknown tokens are ignored."""
        if token:
            with self._lock:
                self._sessions.pop(self._name(token), None)

    def drop_user(self, user: str) -> int:
        """End every session of ``user`` (removed from the users file); how many ended."""
        with self._lock:
            names = [k for k, s in self._sessions.items() if s.user == user]
            for k in names:
                del self._sessions[k]
        return len(names)

    def users(self) -> set[str]:
        with self._lock:
            return {s.user for s in self._sessions.values()}

    def _ended(self, session: Session, now: float) -> bool:
        return now - session.seen > self._idle or now - session.created > self._lifetime

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if self._ended(s, now)]:
            del self._sessions[k]

"""Who may read a force's TAXII server: the users file, and telling a client who it is.

The users file (JSON, mode 0600, written by ``intelbus taxii add-user``) names every user::

    {"users": {"opencti": {"password": "$argon2id$v=19$m=262144,t=3,p=1$...",
                           "justification": "standing: OpenCTI analysis of force sightings"},
               "cst": {"password": null, "justification": null}}}

A client is either a user with a password (HTTP Basic, checked against the Argon2id hash) or a
client certificate from the bus CA whose CN is a certificate-only user (mutual TLS; the TLS layer
has already checked the chain). A user without a password can only come in with a certificate; a
user with one only with it (the bus CA's client certificates are issued for Kafka and live on an
agency's hosts: one must not stand in for a password). A
``justification`` is the user's standing reason for reading restricted records (TLP:AMBER+STRICT,
TLP:RED, handling code C); without one those records are left out of everything the user sees.

Argon2id at the moderate cost takes ~0.7 s and 256 MiB: a verified password is remembered for a
few minutes as a keyed BLAKE2b digest (key drawn at start, never written), so a client paging
through a collection does not pay it per request, and at most two verifications run at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from intelbus import _nacl
from intelbus.errors import ConfigError
from intelbus.files import atomic_write, read_private
from intelbus.log import get_logger
from intelbus.store.access import valid_justification, valid_user

log = get_logger("intelbus.interop.taxii_auth")

#: How long a verified password is remembered (seconds).
CACHE_TTL: Final = 300.0
_MAX_VERIFYING: Final = 2
_USERS_WHAT: Final = "TAXII users file"
#: Checked against when the user is unknown or has no password, so that the answer takes as long
#: as for a known user (no telling user names apart by timing). A hash of 32 random bytes that
#: were thrown away: no password matches it.
_DECOY: Final = b"$argon2id$v=19$m=262144,t=3,p=1$VSSfA/B0Vdpcllzb169Y0g$LMm9FUAo7sxAbgNE+ZEtwn+bJYk9Ig4D1gizWqUmSdE"


@dataclass(frozen=True, slots=True)
class TaxiiUser:
    """One user of the users file. ``repr`` never shows the hash."""

    name: str
    password_hash: bytes | None
    justification: str | None

    def __repr__(self) -> str:
        return f"TaxiiUser({self.name!r}, password={self.password_hash is not None})"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: the user, how it proved it, and its standing justification."""

    user: str
    method: str  # "basic" or "certificate"
    justification: str | None


class AuthFailed(Exception):
    """Authentication failed: ``status`` 401 (who are you?) or 403 (known, not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _user(name: str, entry: object) -> TaxiiUser:
    if not isinstance(entry, dict) or set(entry) - {"password", "justification"}:
        raise ValueError(f"user {name!r}: an entry has only password and justification")
    valid_user(name)
    pw, why = entry.get("password"), entry.get("justification")
    if pw is not None and not (isinstance(pw, str) and pw.startswith("$argon2id$")):
        raise ValueError(f"user {name!r}: password is an $argon2id$ hash or null")
    if why is not None:
        if not isinstance(why, str):
            raise ValueError(f"user {name!r}: justification is text or null")
        valid_justification(why)
    return TaxiiUser(name, None if pw is None else pw.encode(), why)


def load_users(path: Path) -> dict[str, TaxiiUser]:
    """The users of ``path`` (which must be private, 0600, and this user's own).

    Raises:
        InsecureFileError: open to others, or another user's (a local user's file at the path).
        ConfigError: unreadable or not a users file.
    """
    data = read_private(path, what=_USERS_WHAT, own=True)
    try:
        raw = json.loads(data.decode())
        users = raw["users"]
        if not isinstance(users, dict) or set(raw) != {"users"}:
            raise ValueError("the file holds one object, users")
        return {name: _user(name, entry) for name, entry in users.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ConfigError(f"invalid {_USERS_WHAT} {path}: {e}") from None


def _dump(users: dict[str, TaxiiUser]) -> bytes:
    body = {
        "users": {
            u.name: {
                "password": None if u.password_hash is None else u.password_hash.decode(),
                "justification": u.justification,
            }
            for u in sorted(users.values(), key=lambda u: u.name)
        }
    }
    return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()


def add_user(
    path: Path,
    name: str,
    password: str | None,
    *,
    justification: str | None = None,
    opslimit: int = _nacl.PWHASH_OPSLIMIT,
    memlimit: int = _nacl.PWHASH_MEMLIMIT,
) -> bool:
    """Add or replace ``name`` in the users file (created 0600); True if it was new.

    ``password`` None makes a certificate-only user. The costs are Argon2id's; only tests lower
    them.

    Raises:
        ConfigError: the file exists and is not a users file, or ``name``/``justification`` is
            not printable text.
        OSError: it cannot be written.
    """
    try:
        valid_user(name)
        if justification is not None:
            valid_justification(justification)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    users = load_users(path) if path.exists() else {}
    hashed = (
        None
        if password is None
        else _nacl.password_hash(password.encode(), opslimit=opslimit, memlimit=memlimit)
    )
    new = name not in users
    users[name] = TaxiiUser(name, hashed, justification)
    atomic_write(path, _dump(users))
    return new


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic ...`` header, or None if it is not one."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


class Authenticator:
    """Tells who a request is, from the users file (reloaded when it changes)."""

    def __init__(self, users_file: Path | None) -> None:
        self._path = users_file
        self._lock = threading.Lock()
        self._verifying = threading.BoundedSemaphore(_MAX_VERIFYING)
        self._stamp: tuple[int, ...] | None = None
        self._users: dict[str, TaxiiUser] = {}
        self._key = _nacl.random_bytes(32)
        self._verified: dict[str, tuple[bytes, float]] = {}
        if users_file is not None:
            self._reload()

    def _reload(self) -> None:
        """Read the users file again if it changed (a user added or removed takes effect)."""
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except OSError as e:
            raise ConfigError(f"cannot read {_USERS_WHAT} {self._path}: {e.strerror}") from None
        # The inode and change time too: an edit that keeps the size and mtime (a backup put
        # back with `cp -p`, two writes within one timestamp tick) is still a change.
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        with self._lock:
            if stamp == self._stamp:
                return
            self._users = load_users(self._path)
            self._verified.clear()  # a changed password must be checked again
            self._stamp = stamp
        log.info("taxii.users_loaded", users=len(self._users))

    def users(self) -> dict[str, TaxiiUser]:
        self._reload()
        return dict(self._users)

    def _digest(self, user: str, password: str) -> bytes:
        data = user.encode() + b"\x00" + password.encode()
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def _password_ok(self, user: TaxiiUser | None, password: str) -> bool:
        if user is None or user.password_hash is None:
            with self._verifying:
                _nacl.password_verify(_DECOY, password.encode())
            return False
        digest = self._digest(user.name, password)
        now = time.monotonic()
        with self._lock:
            held = self._verified.get(user.name)
        if held is not None and held[1] > now and hmac.compare_digest(held[0], digest):
            return True
        with self._verifying:
            ok = _nacl.password_verify(user.password_hash, password.encode())
        if ok:
            with self._lock:
                self._verified[user.name] = (digest, now + CACHE_TTL)
        return ok

    def authenticate(self, authorization: str | None, certificate_user: str | None) -> Principal:
        """The client's principal: HTTP Basic credentials if sent, else the client certificate.

        Raises:
            AuthFailed: 401 (no or wrong credentials), 403 (a certificate whose CN is no user).
            ConfigError: the users file cannot be read.
        """
        if authorization is not None:
            creds = parse_basic(authorization)
            if creds is None:
                raise AuthFailed(401, "credentials are HTTP Basic")
            return self.password(*creds)
        if certificate_user is not None:
            return self.certificate(certificate_user)
        raise AuthFailed(401, "authenticate with a client certificate or HTTP Basic")

    def password(self, name: str, password: str) -> Principal:
        """The principal of a user name and password (Argon2id; as slow for unknown names).

        Raises:
            AuthFailed: 401, wrong user name or password.
            ConfigError: the users file cannot be read.
        """
        user = self.users().get(name)
        if not self._password_ok(user, password) or user is None:
            raise AuthFailed(401, "wrong user name or password")
        return Principal(user.name, "basic", user.justification)

    def certificate(self, name: str) -> Principal:
        """The principal of a verified client certificate's CN.

        Raises:
            AuthFailed: 403, the CN is no certificate-only user.
            ConfigError: the users file cannot be read.
        """
        user = self.users().get(name)
        # Only a certificate-only user (password null) comes in with a certificate: the bus
        # CA's client certificates are issued for Kafka and sit on every host of an agency,
        # so a certificate whose CN happens to be a password user's name (or a leaked one)
        # must not stand in for that user's password.
        if user is None or user.password_hash is not None:
            raise AuthFailed(403, "this certificate's user may not read this server")
        return Principal(user.name, "certificate", user.justification)

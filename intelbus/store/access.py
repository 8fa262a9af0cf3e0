"""The access log (Data Protection Act 2018, section 62): who consulted or disclosed which records.

This module owns the ``access_log`` table of a store. Every command that reads records out of a
store (``intelbus store list|show|search|export|quarantine|subject``) appends one entry *before*
it shows or writes anything, in the store's own database and in a transaction of its own, so a
reader that cannot write its entry shows nothing (fail closed).

An entry says who (a named user), when (UTC), what was done (``list``, ``show``, ``search``,
``export``, ``subject``, ``quarantine``, or a refusal such as ``show_refused``), which records
(producer id and record id pairs), the query in a form that holds no record contents, the
justification, and for a disclosure, to whom. It never holds record contents: search text is
itself personal data (a victim's name, a registration), so only its BLAKE2b digest and length are
kept (:func:`text_digest`).

Entries form a hash chain: entry ``n`` holds ``prev``, the hash of entry ``n - 1`` (32 zero bytes
for the first), and ``hash`` = BLAKE2b-256 over :data:`DOMAIN` and the canonical JSON of every
field but ``hash``. :meth:`AccessLog.verify` recomputes it, so an edited row, a deleted row, two
rows swapped, or an entry cut from the tail (given the head written down earlier, see
:meth:`AccessLog.head`) is found. What it cannot do: someone who can write the database can
rewrite the whole chain consistently; only a head kept somewhere else (``COUNT:HASH``) shows that.

Concurrency: an append reads the last entry and writes the next inside one write transaction
that holds the log's lock (SQLite: ``BEGIN IMMEDIATE``, the database's one writer at a time;
PostgreSQL: a transaction-scoped advisory lock), so two processes appending at once still make
one chain; ``seq`` is the primary key, so a broken lock could not fork it silently either.

The table is part of the store's schema (version 4: the stores' migrations run
:data:`ACCESS_LOG_SQLITE` / :data:`ACCESS_LOG_POSTGRES`), so a reader needs no right to create
tables, only to read records and append to ``access_log``. Reading records does not need the store's writer lock (SQLite): the
access log is the one table a reader writes, and SQLite's own locking orders it against the
consumer's batches.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from intelbus.errors import StoreError
from intelbus.log import get_logger
from intelbus.policy.facts import Tlp
from intelbus.records import HandlingCode
from intelbus.store.base import Cursor, SqlStore, StoredRecordView

log = get_logger("intelbus.store.access")

#: Prefixed to the canonical JSON of an entry before it is hashed: a hash of this log can never
#: be mistaken for (or made to collide with) a digest computed elsewhere on the same bytes.
DOMAIN: Final = b"intelbus.access-log.v1\x00"
#: Personalisation of the search-text digest (BLAKE2b's ``person``): a separate domain again.
_TEXT_PERSON: Final = b"ib.access.text1"
HASH_SIZE: Final = 32
GENESIS: Final = bytes(HASH_SIZE)

MAX_USER: Final = 128
MAX_JUSTIFICATION: Final = 2_000
MAX_RECIPIENT: Final = 200
_ACTION: Final = re.compile(r"[a-z][a-z_]{0,31}")
#: Serialises appenders on PostgreSQL (hashed into an advisory lock key by the store's ``_lock``).
_LOCK_NAME: Final = "access_log"

ACCESS_LOG_SQLITE: Final = """
CREATE TABLE IF NOT EXISTS access_log (
    seq           INTEGER PRIMARY KEY CHECK (seq >= 1),
    at            TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    action        TEXT NOT NULL,
    records       TEXT NOT NULL,
    query         TEXT NOT NULL,
    justification TEXT,
    recipient     TEXT,
    prev          BLOB NOT NULL CHECK (length(prev) = 32),
    hash          BLOB NOT NULL CHECK (length(hash) = 32)
)
"""

# The JSON columns are text on both backends: the chain hashes the canonical JSON, and jsonb
# would not keep it byte for byte.
ACCESS_LOG_POSTGRES: Final = """
CREATE TABLE IF NOT EXISTS access_log (
    seq           bigint PRIMARY KEY CHECK (seq >= 1),
    at            timestamptz NOT NULL,
    user_name     text NOT NULL,
    action        text COLLATE "C" NOT NULL,
    records       text NOT NULL,
    query         text NOT NULL,
    justification text,
    recipient     text,
    prev          bytea NOT NULL CHECK (octet_length(prev) = 32),
    hash          bytea NOT NULL CHECK (octet_length(hash) = 32)
)
"""

_COLUMNS = "seq, at, user_name, action, records, query, justification, recipient, prev, hash"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: A record as the log names it: (producer id, record id).
RecordRef = tuple[str, str]


class AccessLogError(StoreError):
    """The access log could not be written or read; nothing was shown."""


def _printable(value: str, what: str, limit: int) -> str:
    """``value`` if it is 1..limit printable characters (no control or separator characters,
    which could forge lines in a terminal or a review), not blank; else ValueError."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} must be at most {limit} characters")
    if not value.isprintable():
        raise ValueError(f"{what} must not contain control characters or line breaks")
    return value


def valid_user(value: str) -> str:
    """A named user: 1-128 printable characters. Raises ValueError otherwise."""
    return _printable(value, "the user name", MAX_USER)


def valid_justification(value: str) -> str:
    """A justification: 1-2000 printable characters. Raises ValueError otherwise."""
    return _printable(value, "the justification", MAX_JUSTIFICATION)


def valid_recipient(value: str) -> str:
    """To whom records are disclosed: 1-200 printable characters. Raises ValueError otherwise."""
    return _printable(value, "the recipient", MAX_RECIPIENT)


def text_digest(text: str) -> dict[str, object]:
    """What the log keeps of a search text: its BLAKE2b-256 digest and its length, never the text.

    A search term is personal data (a name, an address, a registration): the log must not become
    a second copy of it. The digest is of the text with case folded and runs of whitespace made
    one space, so a data protection officer can still check whether a given term was searched
    for (by computing the same digest); the length helps tell searches apart at a glance.
    """
    normal = " ".join(text.casefold().split())
    digest = hashlib.blake2b(normal.encode(), digest_size=HASH_SIZE, person=_TEXT_PERSON)
    return {"text_blake2b": digest.hexdigest(), "text_length": len(text)}


@dataclass(frozen=True, slots=True)
class NewAccess:
    """An entry to append: everything but its place in the chain.

    Raises:
        ValueError: a field is not valid (user, action, justification, recipient, records).
    """

    user: str
    action: str
    records: tuple[RecordRef, ...] = ()
    query: Mapping[str, Any] = field(default_factory=dict)
    justification: str | None = None
    recipient: str | None = None

    def __post_init__(self) -> None:
        valid_user(self.user)
        if not _ACTION.fullmatch(self.action):
            raise ValueError("an access action is a snake_case word")
        if self.justification is not None:
            valid_justification(self.justification)
        if self.recipient is not None:
            valid_recipient(self.recipient)
        for ref in self.records:
            pair: object = ref  # checked at run time: callers may pass any sequence
            if not (
                isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            ):
                raise ValueError("a record is named by (producer id, record id)")
        # The query must be JSON (it is hashed as such); checked here, not at commit time.
        _canonical(dict(self.query))


def new_entry(  # noqa: PLR0917 - an entry's fields, in NewAccess's order
    user: str,
    action: str,
    records: Iterable[RecordRef] = (),
    query: Mapping[str, Any] | None = None,
    justification: str | None = None,
    recipient: str | None = None,
) -> NewAccess:
    """A :class:`NewAccess`, with null filters dropped from the query."""
    clean = {k: v for k, v in (query or {}).items() if v is not None}
    return NewAccess(user, action, tuple(records), clean, justification, recipient)


def refs(views: Iterable[StoredRecordView]) -> tuple[RecordRef, ...]:
    """The (producer id, record id) pairs of ``views``."""
    return tuple((v.producer_id, v.record_id) for v in views)


# --- Which records need a justification (the CLI's gate and the web console's share it). ---------

RESTRICTED_TLP: Final = frozenset({Tlp.AMBER_STRICT.value, Tlp.RED.value})
#: The one handling code that is not restricted: lawful sharing permitted, no conditions.
UNRESTRICTED_HANDLING: Final = HandlingCode.P.value


def _grading_reason(payload: Mapping[str, Any] | None) -> str | None:
    if payload is None:
        return None
    grading = payload.get("grading")
    if not isinstance(grading, Mapping):
        return "its grading cannot be read"
    tlp = grading.get("tlp")
    if tlp in RESTRICTED_TLP:
        return f"TLP:{str(tlp).replace('_', '+')}"
    code = grading.get("handling_code")
    if code != UNRESTRICTED_HANDLING:
        return "handling code C" if code == HandlingCode.C.value else "its handling code is unknown"
    return None


def restriction(view: StoredRecordView) -> str | None:
    """Why showing this record needs a justification, or None.

    TLP:AMBER+STRICT or TLP:RED, or a handling code other than P (including one the store cannot
    read: an unknown grading fails closed), in any version that would be shown (the current
    payload and every earlier one).
    """
    if view.tlp in RESTRICTED_TLP:
        return f"TLP:{view.tlp.replace('_', '+')}"
    for payload in (view.payload, *(h.payload for h in view.history)):
        reason = _grading_reason(payload)
        if reason is not None:
            return reason
    return None


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One entry of the log as stored."""

    seq: int
    at: datetime
    user: str
    action: str
    records: tuple[RecordRef, ...]
    query: Mapping[str, Any]
    justification: str | None
    recipient: str | None
    prev: bytes
    hash: bytes

    def body(self) -> dict[str, Any]:
        """Every field but ``hash``: what the hash covers."""
        return _body(
            seq=self.seq,
            at=self.at,
            user=self.user,
            action=self.action,
            records=self.records,
            query=self.query,
            justification=self.justification,
            recipient=self.recipient,
            prev=self.prev,
        )

    def computed_hash(self, seq: int | None = None) -> bytes:
        """The hash of this entry's content (as if at ``seq``, to tell a moved row)."""
        body = self.body()
        if seq is not None:
            body["seq"] = seq
        return entry_hash(body)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for ``access-log --json``."""
        return {**self.body(), "hash": self.hash.hex()}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :meth:`AccessLog.verify` found.

    ``problem`` is a stable reason code: ``edited`` (a row's content no longer matches its hash),
    ``missing`` (an entry before ``broken_seq`` was deleted), ``reordered`` (a row moved, or its
    seq was changed), ``truncated`` (fewer entries than the head written down), ``rewritten``
    (the entry at the head written down is not the same entry).
    """

    count: int
    head: bytes
    broken_seq: int | None = None
    problem: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def head_text(self) -> str:
        """``COUNT:HASH``, the form ``access-log --head`` prints and ``--expect`` takes."""
        return format_head(self.count, self.head)


def format_head(count: int, head: bytes) -> str:
    """``COUNT:HASH`` (hash in hex)."""
    return f"{count}:{head.hex()}"


def parse_head(text: str) -> tuple[int, bytes]:
    """A head written as ``COUNT:HASH``. Raises ValueError if it is not one."""
    count, sep, digest = text.strip().partition(":")
    if not sep or not count.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest.lower()):
        raise ValueError("a head is COUNT:HASH, as `store access-log --head` prints it")
    return int(count), bytes.fromhex(digest)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_TIME_FORMAT)


def _body(
    *,
    seq: int,
    at: datetime,
    user: str,
    action: str,
    records: Iterable[RecordRef],
    query: Mapping[str, Any],
    justification: str | None,
    recipient: str | None,
    prev: bytes,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": _iso(at),
        "user": user,
        "action": action,
        "records": [list(r) for r in records],
        "query": dict(query),
        "justification": justification,
        "recipient": recipient,
        "prev": prev.hex(),
    }


def _canonical(value: object) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"an access log value is not JSON: {type(e).__name__}") from e


def entry_hash(body: Mapping[str, Any]) -> bytes:
    """BLAKE2b-256 over :data:`DOMAIN` and the canonical JSON (sorted keys, no spaces, UTF-8)
    of an entry's fields but ``hash``."""
    data = DOMAIN + _canonical(dict(body)).encode()
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


class AccessLog:
    """The access log of one open store (module docstring). Uses the store's own connection."""

    def __init__(self, store: object) -> None:
        if not isinstance(store, SqlStore):
            raise AccessLogError("this store keeps no access log")
        self._store = store

    def append(self, new: NewAccess) -> AccessEntry:
        """Append ``new`` as the next entry, in a transaction of its own; durable when it returns.

        Raises:
            AccessLogError: it could not be written (the caller must then show nothing).
        """
        self._store._check_open()
        out: list[AccessEntry] = []

        def work(cur: Cursor) -> None:
            out.clear()  # a retried transaction reads the head again
            self._store._lock(cur, [_LOCK_NAME])
            row = self._store._exec(
                cur, "SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, bytes(row[1]))
            # The stored time has microseconds at most (both backends): hash what reads back.
            at = datetime.now(UTC)
            body = _body(
                seq=seq,
                at=at,
                user=new.user,
                action=new.action,
                records=new.records,
                query=new.query,
                justification=new.justification,
                recipient=new.recipient,
                prev=prev,
            )
            digest = entry_hash(body)
            self._store._exec(
                cur,
                f"INSERT INTO access_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    self._store._enc_time(at),
                    new.user,
                    new.action,
                    _canonical(body["records"]),
                    _canonical(body["query"]),
                    new.justification,
                    new.recipient,
                    prev,
                    digest,
                ),
            )
            out.append(
                AccessEntry(
                    seq,
                    at,
                    new.user,
                    new.action,
                    tuple(new.records),
                    dict(new.query),
                    new.justification,
                    new.recipient,
                    prev,
                    digest,
                )
            )

        try:
            self._store._transaction(work)
        except StoreError as e:
            raise AccessLogError(f"cannot write the access log: {e}") from e
        entry = out[0]
        # Ids and counts only: never the query, the justification or the recipient.
        log.debug(
            "store.access_logged", seq=entry.seq, action=entry.action, records=len(entry.records)
        )
        return entry

    def _rows(self) -> list[tuple[Any, ...]]:
        try:
            return self._store._query(f"SELECT {_COLUMNS} FROM access_log ORDER BY seq")
        except StoreError as e:
            raise AccessLogError(f"cannot read the access log: {e}") from e

    def _entry(self, row: Sequence[Any]) -> AccessEntry:
        """A row as an entry. Raises ValueError if it does not read back (edited by hand)."""
        records = json.loads(str(row[4]))
        query = json.loads(str(row[5]))
        if not isinstance(records, list) or not isinstance(query, dict):
            raise TypeError("records or query is not of its shape")
        return AccessEntry(
            seq=int(row[0]),
            at=self._store._dec_time(row[1]),
            user=str(row[2]),
            action=str(row[3]),
            records=tuple((str(p), str(r)) for p, r in records),
            query=query,
            justification=None if row[6] is None else str(row[6]),
            recipient=None if row[7] is None else str(row[7]),
            prev=bytes(row[8]),
            hash=bytes(row[9]),
        )

    def entries(
        self,
        *,
        user: str | None = None,
        record_id: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
    ) -> list[AccessEntry]:
        """Entries in order, filtered (``record_id`` matches either half of a pair's id).

        Raises:
            AccessLogError: the log cannot be read, or a row does not read back (``--verify``
                says which).
        """
        out = []
        for row in self._rows():
            try:
                e = self._entry(row)
            except (ValueError, TypeError, StoreError) as exc:
                raise AccessLogError(
                    f"access log entry {row[0]} does not read back: run `store access-log --verify`"
                ) from exc
            if user is not None and e.user != user:
                continue
            if record_id is not None and all(rid != record_id for _p, rid in e.records):
                continue
            if since is not None and e.at < since:
                continue
            if action is not None and e.action != action:
                continue
            out.append(e)
        return out

    def head(self) -> tuple[int, bytes]:
        """(number of entries, hash of the last one): write it down elsewhere, and check later
        with ``verify(expect=...)`` that nothing was cut from the tail. The empty log's head is
        (0, 32 zero bytes)."""
        try:
            rows = self._store._query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
        except StoreError as e:
            raise AccessLogError(f"cannot read the access log: {e}") from e
        return (0, GENESIS) if not rows else (int(rows[0][0]), bytes(rows[0][1]))

    def verify(self, expect: tuple[int, bytes] | None = None) -> VerifyResult:
        """Walk the whole chain and report the first break (see :class:`VerifyResult`).

        ``expect`` is a head written down earlier: the log must still hold that entry, unchanged,
        at that place (nothing was cut from the tail, nor the chain rewritten since).
        """
        rows = self._rows()
        entries: list[AccessEntry | None] = []
        for row in rows:
            try:
                entries.append(self._entry(row))
            except (ValueError, TypeError, StoreError):
                entries.append(None)
        by_hash = {bytes(r[9]): int(r[0]) for r in rows}
        count, prev = 0, GENESIS
        for row, e in zip(rows, entries, strict=True):
            found = _row_break(
                int(row[0]), e, want=count + 1, prev=prev, by_hash=by_hash, n=len(rows)
            )
            if found is not None:
                return _broken(count, prev, found[0], found[1], found[2])
            if e is None:  # not reached: _row_break reports a row that does not read back
                continue
            count, prev = e.seq, e.hash
        if expect is not None:
            found = _tail_break(expect, count, entries)
            if found is not None:
                return _broken(count, prev, found[0], found[1], found[2])
        return VerifyResult(count, prev)


def _row_break(  # noqa: PLR0911 - one return per kind of break
    seq: int,
    e: AccessEntry | None,
    *,
    want: int,
    prev: bytes,
    by_hash: Mapping[bytes, int],
    n: int,
) -> tuple[int, str, str] | None:
    """(seq, problem, detail) if the row at place ``want`` does not continue the chain."""
    if seq != want:
        return want, "missing", f"entries {want}..{seq - 1} are gone"
    if e is None:
        return seq, "edited", "the row does not read back"
    if e.computed_hash() != e.hash:
        moved = next((s for s in range(1, n + 1) if e.computed_hash(s) == e.hash), None)
        if moved is None:
            return seq, "edited", "its content does not match its hash"
        # Written at another place: moved here (the entry it follows is still in the log), or
        # renumbered after the one before it was deleted (that one is gone).
        if e.prev in by_hash:
            return seq, "reordered", f"the entry written as {moved} is at {seq}"
        return seq, "missing", f"entries before it were deleted and {moved} renumbered to {seq}"
    if e.prev != prev:
        if e.prev in by_hash:
            return seq, "reordered", f"it follows entry {by_hash[e.prev]}, not entry {seq - 1}"
        return seq, "missing", "the entry it follows is gone"
    return None


def _tail_break(
    expect: tuple[int, bytes], count: int, entries: Sequence[AccessEntry | None]
) -> tuple[int, str, str] | None:
    """(seq, problem, detail) if the head written down is no longer in the (intact) chain."""
    n, digest = expect
    if n > count:
        cut = n - count
        return (
            count + 1,
            "truncated",
            f"{cut} entr{'y' if cut == 1 else 'ies'} cut from the tail (expected {n}, found {count})",
        )
    at = entries[n - 1] if n >= 1 else None
    held = GENESIS if n == 0 else (at.hash if at is not None else b"")
    if held != digest:
        return n, "rewritten", "the entry at the expected head is not the one written down"
    return None


def _broken(count: int, head: bytes, seq: int, problem: str, detail: str) -> VerifyResult:
    log.warning("store.access_log_broken", seq=seq, problem=problem)
    return VerifyResult(count, head, seq, problem, detail)

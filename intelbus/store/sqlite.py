"""The default, embedded store: one SQLite file per agency.

This module owns the SQLite connection settings and schema. Every connection it opens (see
:func:`connect`) runs ``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout`` and
``foreign_keys=ON`` (SECURITY.md, "Durability settings"): with WAL and FULL, a transaction is on
disk (fsync'ed) when ``COMMIT`` returns. Each batch is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, so
writers queue on the file lock at the start instead of failing half-way.

Encodings: timestamps are ISO-8601 UTC text with microseconds and a ``Z``
(``2024-05-01T09:30:00.000000Z``), fixed width, so text order is time order; payloads and lists
are JSON text; digests and raw records are BLOBs; booleans are 0/1. The schema version lives in
``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intelbus.errors import InsecureFileError, StoreError, StoreOwnerMismatch
from intelbus.files import PRIVATE_MODE, ensure_private_file
from intelbus.log import get_logger
from intelbus.store.access import ACCESS_LOG_SQLITE
from intelbus.store.base import SCHEMA_VERSION, SqlStore
from intelbus.store.lock import WriterLock
from intelbus.store.migrate import LEGACY_TABLES, copy_legacy

log = get_logger("intelbus.store.sqlite")

BUSY_TIMEOUT_MS = 5000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# The tables of schema version 3, in three parts so an older store gains exactly what it lacks.
_CORE = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE records (
    producer_id     TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('sighting', 'incident')),
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    digest          BLOB NOT NULL CHECK (length(digest) = 32),
    key_id          BLOB,
    created_at      TEXT NOT NULL,
    appended_at     TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('live', 'retracted', 'withheld', 'quarantined', 'withdrawn', 'erased',
                          'pruned')),
    version         INTEGER NOT NULL,
    content_version INTEGER NOT NULL,
    policy_hash     TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    action          TEXT NOT NULL
        CHECK (action IN ('store', 'redact', 'withhold', 'quarantine')),
    redacted_fields TEXT NOT NULL,
    tlp             TEXT,
    classification  TEXT,
    force_area      TEXT,
    occurred_at     TEXT,
    event_at        TEXT NOT NULL,
    payload         TEXT,
    stored_at       TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    -- record_id first: the judge's snapshot looks records up by id, whoever produced them.
    PRIMARY KEY (record_id, producer_id),
    -- A tombstone (erased, pruned) holds no payload whatever its last decision was.
    CHECK (status IN ('erased', 'pruned') OR (payload IS NULL) = (action IN ('withhold', 'quarantine'))),
    CHECK (status NOT IN ('erased', 'pruned') OR payload IS NULL)
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);

CREATE TABLE record_versions (
    producer_id      TEXT NOT NULL,
    record_id        TEXT NOT NULL,
    version          INTEGER NOT NULL,
    change           TEXT NOT NULL
        CHECK (change IN ('original', 'correction', 'retraction', 'erasure')),
    source_record_id TEXT NOT NULL,
    key_id           BLOB,
    sequence         INTEGER,
    digest           BLOB,
    topic            TEXT,
    kafka_partition  INTEGER,
    kafka_offset     INTEGER,
    created_at       TEXT,
    appended_at      TEXT,
    amended_at       TEXT,
    reason           TEXT NOT NULL,
    outcome          TEXT NOT NULL
        CHECK (outcome IN ('store', 'redact', 'withhold', 'quarantine', 'retract', 'erase')),
    rule_id          TEXT NOT NULL,
    policy_hash      TEXT NOT NULL,
    redacted_fields  TEXT NOT NULL,
    tlp              TEXT,
    classification   TEXT,
    force_area       TEXT,
    occurred_at      TEXT,
    payload          TEXT,
    withdrawn        INTEGER NOT NULL DEFAULT 0,
    recorded_at      TEXT NOT NULL,
    legal_basis      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (producer_id, record_id, version),
    FOREIGN KEY (producer_id, record_id) REFERENCES records (producer_id, record_id)
);
CREATE INDEX record_versions_key ON record_versions (key_id, appended_at);

CREATE TABLE amendments (
    arrival             INTEGER PRIMARY KEY AUTOINCREMENT,
    producer_id         TEXT NOT NULL,
    amendment_record_id TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('correction', 'retraction', 'erasure')),
    target_record_id    TEXT,
    status              TEXT NOT NULL CHECK (status IN
        ('pending', 'applied', 'unreadable', 'refused', 'withdrawn')),
    key_id              BLOB,
    sequence            INTEGER,
    digest              BLOB,
    topic               TEXT,
    kafka_partition     INTEGER,
    kafka_offset        INTEGER,
    created_at          TEXT,
    appended_at         TEXT,
    amended_at          TEXT,
    reason              TEXT NOT NULL,
    replacement_kind    TEXT,
    outcome             TEXT NOT NULL,
    rule_id             TEXT NOT NULL,
    policy_hash         TEXT NOT NULL,
    redacted_fields     TEXT NOT NULL,
    tlp                 TEXT,
    classification      TEXT,
    force_area          TEXT,
    occurred_at         TEXT,
    payload             TEXT,
    received_at         TEXT NOT NULL,
    applied_at          TEXT,
    legal_basis         TEXT NOT NULL DEFAULT '',
    UNIQUE (producer_id, amendment_record_id)
);
CREATE INDEX amendments_by_id ON amendments (amendment_record_id);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);
CREATE INDEX amendments_key ON amendments (key_id, appended_at);

CREATE TABLE quarantine (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    raw_prefix      BLOB NOT NULL,
    raw_size        INTEGER NOT NULL,
    raw_digest      BLOB NOT NULL,
    reason          TEXT NOT NULL,
    message         TEXT NOT NULL,
    record_id       TEXT,
    producer_id     TEXT,
    authentic       INTEGER NOT NULL,
    quarantined_at  TEXT NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE TABLE chain (
    producer_id     TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    epoch           TEXT NOT NULL,
    last_sequence   INTEGER NOT NULL,
    last_digest     BLOB NOT NULL,
    gaps            TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (producer_id, topic, kafka_partition, epoch)
);

CREATE TABLE rejudged (
    key_id     TEXT NOT NULL,
    since      TEXT NOT NULL,
    versions   INTEGER NOT NULL,
    amendments INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    streams    INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (key_id, since)
);
"""

_OFFSETS = """
CREATE TABLE offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
"""

# Version 2 added the feeds table.
_FEEDS = """
CREATE TABLE feeds (
    producer_id       TEXT NOT NULL,
    topic             TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    interval_ms       INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
"""


# Version 4 (issue 16) added tombstones (what stays of a record erased or pruned past retention)
# and the access log (intelbus/store/access.py).
_TOMBSTONES = """
CREATE TABLE tombstones (
    producer_id       TEXT NOT NULL,
    record_id         TEXT NOT NULL,
    reason            TEXT NOT NULL CHECK (reason IN ('erasure', 'retention')),
    rule_id           TEXT NOT NULL,
    legal_basis       TEXT NOT NULL,
    erasure_record_id TEXT,
    note              TEXT NOT NULL,
    effective_at      TEXT NOT NULL,
    tombstoned_at     TEXT NOT NULL,
    PRIMARY KEY (producer_id, record_id),
    FOREIGN KEY (producer_id, record_id) REFERENCES records (producer_id, record_id)
);
CREATE INDEX tombstones_at ON tombstones (tombstoned_at);
"""

#: The tables whose constraints version 4 widened (status erased/pruned, change erasure, kind
#: erasure); SQLite cannot alter a CHECK, so an upgrade from 3 rebuilds them, parents first.
_REBUILT = ("records", "record_versions", "amendments")


def _statements_for(script: str, tables: tuple[str, ...]) -> str:
    """The statements of ``script`` that create ``tables`` or their indexes."""
    wanted = []
    for statement in script.split(";"):
        words = statement.split()
        if ("TABLE" in words and words[words.index("TABLE") + 1] in tables) or (
            "ON" in words and words[words.index("ON") + 1] in tables
        ):
            wanted.append(statement)
    return ";".join(wanted) + ";"


def _private_store_file(path: Path) -> None:
    """Create the store file 0600 (SQLite would use the umask's mode), or check an existing one.

    A store made by an earlier intelbus with the umask's mode (0644) is tightened to 0600, with
    its WAL and shared-memory files, and the change logged: a store holds what the bus exists to
    protect. A symbolic link, a file that is not regular or another user's file is refused.
    """
    if str(path) == ":memory:":
        # Not a file, and the store's durability needs one (WAL mode): refuse before creating one.
        raise StoreError("a SQLite store must be a file (':memory:' cannot be made durable)")
    try:
        ensure_private_file(path, what="store")
    except InsecureFileError as e:
        st = path.lstat()
        if e.mode is None or not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise
        for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if f.exists() and not f.is_symlink():
                f.chmod(PRIVATE_MODE)
        log.warning("store.permissions_tightened", path=str(path), was=f"{e.mode:04o}")
    except OSError as e:
        raise StoreError(f"cannot create or open the store file {path}: {e.strerror}") from e


def _run(cur: sqlite3.Cursor, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            cur.execute(statement)


_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    # Erased and pruned contents must not stay readable in freed pages of the file (issue 16).
    "PRAGMA secure_delete=ON",
)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open a connection with the durability settings. Every SQLite connection of intelbus is made here."""
    try:
        # isolation_level=None: the module issues BEGIN IMMEDIATE / COMMIT itself.
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as e:
        raise StoreError(f"cannot open SQLite store: {type(e).__name__}") from e
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma).fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"SQLite store must be a file in WAL mode, got journal_mode={mode}")
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"cannot configure SQLite store: {type(e).__name__}") from e
    except StoreError:
        conn.close()
        raise
    return conn


def settings(conn: sqlite3.Connection) -> dict[str, object]:
    """The durability settings of a live connection (for tests and ``intelbus store`` diagnostics)."""
    return {
        name: conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys", "secure_delete")
    }


class SqliteStore(SqlStore):
    """An agency's store in one SQLite file (created, with its schema, on first open).

    Opened with an ``owner`` (the agency's consumer, its one writer), it takes the store's writer
    lock (intelbus/store/lock.py) for as long as it is open, and binds the store to the owner or
    refuses another agency's (:meth:`SqlStore._bind_owner`). Without one (``intelbus store``
    commands, which only read), neither.
    """

    _UPSERT_OFFSET = """
INSERT INTO offsets (group_id, topic, kafka_partition, next_offset) VALUES (?, ?, ?, ?)
ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE
SET next_offset = max(offsets.next_offset, excluded.next_offset)
"""

    def __init__(self, path: str | Path, *, owner: str | None = None) -> None:
        self.path = Path(path)
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private_store_file(self.path)
        # The lock before the first write transaction: a second writer never touches the file.
        self._writer = WriterLock.acquire(self.path) if owner is not None else None
        try:
            self._conn = connect(self.path)
        except BaseException:
            self._release_writer()
            raise
        try:
            self._migrate(owner)
        except BaseException:
            self._conn.close()
            self._release_writer()
            raise

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()

    def check_writer(self) -> None:
        """See :meth:`Store.check_writer`."""
        if self._writer is not None:
            self._writer.check()

    def _migrate(self, owner: str | None = None) -> None:
        def work(cur: sqlite3.Cursor) -> None:
            version = int(cur.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {version} is newer than this intelbus ({SCHEMA_VERSION})"
                )
            if version < SCHEMA_VERSION:
                if version == 0:
                    _run(cur, _CORE + _OFFSETS + _FEEDS + _TOMBSTONES + ACCESS_LOG_SQLITE)
                elif version == 3:
                    self._upgrade_v3(cur)
                else:
                    self._upgrade(cur, version)
                    _run(cur, _TOMBSTONES + ACCESS_LOG_SQLITE)
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
                cur.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if owner is not None:
                # The same transaction as the schema: a new store is never without its owner.
                self._bind_owner(cur, owner, created=version == 0)

        self._transaction(work)

    def _upgrade(self, cur: sqlite3.Cursor, version: int) -> None:
        """Schema 1 or 2 to 3 (intelbus/store/migrate.py), inside the opening transaction."""
        # Old indexes would collide with the new tables' index names; the rows stay.
        for index in ("records_event_at", "records_position", "records_force_area",
                      "amendments_pending"):  # fmt: skip
            cur.execute(f"DROP INDEX IF EXISTS {index}")
        for table in LEGACY_TABLES:
            cur.execute(f"ALTER TABLE {table} RENAME TO {table}_v2")
        _run(cur, _CORE + (_FEEDS if version == 1 else ""))
        counts = copy_legacy(self, cur, lambda t: f"{t}_v2")
        # Children first: record_history_v2 refers to records_v2.
        for table in ("record_history", "amendments", "withheld", "quarantine", "chain", "records"):
            cur.execute(f"DROP TABLE {table}_v2")
        log.info("store.migrated", from_version=version, to_version=SCHEMA_VERSION, **counts)

    def _upgrade_v3(self, cur: sqlite3.Cursor) -> None:
        """Schema 3 to 4, inside the opening transaction: the three tables whose checks widened
        are rebuilt under their new definitions with every row, and the tombstones table added.

        Renaming a table keeps its indexes' names (which the new tables need) and makes the
        foreign keys of its children follow it, so indexes go first and children are copied and
        dropped before their parents.
        """
        for table in _REBUILT:
            for (index,) in cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL",
                (table,),
            ).fetchall():
                cur.execute(f'DROP INDEX "{index}"')
            cur.execute(f"ALTER TABLE {table} RENAME TO {table}_v3")
        _run(cur, _statements_for(_CORE, _REBUILT))
        counts: dict[str, int] = {}
        for table in _REBUILT:
            columns = ", ".join(
                str(r[1]) for r in cur.execute(f"PRAGMA table_info({table}_v3)").fetchall()
            )
            cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v3")
            counts[table] = int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        for table in reversed(_REBUILT):
            cur.execute(f"DROP TABLE {table}_v3")
        _run(cur, _TOMBSTONES + ACCESS_LOG_SQLITE)
        log.info("store.migrated", from_version=3, to_version=SCHEMA_VERSION, **counts)

    def connection_settings(self) -> dict[str, object]:
        """The durability settings of this store's connection."""
        self._check_open()
        return settings(self._conn)

    def _cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def _sql(self, statement: str) -> str:
        return statement

    def _transaction(self, work: Callable[[sqlite3.Cursor], None]) -> None:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                work(cur)
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise
        except (StoreError, StoreOwnerMismatch):
            raise
        except Exception as e:
            raise StoreError(f"SQLite commit failed: {type(e).__name__}") from e
        finally:
            cur.close()

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _enc_time(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is UTC and value.year >= 1000:
            # Already in UTC (every time the envelope and the clock give): the text below with
            # no conversion and no copy, its offset cut (three per record).
            return value.isoformat(timespec="microseconds")[:26] + "Z"
        if value.utcoffset() is None:
            raise StoreError("timestamps must be timezone-aware")
        utc = value.astimezone(UTC)
        if utc.year < 1000:  # strftime's %Y does not pad: keep its exact text
            return utc.strftime(_TIME_FORMAT)
        # The same 27 characters as _TIME_FORMAT, ~5x faster than strftime (three per record).
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"

    def _dec_time(self, value: Any) -> datetime:  # noqa: ANN401 - driver value
        text = str(value)
        # What _enc_time wrote (always 27 characters: six-digit fraction and Z) is read with
        # fromisoformat, ~20x faster than strptime, which was most of the cost of reading a record
        # back (four times per record). Anything else takes the strict path, and fails there.
        if len(text) == 27 and text[10] == "T" and text[19] == "." and text[26] == "Z":
            return datetime.fromisoformat(text[:26]).replace(tzinfo=UTC)
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)

    def _enc_json(self, value: object) -> str:
        return self._json_text(value)

    def _dec_json(self, value: Any) -> Any:  # noqa: ANN401 - JSON of any shape
        return json.loads(value)

    def _close_connection(self) -> None:
        self._conn.close()
        self._release_writer()

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
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intelbus.store.base import SCHEMA_VERSION, SqlStore, StoreError

BUSY_TIMEOUT_MS = 5000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_SCHEMA = """
CREATE TABLE records (
    record_id       TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    producer_id     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('sighting', 'incident')),
    sequence        INTEGER NOT NULL,
    digest          BLOB NOT NULL CHECK (length(digest) = 32),
    created_at      TEXT NOT NULL,
    appended_at     TEXT NOT NULL,
    policy_hash     TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    action          TEXT NOT NULL CHECK (action IN ('store', 'redact')),
    redacted_fields TEXT NOT NULL,
    tlp             TEXT NOT NULL,
    classification  TEXT NOT NULL,
    force_area      TEXT,
    occurred_at     TEXT,
    event_at        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1,
    retracted       INTEGER NOT NULL DEFAULT 0,
    superseded      INTEGER NOT NULL DEFAULT 0,
    stored_at       TEXT NOT NULL
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);

CREATE TABLE record_history (
    record_id           TEXT NOT NULL REFERENCES records (record_id),
    version             INTEGER NOT NULL,
    payload             TEXT NOT NULL,
    amendment_record_id TEXT NOT NULL,
    kind                TEXT NOT NULL,
    at                  TEXT NOT NULL,
    reason              TEXT NOT NULL,
    applied_at          TEXT NOT NULL,
    PRIMARY KEY (record_id, version)
);

CREATE TABLE withheld (
    record_id       TEXT PRIMARY KEY,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    producer_id     TEXT NOT NULL,
    digest          BLOB NOT NULL,
    rule_id         TEXT NOT NULL,
    policy_hash     TEXT NOT NULL,
    received_at     TEXT NOT NULL
);

CREATE TABLE quarantine (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    raw             BLOB NOT NULL,
    reason          TEXT NOT NULL,
    message         TEXT NOT NULL,
    record_id       TEXT,
    producer_id     TEXT,
    quarantined_at  TEXT NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE TABLE amendments (
    arrival             INTEGER PRIMARY KEY AUTOINCREMENT,
    amendment_record_id TEXT NOT NULL UNIQUE,
    kind                TEXT NOT NULL CHECK (kind IN ('correction', 'retraction')),
    target_record_id    TEXT NOT NULL,
    producer_id         TEXT NOT NULL,
    at                  TEXT NOT NULL,
    reason              TEXT NOT NULL,
    new_payload         TEXT,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'refused')),
    received_at         TEXT NOT NULL,
    applied_at          TEXT
);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);

CREATE TABLE chain (
    producer_id   TEXT NOT NULL,
    stream        TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
    last_digest   BLOB NOT NULL,
    PRIMARY KEY (producer_id, stream)
);

CREATE TABLE offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
"""

# Version 2 added the feeds table; a version 1 store gets just this.
_SCHEMA_V2 = """
CREATE TABLE feeds (
    producer_id       TEXT NOT NULL,
    topic             TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    interval_ms       INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
"""

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
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
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
    }


class SqliteStore(SqlStore):
    """An agency's store in one SQLite file (created, with its schema, on first open)."""

    _UPSERT_OFFSET = """
INSERT INTO offsets (group_id, topic, kafka_partition, next_offset) VALUES (?, ?, ?, ?)
ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE
SET next_offset = max(offsets.next_offset, excluded.next_offset)
"""
    _SEARCH = """
SELECT record_id, topic, kafka_partition, kafka_offset, producer_id, kind, sequence, digest,
    created_at, appended_at, policy_hash, rule_id, action, redacted_fields, tlp, classification,
    force_area, occurred_at, payload, version, retracted, superseded
FROM records WHERE instr(lower(payload), ?) > 0 ORDER BY event_at DESC, record_id LIMIT ?
"""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.path)
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        def work(cur: sqlite3.Cursor) -> None:
            version = int(cur.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {version} is newer than this intelbus ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return
            steps = [_SCHEMA, _SCHEMA_V2] if version == 0 else [_SCHEMA_V2]
            for script in steps:
                for statement in script.split(";"):
                    if statement.strip():
                        cur.execute(statement)
            cur.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        self._transaction(work)

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
        except StoreError:
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
        if value.utcoffset() is None:
            raise StoreError("timestamps must be timezone-aware")
        return value.astimezone(UTC).strftime(_TIME_FORMAT)

    def _dec_time(self, value: Any) -> datetime:  # noqa: ANN401 - driver value
        return datetime.strptime(str(value), _TIME_FORMAT).replace(tzinfo=UTC)

    def _enc_json(self, value: object) -> str:
        return self._json_text(value)

    def _dec_json(self, value: Any) -> Any:  # noqa: ANN401 - JSON of any shape
        return json.loads(value)

    def _close_connection(self) -> None:
        self._conn.close()

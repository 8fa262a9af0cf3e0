"""The production store: PostgreSQL through psycopg 3, shared by an agency's consumer instances.

This module owns the PostgreSQL connection settings and schema. It behaves exactly like the SQLite
store (the same tests run on both, see tests/integration/test_store.py): the commit algorithm and
queries live in :class:`intelbus.store.base.SqlStore`; here are only the schema in PostgreSQL types
(``jsonb``, ``bytea``, ``timestamptz``), the transaction and the dialect's statements.

Durability: every session runs ``synchronous_commit = on`` (a server default of ``off`` would
acknowledge commits before they are on disk) and ``TimeZone = UTC``. Each batch is one transaction.

Concurrency: several members of one consumer group may commit to one database at once. Inserts
use ``ON CONFLICT DO NOTHING``, offsets keep ``GREATEST`` of old and new, chain marks move only
forward. Each transaction first takes transaction-scoped advisory locks on the record ids it
touches (sorted, so two transactions cannot deadlock on them): a record and a pending amendment
of it committed by two members at once are then seen one after the other, so the amendment is
never left pending with its target already stored. Text keys use ``COLLATE "C"`` so ordering is
byte order, as in SQLite. A deadlock or serialisation failure is retried a few times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from intelbus.errors import StoreError, StoreOwnerMismatch
from intelbus.log import get_logger
from intelbus.store.access import ACCESS_LOG_POSTGRES
from intelbus.store.base import SCHEMA_VERSION, SqlStore
from intelbus.store.migrate import LEGACY_TABLES, copy_legacy

log = get_logger("intelbus.store.postgres")

#: First key of every advisory lock this store takes (an arbitrary constant: "IBUS").
LOCK_NAMESPACE = 0x49425553
#: The schema lock lives in its own namespace so it never waits on a record lock.
SCHEMA_LOCK_NAMESPACE = LOCK_NAMESPACE + 1
COMMIT_ATTEMPTS = 3

_CORE = """
CREATE TABLE schema_version (version integer NOT NULL);

CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE records (
    producer_id     text COLLATE "C" NOT NULL,
    record_id       text COLLATE "C" NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('sighting', 'incident')),
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    sequence        bigint NOT NULL,
    digest          bytea NOT NULL CHECK (octet_length(digest) = 32),
    key_id          bytea,
    created_at      timestamptz NOT NULL,
    appended_at     timestamptz NOT NULL,
    status          text NOT NULL
        CHECK (status IN ('live', 'retracted', 'withheld', 'quarantined', 'withdrawn', 'erased',
                          'pruned')),
    version         integer NOT NULL,
    content_version integer NOT NULL,
    policy_hash     text NOT NULL,
    rule_id         text NOT NULL,
    action          text NOT NULL CHECK (action IN ('store', 'redact', 'withhold', 'quarantine')),
    redacted_fields jsonb NOT NULL,
    tlp             text,
    classification  text,
    force_area      text,
    occurred_at     timestamptz,
    event_at        timestamptz NOT NULL,
    payload         jsonb,
    stored_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- record_id first: the judge's snapshot looks records up by id, whoever produced them.
    PRIMARY KEY (record_id, producer_id),
    -- A tombstone (erased, pruned) holds no payload whatever its last decision was.
    CONSTRAINT records_check CHECK (status IN ('erased', 'pruned')
        OR (payload IS NULL) = (action IN ('withhold', 'quarantine'))),
    CONSTRAINT records_tombstone_check CHECK (status NOT IN ('erased', 'pruned') OR payload IS NULL)
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);

CREATE TABLE record_versions (
    producer_id      text COLLATE "C" NOT NULL,
    record_id        text COLLATE "C" NOT NULL,
    version          integer NOT NULL,
    change           text NOT NULL
        CHECK (change IN ('original', 'correction', 'retraction', 'erasure')),
    source_record_id text COLLATE "C" NOT NULL,
    key_id           bytea,
    sequence         bigint,
    digest           bytea,
    topic            text COLLATE "C",
    kafka_partition  integer,
    kafka_offset     bigint,
    created_at       timestamptz,
    appended_at      timestamptz,
    amended_at       timestamptz,
    reason           text NOT NULL,
    outcome          text NOT NULL
        CHECK (outcome IN ('store', 'redact', 'withhold', 'quarantine', 'retract', 'erase')),
    rule_id          text NOT NULL,
    policy_hash      text NOT NULL,
    redacted_fields  jsonb NOT NULL,
    tlp              text,
    classification   text,
    force_area       text,
    occurred_at      timestamptz,
    payload          jsonb,
    withdrawn        boolean NOT NULL DEFAULT false,
    recorded_at      timestamptz NOT NULL,
    legal_basis      text NOT NULL DEFAULT '',
    PRIMARY KEY (producer_id, record_id, version),
    FOREIGN KEY (producer_id, record_id) REFERENCES records (producer_id, record_id)
);
CREATE INDEX record_versions_key ON record_versions (key_id, appended_at);

CREATE TABLE amendments (
    arrival             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    producer_id         text COLLATE "C" NOT NULL,
    amendment_record_id text COLLATE "C" NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('correction', 'retraction', 'erasure')),
    target_record_id    text COLLATE "C",
    status              text NOT NULL CHECK (status IN
        ('pending', 'applied', 'unreadable', 'refused', 'withdrawn')),
    key_id              bytea,
    sequence            bigint,
    digest              bytea,
    topic               text COLLATE "C",
    kafka_partition     integer,
    kafka_offset        bigint,
    created_at          timestamptz,
    appended_at         timestamptz,
    amended_at          timestamptz,
    reason              text NOT NULL,
    replacement_kind    text,
    outcome             text NOT NULL,
    rule_id             text NOT NULL,
    policy_hash         text NOT NULL,
    redacted_fields     jsonb NOT NULL,
    tlp                 text,
    classification      text,
    force_area          text,
    occurred_at         timestamptz,
    payload             jsonb,
    received_at         timestamptz NOT NULL,
    applied_at          timestamptz,
    legal_basis         text NOT NULL DEFAULT '',
    UNIQUE (producer_id, amendment_record_id)
);
CREATE INDEX amendments_by_id ON amendments (amendment_record_id);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);
CREATE INDEX amendments_key ON amendments (key_id, appended_at);

CREATE TABLE quarantine (
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    raw_prefix      bytea NOT NULL,
    raw_size        integer NOT NULL,
    raw_digest      bytea NOT NULL,
    reason          text NOT NULL,
    message         text NOT NULL,
    record_id       text COLLATE "C",
    producer_id     text COLLATE "C",
    authentic       boolean NOT NULL,
    quarantined_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

CREATE TABLE chain (
    producer_id     text COLLATE "C" NOT NULL,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    epoch           text COLLATE "C" NOT NULL,
    last_sequence   bigint NOT NULL,
    last_digest     bytea NOT NULL,
    gaps            jsonb NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (producer_id, topic, kafka_partition, epoch)
);

CREATE TABLE rejudged (
    key_id     text COLLATE "C" NOT NULL,
    since      timestamptz NOT NULL,
    versions   integer NOT NULL,
    amendments integer NOT NULL,
    records    integer NOT NULL,
    streams    integer NOT NULL,
    applied_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, since)
);
"""

# Version 4 (issue 16) added tombstones: what stays of a record erased or pruned past retention.
_TOMBSTONES = """
CREATE TABLE tombstones (
    producer_id       text COLLATE "C" NOT NULL,
    record_id         text COLLATE "C" NOT NULL,
    reason            text NOT NULL CHECK (reason IN ('erasure', 'retention')),
    rule_id           text NOT NULL,
    legal_basis       text NOT NULL,
    erasure_record_id text COLLATE "C",
    note              text NOT NULL,
    effective_at      timestamptz NOT NULL,
    tombstoned_at     timestamptz NOT NULL,
    PRIMARY KEY (producer_id, record_id),
    FOREIGN KEY (producer_id, record_id) REFERENCES records (producer_id, record_id)
);
CREATE INDEX tombstones_at ON tombstones (tombstoned_at);
"""

# Schema 3 to 4: the checks that widen (PostgreSQL's default names for the checks of schema 3),
# and the legal basis an erasure states.
_V3_TO_V4 = """
ALTER TABLE records DROP CONSTRAINT records_status_check, DROP CONSTRAINT records_check,
    ADD CONSTRAINT records_status_check CHECK (status IN ('live', 'retracted', 'withheld',
        'quarantined', 'withdrawn', 'erased', 'pruned')),
    ADD CONSTRAINT records_check CHECK (status IN ('erased', 'pruned')
        OR (payload IS NULL) = (action IN ('withhold', 'quarantine'))),
    ADD CONSTRAINT records_tombstone_check CHECK (status NOT IN ('erased', 'pruned') OR payload IS NULL);
ALTER TABLE record_versions DROP CONSTRAINT record_versions_change_check,
    DROP CONSTRAINT record_versions_outcome_check,
    ADD CONSTRAINT record_versions_change_check
        CHECK (change IN ('original', 'correction', 'retraction', 'erasure')),
    ADD CONSTRAINT record_versions_outcome_check
        CHECK (outcome IN ('store', 'redact', 'withhold', 'quarantine', 'retract', 'erase')),
    ADD COLUMN legal_basis text NOT NULL DEFAULT '';
ALTER TABLE amendments DROP CONSTRAINT amendments_kind_check,
    ADD CONSTRAINT amendments_kind_check
        CHECK (kind IN ('correction', 'retraction', 'erasure')),
    ADD COLUMN legal_basis text NOT NULL DEFAULT '';
"""

_OFFSETS = """
CREATE TABLE offsets (
    group_id        text COLLATE "C" NOT NULL,
    topic           text COLLATE "C" NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
"""

# Version 2 added the feeds table.
_FEEDS = """
CREATE TABLE feeds (
    producer_id       text COLLATE "C" NOT NULL,
    topic             text COLLATE "C" NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    interval_ms       bigint NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
"""
#: Where an upgrade moves the tables it replaces while it copies them (then drops it).
_LEGACY_SCHEMA = "intelbus_legacy"


def _lock_key(record_id: str) -> int:
    """A signed 32-bit key for an id: a collision only makes two ids share one lock."""
    return int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:4], "big", signed=True)


class PostgresStore(SqlStore):
    """An agency's store in a PostgreSQL database (schema created on first open)."""

    _UPSERT_OFFSET = """
INSERT INTO offsets (group_id, topic, kafka_partition, next_offset) VALUES (%s, %s, %s, %s)
ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE
SET next_offset = GREATEST(offsets.next_offset, excluded.next_offset)
"""

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        """Connect, create or upgrade the schema, and with ``owner`` (the agency's consumer) bind
        the store to it or refuse another agency's. Several writers are allowed (no lock)."""
        try:
            # autocommit: reads never leave a transaction open; writes use explicit transactions.
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as e:
            # The driver's message may quote the URL (with a password): give the class only.
            raise StoreError(f"cannot connect to PostgreSQL store: {type(e).__name__}") from e
        try:
            self._conn.execute("SET synchronous_commit = on")
            self._conn.execute("SET TimeZone = 'UTC'")
            self._migrate(owner)
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self, owner: str | None = None) -> None:
        def work(cur: psycopg.Cursor[Any]) -> None:
            # Instances starting together would race on CREATE TABLE: one creates, the rest wait.
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SCHEMA_LOCK_NAMESPACE,))
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            row = cur.fetchone()
            version = 0
            if row is not None and row[0]:
                cur.execute("SELECT max(version) FROM schema_version")
                found = cur.fetchone()
                version = int(found[0]) if found is not None and found[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {version} is newer than this intelbus ({SCHEMA_VERSION})"
                )
            if version < SCHEMA_VERSION:
                if version == 0:
                    _run(cur, _CORE + _OFFSETS + _FEEDS + _TOMBSTONES + ACCESS_LOG_POSTGRES)
                elif version in (1, 2):
                    self._upgrade(cur, version)
                    _run(cur, _TOMBSTONES + ACCESS_LOG_POSTGRES)
                elif version == 3:
                    _run(cur, _V3_TO_V4 + _TOMBSTONES + ACCESS_LOG_POSTGRES)
                    log.info("store.migrated", from_version=3, to_version=SCHEMA_VERSION)
                else:
                    raise StoreError(
                        f"store schema version {version} is not one this intelbus made"
                    )
                cur.execute("DELETE FROM schema_version")
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
                cur.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            if owner is not None:
                # The same transaction as the schema (and under the schema lock): instances
                # starting together on a new database bind it once.
                self._bind_owner(cur, owner, created=version == 0)

        self._transaction(work)

    def _upgrade(self, cur: psycopg.Cursor[Any], version: int) -> None:
        """Schema 1 or 2 to 3 (intelbus/store/migrate.py), inside the opening transaction.

        The replaced tables move to a schema of their own (with their indexes, constraints and
        identity sequences, whose names would collide), are copied, and the schema is dropped.
        """
        cur.execute(f"CREATE SCHEMA {_LEGACY_SCHEMA}")
        for table in (*LEGACY_TABLES, "schema_version"):
            cur.execute(f"ALTER TABLE {table} SET SCHEMA {_LEGACY_SCHEMA}".encode())
        _run(cur, _CORE + (_FEEDS if version == 1 else ""))
        counts = copy_legacy(self, cur, lambda t: f"{_LEGACY_SCHEMA}.{t}")
        cur.execute(f"DROP SCHEMA {_LEGACY_SCHEMA} CASCADE")
        log.info("store.migrated", from_version=version, to_version=SCHEMA_VERSION, **counts)

    def _cursor(self) -> psycopg.Cursor[Any]:
        return self._conn.cursor()

    def _sql(self, statement: str) -> str:
        return _placeholders(statement)

    def _transaction(self, work: Callable[[psycopg.Cursor[Any]], None]) -> None:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    work(cur)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                log.warning("store.commit_retry", error=type(e).__name__, attempt=attempt)
                if attempt == COMMIT_ATTEMPTS:
                    raise StoreError(f"PostgreSQL commit failed: {type(e).__name__}") from e
            except (StoreError, StoreOwnerMismatch):
                raise
            except Exception as e:
                raise StoreError(f"PostgreSQL commit failed: {type(e).__name__}") from e
            else:
                return

    def _lock(self, cur: psycopg.Cursor[Any], ids: Iterable[str]) -> None:
        keys = sorted({_lock_key(i) for i in ids})
        if keys:
            # One statement for the whole batch (a statement per key was two thirds of a
            # consumer's commit): unnest yields the keys in the array's order, the aggregate
            # takes them one by one in that order, so locks are still taken in sorted order.
            cur.execute(
                "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::integer[]) AS k",
                (LOCK_NAMESPACE, keys),
            )

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _enc_time(self, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise StoreError("timestamps must be timezone-aware")
        return value

    def _dec_time(self, value: Any) -> datetime:  # noqa: ANN401 - driver value
        if not isinstance(value, datetime):
            raise StoreError("expected a timestamp from PostgreSQL")
        return value.astimezone(UTC)

    def _enc_json(self, value: object) -> Jsonb:
        text = self._json_text(value)  # the same checks and canonical form as SQLite
        return Jsonb(value, dumps=lambda _obj: text)

    def _dec_json(self, value: Any) -> Any:  # noqa: ANN401 - psycopg has already parsed jsonb
        return value

    def _close_connection(self) -> None:
        self._conn.close()


def _run(cur: psycopg.Cursor[Any], script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            cur.execute(statement.encode())


def _placeholders(statement: str) -> str:
    """Rewrite the shared statements' "?" placeholders to psycopg's "%s" (none contain "?" or "%")."""
    if "%" in statement and "?" in statement:
        raise StoreError("a statement mixes placeholder styles")
    return statement.replace("?", "%s")

"""Every SQLite connection runs WAL, synchronous=FULL, a busy timeout and foreign keys.

SECURITY.md ("Durability settings"): these are per connection (except WAL, which sticks to the
file), so a connection opened any other way than :func:`intelbus.store.sqlite.connect` could
silently commit with weaker guarantees.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from intelbus.store import StoreError, open_store
from intelbus.store.base import SCHEMA_VERSION
from intelbus.store.sqlite import BUSY_TIMEOUT_MS, SqliteStore, connect, settings

SYNCHRONOUS_FULL = 2
EXPECTED = {
    "journal_mode": "wal",
    "synchronous": SYNCHRONOUS_FULL,
    "busy_timeout": BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
}


def test_connect_applies_every_setting(tmp_path: Path) -> None:
    """A raw connection from connect() has all four settings."""
    conn = connect(tmp_path / "s.sqlite")
    try:
        assert settings(conn) == EXPECTED
    finally:
        conn.close()


def test_every_store_connection_has_the_settings(tmp_path: Path) -> None:
    """The store's own connection, a second store on the same file, and a reopened one."""
    path = tmp_path / "s.sqlite"
    first = open_store(str(path))
    second = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(first, SqliteStore)
        assert isinstance(second, SqliteStore)
        assert first.connection_settings() == EXPECTED
        assert second.connection_settings() == EXPECTED
    finally:
        first.close()
        second.close()
    again = SqliteStore(path)
    try:
        assert again.connection_settings() == EXPECTED
    finally:
        again.close()


def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    """The schema carries its version; a store written by a newer intelbus is not opened."""
    path = tmp_path / "s.sqlite"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        conn.execute("PRAGMA user_version=99")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)


def test_an_in_memory_database_is_refused() -> None:
    """WAL needs a file; an in-memory store would not be durable at all."""
    with pytest.raises(StoreError, match="WAL"):
        SqliteStore(":memory:")

"""Every SQLite connection runs WAL, synchronous=FULL, a busy timeout and foreign keys; every
store file is private to its owner.

SECURITY.md ("Durability settings"): these are per connection (except WAL, which sticks to the
file), so a connection opened any other way than :func:`intelbus.store.sqlite.connect` could
silently commit with weaker guarantees. A store holds what the bus exists to protect: it is
created 0600 whatever the umask, an older group- or world-readable one is tightened (and the change
logged), and a symbolic link (or anything but a regular file) at its path is refused.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from intelbus.errors import InsecureFileError, StoreError
from intelbus.store import open_store
from intelbus.store.base import SCHEMA_VERSION
from intelbus.store.sqlite import BUSY_TIMEOUT_MS, SqliteStore, connect, settings
from intelbus.trust.model import Batch

SYNCHRONOUS_FULL = 2
EXPECTED = {
    "journal_mode": "wal",
    "synchronous": SYNCHRONOUS_FULL,
    "busy_timeout": BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "secure_delete": 1,
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "4",
        )
        conn.execute("PRAGMA user_version=99")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)


def test_an_in_memory_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WAL needs a file; an in-memory store would not be durable at all. Nothing is created on
    the way (no stray file named ":memory:" in the working folder)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="must be a file"):
        SqliteStore(":memory:")
    with pytest.raises(StoreError, match="must be a file"):
        open_store("sqlite:///:memory:")
    assert list(tmp_path.iterdir()) == []


# --- file modes -------------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask of 0, so a file created with the umask's mode would show as 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_store_and_its_companions_are_created_private(tmp_path: Path) -> None:
    """The database, its WAL and shared-memory files are 0600; a folder it creates is 0700."""
    path = tmp_path / "stores" / "herts.sqlite"
    store = SqliteStore(path)
    try:
        store.commit(Batch("herts", offsets={("intelbus.sightings", 0): 1}))
        companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
        assert all(f.exists() for f in companions)
        assert [_mode(f) for f in (path, *companions)] == [0o600, 0o600, 0o600]
    finally:
        store.close()
    assert _mode(path.parent) == 0o700
    with closing(SqliteStore(path)) as again:
        assert again.load_offsets("herts", "intelbus.sightings") == {0: 1}
    assert _mode(path) == 0o600


def test_an_existing_readable_store_is_tightened_and_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store an earlier intelbus left 0644 (with its WAL file) is made 0600 on open, rows kept."""
    path = tmp_path / "herts.sqlite"
    with closing(SqliteStore(path)) as store:
        store.commit(Batch("herts", offsets={("intelbus.sightings", 0): 7}))
    wal = path.with_name(path.name + "-wal")
    wal.touch()
    for f in (path, wal):
        f.chmod(0o644)
    capsys.readouterr()
    with closing(SqliteStore(path)) as store:
        assert store.load_offsets("herts", "intelbus.sightings") == {0: 7}
        assert (_mode(path), _mode(wal)) == (0o600, 0o600)  # (SQLite removes the WAL at close)
    logged = "".join(capsys.readouterr())
    assert "store.permissions_tightened" in logged
    assert "0644" in logged


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_symlink_at_the_store_path_is_refused(tmp_path: Path, dangling: bool) -> None:
    """Nothing is written through a link planted where the store goes, nor created at its target."""
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"the analyst's own file")
        victim.chmod(0o644)
    path = tmp_path / "herts.sqlite"
    path.symlink_to(victim)
    with pytest.raises(InsecureFileError):
        SqliteStore(path)
    with pytest.raises(InsecureFileError):
        open_store(f"sqlite:///{path}")
    assert path.is_symlink()
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_bytes() == b"the analyst's own file"
        assert _mode(victim) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["herts.sqlite", *([] if dangling else ["victim"])]
    )


def test_something_other_than_a_file_at_the_store_path_is_refused(tmp_path: Path) -> None:
    """A named pipe (or a folder) where the store goes is not opened."""
    fifo = tmp_path / "herts.sqlite"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(InsecureFileError):
        SqliteStore(fifo)
    folder = tmp_path / "folder.sqlite"
    folder.mkdir(mode=0o700)
    with pytest.raises((InsecureFileError, StoreError)):
        SqliteStore(folder)

"""The consumer-side store: records and their versions, amendments, quarantine, stream heads, offsets.

:func:`open_store` picks the backend from a path or URL:

* a plain path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path`` (SQLAlchemy's
  convention: what follows ``sqlite:///`` is the path): the embedded SQLite store, the default;
* ``postgresql://...`` (or ``postgres://...``), any libpq URL: the PostgreSQL store, for
  production and for several consumer instances of one agency sharing one database.
"""

from __future__ import annotations

from intelbus.errors import StoreError
from intelbus.store.base import (
    HistoryEntry,
    QuarantineEntry,
    Store,
    StoredRecordView,
    Withdrawal,
)

__all__ = [
    "HistoryEntry",
    "QuarantineEntry",
    "Store",
    "StoreError",
    "StoredRecordView",
    "Withdrawal",
    "open_store",
]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url_or_path: str, *, owner: str | None = None) -> Store:
    """Open (creating if needed) the store at ``url_or_path``.

    ``owner`` opens it as that agency's consumer, which writes it: a new store is bound to the
    owner in the transaction that creates its schema, a store made before owners were recorded
    is bound now (logged), and a store of another agency is refused. A SQLite store also takes
    its writer lock for as long as it is open (one writer per file). Commands that only read
    pass no owner: they bind nothing and take no lock.

    Raises:
        StoreError: the store cannot be opened.
        StoreOwnerMismatch: ``owner`` given, and the store belongs to another agency.
        StoreLocked: ``owner`` given, and another writer holds the SQLite store.
        InsecureFileError: the SQLite store or its lock file is not private to this user.
    """
    if url_or_path.startswith(_POSTGRES_PREFIXES):
        # Imported here so that SQLite-only deployments never load the PostgreSQL driver.
        from intelbus.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url_or_path, owner=owner)
    from intelbus.store.sqlite import SqliteStore  # noqa: PLC0415

    if url_or_path.startswith(_SQLITE_PREFIX):
        return SqliteStore(url_or_path.removeprefix(_SQLITE_PREFIX), owner=owner)
    if "://" in url_or_path:
        raise StoreError("unsupported store URL scheme (use a path, sqlite:/// or postgresql://)")
    return SqliteStore(url_or_path, owner=owner)

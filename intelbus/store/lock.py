"""The one-writer lock of a SQLite store: ``<store>.lock`` beside the database, held for life.

A SQLite store has one writer: its agency's consumer. The consumer opens the store with an owner
(:func:`intelbus.store.open_store`), which takes an exclusive, non-blocking ``flock`` on the lock
file for as long as the store is open; a second consumer on the same file is refused at start
(:class:`~intelbus.errors.StoreLocked`). Read-only commands (``intelbus store list`` ...) never
take it. The kernel drops the lock when the process dies, however it dies, so a crash leaves
nothing to clean up.

Why a file of its own: SQLite's locks are POSIX record locks on the database file, and closing any
other descriptor of that file in the process drops them; ``flock`` on a separate file cannot
interfere with them.

What a local user could do to the lock file, and why it cannot break the store:

* plant a symbolic link, a FIFO or a file of their own there: it is opened with ``O_NOFOLLOW``
  and ``O_NONBLOCK``, and refused unless it is a regular file of ours that only we may access
  (:class:`~intelbus.errors.InsecureFileError`); the file holds only the holder's pid, written
  through the checked descriptor, so nothing is ever written through a link;
* hold a lock on it: only a process that can open it can, and it is 0600 and ours (the same user
  could write the database itself); the consumer refuses to start, it never waits;
* delete or replace it while a consumer runs (so a second one could lock a new file): the
  holder checks once per poll loop that the path still names the file it locked
  (:meth:`WriterLock.check`) and stops if not; the path is also checked right after locking,
  closing the window between ``open`` and ``flock``.

Keep a store in a folder only its owner may write (SqliteStore creates missing folders 0700).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from intelbus.errors import InsecureFileError, StoreError, StoreLocked
from intelbus.files import PRIVATE_MODE
from intelbus.log import get_logger

log = get_logger("intelbus.store.lock")

LOCK_SUFFIX = ".lock"
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PID_MAX_BYTES = 32


def lock_path(store: Path) -> Path:
    """The writer lock file of the SQLite store at ``store``."""
    return store.with_name(store.name + LOCK_SUFFIX)


class WriterLock:
    """An exclusive ``flock`` on a store's lock file, held until :meth:`release` (or exit)."""

    __slots__ = ("_fd", "_ident", "path")

    def __init__(self, path: Path, fd: int, ident: tuple[int, int]) -> None:
        self.path = path
        self._fd: int | None = fd
        self._ident = ident

    @classmethod
    def acquire(cls, store: Path) -> WriterLock:
        """Take the writer lock of the store at ``store``, without waiting.

        Raises:
            StoreLocked: another process holds it.
            InsecureFileError: the lock file is a link, not a regular file, not ours, or open to
                group or others.
            StoreError: it cannot be created or locked for another reason.
        """
        path = lock_path(store)
        try:
            fd = os.open(path, _OPEN, PRIVATE_MODE)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InsecureFileError(
                    f"store lock {path} is a symbolic link; remove it (a link is never followed)",
                    path=path,
                ) from e
            raise StoreError(f"cannot open the store lock {path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            _judge(st, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                raise StoreLocked(
                    f"the store {store} is already being written by another consumer "
                    f"(pid {holder or 'unknown'} holds {path}): a SQLite store has one writer; "
                    "stop the other one, or use a PostgreSQL store for several instances"
                ) from None
            except OSError as e:
                raise StoreError(f"cannot lock the store lock {path}: {e.strerror}") from e
            ident = (st.st_dev, st.st_ino)
            if _ident_at(path) != ident:
                # Replaced between our open and our lock: the file we hold guards nothing.
                raise StoreLocked(f"the store lock {path} was replaced while it was being taken")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, ident)

    def check(self) -> None:
        """Raise unless this process still holds the lock the path names.

        Raises:
            StoreLocked: released, or the lock file was removed or replaced (another writer could
                then lock a new file at the path).
        """
        if self._fd is None:
            raise StoreLocked(f"the store lock {self.path} was released")
        if _ident_at(self.path) != self._ident:
            log.error("store.lock_replaced", path=str(self.path))
            raise StoreLocked(
                f"the store lock {self.path} was removed or replaced while this consumer ran "
                "(another writer could start): stopped"
            )

    def release(self) -> None:
        """Drop the lock (closing the file drops it). Idempotent. The file stays: removing it
        would let a process that opened it before the removal lock a file nobody else sees."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _judge(st: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InsecureFileError(f"store lock {path} is not a regular file", path=path)
    if st.st_uid != os.getuid():
        raise InsecureFileError(
            f"store lock {path} belongs to another user (uid {st.st_uid}); remove it", path=path
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        # Anyone who can open it can hold the lock and keep the consumer from starting.
        raise InsecureFileError(
            f"store lock {path} has mode {mode:04o}, so group or others can access it; "
            f"run `chmod 600 {path}`",
            path=path,
            mode=mode,
        )


def _ident_at(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, _PID_MAX_BYTES, 0).decode("ascii").strip())
    return None

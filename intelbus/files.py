"""Files that must stay private, and writes that never follow a link.

The attacker here is another local user on the same host. Two rules follow:

* **Private key files are refused when group or others have any access to them**
  (``mode & 0o077``), as ssh refuses them: :func:`check_private` and :func:`read_private`. The
  error is one line naming the path, its mode and the fix (``chmod 600 PATH``). A link *to* a key
  file is followed (secrets are often mounted that way); the file it leads to is what is judged.
* **Nothing is written through a symbolic link.** New files are created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (:func:`open_private_new`), so a link planted at the path,
  even a dangling one, makes the call fail instead of writing to wherever it points. Whole-file
  writes (:func:`atomic_write`, :func:`atomic_writer`) create a uniquely named temporary file
  beside the destination that way, write it, fsync it and rename it over the destination: the
  rename replaces a link at the destination itself, never the file the link points to, and a
  failed write leaves no half file. Files are created 0600 unless the caller asks otherwise (the
  umask can only narrow the mode).

:func:`ensure_private_file` prepares a file that a library will then open by name (SQLite):
created empty and 0600 if missing, refused if it is a link, not a regular file, or open to group
or others.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from intelbus.errors import InsecureFileError

#: The mode of files only their owner may read or write.
PRIVATE_MODE = 0o600

_NEW = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_SUFFIX = ".tmp"


def _judge(st: os.stat_result, path: Path, what: str) -> None:
    """Refuse ``st`` unless it is a regular file that only its owner may access."""
    if not stat.S_ISREG(st.st_mode):
        raise InsecureFileError(f"{what} {path} is not a regular file", path=path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise InsecureFileError(
            f"{what} {path} has mode {mode:04o}, so group or others can access it; "
            f"run `chmod 600 {shlex.quote(str(path))}`",
            path=path,
            mode=mode,
        )


def _judge_open(fd: int, path: Path, what: str) -> None:
    """:func:`_judge` the file open as ``fd``; on refusal ``fd`` is closed."""
    try:
        _judge(os.fstat(fd), path, what)
    except BaseException:
        os.close(fd)
        raise


def check_private(path: Path, *, what: str = "private key file") -> None:
    """Refuse a private key file that group or others may access (``mode & 0o077``), as ssh does.

    For a file handed on by name to a library that reads it itself (a TLS key). A file this
    process reads should go through :func:`read_private`, which judges the very file it reads.

    Raises:
        InsecureFileError: open to group or others, or not a regular file.
        OSError: it does not exist or cannot be examined.
    """
    _judge(path.stat(), path, what)


def read_private(path: Path, *, what: str = "private key file", own: bool = False) -> bytes:
    """The bytes of a private key file, refused if group or others may access it.

    The mode is judged on the open file (``fstat``), so the file checked is the file read. With
    ``own``, a file another user owns is refused too: a 0600 file is private to its owner, who
    need not be us (root reads anyone's), so for a file that says who may do what (the TAXII
    users file) a local user's own file planted at the path must not be read as ours.

    Raises:
        InsecureFileError: open to group or others, not a regular file, or (``own``) another
            user's.
        OSError: it does not exist or cannot be read.
    """
    # O_NONBLOCK: a FIFO planted at the path must not hang the open; it is refused just below.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    _judge_open(fd, path, what)
    if own and os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise InsecureFileError(
            f"{what} {path} belongs to another user: only this user's own file is read",
            path=path,
        )
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def open_private_new(path: Path, *, mode: int = PRIVATE_MODE) -> BinaryIO:
    """Create ``path`` (which must not exist) with ``mode`` and open it for reading and writing.

    ``O_CREAT | O_EXCL | O_NOFOLLOW``: anything already at the path, including a symbolic link
    (dangling or not), makes this fail; nothing is ever written through a link.

    Raises:
        FileExistsError: something is already at ``path``.
        OSError: it cannot be created.
    """
    fd = os.open(path, os.O_RDWR | _NEW, mode)
    return os.fdopen(fd, "w+b")


def open_private_existing(path: Path, *, what: str = "file") -> BinaryIO:
    """Open an existing private file for reading and writing, without following a link.

    Raises:
        InsecureFileError: ``path`` is a symbolic link, not a regular file, or open to group or
            others.
        OSError: it does not exist or cannot be opened.
    """
    fd = _open_nofollow(path, os.O_RDWR, what)
    _judge_open(fd, path, what)
    return os.fdopen(fd, "r+b")


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = PRIVATE_MODE) -> Iterator[BinaryIO]:
    """A binary file to write that becomes ``path`` only when the block ends without an error.

    The file is created with ``mode`` beside ``path`` under a unique name (by
    :func:`open_private_new`), fsynced and renamed over ``path``, and the folder is fsynced. A
    symbolic link at ``path`` is replaced by the new file, never written through. On an error the
    temporary file is removed and ``path`` is left as it was.

    Raises:
        OSError: the file cannot be created, written or renamed.
    """
    folder = path.parent
    # Keep the temporary name within NAME_MAX (255) whatever the destination's name.
    stem = f".{path.name[:200]}."
    for _ in range(8):
        tmp = folder / f"{stem}{secrets.token_hex(8)}{_TMP_SUFFIX}"
        try:
            fh = open_private_new(tmp, mode=mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - eight 64-bit collisions in a row
        raise FileExistsError(errno.EEXIST, "no free temporary name beside the file", str(path))
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically, as :func:`atomic_writer` (0600 by default).

    Raises:
        OSError: the file cannot be created, written or renamed.
    """
    with atomic_writer(path, mode=mode) as fh:
        fh.write(data)


def ensure_private_file(path: Path, *, what: str = "file") -> bool:
    """Make sure ``path`` is a private regular file before a library opens it by name.

    For files such as a SQLite database, which the library creates with the umask's mode (often
    0644) when they do not exist. Call this first:

    * missing: it is created empty with mode 0600 (``O_CREAT | O_EXCL | O_NOFOLLOW``, so a link
      planted there is never followed), and True is returned;
    * present: it is opened without following a link and judged on the open file; a regular file
      only its owner may access is accepted and False is returned.

    SQLite gives its journal, WAL and shared-memory files the database file's permissions, so a
    0600 database keeps them 0600 too. The check cannot stop someone who may write to the folder
    from swapping the file afterwards: keep such files in a folder only their owner can write.

    Raises:
        InsecureFileError: ``path`` is a symbolic link, not a regular file, or group or others may
            access it. The message names the path and the fix.
        OSError: it cannot be created or examined (a missing folder, no permission...).
    """
    try:
        fd = os.open(path, os.O_WRONLY | _NEW, PRIVATE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        return True
    fd = _open_nofollow(path, os.O_RDONLY, what)
    _judge_open(fd, path, what)
    os.close(fd)
    return False


def _open_nofollow(path: Path, flags: int, what: str) -> int:
    """``os.open`` without following a final symbolic link (refused with a clear error)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        # Linux and macOS say ELOOP, FreeBSD EMLINK; check rather than trust the number.
        if e.errno in {errno.ELOOP, errno.EMLINK} and path.is_symlink():
            raise InsecureFileError(
                f"{what} {path} is a symbolic link; refusing to follow it "
                "(replace it with the real file, or give the real path)",
                path=path,
            ) from None
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

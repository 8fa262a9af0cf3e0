"""An agency's encryption-epoch keyring on disk: make epoch keys, load them, destroy past ones.

The keyring is a folder beside the agency's key file, ``<key file>.epochs/`` (mode 0700):

* ``<epoch id>.key``: one epoch's X25519 private key (JSON, mode 0600, created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW``, never overwritten), naming the agency and agency key it
  belongs to and its window;
* ``<epoch id>.pub.json``: its public part (what the directory lists), kept for ever, so an epoch
  whose key file vanished without being destroyed is known to be *lost*, not shredded;
* ``<epoch id>.destroyed``: written by :func:`destroy_epoch` before the key file is overwritten
  and unlinked: when the key was destroyed. Its presence wins over a key file still there (a
  destruction interrupted half-way is finished by running it again).

Destroying is irreversible: records sealed to that epoch can never be opened again by anyone
(crypto-shredding). Overwriting a file is best effort on journalling and flash file systems (the
old blocks may survive until reused); the guarantee is that no intelbus process, and no copy of
this keyring made afterwards, holds the key. Backups of the keyring must follow the same
schedule (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intelbus.envelope.epochs import DestroyedEpoch, EpochKeys, EpochSecret
from intelbus.errors import ConfigError, KeyringError
from intelbus.files import atomic_write, open_private_existing, open_private_new, read_private
from intelbus.log import get_logger

log = get_logger("intelbus.keyring")

KEYRING_SUFFIX = ".epochs"
EPOCH_KEY_FORMAT = "intelbus-epoch-key-v1"
EPOCH_PUBLIC_FORMAT = "intelbus-epoch-public-v1"
EPOCH_DESTROYED_FORMAT = "intelbus-epoch-destroyed-v1"
#: The public parts of an agency key's epochs, as ``intelbus directory add-epochs`` reads them.
EPOCHS_DOCUMENT_FORMAT = "intelbus-epochs-v1"
_KEY = ".key"
_PUBLIC = ".pub.json"
_DESTROYED = ".destroyed"


@dataclass(frozen=True, slots=True)
class EpochInfo:
    """One epoch of a keyring, public parts only, and its state: ``held``, ``destroyed`` (with
    when) or ``missing`` (its key is gone and no destruction was recorded)."""

    epoch_id: str
    enc_public: str
    not_before: datetime
    not_after: datetime
    state: str
    destroyed_at: datetime | None = None

    def public(self) -> dict[str, str]:
        """The directory's view of the epoch (``EncEpoch`` fields)."""
        return {
            "epoch_id": self.epoch_id,
            "enc_public": self.enc_public,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


def keyring_dir(key_file: Path) -> Path:
    """The keyring folder of an agency key file."""
    return key_file.with_name(key_file.name + KEYRING_SUFFIX)


def key_file_owner(key_file: Path) -> tuple[str, str]:
    """The agency id and key id a key file names (read without its passphrase: both are public).

    Raises:
        ConfigError: it is not a readable intelbus key file (or group or others may read it).
    """
    try:
        raw = json.loads(read_private(key_file, what="key file").decode())
        return str(raw["agency_id"]), str(raw["key_id"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read key file {key_file} ({type(e).__name__})") from None


def monthly_windows(start: datetime, months: int) -> list[tuple[datetime, datetime]]:
    """``months`` consecutive calendar months (UTC), the first being the one ``start`` falls in."""
    if months < 1:
        raise ValueError("months must be at least 1")
    start = start.astimezone(UTC)
    year, month = start.year, start.month
    out: list[tuple[datetime, datetime]] = []
    for _ in range(months):
        begin = datetime(year, month, 1, tzinfo=UTC)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        out.append((begin, datetime(year, month, 1, tzinfo=UTC)))
    return out


def _ensure_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise KeyringError(f"keyring {folder} is not a folder")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyringError(
            f"keyring {folder} has mode {stat.S_IMODE(st.st_mode):04o}, so group or others can "
            f"reach its keys; run `chmod 700 {folder}`"
        )


def _time(value: Any, what: str) -> datetime:  # noqa: ANN401 - parsed JSON
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"{what} is not timezone-aware")
    return parsed.astimezone(UTC)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(read_private(path, what=what).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise KeyringError(f"{path}: not a valid {what} ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise KeyringError(f"{path}: not a valid {what}")
    return raw


def create_epochs(
    key_file: Path, windows: Sequence[tuple[datetime, datetime]]
) -> list[EpochSecret]:
    """Make one epoch key per window in the keyring of ``key_file`` (each file 0600).

    Raises:
        KeyringError: a window is empty or overlaps another (new or already in the keyring).
        ConfigError: the key file cannot be read.
    """
    agency_id, key_id = key_file_owner(key_file)
    folder = keyring_dir(key_file)
    _ensure_dir(folder)
    existing = [(e.not_before, e.not_after, e.epoch_id) for e in list_epochs(key_file)]
    planned: list[tuple[datetime, datetime, str]] = list(existing)
    made: list[EpochSecret] = []
    for begin, end in windows:
        if end <= begin:
            raise KeyringError(f"epoch window {begin.isoformat()}..{end.isoformat()} is empty")
        for b, e, other in planned:
            if begin < e and b < end:
                raise KeyringError(
                    f"epoch window {begin.isoformat()}..{end.isoformat()} overlaps "
                    f"{'epoch ' + other if other else 'another new window'}"
                )
        planned.append((begin, end, ""))
    for begin, end in windows:
        epoch = EpochSecret.generate(begin, end)
        eid = epoch.epoch_id.hex()
        public = {
            "format": EPOCH_PUBLIC_FORMAT,
            "agency_id": agency_id,
            "key_id": key_id,
            "epoch_id": eid,
            "enc_public": epoch.enc_public.hex(),
            "not_before": begin.isoformat(),
            "not_after": end.isoformat(),
        }
        secret_doc = {**public, "format": EPOCH_KEY_FORMAT, "secret": epoch.secret_bytes().hex()}
        with open_private_new(folder / f"{eid}{_KEY}") as f:
            f.write(json.dumps(secret_doc, indent=2).encode())
            f.flush()
            os.fsync(f.fileno())
        # Kept after destruction: the keyring remembers every epoch it made.
        atomic_write(folder / f"{eid}{_PUBLIC}", json.dumps(public, indent=2).encode())
        log.info("keyring.epoch_created", agency=agency_id, epoch=eid)
        made.append(epoch)
    return made


def list_epochs(key_file: Path) -> list[EpochInfo]:
    """Every epoch the keyring of ``key_file`` made, oldest first, with its state.

    Raises:
        KeyringError: a file of the keyring is unusable.
    """
    folder = keyring_dir(key_file)
    if not folder.exists():
        return []
    out: list[EpochInfo] = []
    for pub in sorted(folder.glob(f"*{_PUBLIC}")):
        raw = _read_json(pub, "epoch public file")
        try:
            eid = str(raw["epoch_id"])
            begin = _time(raw["not_before"], "not_before")
            end = _time(raw["not_after"], "not_after")
            enc_public = str(raw["enc_public"])
        except (KeyError, ValueError, TypeError) as e:
            raise KeyringError(
                f"{pub}: not a valid epoch public file ({type(e).__name__})"
            ) from None
        destroyed = folder / f"{eid}{_DESTROYED}"
        if destroyed.exists():
            marker = _read_json(destroyed, "epoch destruction record")
            try:
                when = _time(marker["destroyed_at"], "destroyed_at")
            except (KeyError, ValueError, TypeError) as e:
                raise KeyringError(
                    f"{destroyed}: not a valid destruction record ({type(e).__name__})"
                ) from None
            out.append(EpochInfo(eid, enc_public, begin, end, "destroyed", when))
        elif (folder / f"{eid}{_KEY}").exists():
            out.append(EpochInfo(eid, enc_public, begin, end, "held"))
        else:
            out.append(EpochInfo(eid, enc_public, begin, end, "missing"))
    return sorted(out, key=lambda e: e.not_before)


def load_epochs(key_file: Path, agency_id: str) -> EpochKeys:
    """The keyring of ``key_file`` in memory, for ``agency_id`` (an empty one if there is none).

    Raises:
        KeyringError: a key belongs to another agency, does not match its id, or is unusable.
        InsecureFileError: a key file group or others may access.
    """
    held: dict[bytes, EpochSecret] = {}
    destroyed: dict[bytes, DestroyedEpoch] = {}
    known: set[bytes] = set()
    folder = keyring_dir(key_file)
    for info in list_epochs(key_file):
        eid = bytes.fromhex(info.epoch_id)
        known.add(eid)
        if info.state == "destroyed":
            assert info.destroyed_at is not None  # noqa: S101 - set with the state
            marker = folder / (info.epoch_id + _DESTROYED)
            if info.destroyed_at < info.not_after:
                # destroy_epoch only destroys an epoch that has ended, and records when: a record
                # dated before the end was not made by it, and honouring it would let a planted
                # file make a consumer drop current records as "shredded" without a word.
                raise KeyringError(
                    f"{marker} says epoch {info.epoch_id} was destroyed on "
                    f"{info.destroyed_at.isoformat()}, before it ended on "
                    f"{info.not_after.isoformat()}: not a destruction `intelbus keys destroy-epoch` "
                    "made; remove that file, or restore the key"
                )
            if (folder / f"{info.epoch_id}{_KEY}").exists():
                # An interrupted destruction (or a planted record beside a live key): neither
                # read the key nor drop its records; say how to finish.
                raise KeyringError(
                    f"epoch {info.epoch_id} is recorded as destroyed but its key is still in "
                    f"{folder}: finish with `intelbus keys destroy-epoch --epoch {info.epoch_id}`, "
                    f"or remove {marker} if it was not meant"
                )
            destroyed[eid] = DestroyedEpoch(eid, info.destroyed_at)
            continue
        if info.state != "held":
            continue
        path = folder / f"{info.epoch_id}{_KEY}"
        raw = _read_json(path, "epoch key file")
        try:
            if raw.get("format") != EPOCH_KEY_FORMAT:
                raise ValueError("format")
            if raw.get("agency_id") != agency_id:
                raise KeyringError(f"{path} is an epoch key of another agency, not {agency_id}'s")
            epoch = EpochSecret(
                bytes.fromhex(str(raw["secret"])),
                _time(raw["not_before"], "not_before"),
                _time(raw["not_after"], "not_after"),
            )
        except (KeyError, ValueError, TypeError) as e:
            # Only the exception type: a parse error could quote key material.
            raise KeyringError(f"cannot read epoch key {path} ({type(e).__name__})") from None
        if epoch.epoch_id != eid:
            raise KeyringError(f"{path}: its key does not match epoch id {info.epoch_id}")
        held[eid] = epoch
    return EpochKeys(agency_id, held, destroyed, frozenset(known))


def epochs_document(key_file: Path, epoch_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """The public parts of the keyring's epochs (all, or ``epoch_ids``) for the directory."""
    agency_id, key_id = key_file_owner(key_file)
    infos = [e for e in list_epochs(key_file) if epoch_ids is None or e.epoch_id in set(epoch_ids)]
    return {
        "format": EPOCHS_DOCUMENT_FORMAT,
        "agency_id": agency_id,
        "key_id": key_id,
        "epochs": [e.public() for e in infos],
    }


def destroy_epoch(
    key_file: Path,
    epoch_id: str,
    *,
    now: datetime,
    retention: timedelta = timedelta(0),
    force: bool = False,
) -> DestroyedEpoch:
    """Destroy a past epoch's private key, irreversibly: record when, overwrite, unlink.

    An epoch whose window has not ended (``not_after`` after ``now``) is always refused: records
    are still being sealed to it. One that ended less than ``retention`` ago is refused unless
    ``force``. Destroying an epoch already destroyed finishes an interrupted destruction.

    Raises:
        KeyringError: no such epoch, it is current or future, or within retention.
    """
    folder = keyring_dir(key_file)
    info = next((e for e in list_epochs(key_file) if e.epoch_id == epoch_id), None)
    if info is None:
        raise KeyringError(f"no epoch {epoch_id} in keyring {folder}")
    if info.not_after > now:
        raise KeyringError(
            f"epoch {epoch_id} runs until {info.not_after.isoformat()}: records are still sealed "
            "to it, so its key cannot be destroyed yet"
        )
    if not force and info.not_after + retention > now:
        raise KeyringError(
            f"epoch {epoch_id} ended {info.not_after.isoformat()}, within the retention of "
            f"{retention.days} day(s) (until {(info.not_after + retention).isoformat()}); "
            "give --force to destroy it anyway"
        )
    when = info.destroyed_at if info.destroyed_at is not None else now.astimezone(UTC)
    if info.state != "destroyed":
        marker = {
            "format": EPOCH_DESTROYED_FORMAT,
            "epoch_id": epoch_id,
            "destroyed_at": when.isoformat(),
            "not_after": info.not_after.isoformat(),
        }
        # First the record of the destruction: from here on the epoch reads as destroyed,
        # even if the process dies before the key file is gone.
        atomic_write(folder / f"{epoch_id}{_DESTROYED}", json.dumps(marker, indent=2).encode())
    _shred_file(folder / f"{epoch_id}{_KEY}")
    log.info("keyring.epoch_destroyed", epoch=epoch_id)
    return DestroyedEpoch(bytes.fromhex(epoch_id), when)


def _shred_file(path: Path) -> None:
    """Overwrite a key file with random bytes, fsync, and unlink it (nothing if it is gone)."""
    try:
        fh = open_private_existing(path, what="epoch key file")
    except FileNotFoundError:
        return
    with fh:
        size = os.fstat(fh.fileno()).st_size
        fh.write(os.urandom(max(size, 1)))
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

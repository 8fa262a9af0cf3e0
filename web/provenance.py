"""What the directory says about a stored record's key: the version in force when the broker
appended it, and the key's standing now.

The store keeps the key id but not the directory version the consumer judged it under; both
follow from the directory history the console can read (the consumer config's ``directory``
folder): the version in force at the broker's append time is the one the consumer judged with
(:meth:`DirectoryHistory.key_status`), and a revocation learned since is read from the newest
version, so an analyst sees that a record's key has since been revoked or presumed leaked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from intelbus.directory import store as dstore
from intelbus.directory.trust import DirectoryHistory
from intelbus.errors import EnvelopeError, IntelbusError
from intelbus.log import get_logger
from intelbus.store import StoredRecordView

log = get_logger("web.provenance")


@dataclass(frozen=True, slots=True)
class KeyProvenance:
    """The directory version in force at broker time (None: unknown here), and the key now."""

    directory_version: int | None
    key_now: str
    trusted: bool


def load_history(folder: Path | None) -> DirectoryHistory | None:
    """The directory history in ``folder``, or None when it cannot be read here (said on the page)."""
    if folder is None:
        return None
    try:
        return dstore.load_folder(folder)
    except (IntelbusError, OSError) as e:
        log.warning("web.directory_unreadable", error=type(e).__name__)
        return None


def key_provenance(history: DirectoryHistory | None, view: StoredRecordView) -> KeyProvenance:
    """The record's key as the directory sees it (module docstring)."""
    if history is None:
        return KeyProvenance(None, "the directory cannot be read by this console", False)
    if view.key_id is None:
        return KeyProvenance(None, "no key id recorded with this record", False)
    body = history.in_force_at(view.appended_at)
    version = None if body is None else body.version
    try:
        history.key_status(
            view.key_id,
            view.producer_id,
            view.topic,
            view.created_at,
            witnessed_at=view.appended_at,
        )
    except EnvelopeError as e:
        # Admitted when it arrived, refused now: revoked or presumed leaked since (or the
        # folder here is older than the consumer's). Said plainly: it changes how far the
        # record can be relied on.
        return KeyProvenance(version, f"not trusted now: {e}", False)
    return KeyProvenance(version, f"valid in directory v{history.latest.version}", True)

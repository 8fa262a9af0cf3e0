"""The console's access-log gate: the same rules as ``intelbus store`` (intelbus/cli/store_access.py).

Every page that shows records, or only their ids, writes the store's access log first, with the
signed-in user; if the entry cannot be written the page shows nothing (503). Showing a restricted
record (:func:`intelbus.store.access.restriction`: TLP:AMBER+STRICT, TLP:RED, handling code not
P) needs a justification typed on the page: without one the refusal is logged
(``{action}_refused``) and the page asks for it instead. The rules themselves live in
:mod:`intelbus.store.access`, shared with the CLI; this module only turns their failures into
pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from intelbus.log import get_logger
from intelbus.store import Store, StoredRecordView
from intelbus.store.access import (
    AccessLog,
    AccessLogError,
    RecordRef,
    new_entry,
    refs,
    restriction,
    valid_justification,
    valid_recipient,
)
from web.app import PageError

log = get_logger("web.access")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A restricted record was not shown for want of a justification (the refusal is logged)."""

    record_id: str
    reason: str


def _append(  # noqa: PLR0917 - an entry's fields, as new_entry takes them
    store: Store,
    user: str,
    action: str,
    records: Iterable[RecordRef],
    query: Mapping[str, Any] | None,
    justification: str | None,
    recipient: str | None,
) -> None:
    try:
        entry = new_entry(user, action, records, query, justification, recipient)
    except ValueError as e:
        raise PageError(400, f"{e}; nothing was shown") from None
    try:
        AccessLog(store).append(entry)
    except AccessLogError as e:
        # The reason names the log's failure, never a record's contents.
        log.warning("web.access_log_failed", action=action, user=user, error=type(e).__name__)
        raise PageError(503, f"{e}; nothing was shown") from None


def log_read(  # noqa: PLR0917 - an entry's fields, as new_entry takes them
    store: Store,
    user: str,
    action: str,
    views: Iterable[StoredRecordView | RecordRef],
    query: Mapping[str, Any] | None,
    justification: str | None = None,
    recipient: str | None = None,
) -> None:
    """Write the entry naming ``views`` (views or (producer, record id) pairs) before anything is
    shown, or raise :class:`PageError` 503 ("nothing was shown") when it cannot be written."""
    records = [v if isinstance(v, tuple) else (v.producer_id, v.record_id) for v in views]
    _append(store, user, action, records, query, justification, recipient)


def first_restriction(views: Iterable[StoredRecordView]) -> tuple[str, str] | None:
    """The first restricted record's id and why, or None."""
    return next(
        ((v.record_id, r) for v in views if (r := restriction(v)) is not None),
        None,
    )


def gate_refs(
    store: Store,
    user: str,
    action: str,
    records: tuple[RecordRef, ...],
    restricted: tuple[str, str] | None,
    *,
    query: Mapping[str, Any] | None,
    justification: str | None,
    recipient: str | None = None,
) -> Refusal | None:
    """Log a refusal (``{action}_refused``) and return it when a restricted record would be shown
    without a justification; otherwise log the read and return None. Either way the entry is
    written before the page shows anything."""
    if justification is None and restricted is not None:
        _append(store, user, f"{action}_refused", records, query, None, recipient)
        return Refusal(*restricted)
    _append(store, user, action, records, query, justification, recipient)
    return None


def gate(
    store: Store,
    user: str,
    action: str,
    views: Iterable[StoredRecordView],
    *,
    query: Mapping[str, Any] | None,
    justification: str | None,
    recipient: str | None = None,
) -> Refusal | None:
    """:func:`gate_refs` for records in hand."""
    views = list(views)
    return gate_refs(
        store,
        user,
        action,
        refs(views),
        first_restriction(views),
        query=query,
        justification=justification,
        recipient=recipient,
    )


def justification_of(value: str | None) -> tuple[str | None, str | None]:
    """A typed justification (None when blank) and an error for the field (None when fine)."""
    if value is None or not value.strip():
        return None, None
    try:
        return valid_justification(value.strip()), None
    except ValueError as e:
        return None, str(e)


def recipient_of(value: str | None) -> tuple[str | None, str | None]:
    """To whom (required): the value, or an error for the field."""
    if value is None or not value.strip():
        return None, "name to whom the records are disclosed"
    try:
        return valid_recipient(value.strip()), None
    except ValueError as e:
        return None, str(e)

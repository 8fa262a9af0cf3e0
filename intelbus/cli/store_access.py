"""The access-log gate of ``intelbus store``: who reads, why, and the entry written first.

Every store command that reads records (``list``, ``show``, ``search``, ``export``,
``quarantine``, ``subject``) goes through here:

* a named user is required (``--user`` or ``INTELBUS_USER``); without one the command stops with
  exit 2 before it opens the store;
* a justification (``--justification``, never from the environment: it must be said for each
  read) is required to show or export a record that is *restricted*: TLP:AMBER+STRICT or TLP:RED,
  or a handling code other than P. Of the 3x5x2 handling codes (schemas/common/common.v1.avsc),
  P (lawful sharing permitted) is the least restrictive and C (permitted with conditions that
  travel with the record) the other; anything that is not P is treated as restricted, including
  a code the store cannot read (redacted, missing), so an unknown grading fails closed. Every
  version the command would show counts (``show`` and ``export`` print the history too);
* the access log entry (:mod:`intelbus.store.access`) is written *before* anything is shown or
  written; if it cannot be written the command shows nothing and exits 3. A refusal for want of
  a justification is logged too (``show_refused``, ``export_refused``) and exits 2, having shown
  nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from intelbus.cli.exits import EXIT_ENVIRONMENT, EXIT_USAGE
from intelbus.store import Store, StoredRecordView
from intelbus.store.access import (
    AccessEntry,
    AccessLog,
    AccessLogError,
    NewAccess,
    RecordRef,
    valid_justification,
    valid_recipient,
    valid_user,
)

# The rules live in the store's access module (the web console applies them too); re-exported
# here for the commands and callers that import them from this module.
from intelbus.store.access import new_entry as new_entry  # noqa: PLC0414
from intelbus.store.access import refs as refs  # noqa: PLC0414
from intelbus.store.access import restriction as restriction  # noqa: PLC0414

console = Console()
err = Console(stderr=True, soft_wrap=True)

USER_ENV = "INTELBUS_USER"
USER_HELP = f"Who is reading (a named user, logged with every read; else {USER_ENV})."
JUSTIFICATION_HELP = (
    "Why (logged); required to show or export TLP:AMBER+STRICT, TLP:RED or handling-code C records."
)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one ``error:`` line and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def require_user(user: str | None) -> str:
    """The named user, or exit 2 with one line."""
    if user is None or not user.strip():
        raise fail(f"name who is reading with --user NAME (or {USER_ENV}): every read is logged")
    try:
        return valid_user(user)
    except ValueError as e:
        raise fail(f"--user: {e}") from None


def check_justification(value: str | None) -> str | None:
    """A justification as given (None when absent), or exit 2 if it is not printable text."""
    if value is None:
        return None
    try:
        return valid_justification(value)
    except ValueError as e:
        raise fail(f"--justification: {e}") from None


def check_recipient(value: str | None, *, required: bool) -> str | None:
    """To whom (None when absent and not required), or exit 2."""
    if value is None:
        if required:
            raise fail("name to whom the records are disclosed with --to RECIPIENT")
        return None
    try:
        return valid_recipient(value)
    except ValueError as e:
        raise fail(f"--to: {e}") from None


def record(store: Store, entry: NewAccess) -> AccessEntry:
    """Append ``entry`` to the store's access log, or exit 3 having shown nothing (fail closed)."""
    try:
        return AccessLog(store).append(entry)
    except AccessLogError as e:
        raise fail(f"{e}; nothing was shown or written", EXIT_ENVIRONMENT) from None


def gate(
    store: Store,
    views: Iterable[StoredRecordView],
    *,
    user: str,
    action: str,
    justification: str | None,
    query: Mapping[str, Any] | None = None,
    recipient: str | None = None,
) -> None:
    """Refuse (logged, exit 2) when a restricted record would be shown without a justification;
    otherwise write the entry for ``views``. Nothing has been shown when it returns or raises."""
    views = list(views)
    first = next(((v, r) for v in views if (r := restriction(v)) is not None), None)
    gate_refs(
        store,
        refs(views),
        None if first is None else (first[0].record_id, first[1]),
        user=user,
        action=action,
        justification=justification,
        query=query,
        recipient=recipient,
    )


def gate_refs(
    store: Store,
    records: tuple[RecordRef, ...],
    restricted: tuple[str, str] | None,
    *,
    user: str,
    action: str,
    justification: str | None,
    query: Mapping[str, Any] | None = None,
    recipient: str | None = None,
) -> None:
    """:func:`gate` for a caller that streams: the ids, and the first restricted record's id and
    why (or None)."""
    if justification is None and restricted is not None:
        record(store, new_entry(user, f"{action}_refused", records, query, None, recipient))
        rid, reason = restricted
        raise fail(
            f"record {rid} is {reason}: give --justification TEXT to {action} it "
            "(it is logged); nothing was shown or written"
        )
    record(store, new_entry(user, action, records, query, justification, recipient))


# --- Reviewing the log (``store access-log``). ------------------------------------------------------


def _cells(e: AccessEntry) -> tuple[str, ...]:
    records = " ".join(f"{p}/{r}" for p, r in e.records)
    return (
        str(e.seq),
        e.at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        e.user,
        e.action,
        str(len(e.records)),
        records,
        e.justification or "",
        e.recipient or "",
    )


_HEADINGS = ("seq", "at", "user", "action", "n", "records", "justification", "to")


def show_entries(entries: list[AccessEntry], *, as_json: bool) -> None:
    """Entries as JSON Lines, a table, or tab-separated rows in a pipe (as other store commands)."""
    if as_json:
        for e in entries:
            sys.stdout.write(json.dumps(e.as_json(), ensure_ascii=False, sort_keys=True) + "\n")
        return
    if not console.is_terminal:
        sys.stdout.write("\t".join(_HEADINGS) + "\n")
        for e in entries:
            sys.stdout.write("\t".join(_cells(e)) + "\n")
        return
    table = Table(title="access log")
    for h in _HEADINGS:
        table.add_column(h, overflow="fold")
    for e in entries:
        table.add_row(*_cells(e))
    console.print(table)
    console.print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")

"""``intelbus store list|show|search|export|quarantine|subject|access-log|summary|feeds``: an
analyst's view of a store.

The store is named by ``--store`` (a SQLite path or a ``postgresql://`` URL), else by the consumer
config given with ``--config``, else by ``INTELBUS_STORE``. A SQLite path that does not exist is
refused rather than created: a typo must not look like an empty store.

Times in filters are ISO 8601 (``2026-09-01`` or ``2026-09-01T18:30:00+01:00``); a time without an
offset is taken as UTC. ``--since`` is inclusive and ``--until`` exclusive, and both compare to when
the event happened (observed or occurred), falling back to when the record was created.

Every command that reads records needs a named user and writes an access log entry before it
shows anything (intelbus/cli/store_access.py, intelbus/store/access.py, docs/access-log.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from consumers.config import ConsumerConfig
from consumers.liveness import DEFAULT_TOLERANCE, assess
from intelbus.cli import store_access as access
from intelbus.errors import IntelbusError
from intelbus.policy.facts import Tlp
from intelbus.records import ForceArea
from intelbus.spelling import allowed, canonical
from intelbus.store import Store, StoredRecordView, open_store
from intelbus.store.access import AccessLog, AccessLogError, parse_head, text_digest
from intelbus.store.export import (
    event_time,
    export_selection,
    export_views,
    record_dict,
    record_filter,
    status_flags,
    write_csv,
    write_export_file,
    write_format,
)
from intelbus.store.subject import Criterion, SubjectQuery, about_subject, enforce_redactions
from intelbus.trust.completeness import DEFAULT_SETTLE, missing_records

app = typer.Typer(no_args_is_help=True, help="Read an agency's store: list, show, search, export.")
console = Console()
err = Console(stderr=True, soft_wrap=True)

_STORE_HELP = (
    "The store: a SQLite path or a postgresql:// URL (else --config, else INTELBUS_STORE)."
)
_CONFIG_HELP = "A consumer config file whose `store` to read."
_USER = typer.Option(None, "--user", envvar=access.USER_ENV, help=access.USER_HELP)
_JUSTIFICATION = typer.Option(None, "--justification", help=access.JUSTIFICATION_HELP)


class Format(StrEnum):
    """Export formats."""

    JSONL = "jsonl"
    CSV = "csv"
    STIX = "stix"
    GEOJSON = "geojson"
    MISP = "misp"
    MISP_FEED = "misp-feed"


_KINDS = {
    "sighting": "sighting",
    "sightings": "sighting",
    "incident": "incident",
    "incidents": "incident",
}


def _kind(value: str | None) -> str | None:
    """A --kind value in any common spelling, or a usage error naming the allowed ones."""
    if value is None:
        return None
    found = _KINDS.get(value.strip().lower())
    if found is None:
        raise typer.BadParameter(
            f"{value!r} is not a kind: use sighting or incident", param_hint="--kind"
        )
    return found


def _enum_value(kind: type[Any], value: str | None, option: str) -> str | None:
    if value is None:
        return None
    member = canonical(kind, value)
    if member is None:
        raise typer.BadParameter(f"{value!r}: use one of {allowed(kind)}", param_hint=option)
    return str(member.value)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def resolve_store(store: str | None, config: Path | None) -> str:
    """The store location from the options or the environment.

    Raises:
        IntelbusError: none given, or a SQLite path that does not exist.
    """
    location = store
    if location is None and config is not None:
        location = ConsumerConfig.load(config).store
    if location is None:
        location = os.environ.get("INTELBUS_STORE")
    if not location:
        raise IntelbusError("name a store with --store, --config or INTELBUS_STORE")
    if "://" not in location or location.startswith("sqlite:///"):
        path = Path(location.removeprefix("sqlite:///"))
        if not path.is_file():
            raise IntelbusError(f"no store at {path}")
    return location


@contextmanager
def _opened(store: str | None, config: Path | None) -> Iterator[Store]:
    try:
        handle = open_store(resolve_store(store, config))
    except IntelbusError as e:
        raise _fail(str(e)) from None
    try:
        yield handle
    finally:
        handle.close()


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time; naive values are UTC.

    Raises:
        typer.BadParameter: not ISO 8601.
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time", param_hint=option
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _flags(v: StoredRecordView) -> str:
    return ",".join(status_flags(v))


def _table(title: str, views: list[StoredRecordView], *, narrow: bool = False) -> Table:
    """The records as a table; ``narrow`` (under 110 columns) keeps when, kind, id, TLP and flags
    so nothing is squashed to a character per column (the rest is in ``--json``)."""
    table = Table(title=title, box=None if narrow else box.HEAVY_HEAD)
    table.add_column("when", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    # The id is what `store show` takes: never truncate or wrap it.
    table.add_column("record id", no_wrap=True, min_width=36)
    wide = ("producer", "TLP", "area", "flags")
    for col in ("TLP", "flags") if narrow else wide:
        table.add_column(col, overflow="fold")
    for v in views:
        cells = {
            "producer": v.producer_id,
            "TLP": v.tlp or "",
            "area": v.force_area or "",
            "flags": _flags(v),
        }
        table.add_row(
            event_time(v).astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            v.kind,
            v.record_id,
            *(cells[c] for c in (("TLP", "flags") if narrow else wide)),
        )
    return table


def _plain(views: list[StoredRecordView]) -> None:
    """Tab-separated rows for a pipe (``| grep``, ``| cut``): one record per line, no wrapping."""
    sys.stdout.write("when\tkind\trecord_id\tproducer\ttlp\tarea\tflags\n")
    for v in views:
        cells = (
            event_time(v).astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ"),
            v.kind,
            v.record_id,
            v.producer_id,
            v.tlp or "",
            v.force_area or "",
            _flags(v),
        )
        sys.stdout.write("\t".join(cells) + "\n")


def _emit(title: str, views: list[StoredRecordView], as_json: bool) -> None:
    if as_json:
        for v in views:
            sys.stdout.write(json.dumps(record_dict(v), ensure_ascii=False, sort_keys=True) + "\n")
    elif not console.is_terminal:
        _plain(views)
    else:
        console.print(_table(title, views, narrow=console.width < 110))
        console.print(f"{len(views)} record(s)")


@app.command("list")
def list_(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    kind: str | None = typer.Option(None, "--kind", help="sighting or incident."),
    since: str | None = typer.Option(None, "--since", help="Events at or after this time."),
    until: str | None = typer.Option(None, "--until", help="Events before this time."),
    area: str | None = typer.Option(None, "--area", help="Police force area, e.g. hertfordshire."),
    tlp: str | None = typer.Option(None, "--tlp", help="e.g. amber or TLP:AMBER."),
    limit: int = typer.Option(100, "--limit", min=0),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines instead of a table."),
    user: str | None = _USER,
    justification: str | None = _JUSTIFICATION,
) -> None:
    """Stored records, newest event first. With --json (whole records) a justification is
    required as for `show` when a restricted record is listed."""
    since_t, until_t = parse_time(since, "--since"), parse_time(until, "--until")
    kind = _kind(kind)
    area = _enum_value(ForceArea, area, "--area")
    tlp = _enum_value(Tlp, tlp, "--tlp")
    who, why = access.require_user(user), access.check_justification(justification)
    with _opened(store, config) as s:
        try:
            views = s.list_records(
                kind=kind, since=since_t, until=until_t, force_area=area, tlp=tlp, limit=limit
            )
        except IntelbusError as e:
            raise _fail(str(e)) from None
        query = {"kind": kind, "since": since, "until": until, "area": area, "tlp": tlp}
        _gate_listing(s, views, who, "list", why, {**query, "limit": limit, "json": as_json})
    _emit("stored records", views, as_json)


def _gate_listing(
    s: Store,
    views: list[StoredRecordView],
    who: str,
    action: str,
    why: str | None,
    query: dict[str, object],
) -> None:
    """A list or search entry; whole records (--json) need a justification as `show` does, the
    table (ids, TLP, area) does not."""
    if query.get("json"):
        access.gate(s, views, user=who, action=action, justification=why, query=query)
    else:
        access.record(s, access.new_entry(who, action, access.refs(views), query, why))


@app.command()
def show(
    record_id: str = typer.Argument(..., help="The record id."),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    producer: str | None = typer.Option(
        None, "--producer", help="Only this producer's record (ids are unique per producer)."
    ),
    user: str | None = _USER,
    justification: str | None = _JUSTIFICATION,
) -> None:
    """One stored record as JSON: provenance, status, the policy decision, payload and versions.

    A record is identified by its producer and its id: when producers used the same id, every
    one is shown (a JSON array), or only that producer's with --producer. A TLP:AMBER+STRICT,
    TLP:RED or handling-code C record is shown only with --justification.
    """
    who, why = access.require_user(user), access.check_justification(justification)
    with _opened(store, config) as s:
        try:
            views = [
                v for v in s.get_all(record_id) if producer is None or v.producer_id == producer
            ]
        except IntelbusError as e:
            raise _fail(str(e)) from None
        access.gate(
            s,
            [v for v in views if v.payload is not None],
            user=who,
            action="show",
            justification=why,
            query={"record_id": record_id, "producer": producer},
        )
    if not views:
        raise _fail(f"no record {record_id} in this store", 1)
    held = [v for v in views if v.payload is not None]
    for v in views:
        if v.status in ("erased", "pruned"):
            why = (
                "erased by its producer" if v.status == "erased" else "past this force's retention"
            )
            err.print(
                f"{record_id} from {v.producer_id}: {why}; only a tombstone is kept "
                "(`intelbus store tombstones`)",
                highlight=False,
            )
        elif v.payload is None:
            err.print(
                f"{record_id} from {v.producer_id}: its current version is {v.status} here, "
                "no content is held",
                highlight=False,
            )
    if not held:
        raise typer.Exit(1)
    shown: object = record_dict(held[0]) if len(held) == 1 else [record_dict(v) for v in held]
    sys.stdout.write(json.dumps(shown, ensure_ascii=False, indent=2, sort_keys=True))
    sys.stdout.write("\n")


@app.command()
def search(
    text: str = typer.Argument(..., help="Case-insensitive text to find in the stored payloads."),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    limit: int = typer.Option(100, "--limit", min=0),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines instead of a table."),
    user: str | None = _USER,
    justification: str | None = _JUSTIFICATION,
) -> None:
    """Stored records with TEXT in one of their values (not in field names), ignoring case, and
    ignoring spaces and hyphens too (``AB12 CDE`` finds ``AB12CDE``); redacted fields are not
    searchable. The access log keeps a digest of TEXT, never TEXT."""
    if not text.strip():
        raise typer.BadParameter("give some text to search for", param_hint="TEXT")
    who, why = access.require_user(user), access.check_justification(justification)
    with _opened(store, config) as s:
        try:
            views = s.search(text, limit=limit)
        except IntelbusError as e:
            raise _fail(str(e)) from None
        # A search term is personal data (a name, a registration): its digest, never the text.
        query = {**text_digest(text), "limit": limit, "json": as_json}
        _gate_listing(s, views, who, "search", why, query)
    _emit(f"records containing {text!r}", views, as_json)


@app.command()
def export(
    fmt: Format = typer.Option(
        Format.JSONL,
        "--format",
        help="jsonl, csv, stix (a strict STIX 2.1 bundle of sightings and incidents, redacted "
        "fields left out), geojson (records with a position), misp (MISP events) or misp-feed "
        "(a MISP feed directory, given with --out).",
    ),
    out: Path = typer.Option(
        Path("-"), "--out", help="Output file (a directory for misp-feed); - for stdout."
    ),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    kind: str | None = typer.Option(None, "--kind", help="sighting or incident."),
    since: str | None = typer.Option(None, "--since", help="Events at or after this time."),
    until: str | None = typer.Option(None, "--until", help="Events before this time."),
    area: str | None = typer.Option(None, "--area", help="Police force area."),
    tlp: str | None = typer.Option(None, "--tlp", help="e.g. TLP:GREEN."),
    to: str | None = typer.Option(None, "--to", help="To whom the export is disclosed (logged)."),
    user: str | None = _USER,
    justification: str | None = _JUSTIFICATION,
) -> None:
    """Export stored records (streamed, any size) as JSON Lines, CSV, a STIX 2.1 bundle, GeoJSON
    or MISP events (docs/interop.md).

    A file given with --out is created with mode 0600 (chmod it to share it); misp-feed writes a
    MISP feed (manifest.json, hashes.csv and one <uuid>.json per event) into the directory --out.
    --to names the recipient; a TLP:AMBER+STRICT, TLP:RED or handling-code C record is exported
    only with --justification.
    """
    filters = {
        "kind": _kind(kind),
        "since": since,
        "until": until,
        "area": _enum_value(ForceArea, area, "--area"),
        "tlp": _enum_value(Tlp, tlp, "--tlp"),
    }
    keep = record_filter(
        kind=filters["kind"],
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        area=filters["area"],
        tlp=filters["tlp"],
    )
    if fmt is Format.MISP_FEED and str(out) == "-":
        raise typer.BadParameter(
            "misp-feed writes a directory: name it with --out DIR", param_hint="--out"
        )
    who, why = access.require_user(user), access.check_justification(justification)
    recipient = access.check_recipient(to, required=True)
    with _opened(store, config) as s:
        # Two passes so the entry, naming every record, is written before the first byte: the
        # first collects the ids, the second writes exactly those (a record the consumer stored
        # in between is left out, not exported unlogged).
        try:
            logged = _export_gate(s, keep, who, why, recipient, filters, fmt, out)
        except IntelbusError as e:
            raise _fail(str(e)) from None
        views = export_views(s, logged, justified=why is not None)
        try:
            if fmt is Format.MISP_FEED:
                from intelbus.interop.misp import write_misp_feed  # noqa: PLC0415 - PyMISP is slow to import

                n = write_misp_feed(views, out)
            elif str(out) == "-":
                n = _write(fmt, views, sys.stdout)
            else:
                # Created 0600 under a unique name beside the target, never through a link, and
                # renamed over it: a failed export leaves no half file (see write_export_file).
                n = write_export_file(out, lambda fh: _write(fmt, views, fh))
        except BrokenPipeError:
            # The reader went away (`... | head`): not an error of ours. Point stdout at devnull
            # so the interpreter's final flush does not complain again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except IntelbusError as e:
            raise _fail(str(e)) from None
        except OSError as e:
            raise _fail(f"cannot write {out}: {e.strerror}") from None
    err.print(f"exported {n} record(s) as {fmt.value}" + ("" if str(out) == "-" else f" to {out}"))


def _export_gate(
    s: Store,
    keep: Callable[[StoredRecordView], bool],
    who: str,
    why: str | None,
    recipient: str | None,
    filters: dict[str, str | None],
    fmt: Format,
    out: Path,
) -> frozenset[tuple[str, str]]:
    """Write the export's entry (or refuse, logged) and return the ids it names."""
    ids, restricted = export_selection(s, keep)
    # The output path is not logged: a file name can itself name a person.
    query = {**filters, "format": fmt.value, "destination": "stdout" if str(out) == "-" else "file"}
    access.gate_refs(
        s,
        ids,
        restricted,
        user=who,
        action="export",
        justification=why,
        query=query,
        recipient=recipient,
    )
    return frozenset(ids)


def _write(fmt: Format, views: Iterator[StoredRecordView], fh: IO[str]) -> int:
    return write_format(fmt.value, views, fh, exported_at=datetime.now(UTC))


@app.command()
def quarantine(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    limit: int = typer.Option(100, "--limit", min=0),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines instead of a table."),
    user: str | None = _USER,
    justification: str | None = _JUSTIFICATION,
) -> None:
    """Quarantined Kafka records: where they were, the reason code and message (not their bytes).

    Each row keeps the first 4 KiB of the record, its size and its BLAKE2b-256 digest; the whole
    record stays on Kafka at the offset shown (read it from there to examine it in full).
    """
    who, why = access.require_user(user), access.check_justification(justification)
    with _opened(store, config) as s:
        try:
            entries = s.quarantine_entries(limit=limit)
        except IntelbusError as e:
            raise _fail(str(e)) from None
        named = tuple(
            (q.producer_id, q.record_id)
            for q in entries
            if q.producer_id is not None and q.record_id is not None
        )
        query = {"limit": limit, "entries": len(entries)}
        access.record(s, access.new_entry(who, "quarantine", named, query, why))
    if as_json:
        for q in entries:
            line = {
                "topic": q.topic,
                "partition": q.partition,
                "offset": q.offset,
                "reason": q.reason,
                "bytes": q.raw_size,
                "digest": q.raw_digest.hex(),
                "record_id": q.record_id,
                "producer_id": q.producer_id,
                "message": q.message,
            }
            sys.stdout.write(json.dumps(line) + "\n")
        return
    table = Table(title="quarantine")
    for col in ("topic", "partition", "offset", "reason", "bytes", "kept", "record id", "message"):
        table.add_column(col)
    for q in entries:
        table.add_row(
            q.topic,
            str(q.partition),
            str(q.offset),
            q.reason,
            str(q.raw_size),
            "prefix" if q.truncated else "all",
            q.record_id or "",
            q.message,
        )
    console.print(table)
    console.print(
        f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}; a row keeps the first 4 KiB "
        "of its record with the record's size and digest, and the whole record stays on Kafka at "
        "its offset"
    )


@app.command()
def summary(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table."),
) -> None:
    """Counts: stored, redacted, withheld, retracted, amendments, and quarantined per reason."""
    with _opened(store, config) as s:
        try:
            counts = s.summary()
        except IntelbusError as e:
            raise _fail(str(e)) from None
    if as_json:
        sys.stdout.write(json.dumps(dict(counts), sort_keys=True) + "\n")
        return
    table = Table(title="store summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def feeds(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE, "--tolerance", min=1.0, help="Stale after interval x this."
    ),
    settle: float = typer.Option(
        DEFAULT_SETTLE.total_seconds(),
        "--settle",
        min=0.0,
        help="Seconds a heartbeat may be ahead of the records it vouches for.",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines instead of a table."),
) -> None:
    """Each producer's feed: its newest heartbeat, whether it is overdue, and whether every record
    it vouches for is held (exit status 1 if a feed is stale or records are missing).

    A feed is stale when its newest heartbeat (broker time) is older than its promised interval x
    the tolerance: the producer stopped, or something between it and this store withholds it.
    Records are missing when a heartbeat (older than ``--settle``) vouches for sequence numbers of
    a stream this store reads that it does not hold: withheld or deleted while heartbeats flow.
    """
    with _opened(store, config) as s:
        try:
            now = datetime.now(UTC)
            beats = s.feeds()
            health = assess(beats, now, tolerance)
            missing = missing_records(beats, s.load_chain(), now, timedelta(seconds=settle))
        except IntelbusError as e:
            raise _fail(str(e)) from None
    if as_json:
        for h in health:
            line = {
                "producer": h.producer_id,
                "topic": h.topic,
                "last_heartbeat_at": h.last_heartbeat_at.isoformat(),
                "interval_s": h.interval.total_seconds(),
                "silent_s": round(h.silent_for.total_seconds(), 1),
                "stale": h.stale,
            }
            sys.stdout.write(json.dumps(line) + "\n")
        for m in missing:
            line = {
                "missing": True,
                "producer": m.producer_id,
                "topic": m.topic,
                "partition": m.partition,
                "epoch": m.epoch,
                "first_sequence": m.first,
                "last_sequence": m.last,
                "count": m.count,
                "vouched_at": m.vouched_at.isoformat(),
            }
            sys.stdout.write(json.dumps(line) + "\n")
    else:
        table = Table(title="feeds")
        for col in ("producer", "topic", "last heartbeat (broker time)", "interval", "silent"):
            table.add_column(col)
        table.add_column("state")
        for h in health:
            table.add_row(
                h.producer_id,
                h.topic,
                h.last_heartbeat_at.isoformat(timespec="seconds"),
                f"{h.interval.total_seconds():.0f}s",
                f"{h.silent_for.total_seconds():.0f}s",
                "[bold red]STALE[/]" if h.stale else "ok",
            )
        console.print(table)
        if not health:
            console.print("no heartbeat seen yet")
        for m in missing:
            console.print(f"[bold red]MISSING[/] {m.describe()}", highlight=False)
    if any(h.stale for h in health) or missing:
        raise typer.Exit(1)


@app.command("access-log")
def access_log(
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    user: str | None = typer.Option(None, "--user", help="Only this user's entries."),
    record_id: str | None = typer.Option(None, "--record", help="Only entries naming this id."),
    since: str | None = typer.Option(None, "--since", help="Entries at or after this time."),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines instead of a table."),
    verify: bool = typer.Option(
        False, "--verify", help="Check the whole chain (exit 1 if broken)."
    ),
    expect: str | None = typer.Option(
        None, "--expect", help="COUNT:HASH written down earlier: nothing may be cut from the tail."
    ),
    head: bool = typer.Option(False, "--head", help="Print COUNT:HASH to keep somewhere else."),
) -> None:
    """Review or verify the store's access log: who read or disclosed which records, when, why.

    The log holds ids, never record contents, so reviewing it is not itself logged. --head
    prints COUNT:HASH: keep it outside this machine (someone who can write the database could
    rewrite the whole chain; only a head kept elsewhere shows it), and check later with
    --verify --expect COUNT:HASH.
    """
    since_t = parse_time(since, "--since")
    expected = None
    if expect is not None:
        try:
            expected = parse_head(expect)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--expect") from None
    with _opened(store, config) as s:
        book = AccessLog(s)
        try:
            if head:
                count, digest = book.head()
                sys.stdout.write(f"{count}:{digest.hex()}\n")
                return
            if verify or expected is not None:
                result = book.verify(expected)
            else:
                access.show_entries(
                    book.entries(user=user, record_id=record_id, since=since_t), as_json=as_json
                )
                return
        except AccessLogError as e:
            raise _fail(str(e), 3) from None
    if not result.ok:
        raise _fail(
            f"access log broken at entry {result.broken_seq}: {result.problem} ({result.detail}); "
            f"{result.count} entries before it are intact",
            1,
        )
    # Plain text, never wrapped: the head is copied from here.
    sys.stdout.write(f"access log intact: {result.count} entries, head {result.head.hex()}\n")


class SubjectFormat(StrEnum):
    """Subject access export formats."""

    JSON = "json"
    CSV = "csv"


@app.command()
def subject(
    name: list[str] = typer.Option([], "--name", help="A person's name or description."),
    vehicle: list[str] = typer.Option([], "--vehicle", help="A vehicle registration."),
    text: list[str] = typer.Option([], "--text", help="Any text, e.g. a reference."),
    store: str | None = typer.Option(None, "--store", help=_STORE_HELP),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    user: str | None = _USER,
    justification: str | None = typer.Option(
        None, "--justification", help="Why (required, logged): e.g. the request's reference."
    ),
    to: str | None = typer.Option(None, "--to", help="To whom it is disclosed (logged)."),
    out: Path = typer.Option(Path("-"), "--out", help="Output file (0600); - for stdout."),
    fmt: SubjectFormat = typer.Option(SubjectFormat.JSON, "--format", help="json or csv."),
) -> None:
    """Subject access: every stored record about a person or a vehicle, with redactions applied.

    Matches values in the fields that hold people, vehicles and references (names, descriptions,
    addresses, registrations with case, spaces and hyphens ignored, reporter and crime
    references), never field names or redacted values; several criteria are alternatives. The
    disclosure is logged (ids, justification, recipient; digests of the criteria, never the text).
    """
    try:
        queries = [
            SubjectQuery(criterion, value)
            for criterion, values in (
                (Criterion.NAME, name),
                (Criterion.VEHICLE, vehicle),
                (Criterion.TEXT, text),
            )
            for value in values
        ]
    except ValueError as e:
        raise _fail(str(e)) from None
    if not queries:
        raise _fail("name the subject with --name, --vehicle or --text")
    who = access.require_user(user)
    why = access.check_justification(justification)
    if why is None:
        raise _fail("a subject access search needs --justification TEXT (it is logged)")
    recipient = access.check_recipient(to, required=False)
    with _opened(store, config) as s:
        try:
            # Matched on what may be disclosed (redactions applied), in every version held.
            found = [
                v
                for v in map(_redacted, s.iter_records())
                if any(
                    about_subject(p, queries) for p in (v.payload, *(h.payload for h in v.history))
                )
            ]
        except IntelbusError as e:
            raise _fail(str(e)) from None
        # Digests of what was asked, never the names or registrations themselves.
        criteria = [{"criterion": q.criterion.value, **text_digest(q.value)} for q in queries]
        query = {"criteria": criteria, "format": fmt.value}
        access.record(
            s, access.new_entry(who, "subject", access.refs(found), query, why, recipient)
        )
    try:
        if str(out) == "-":
            n = _write_subject(fmt, found, sys.stdout)
        else:
            n = write_export_file(out, lambda fh: _write_subject(fmt, found, fh))
    except OSError as e:
        raise _fail(f"cannot write {out}: {e.strerror}") from None
    err.print(
        f"{n} record(s) about the subject" + ("" if str(out) == "-" else f" written to {out}")
    )


def _redacted(v: StoredRecordView) -> StoredRecordView:
    """The record with every redacted field shown as redacted, in each version (a second check:
    stored payloads are already redacted by the policy)."""
    paths = v.redacted_fields
    return dataclasses.replace(
        v,
        payload=None if v.payload is None else enforce_redactions(v.payload, paths),
        history=tuple(
            dataclasses.replace(
                h, payload=None if h.payload is None else enforce_redactions(h.payload, paths)
            )
            for h in v.history
        ),
    )


def _write_subject(fmt: SubjectFormat, views: list[StoredRecordView], fh: IO[str]) -> int:
    if fmt is SubjectFormat.CSV:
        return write_csv(views, fh)
    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "count": len(views),
        "records": [record_dict(v) for v in views],
    }
    fh.write(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    return len(views)

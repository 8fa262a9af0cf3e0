"""``intelbus publish ...`` and ``intelbus heartbeat``: a producer's commands.

``publish sighting|incident|correction|retraction|erasure FILE`` reads JSON, JSON Lines, CSV, a STIX
2.1 bundle (``--format stix``) or MISP event JSON (``--format misp``; docs/interop.md) (a file, or
``-`` for stdin; docs/inputs.md), makes what people type canonical, validates each item with the
models (every problem of an item at once), publishes it, and prints what the broker acknowledged
(record id, topic, partition, offset) or why not, item by item. It can be run again on the same
file: records already published are reported as such. ``publish pending|retry|abandon`` show and
settle what an earlier run left unacknowledged; ``publish template KIND`` writes a documented
example file. ``heartbeat`` publishes the signed heartbeats that let consumers notice a frozen feed.

Exit codes (intelbus.cli.exits): 0 every item published (or already); 1 some item refused or
invalid; 2 usage (no items, an unknown format); 3 the broker cannot be reached or a topic is missing
(the line says what to run).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from intelbus.errors import (
    ConfigError,
    IntelbusError,
    KafkaUnavailableError,
    NoRecipients,
    PublishError,
    PublishPending,
    PublishRefused,
)
from intelbus.kinds import Family
from producers.config import ProducerConfig
from producers.inputs import (
    MAX_SKEW,  # noqa: F401 - it lives with check_record now; still importable from here
    TOO_DEEP,
    InputInvalid,
    check_record,
    detect_format,
    read_items,
)
from producers.publisher import Publisher
from producers.templates import template_text

app = typer.Typer(
    help="Publish records from a file, and see or settle what an earlier run left pending.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_CONFIG = typer.Option(..., "--config", help="The producer's config file.")


def _items(source: str, fmt: str | None, kind: str | None = None) -> tuple[list[Any], str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    chosen = fmt or detect_format(source)
    if chosen not in ("json", "jsonl", "csv", "stix", "misp"):
        raise ConfigError(f"unknown --format {chosen!r}: use json, jsonl, csv, stix or misp")
    items = list(read_items(text, chosen, kind))
    if not items:
        where = "stdin" if source == "-" else source
        raise ConfigError(
            f"no records in {where}: `intelbus publish template KIND` writes an example"
        )
    return items, chosen


def _publish(  # noqa: PLR0912, PLR0915 - one branch per outcome, each printed
    kind: str,
    source: str,
    config: Path,
    fmt: str | None,
    to: list[str],
    family: Family | None,
    as_json: bool,
) -> None:
    items, _ = _items(source, fmt, kind)
    publisher = Publisher.from_config(ProducerConfig.load(config))
    counts = {"published": 0, "already": 0, "failed": 0}
    stopped: IntelbusError | None = None
    try:
        publisher.preflight()
        if len(items) > 5 and not as_json:
            err.print(f"publishing {len(items)} record(s) from {source}", highlight=False)
        for n, item in enumerate(items, 1):
            outcome: dict[str, object] = {"item": item.where}
            try:
                if item.data is None:
                    raise ValueError(item.error or "unreadable")
                try:
                    checked = check_record(kind, item.data, datetime.now(UTC))
                except InputInvalid as e:
                    if e.record_id is not None:
                        outcome["record_id"] = e.record_id
                    if e.generated:
                        outcome["record_id_generated"] = True
                    raise
                outcome["record_id"] = checked.record_id
                if checked.generated:
                    outcome["record_id_generated"] = True
                record = checked.record
                p = publisher.publish(record, named=to, family=family)
                outcome.update(
                    status="already published" if p.already else "published",
                    topic=p.topic,
                    partition=p.partition,
                    offset=p.offset,
                    sequence=p.sequence,
                    recipients=list(p.recipients),
                )
                counts["already" if p.already else "published"] += 1
            except (ValueError, NoRecipients, PublishRefused, PublishPending) as e:
                outcome.update(status="not published", error=str(e))
                counts["failed"] += 1
            except RecursionError:
                # An item nested deeper than the models (or a deep copy) can walk: refused in one
                # line, never a traceback.
                outcome.update(status="not published", error=TOO_DEEP)
                counts["failed"] += 1
            except (PublishError, KafkaUnavailableError) as e:
                outcome.update(status="failed", error=str(e))
                counts["failed"] += 1
                stopped = e
            _print(outcome, as_json)
            if stopped is not None:
                left = len(items) - n
                if left:
                    err.print(f"{left} later record(s) not attempted", highlight=False)
                break
            if not as_json and len(items) > 5 and n % 100 == 0:
                err.print(f"{n}/{len(items)}", highlight=False)
    finally:
        publisher.close()
    if as_json:
        typer.echo(json.dumps({"summary": counts}))
    else:
        console.print(
            f"{counts['published']} published, {counts['already']} already published, "
            f"{counts['failed']} not published",
            highlight=False,
        )
    if stopped is not None:
        err.print(
            f"error: the broker did not acknowledge: {stopped}; what was reserved stays pending "
            "(`intelbus publish pending`, then `intelbus publish retry`)",
            highlight=False,
        )
        raise typer.Exit(3)
    if counts["failed"]:
        raise typer.Exit(1)


def _shown(value: object) -> str:
    """``value`` as one line of plain text: where an item came from and why it was refused can
    quote the input (a STIX object id, a MISP tag), which another agency's file controls; a
    newline or an escape sequence there could print a forged "published" line."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(value))


def _print(outcome: dict[str, object], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(outcome))
        return
    status = outcome["status"]
    # markup=False: text from the input is never read as rich markup ("[bold]", "[link=...]").
    if status in ("published", "already published"):
        made = " (id generated)" if outcome.get("record_id_generated") else ""
        console.print(
            f"{_shown(outcome['item'])}: {status} {outcome['record_id']}{made} to "
            f"{outcome['topic']} [{outcome['partition']}:{outcome['offset']}] "
            f"seq {outcome['sequence']}",
            highlight=False,
            markup=False,
        )
    else:
        console.print(
            f"{_shown(outcome['item'])}: {status}: {_shown(outcome['error'])}",
            highlight=False,
            markup=False,
        )


def _command(kind: str) -> Callable[..., None]:
    def command(
        source: str = typer.Argument(
            "-",
            help="A .json, .jsonl or .csv file (or STIX or MISP with --format), or - for stdin.",
        ),
        config: Path = _CONFIG,
        fmt: str | None = typer.Option(
            None,
            "--format",
            help="json, jsonl, csv, stix (a STIX 2.1 bundle) or misp (MISP event JSON); "
            "default: from the file name.",
        ),
        to: list[str] = typer.Option(
            [], "--to", help="A named recipient (required for AMBER+STRICT and RED; repeat)."
        ),
        family: Family | None = typer.Option(
            None, "--family", help="For retractions and erasures: sightings or incidents."
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    ) -> None:
        _publish(kind, source, config, fmt, to, family, as_json)

    command.__doc__ = (
        f"Publish {kind}s from a file (docs/inputs.md): one line per item, published or why not."
    )
    return command


for _kind in ("sighting", "incident", "correction", "retraction", "erasure"):
    app.command(name=_kind)(_command(_kind))


@app.command(name="template")
def template(
    kind: str = typer.Argument(..., help="sighting, incident, correction, retraction or erasure"),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
) -> None:
    """Print a documented example file for KIND (redirect it to a file and edit it)."""
    typer.echo(template_text(kind, fmt), nl=False)


def _open(config: Path) -> Publisher:
    return Publisher.from_config(ProducerConfig.load(config))


@app.command(name="pending")
def pending(
    config: Path = _CONFIG,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """What earlier runs reserved and the broker never acknowledged, with the last reason."""
    publisher = _open(config)
    try:
        rows = publisher.state.unsettled()
    finally:
        publisher.close()
    for r in rows:
        line = {
            "record_id": r.record_id,
            "topic": r.stream,
            "sequence": r.sequence,
            "reserved_at": r.reserved_at,
            "reason": r.last_error or "not acknowledged",
        }
        if as_json:
            typer.echo(json.dumps(line))
        else:
            console.print(
                f"{r.record_id} {r.stream} seq {r.sequence} reserved {r.reserved_at}: "
                f"{line['reason']}",
                highlight=False,
            )
    if not as_json:
        console.print(f"{len(rows)} pending", highlight=False)


@app.command(name="retry")
def retry(config: Path = _CONFIG) -> None:
    """Send again, byte for byte, every pending record (exit 3 if the broker still does not
    acknowledge them)."""
    publisher = _open(config)
    try:
        sent = publisher.resend_pending()
    finally:
        publisher.close()
    console.print(f"{sent} pending record(s) sent and acknowledged", highlight=False)


@app.command(name="abandon")
def abandon(
    record_ids: list[str] = typer.Argument(..., help="Record ids from `intelbus publish pending`."),
    config: Path = _CONFIG,
) -> None:
    """Give up pending records: never resent, their ids spent; consumers report a gap where each
    was (the honest trace of a send that may or may not have reached the broker)."""
    publisher = _open(config)
    missing: list[str] = []
    try:
        for rid in record_ids:
            if publisher.state.abandon(rid):
                console.print(f"{rid}: abandoned", highlight=False)
            else:
                missing.append(rid)
    finally:
        publisher.close()
    if missing:
        raise ConfigError(f"not pending: {', '.join(missing)} (see `intelbus publish pending`)")


@app.command(name="resync")
def resync(config: Path = _CONFIG) -> None:
    """After a lost state file (or a second one for the same agency): set this state's streams
    to where the topics say they stand, from this agency's verified records there."""
    publisher = _open(config)
    try:
        moved = publisher.resync()
    finally:
        publisher.close()
    for h in moved:
        console.print(
            f"{h.stream}: now at sequence {h.last_sequence} on partition {h.partition}",
            highlight=False,
        )
    console.print(f"{len(moved)} stream(s) resynchronised", highlight=False)


def heartbeat(
    config: Path = typer.Option(..., "--config", help="The producer's config file."),
    interval: float = typer.Option(
        30.0,
        "--interval",
        min=1.0,
        max=7 * 24 * 3600.0,
        help="Seconds between heartbeats: the promise consumers judge.",
    ),
    once: bool = typer.Option(False, "--once", help="Publish one heartbeat and exit (cron)."),
) -> None:
    """Publish signed heartbeats, so consumers can tell a quiet producer from a withheld feed.

    Runs until stopped (SIGTERM or Ctrl-C) unless ``--once``. A heartbeat that cannot be published
    is reported and tried again at the next tick; with ``--once`` the exit status is 3.
    """
    publisher = Publisher.from_config(ProducerConfig.load(config))
    publisher.preflight((Family.HEARTBEATS,))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while True:
            try:
                p = publisher.heartbeat(interval)
            except (PublishError, IntelbusError) as e:
                err.print(f"heartbeat not published: {e}", highlight=False)
                if once:
                    raise typer.Exit(3) from None
            else:
                console.print(
                    f"heartbeat {p.record_id} to {p.topic} [{p.partition}:{p.offset}] "
                    f"seq {p.sequence}, next within {interval:g}s",
                    highlight=False,
                )
            if once or stop.wait(interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        publisher.close()

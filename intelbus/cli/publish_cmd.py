"""``intelbus publish sighting|incident|correction|retraction`` and ``intelbus heartbeat``: a
producer's commands.

``publish`` reads JSON, JSON Lines or CSV (a file or ``-`` for stdin), validates each item with the models,
publishes it, and prints what the broker acknowledged (record id, topic, partition, offset) or a
clear per-item error, without stopping the batch. Exit 0 only if every item was published.
``heartbeat`` publishes the signed heartbeats that let consumers notice a frozen feed.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from intelbus.errors import IntelbusError, NoRecipients, PublishError
from intelbus.kinds import Family
from intelbus.records import KIND_TYPES
from producers.config import ProducerConfig
from producers.inputs import detect_format, read_items
from producers.publisher import build_publisher

console = Console()
err = Console(stderr=True)


def publish(  # noqa: PLR0912 - one branch per outcome, each printed
    kind: str = typer.Argument(..., help="sighting, incident, correction or retraction"),
    source: str = typer.Argument("-", help="A .json, .jsonl or .csv file, or - for stdin."),
    config: Path = typer.Option(..., "--config", help="The producer's config file."),
    fmt: str | None = typer.Option(
        None, "--format", help="json, jsonl or csv (default: from the file name)."
    ),
    to: list[str] = typer.Option(
        [], "--to", help="A named recipient (required for AMBER+STRICT and RED; repeat)."
    ),
    family: Family | None = typer.Option(
        None, "--family", help="For retractions: sightings or incidents."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Validate and publish records; one line per item (published or why not)."""
    if kind not in KIND_TYPES:
        err.print(f"[bold red]error:[/] unknown kind {kind!r}")
        raise typer.Exit(2)
    model = KIND_TYPES[kind]
    try:
        cfg = ProducerConfig.load(config)
        publisher = build_publisher(cfg)
    except IntelbusError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    fmt = fmt or detect_format(source)
    ok = failed = 0
    try:
        resent = publisher.resend_pending()
        if resent:
            err.print(f"resent {resent} record(s) left unacknowledged by an earlier run")
        for item in read_items(text, fmt):
            outcome: dict[str, object] = {"item": item.where}
            try:
                if item.data is None:
                    raise ValueError(item.error or "unreadable")
                record = model.model_validate(item.data)
                p = publisher.publish(record, named=to, family=family)
                outcome.update(
                    status="published",
                    record_id=p.record_id,
                    topic=p.topic,
                    partition=p.partition,
                    offset=p.offset,
                    sequence=p.sequence,
                    recipients=list(p.recipients),
                )
                ok += 1
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:5]
                )
                outcome.update(status="invalid", error=problems)
                failed += 1
            except (NoRecipients, ValueError) as e:
                outcome.update(status="not published", error=str(e))
                failed += 1
            except (PublishError, IntelbusError) as e:
                outcome.update(status="failed", error=str(e))
                failed += 1
            if as_json:
                typer.echo(json.dumps(outcome))
            elif outcome["status"] == "published":
                console.print(
                    f"{item.where}: published {outcome['record_id']} to {outcome['topic']} "
                    f"[{outcome['partition']}:{outcome['offset']}] seq {outcome['sequence']}",
                    highlight=False,
                )
            else:
                console.print(
                    f"[red]{item.where}: {outcome['status']}:[/] {outcome['error']}",
                    highlight=False,
                )
    finally:
        publisher.close()
    if not as_json:
        console.print(f"{ok} published, {failed} not published")
    if failed:
        raise typer.Exit(1)


def heartbeat(
    config: Path = typer.Option(..., "--config", help="The producer's config file."),
    interval: float = typer.Option(
        30.0, "--interval", min=1.0, help="Seconds between heartbeats: the promise consumers judge."
    ),
    once: bool = typer.Option(False, "--once", help="Publish one heartbeat and exit (cron)."),
) -> None:
    """Publish signed heartbeats, so consumers can tell a quiet producer from a withheld feed.

    Runs until stopped (SIGTERM or Ctrl-C) unless ``--once``. A heartbeat that cannot be published
    is reported and tried again at the next tick; with ``--once`` the exit status is 1.
    """
    try:
        publisher = build_publisher(ProducerConfig.load(config))
    except IntelbusError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while True:
            try:
                p = publisher.heartbeat(interval)
            except (PublishError, IntelbusError) as e:
                err.print(f"[red]heartbeat not published:[/] {e}", highlight=False)
                if once:
                    raise typer.Exit(1) from None
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

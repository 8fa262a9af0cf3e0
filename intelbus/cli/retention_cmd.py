"""``intelbus store prune|tombstones``: retention, and what stays of erased and pruned records.

``prune`` applies the ``[retention]`` section of the consumer's sharing policy (issue 16;
docs/data-protection.md, "Retention") to its store: every payload past its limit goes, leaving a
tombstone. It writes, so it opens the store as its agency's writer: on SQLite, while that agency's
consumer holds the store it prunes on its own schedule (``prune_every_s``) and this command is
refused; on PostgreSQL both take the same record locks.
``tombstones`` lists what stays of erased and pruned records (ids, digests, dates, why; no
contents, so reading it is not a consultation of records).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from consumers.config import ConsumerConfig
from consumers.retention import PruneResult
from consumers.retention import prune as run_prune
from intelbus.cli.store_cmd import parse_time, resolve_store
from intelbus.policy.rules import SharingPolicy
from intelbus.store import open_store

console = Console()
err = Console(stderr=True, soft_wrap=True)


def prune(
    config: Path = typer.Option(
        ..., "--config", help="The consumer config: its policy's [retention] and its store."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Judge retention at this ISO 8601 time (default: now)."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Say what would be pruned and what is due for review; change nothing.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Remove every payload past its retention limit, keeping a tombstone; list records due for
    review. On SQLite, refused while the agency's consumer holds the store (it prunes on its own
    schedule)."""
    cfg = ConsumerConfig.load(config)
    policy = SharingPolicy.load(cfg.policy)
    now = parse_time(as_of, "--as-of") or datetime.now(UTC)
    location = resolve_store(cfg.store, None)
    # As the agency's writer: the store's owner is checked and its writer lock taken.
    store = open_store(location, owner=None if dry_run else cfg.agency)
    try:
        result = run_prune(store, policy, now, dry_run=dry_run)
    finally:
        store.close()
    _show(result, dry_run=dry_run, as_json=as_json)


def _show(result: PruneResult, *, dry_run: bool, as_json: bool) -> None:
    review = [
        {
            "producer_id": d.candidate.producer_id,
            "record_id": d.candidate.record_id,
            "rule_id": d.decision.rule_id,
            "review_at": d.decision.review_at.isoformat(),
            "keep_until": d.decision.keep_until.isoformat(),
        }
        for d in result.review_due
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "as_of": result.as_of.isoformat(),
                    "checked": result.checked,
                    "expired": len(result.expired),
                    "pruned": result.pruned,
                    "dry_run": dry_run,
                    "review_due": review,
                }
            )
        )
        return
    did = "would prune" if dry_run else "pruned"
    count = len(result.expired) if dry_run else result.pruned
    console.print(
        f"{result.checked} record(s) checked at {result.as_of.isoformat()}: {did} {count} past "
        f"their retention limit; {len(review)} due for review",
        highlight=False,
    )
    if review:
        table = Table(title="due for review (confirm each is still needed, or let it go)")
        for col in ("record", "producer", "rule", "review date", "limit"):
            table.add_column(col)
        for r in review:
            table.add_row(
                r["record_id"], r["producer_id"], r["rule_id"], r["review_at"], r["keep_until"]
            )
        console.print(table)


def _plain(value: object) -> object:
    """A tombstone field as JSON holds it: times in ISO 8601, digests in hex."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def tombstones(
    store: str | None = typer.Option(
        None, "--store", help="A SQLite path or postgresql:// URL (else --config)."
    ),
    config: Path | None = typer.Option(None, "--config", help="A consumer config file."),
    reason: str | None = typer.Option(None, "--reason", help="erasure or retention."),
    limit: int = typer.Option(1000, "--limit", min=1, max=1_000_000),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """What stays of erased and pruned records: ids, place on the topic, digest, dates, why."""
    if reason not in (None, "erasure", "retention"):
        raise typer.BadParameter("erasure or retention", param_hint="--reason")
    handle = open_store(resolve_store(store, config))
    try:
        rows = handle.tombstones(reason=reason, limit=limit)
    finally:
        handle.close()
    if as_json:
        for t in rows:
            typer.echo(json.dumps({k: _plain(v) for k, v in asdict(t).items()}))
        return
    table = Table(title=f"{len(rows)} tombstone(s)")
    for col in ("record", "producer", "kind", "where", "why", "since", "digest"):
        table.add_column(col)
    for t in rows:
        why = f"erased ({t.legal_basis})" if t.reason == "erasure" else f"retention {t.rule_id}"
        table.add_row(
            t.record_id,
            t.producer_id,
            t.kind,
            f"{t.topic}[{t.partition}:{t.offset}] seq {t.sequence}",
            why,
            t.tombstoned_at.isoformat(timespec="seconds"),
            t.digest.hex()[:16],
        )
    console.print(table)

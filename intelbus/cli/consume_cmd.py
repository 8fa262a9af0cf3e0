"""``intelbus consume --agency ID --config FILE``: an agency's consumer, until stopped or idle.

Exit codes: 0 stopped or idle; 2 an unusable configuration (key, directory, policy, store);
3 the environment refused (an expired directory, a bus topic that is not LogAppendTime, a broker
or store that failed), or what the consumer was given is not its own to use (an
:class:`~intelbus.errors.OwnershipError`: a store of another agency or held by another writer, a
key that is not the agency's current one, a policy changed into one that does not load).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from consumers.agency import AgencyConsumer, Stats
from consumers.config import ConsumerConfig
from intelbus.errors import DirectoryError, InfraError, IntelbusError, OwnershipError

console = Console()
err = Console(stderr=True, soft_wrap=True)


def stats_table(title: str, stats: Stats) -> Table:
    """The progress/summary table."""
    table = Table(title=title)
    for col in (
        "received",
        "stored",
        "redacted",
        "withheld",
        "not addressed",
        "shredded",
        "amendments",
        "erased",
        "quarantined",
        "gaps",
    ):
        table.add_column(col, justify="right")
    quarantined = sum(stats.quarantined.values())
    table.add_row(
        str(stats.received),
        str(stats.stored),
        str(stats.redacted),
        str(stats.withheld),
        str(stats.not_addressed),
        str(stats.shredded),
        str(stats.amendments),
        str(stats.erased),
        str(quarantined),
        str(stats.gaps),
    )
    return table


def consume(
    agency: str = typer.Option(..., "--agency", help="This agency's id (must match the config)."),
    config: Path = typer.Option(..., "--config", help="The consumer's config file."),
    until_idle: bool = typer.Option(
        False, "--until-idle", help="Stop when no record arrives for a few seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="The final counts as one JSON object."),
) -> None:
    """Verify, decrypt, apply the sharing policy and store, until stopped (Ctrl-C) or idle."""
    try:
        cfg = ConsumerConfig.load(config)
        if cfg.agency != agency:
            raise IntelbusError(f"{config} is {cfg.agency}'s config, not {agency}'s")
        secret = os.environ.get(cfg.passphrase_env) if cfg.passphrase_env else None
        passphrase = secret.encode() if secret else None
        consumer = AgencyConsumer.from_config(cfg, passphrase)
    except OwnershipError as e:
        # Another agency's store, or one another consumer writes: refused, nothing written.
        err.print(f"[bold red]error:[/] {escape(f'[{e.code}] {e}')}", highlight=False)
        raise typer.Exit(3) from None
    except IntelbusError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    title = f"{agency}: consuming"
    try:
        if sys.stderr.isatty():
            with Live(
                stats_table(title, consumer.stats), console=err, refresh_per_second=4
            ) as live:
                stats = consumer.run(
                    until_idle=until_idle, on_batch=lambda s: live.update(stats_table(title, s))
                )
        else:
            stats = consumer.run(until_idle=until_idle)
    except KeyboardInterrupt:
        stats = consumer.stats
    except OwnershipError as e:
        # A key that is not the agency's current one, a lost writer lock, a policy that no
        # longer loads: one line, nothing committed past what was judged.
        err.print(f"[bold red]error:[/] {escape(f'[{e.code}] {e}')}", highlight=False)
        raise typer.Exit(3) from None
    except (DirectoryError, InfraError) as e:
        # An expired directory, a misconfigured topic, an unreachable broker or store: one line,
        # nothing committed past what was judged.
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(3) from None
    finally:
        consumer.store.close()
    if as_json:
        counts = {
            f.name: getattr(stats, f.name)
            for f in dataclasses.fields(stats)
            if isinstance(getattr(stats, f.name), int)
        }
        typer.echo(
            json.dumps(
                {"agency": agency, **counts, "quarantined": dict(sorted(stats.quarantined.items()))}
            )
        )
        return
    console.print(stats_table(f"{agency}: done", stats))
    for reason, count in sorted(stats.quarantined.items()):
        console.print(f"  quarantined {count} x {reason}")

"""``intelbus consume --agency ID --config FILE``: an agency's consumer, until stopped or idle."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumers.agency import AgencyConsumer, Stats
from consumers.config import ConsumerConfig
from consumers.pipeline import Pipeline
from intelbus.chain import ChainState
from intelbus.directory import store as dstore
from intelbus.errors import IntelbusError
from intelbus.identity import AgencyIdentity
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.registry import SchemaRegistry
from intelbus.store import open_store
from intelbus.transport.topics import topic_name

console = Console()
err = Console(stderr=True)


def build_consumer(config: ConsumerConfig, passphrase: bytes | None = None) -> AgencyConsumer:
    """An agency consumer wired from its config (keys, directory, policy, store, broker).

    Raises:
        IntelbusError: any part of the configuration is unusable.
    """
    identity = AgencyIdentity.load(config.key_file, passphrase=passphrase)
    if identity.agency_id != config.agency:
        raise IntelbusError(
            f"the key file is {identity.agency_id}'s, the config is for {config.agency}"
        )
    history = dstore.load_folder(config.directory)
    policy = SharingPolicy.load(config.policy)
    registry = SchemaRegistry.load()

    def factory(
        producer_of: Callable[[str], str | None], chain: dict[tuple[str, str], ChainState]
    ) -> Pipeline:
        return Pipeline(
            identity=identity,
            directory=history,
            registry=registry,
            policy=policy,
            environment=config.environment,
            chain=chain,
            producer_of=producer_of,
        )

    return AgencyConsumer(
        pipeline_factory=factory,
        store=open_store(config.store),
        bootstrap_servers=config.bootstrap(),
        security=config.transport_security(),
        group_id=config.group,
        topics=[topic_name(f, prefix=config.topic_prefix) for f in config.families],
        batch_size=config.batch_size,
    )


def stats_table(title: str, stats: Stats) -> Table:
    """The progress/summary table."""
    table = Table(title=title)
    for col in (
        "received",
        "stored",
        "redacted",
        "withheld",
        "not addressed",
        "amendments",
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
        str(stats.amendments),
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
) -> None:
    """Verify, decrypt, apply the sharing policy and store, until stopped (Ctrl-C) or idle."""
    try:
        cfg = ConsumerConfig.load(config)
        if cfg.agency != agency:
            raise IntelbusError(f"{config} is {cfg.agency}'s config, not {agency}'s")
        secret = os.environ.get(cfg.passphrase_env) if cfg.passphrase_env else None
        passphrase = secret.encode() if secret else None
        consumer = build_consumer(cfg, passphrase)
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
    finally:
        consumer.store.close()
    console.print(stats_table(f"{agency}: done", stats))
    for reason, count in sorted(stats.quarantined.items()):
        console.print(f"  quarantined {count} x {reason}")

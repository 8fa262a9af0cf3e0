"""``intelbus topics create|show|check``: the bus topics, made and kept as auditors rely on them.

A new cluster has no topics, and a broker started by ``intelbus kafka up`` creates none on its own
(auto-creation would give a topic the broker's defaults: CreateTime, finite retention, compressed
batches, none of which the trust model accepts). ``create`` makes every bus topic of a prefix
(one per record family, and every topic a producer of the directory publishes to) with the
settings of :func:`intelbus.transport.topics.bus_topics`; ``check`` reports drift from them
(exit 1); ``show`` prints what the cluster has. All three work on a plaintext or a secured
cluster (the operator's certificate through ``INTELBUS_TLS_*``, or a config file's ``[tls]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from intelbus.directory import store as dstore
from intelbus.errors import ConfigError
from intelbus.kinds import Family
from intelbus.tomlfile import read_toml
from intelbus.transport import kafka as transport
from intelbus.transport.security import SecurityMode, TlsConfig, TransportSecurity
from intelbus.transport.topics import (
    DEFAULT_PREFIX,
    TopicSpec,
    audit_topic_config,
    bus_topics,
    drift,
)

app = typer.Typer(help="Create, show and check the bus topics.", no_args_is_help=True)
console = Console(soft_wrap=True)

_BOOTSTRAP = typer.Option(
    None,
    "--bootstrap-server",
    "--bootstrap-servers",
    help="Kafka brokers, host:port[,host:port] (or KAFKA_BOOTSTRAP_SERVERS, or --config).",
)
_PREFIX = typer.Option(None, "--prefix", help="Topic prefix (default intelbus).")
_CONFIG = typer.Option(None, "--config", help="Any agency's config file.")
_JSON = typer.Option(False, "--json", help="One JSON object per topic.")


class _Target:
    """Where and which: brokers, security, prefix (flags over a config file over defaults)."""

    def __init__(self, bootstrap: str | None, prefix: str | None, config: Path | None) -> None:
        raw = read_toml(config, "config") if config is not None else {}
        found = (
            bootstrap or raw.get("bootstrap_servers") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        )
        if not isinstance(found, str) or not found:
            raise ConfigError(
                "no brokers: give --bootstrap-server, a --config with bootstrap_servers, or set "
                "KAFKA_BOOTSTRAP_SERVERS"
            )
        self.bootstrap = found
        chosen = prefix or raw.get("topic_prefix") or DEFAULT_PREFIX
        if not isinstance(chosen, str):
            raise ConfigError("topic_prefix must be text")
        self.prefix = chosen
        tls = raw.get("tls")
        if isinstance(tls, dict) and config is not None:
            tls = {
                k: str(config.parent / v) if k.endswith("_file") and isinstance(v, str) else v
                for k, v in tls.items()
            }
        try:
            mode = SecurityMode(str(raw.get("security", SecurityMode.OPTIONAL.value)))
            tls_config = TlsConfig.model_validate(tls) if isinstance(tls, dict) else None
        except ValueError as e:
            raise ConfigError(f"config {config}: {e}") from None
        self.security = TransportSecurity.build(mode=mode, tls=tls_config)


def _specs(
    target: _Target, directory: Path | None, partitions: int, replication: int
) -> list[TopicSpec]:
    specs = bus_topics(prefix=target.prefix, replication_factor=replication, partitions=partitions)
    if directory is not None:
        names = {s.name for s in specs}
        config = audit_topic_config(min_insync_replicas=2 if replication >= 3 else 1)
        for agency in dstore.load_folder(directory).latest.agencies:
            for topic in agency.publish_topics:
                if topic not in names:
                    names.add(topic)
                    specs.append(TopicSpec(topic, partitions, replication, config))
    return specs


def _replication(target: _Target, asked: int | None) -> int:
    if asked is not None:
        return asked
    return min(3, transport.broker_count(target.bootstrap, security=target.security))


def create(
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    config: Path | None = _CONFIG,
    directory: Path | None = typer.Option(
        None, "--directory", help="Also create every topic a producer of the directory uses."
    ),
    partitions: int = typer.Option(3, "--partitions", min=1, max=1000),
    replication: int | None = typer.Option(
        None,
        "--replication-factor",
        min=1,
        max=7,
        help="Default: the number of brokers, at most 3 (then min.insync.replicas is 2).",
    ),
    as_json: bool = _JSON,
) -> None:
    """Create the bus topics that do not exist yet (existing ones are checked, never changed)."""
    target = _Target(bootstrap, prefix, config)
    specs = _specs(target, directory, partitions, _replication(target, replication))
    created = set(transport.create_topics(target.bootstrap, specs, security=target.security))
    _report(target, specs, created=created, as_json=as_json)


def check(
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    config: Path | None = _CONFIG,
    directory: Path | None = typer.Option(
        None, "--directory", help="Also check every topic a producer of the directory uses."
    ),
    partitions: int = typer.Option(3, "--partitions", min=1, max=1000),
    replication: int | None = typer.Option(None, "--replication-factor", min=1, max=7),
    as_json: bool = _JSON,
) -> None:
    """Report drift from the settings the bus needs (exit 1 if any topic drifted or is missing)."""
    target = _Target(bootstrap, prefix, config)
    specs = _specs(target, directory, partitions, _replication(target, replication))
    _report(target, specs, created=None, as_json=as_json)


def show(
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    config: Path | None = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """What the cluster has for each family topic of the prefix (nothing is judged)."""
    target = _Target(bootstrap, prefix, config)
    names = [f"{target.prefix}.{f.value}" for f in Family]
    states = transport.topic_states(target.bootstrap, names, security=target.security)
    rows = []
    for name in names:
        st = states[name]
        rows.append(
            {
                "topic": name,
                "exists": st is not None,
                "partitions": len(st.replicas) if st else 0,
                "replication_factor": min((len(r) for r in st.replicas.values()), default=0)
                if st
                else 0,
                "timestamp_type": st.configs.get("message.timestamp.type") if st else None,
                "retention_ms": st.configs.get("retention.ms") if st else None,
                "compression": st.configs.get("compression.type") if st else None,
            }
        )
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(box=None)
    for col in ("topic", "partitions", "replicas", "timestamp", "retention ms", "compression"):
        table.add_column(col)
    for row in rows:
        if not row["exists"]:
            table.add_row(str(row["topic"]), "-", "-", "missing", "-", "-")
            continue
        table.add_row(
            str(row["topic"]),
            str(row["partitions"]),
            str(row["replication_factor"]),
            str(row["timestamp_type"]),
            str(row["retention_ms"]),
            str(row["compression"]),
        )
    console.print(table)


def _report(
    target: _Target, specs: list[TopicSpec], *, created: set[str] | None, as_json: bool
) -> None:
    states = transport.topic_states(
        target.bootstrap, [s.name for s in specs], security=target.security
    )
    drifted = 0
    for spec in specs:
        problems = drift(spec, states[spec.name])
        drifted += bool(problems)
        state = "created" if created and spec.name in created else "ok"
        if problems:
            state = "drift"
        if as_json:
            typer.echo(json.dumps({"topic": spec.name, "state": state, "problems": problems}))
        else:
            console.print(f"{spec.name}: {state}", highlight=False)
            for p in problems:
                console.print(f"  {p}", highlight=False)
    if drifted:
        if not as_json:
            console.print(
                f"{drifted} topic(s) differ from what the bus needs (docs/operations.md, "
                '"Topics"): fix them with kafka-configs.sh, or recreate them while empty',
                highlight=False,
            )
        raise typer.Exit(1)


app.command(name="create")(create)
app.command(name="check")(check)
app.command(name="show")(show)

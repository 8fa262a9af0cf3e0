"""``intelbus kafka up|down|status|fetch``: a developer's local Kafka under one state directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deploy.kafka.jars import KAFKA_VERSION, ensure_jars
from deploy.kafka.launcher import STATE_FILE, BrokerTls, LocalKafka
from deploy.tls.certs import PRINCIPAL_MAPPING_RULES
from intelbus.errors import ConfigError, KafkaUnavailableError, ToolMissingError
from intelbus.transport.kafka import broker_ids
from intelbus.transport.security import TlsFiles, TransportSecurity

app = typer.Typer(
    help="Run a local Apache Kafka (KRaft) from the cached broker jars.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True, soft_wrap=True)


def default_state_dir() -> Path:
    """``$INTELBUS_STATE_DIR/kafka``, else ``$XDG_STATE_HOME/intelbus/kafka``, else ``~/.local/state/...``."""
    explicit = os.environ.get("INTELBUS_STATE_DIR")
    if explicit:
        return Path(explicit) / "kafka"
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "intelbus" / "kafka"


StateDir = typer.Option(
    None,
    "--state-dir",
    help="The intelbus state folder (as INTELBUS_STATE_DIR): the cluster lives in its kafka/.",
)


def _kafka_dir(state_dir: Path | None) -> Path:
    """One meaning for the state folder, flag or environment: the cluster is in ``<it>/kafka``."""
    return state_dir / "kafka" if state_dir is not None else default_state_dir()


def _fail(message: str, code: int = 3) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def fetch() -> None:
    """Fetch (once) and cache the pinned Kafka broker jars from Maven Central."""
    try:
        libs = ensure_jars()
    except ToolMissingError as e:
        raise _fail(str(e)) from None
    console.print(f"Kafka {KAFKA_VERSION} jars: {libs}")


def _broker_tls(tls_dir: Path) -> BrokerTls:
    """The secured cluster's settings from a folder made by ``intelbus deploy certs``.

    Raises:
        ConfigError: a file the brokers or the operator need is missing.
    """
    needed = {
        "brokers' keystore": tls_dir / "brokers" / "broker.keystore.pem",
        "CA certificate": tls_dir / "ca.pem",
        "operator's certificate": tls_dir / "clients" / "admin.pem",
        "operator's key": tls_dir / "clients" / "admin.key",
    }
    for what, path in needed.items():
        if not path.is_file():
            raise ConfigError(
                f"no {what} at {path}: make the certificates first with `intelbus deploy certs "
                f"--tls-dir {tls_dir} --host 127.0.0.1 --host localhost --directory FOLDER`"
            )
    admin = TransportSecurity(
        tls=TlsFiles(
            needed["CA certificate"], needed["operator's certificate"], needed["operator's key"]
        )
    )
    return BrokerTls(
        keystore_file=needed["brokers' keystore"],
        truststore_file=needed["CA certificate"],
        admin=admin,
        principal_mapping_rules=PRINCIPAL_MAPPING_RULES,
    )


@app.command()
def up(
    state_dir: Path | None = StateDir,
    nodes: int = typer.Option(1, "--nodes", min=1, max=5, help="KRaft nodes (3 for fault tests)."),
    heap_mb: int = typer.Option(512, "--heap-mb", help="JVM heap per node."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="Mutual TLS on every listener and ACLs (no one may do what no ACL allows), with the "
        "certificates of --tls-dir.",
    ),
    tls_dir: Path = typer.Option(
        Path("tls"), "--tls-dir", help="With --secure: the folder `intelbus deploy certs` made."
    ),
) -> None:
    """Start a local cluster (or report the one already running) and print its bootstrap servers.

    With ``--secure`` every listener requires a certificate of the bus's CA, and the broker's
    authorizer denies what no ACL allows: apply the directory's ACLs next (``intelbus deploy
    acls --apply``), as the operator, whose certificate the printed lines select.
    """
    tls = _broker_tls(tls_dir) if secure else None
    sd = _kafka_dir(state_dir)
    if (sd / STATE_FILE).is_file():
        lk = LocalKafka.attach(sd)
        if lk.running_nodes():
            console.print(f"already running: KAFKA_BOOTSTRAP_SERVERS={lk.bootstrap_servers}")
            return
        if lk.node_count != nodes:
            raise _fail(
                f"{sd} holds a {lk.node_count}-node cluster; run `intelbus kafka down --purge` first "
                f"to start a {nodes}-node one"
            )
    lk = LocalKafka(sd, nodes=nodes, heap_mb=heap_mb, tie_to_parent=False, tls=tls)
    try:
        with console.status(f"starting Kafka {KAFKA_VERSION} ({nodes} node(s))..."):
            bootstrap = lk.start()
    except (ToolMissingError, KafkaUnavailableError) as e:
        raise _fail(str(e)) from None
    kind = "secured (mutual TLS, ACLs)" if secure else "plaintext"
    console.print(f"Kafka {KAFKA_VERSION} is up ({nodes} node(s), {kind}); state in {sd}")
    console.print(f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}", highlight=False)
    if tls is not None:
        # The operator's certificate (a super user): for `topics create` and `deploy acls`;
        # each agency's clients use their own certificate instead.
        console.print(
            f"export INTELBUS_TLS_CA={tls_dir / 'ca.pem'} "
            f"INTELBUS_TLS_CERT={tls_dir / 'clients' / 'admin.pem'} "
            f"INTELBUS_TLS_KEY={tls_dir / 'clients' / 'admin.key'}",
            highlight=False,
        )


@app.command()
def status(state_dir: Path | None = StateDir) -> None:
    """Show the local cluster's nodes and whether they answer a metadata request (exit 1 if down)."""
    sd = _kafka_dir(state_dir)
    if not (sd / STATE_FILE).is_file():
        raise _fail(f"no local cluster in {sd} (start one with `intelbus kafka up`)", code=1)
    lk = LocalKafka.attach(sd)
    running = set(lk.running_nodes())
    live: set[int] = set()
    if running:
        try:
            live = broker_ids(lk.bootstrap_servers, timeout_s=5.0)
        except KafkaUnavailableError:
            live = set()
    table = Table(title=f"Kafka {lk.state.kafka_version if lk.state else '?'} in {sd}")
    for col in ("node", "pid", "process", "client port", "broker answers"):
        table.add_column(col)
    assert lk.state is not None  # noqa: S101 - attach() always sets it
    for n in lk.state.nodes:
        table.add_row(
            str(n.node_id),
            str(n.pid or "-"),
            "running" if n.node_id in running else "stopped",
            str(n.client_port),
            "yes" if n.node_id in live else "no",
        )
    console.print(table)
    if not running or not live:
        raise typer.Exit(1)
    console.print(f"KAFKA_BOOTSTRAP_SERVERS={lk.bootstrap_servers}", highlight=False)


@app.command()
def down(
    state_dir: Path | None = StateDir,
    purge: bool = typer.Option(False, "--purge", help="Also delete data and logs."),
) -> None:
    """Stop the local cluster (SIGTERM, then SIGKILL after a grace period)."""
    sd = _kafka_dir(state_dir)
    if not (sd / STATE_FILE).is_file():
        console.print(f"no local cluster in {sd}")
        return
    lk = LocalKafka.attach(sd)
    lk.stop()
    if purge:
        shutil.rmtree(sd)
        console.print(f"stopped and removed {sd}")
    else:
        console.print(f"stopped; data kept in {sd}")

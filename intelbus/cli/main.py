"""The ``intelbus`` command. Each sub-command group lives in its own module and is registered here.

This package is the only part of the core that may import ``producers``, ``consumers`` or ``deploy``.
"""

from __future__ import annotations

import typer

from intelbus import __version__
from intelbus.cli import (
    audit_cmd,
    consume_cmd,
    demo_cmd,
    deploy_cmd,
    directory_cmd,
    envelope_cmd,
    kafka_cmd,
    publish_cmd,
    store_cmd,
)
from intelbus.log import configure

app = typer.Typer(
    name="intelbus",
    help="Secure inter-agency intelligence-sharing bus: signed, encrypted records over Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold keys or plaintext: never print them
)
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(directory_cmd.keys_app, name="keys")
app.add_typer(directory_cmd.app, name="directory")
app.add_typer(envelope_cmd.app, name="envelope")
app.command(name="demo")(demo_cmd.demo)
app.command(name="publish")(publish_cmd.publish)
app.command(name="heartbeat")(publish_cmd.heartbeat)
app.command(name="consume")(consume_cmd.consume)
app.add_typer(store_cmd.app, name="store")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(deploy_cmd.app, name="deploy")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"intelbus {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    log_level: str = typer.Option("INFO", "--log-level", envvar="INTELBUS_LOG_LEVEL"),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Secure inter-agency intelligence-sharing bus."""
    del version
    configure(level=log_level)


def main() -> None:
    """Console entry point."""
    app()

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
    exits,
    kafka_cmd,
    publish_cmd,
    retention_cmd,
    store_cmd,
    taxii_cmd,
    topics_cmd,
    web_cmd,
)
from intelbus.log import configure

app = typer.Typer(
    cls=exits.IntelbusGroup,  # one handler: an expected error is one line and its exit code
    pretty_exceptions_enable=False,
    name="intelbus",
    help="Secure inter-agency intelligence-sharing bus: signed, encrypted records over Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold keys or plaintext: never print them
)
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(topics_cmd.app, name="topics")
app.add_typer(directory_cmd.keys_app, name="keys")
app.add_typer(directory_cmd.app, name="directory")
app.add_typer(envelope_cmd.app, name="envelope")
app.command(name="demo")(demo_cmd.demo)
app.add_typer(publish_cmd.app, name="publish")
app.command(name="heartbeat")(publish_cmd.heartbeat)
app.command(name="consume")(consume_cmd.consume)
store_cmd.app.command(name="prune")(retention_cmd.prune)
store_cmd.app.command(name="tombstones")(retention_cmd.tombstones)
app.add_typer(store_cmd.app, name="store")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(deploy_cmd.app, name="deploy")
app.add_typer(taxii_cmd.app, name="taxii")
app.add_typer(web_cmd.app, name="web")


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
    log_format: str = typer.Option(
        "auto",
        "--log-format",
        envvar="INTELBUS_LOG_FORMAT",
        help="auto (readable on a terminal, JSON otherwise), json or console.",
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="INTELBUS_DEBUG",
        help="Also print the traceback of an expected error (exit codes: docs/cli.md).",
    ),
) -> None:
    """Secure inter-agency intelligence-sharing bus.

    Exit codes: 0 done, 1 refused or found something, 2 usage, 3 environment (broker, files,
    store), 130 interrupted.
    """
    del version
    exits.debug = exits.debug or debug
    formats = {"auto": None, "json": True, "console": False}
    if log_format not in formats:
        raise typer.BadParameter("use auto, json or console", param_hint="--log-format")
    configure(level=log_level, json=formats[log_format])


def main() -> None:
    """Console entry point."""
    app()

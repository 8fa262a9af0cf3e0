"""``intelbus web --config FILE`` serves one agency's console; ``intelbus web add-user`` adds a user.

The console (web/) serves a producer's report form or a force's analyst and operator pages, from
the config file's ``[web]`` section (intelbus/web_config.py). It listens on loopback unless told
otherwise, and refuses (exit 2) to listen anywhere else without HTTPS.

Exit 2: no valid config, users file or TLS files; a non-loopback address without HTTPS.
Exit 3: the store cannot be opened, or the address is in use.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console as RichConsole

from intelbus.cli.passwords import new_password
from intelbus.errors import ConfigError, StoreError
from intelbus.interop.taxii_auth import add_user
from intelbus.log import get_logger
from web.app import FORCE, PageError
from web.build import build_console, serve, settings_for

app = typer.Typer(
    help="The web console: a producer's report form, a force's analyst and operator pages.",
    invoke_without_command=True,
)
err = RichConsole(stderr=True, soft_wrap=True)
log = get_logger("intelbus.cli.web")


@app.callback()
def web(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", help="The agency's producer or consumer config."
    ),
    bind: str | None = typer.Option(None, "--bind", help="Address to listen on (127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (8800)."),
) -> None:
    """Serve the console of the agency named by --config until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise ConfigError("name the agency's config with --config FILE")
    settings = settings_for(config, bind=bind, port=port)
    console = build_console(settings)
    if settings.role == FORCE:
        try:
            with console.store():  # a store that cannot be opened fails now, not at the first page
                pass
        except PageError as e:  # another agency's store
            raise ConfigError(str(e)) from None
    try:
        server = serve(console)
    except OSError as e:
        raise StoreError(
            f"cannot listen on {settings.web.bind}:{settings.web.port}: {e.strerror}"
        ) from None
    err.print(f"serving {settings.agency}'s console at {server.url}", highlight=False)
    log.info("web.listening", url=server.url, role=settings.role)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


@app.command(name="add-user")
def add_user_cmd(
    name: str = typer.Argument(
        ..., help="The user name (logged with every page that shows records)."
    ),
    users: Path = typer.Option(..., "--users", help="The users file (created 0600)."),
    certificate_only: bool = typer.Option(
        False,
        "--certificate-only",
        help="No password: the user signs in with a client certificate.",
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from one line of standard input."
    ),
) -> None:
    """Add or replace a console user (the password hashed with Argon2id; never echoed)."""
    password = new_password(certificate_only=certificate_only, from_stdin=password_stdin)
    users.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    new = add_user(users, name, password)
    err.print(f"{'added' if new else 'replaced'} console user {name} in {users}", highlight=False)

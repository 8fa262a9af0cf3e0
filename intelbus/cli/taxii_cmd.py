"""``intelbus taxii serve|add-user``: a read-only TAXII 2.1 server over a force's store.

``serve`` reads the consumer config (its ``store`` and ``[taxii]`` section) and serves the store
to the users of the users file (docs/interop.md). It listens on loopback unless ``--bind`` or the
config says otherwise, and refuses (exit 2) to listen anywhere else without TLS: credentials and
records must not cross a network in the clear.

``add-user`` adds or replaces one user of a users file (created 0600), reading the password from
a prompt (twice, not echoed) or, with ``--password-stdin``, one line of standard input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from consumers.config import ConsumerConfig
from intelbus.cli import store_access
from intelbus.cli.passwords import new_password
from intelbus.cli.store_cmd import resolve_store
from intelbus.errors import ConfigError, IntelbusError
from intelbus.interop.taxii import TaxiiService
from intelbus.interop.taxii_auth import Authenticator, add_user
from intelbus.interop.taxii_config import TaxiiConfig
from intelbus.interop.taxii_server import TaxiiHttpServer, TlsFiles, server_context
from intelbus.log import get_logger
from intelbus.store import Store, open_store

app = typer.Typer(no_args_is_help=True, help="A read-only TAXII 2.1 server over a force's store.")
err = Console(stderr=True, soft_wrap=True)
log = get_logger("intelbus.cli.taxii")


def _settings(config: ConsumerConfig, bind: str | None, port: int | None) -> TaxiiConfig:
    base = config.taxii or TaxiiConfig()
    return base.serving(bind, port, what="TAXII", section="taxii", secure="TLS")


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", help="The force's consumer config file."),
    bind: str | None = typer.Option(None, "--bind", help="Address to listen on (127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (9443)."),
) -> None:
    """Serve the store named by --config over TAXII 2.1 until interrupted.

    Exit 2: a non-loopback address without TLS; no valid config, users file or store path.

    Exit 3: the store cannot be opened, or the address is in use.
    """
    loaded = ConsumerConfig.load(config)
    settings = _settings(loaded, bind, port)
    try:
        location = resolve_store(None, config)
    except IntelbusError as e:  # no store at the path: a config naming the wrong file
        raise ConfigError(str(e)) from None
    auth = Authenticator(settings.users_file)  # read now: a bad file fails before listening
    context = None
    if settings.cert_file is not None and settings.key_file is not None:
        context = server_context(TlsFiles(settings.cert_file, settings.key_file, settings.ca_file))

    @contextmanager
    def opened() -> Iterator[Store]:
        # A connection per request: the consumer may write the store meanwhile (WAL).
        store = open_store(location)
        try:
            yield store
        finally:
            store.close()

    with opened():  # a store that cannot be opened fails now (exit 3), not at the first request
        pass
    service = TaxiiService(
        opened,
        restriction=store_access.restriction,
        title=f"intelbus TAXII: {loaded.agency}",
        page_size=settings.page_size,
    )
    server = TaxiiHttpServer((settings.bind, settings.port), service, auth, context)
    err.print(f"serving TAXII 2.1 at {server.url}", highlight=False)
    log.info("taxii.listening", url=server.url, users=len(auth.users()))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


@app.command(name="add-user")
def add_user_cmd(
    name: str = typer.Argument(..., help="The user name (logged with every read)."),
    users: Path = typer.Option(..., "--users", help="The users file (created 0600)."),
    justification: str | None = typer.Option(
        None,
        "--justification",
        help="A standing justification: lets the user read TLP:AMBER+STRICT, TLP:RED and "
        "handling-code C records (logged with every such read).",
    ),
    certificate_only: bool = typer.Option(
        False, "--certificate-only", help="No password: the user comes with a client certificate."
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from one line of standard input."
    ),
) -> None:
    """Add or replace a TAXII user (its password hashed with Argon2id; never echoed)."""
    password = new_password(certificate_only=certificate_only, from_stdin=password_stdin)
    new = add_user(users, name, password, justification=justification)
    err.print(f"{'added' if new else 'replaced'} TAXII user {name} in {users}", highlight=False)

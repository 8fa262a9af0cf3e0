"""Build one agency's console from its config file: which role, which pages, which users.

A config with a sharing agreement (``producers.config.ProducerConfig``) gives a producer's console:
the report form, the recipient preview, publishing, the pending queue, corrections and retractions.
A config with a store (``consumers.config.ConsumerConfig``) gives a force's console: the analyst's
pages and the operator's. Both need a ``[web]`` section naming a users file; the console refuses
to listen anywhere but loopback without HTTPS (credentials and records never cross a network in
the clear).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from consumers.config import ConsumerConfig
from intelbus.errors import ConfigError
from intelbus.interop.taxii_auth import Authenticator
from intelbus.interop.taxii_server import TlsFiles, server_context
from intelbus.tomlfile import read_toml
from intelbus.web_config import WebConfig
from producers.config import ProducerConfig
from web.app import FORCE, PRODUCER, Console, ConsoleSettings
from web.pages import analyst, common, operations, producer
from web.server import WebServer


def settings_for(
    config_path: Path, *, bind: str | None = None, port: int | None = None
) -> ConsoleSettings:
    """The console's settings from an agency's config file (``--bind``/``--port`` override).

    Raises:
        ConfigError: unreadable, neither a producer's nor a consumer's config, no ``[web]``
            users file, or a non-loopback address without TLS.
    """
    raw = read_toml(config_path, "config")
    loaded: ProducerConfig | ConsumerConfig
    if "agreement" in raw:
        loaded = ProducerConfig.load(config_path)
        role, store = PRODUCER, None
    elif "store" in raw:
        loaded = ConsumerConfig.load(config_path)
        role, store = FORCE, loaded.store
        if "://" not in store and not Path(store).exists():
            # open_store would make an empty one: a console of nothing, at a mistyped path.
            raise ConfigError(f"no store at {store}: run the consumer first, or fix `store`")
    else:
        raise ConfigError(
            f"{config_path} is neither a producer's config (agreement) nor a consumer's (store)"
        )
    web = (loaded.web or WebConfig()).serving(
        bind, port, what="the console", section="web", secure="HTTPS"
    )
    return ConsoleSettings(
        agency=loaded.agency,
        role=role,
        web=web,
        config_path=config_path.resolve(),
        store_location=store,
        config=loaded,
    )


def build_console(settings: ConsoleSettings) -> Console:
    """The console for ``settings``, its users file read now (a bad file fails before listening)."""
    users = settings.web.users_file
    if users is not None and not users.exists():
        raise ConfigError(
            f"no users file at {users}: add a user with `intelbus web add-user NAME --users {users}`"
        )
    auth = Authenticator(users)
    if settings.role == PRODUCER:
        routes, nav = (*common.ROUTES, *producer.ROUTES), producer.NAV
    else:
        routes = (*common.ROUTES, *analyst.ROUTES, *operations.ROUTES)
        nav = (*analyst.NAV, *operations.NAV)
    return Console(settings, auth, routes, nav)


def tls_context(web: WebConfig) -> ssl.SSLContext | None:
    if web.cert_file is None or web.key_file is None:
        return None
    return server_context(TlsFiles(web.cert_file, web.key_file, web.ca_file))


def serve(console: Console) -> WebServer:
    """A listening server for ``console`` (not yet serving: call ``serve_forever``)."""
    web = console.settings.web
    return WebServer((web.bind, web.port), console, tls_context(web))

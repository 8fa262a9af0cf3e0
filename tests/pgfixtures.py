"""Store fixtures: a real PostgreSQL server per session, and a fresh empty store per test.

Loaded as a plugin by tests/conftest.py, so every folder (integration, attacks) can use them.

``postgres_url`` is ``INTELBUS_TEST_POSTGRES_URL`` when set, else a throwaway cluster started by
``scripts/postgres.sh`` (installed with apt-get when missing and running as root) and stopped at the
end of the session. If PostgreSQL cannot be provided the tests **fail** with the reason; the only
way to skip them is ``INTELBUS_SKIP_POSTGRES_TESTS=1``.

``store_url`` runs a test once on SQLite and once on PostgreSQL (a new database per test), so both
backends are held to the same behaviour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "postgres.sh"
URL_ENV = "INTELBUS_TEST_POSTGRES_URL"
SKIP_ENV = "INTELBUS_SKIP_POSTGRES_TESTS"


def _bash() -> str:
    found = shutil.which("bash")
    if found is None:
        pytest.fail(
            f"bash is needed to run {SCRIPT.name} ({SKIP_ENV}=1 skips the PostgreSQL tests)"
        )
    return found


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL (a maintenance database we may CREATE DATABASE from)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL tests skipped on request ({SKIP_ENV}=1)")
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    # Not under pytest's tmp_path: its parents are private to root, and the cluster runs as the
    # postgres OS user when we are root.
    cluster = tempfile.mkdtemp(prefix="intelbus-pg-")
    try:
        try:
            started = subprocess.run(
                [_bash(), str(SCRIPT), "start", cluster],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.fail(f"PostgreSQL could not be started ({SKIP_ENV}=1 skips): {e}")
        lines = started.stdout.strip().splitlines()
        if started.returncode != 0 or not lines:
            pytest.fail(
                f"PostgreSQL could not be provided by {SCRIPT.name} (set {URL_ENV}, or "
                f"{SKIP_ENV}=1 to skip): {started.stderr.strip()[-2000:]}"
            )
        yield lines[-1]
    finally:
        subprocess.run(
            [_bash(), str(SCRIPT), "stop", cluster], capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(cluster, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``; dropped afterwards."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL tests need the driver
    from psycopg import sql  # noqa: PLC0415

    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    admin_url: str = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(admin_url) as url:
        yield url

"""The store fixtures (``postgres_url``, ``store_url``) live in :mod:`tests.pgfixtures`, loaded for
the whole suite by tests/conftest.py, so that attack tests outside this folder run on PostgreSQL
too with one server per session. The helpers stay importable from here for existing callers."""

from tests.pgfixtures import REPO, SCRIPT, URL_ENV, fresh_postgres_database

__all__ = ["REPO", "SCRIPT", "URL_ENV", "fresh_postgres_database"]

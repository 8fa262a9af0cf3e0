"""The producer pages (being written)."""

from __future__ import annotations

from web.app import NavItem, Route

ROUTES: tuple[Route, ...] = ()
NAV: tuple[NavItem, ...] = ()

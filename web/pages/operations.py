"""The operations pages of a force's console: feeds, quarantine, lag, and the inspectorate's audit
reports (the logic is in web/ops.py; this module only maps requests to it).

Feeds and lag read no record contents and write no access log entry (as ``intelbus store feeds``);
the quarantine names records, so it writes one first, as ``intelbus store quarantine`` does. The
broker being down is a warning on the lag page, never an error page.
"""

from __future__ import annotations

import re

from consumers.config import ConsumerConfig
from web import ops
from web.app import NavItem, Page, PageError, Route
from web.http import Response

_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _config(page: Page) -> ConsumerConfig:
    config = page.console.settings.config
    if not isinstance(config, ConsumerConfig):
        raise PageError(404, "this console has no consumer config")
    return config


def feeds(page: Page) -> Response:
    with page.console.store() as store:
        view = ops.feeds_view(store, page.console.clock())
    return page.render("ops_feeds.html", view=view, span=ops.span)


def quarantine(page: Page) -> Response:
    reason = page.request.arg("reason") or None
    if reason is not None and not _REASON.fullmatch(reason):
        raise PageError(400, "a reason code is lower-case letters, digits and underscores")
    with page.console.store() as store:
        try:
            view = ops.read_quarantine(store, page.user, reason)
        except ops.AccessNotLogged as e:
            raise PageError(503, str(e)) from None
    return page.render("ops_quarantine.html", view=view)


def lag(page: Page) -> Response:
    config = _config(page)
    with page.console.store() as store:
        view = ops.lag_view(store, config)
    return page.render("ops_lag.html", view=view)


def audit_list(page: Page) -> Response:
    folder = page.console.settings.web.audit_reports
    reports = [] if folder is None else ops.list_reports(folder)
    return page.render(
        "ops_audit.html", configured=folder is not None, reports=reports, folder=str(folder or "")
    )


def audit_report(page: Page) -> Response:
    folder = page.console.settings.web.audit_reports
    name = page.params.get("name", "")
    path = None if folder is None else ops.find_report(folder, name)
    if path is None:
        raise PageError(404, "No such audit report.")
    return page.render("ops_audit_report.html", report=ops.load_report(path))


ROUTES: tuple[Route, ...] = (
    Route("GET", r"/feeds", feeds),
    Route("GET", r"/quarantine", quarantine),
    Route("GET", r"/lag", lag),
    Route("GET", r"/audit", audit_list),
    Route("GET", r"/audit/(?P<name>[^/]+)", audit_report),
)
NAV: tuple[NavItem, ...] = (
    NavItem("/feeds", "Feeds"),
    NavItem("/quarantine", "Quarantine"),
    NavItem("/lag", "Lag"),
    NavItem("/audit", "Audit"),
)

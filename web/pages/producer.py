"""The producer's pages (CST's incident officer): report, preview, publish, sent, pending.

Every report goes form -> preview -> publish. The preview is computed before anything is sealed
(who receives it, what each keeps); the preview page carries the form's values in hidden fields,
and publishing validates them all again (a hidden field is whatever the browser sent). A
correction or retraction starts from a record's page (``/sent/<id>``), only for a record this
producer published and whose copy the console keeps, and goes through the same two steps.
The non-HTTP work (the publisher, the policies, the copies) is web/publishing.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from intelbus.log import get_logger
from intelbus.records import DomainRecord
from producers.config import ProducerConfig
from producers.state import PriorSend
from web.app import NavItem, Page, PageError, Route
from web.forms import (
    FORM_KINDS,
    FormResult,
    FormSpec,
    correction_spec,
    form_spec,
    validate_form,
    validate_retraction,
)
from web.http import Response, redirect, with_query
from web.publishing import Copy, Desk, desk_for, form_values

log = get_logger("web.producer")

PAGE_SIZE: Final = 50
_MAX_PAGE: Final = 1_000_000
#: The page's own fields beside the form's (never part of the record).
_OWN: Final = frozenset({"csrf", "action", "to"})
_UUID: Final = r"(?P<record_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_KIND: Final = r"(?P<kind>sighting|incident)"


def _desk(page: Page) -> Desk:
    settings = page.console.settings
    if not isinstance(settings.config, ProducerConfig):
        raise PageError(404, "this console does not publish")
    return desk_for(settings.extras, settings.config)


def _named(page: Page, desk: Desk) -> tuple[tuple[str, ...], str | None]:
    """The named recipients ticked, and a form-level error if one is not a possible recipient."""
    ticked = tuple(dict.fromkeys(v for v in page.request.form.get("to", ()) if v))
    allowed = set(desk.recipient_choices())
    unknown = [a for a in ticked if a not in allowed]
    if unknown:
        return ticked, "not agencies that may receive records: " + ", ".join(sorted(unknown))
    return ticked, None


def _error_list(spec: FormSpec, errors: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    labels = {f.name: f"{f.group}: {f.label}" for f in spec.fields}
    out = []
    for name, messages in errors.items():
        for message in messages:
            out.append({"name": name, "label": labels.get(name, ""), "message": message})
    return out


def _form_page(
    page: Page,
    desk: Desk,
    spec: FormSpec,
    *,
    title: str,
    action: str,
    values: Mapping[str, Sequence[str]],
    errors: Mapping[str, Sequence[str]],
    named: Sequence[str] = (),
    status: int = 200,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    return page.render(
        "producer_report.html",
        status=status,
        title=title,
        kind=spec.kind,
        form_kinds=FORM_KINDS,
        groups=spec.groups(),
        values=values,
        errors=errors,
        error_list=_error_list(spec, errors),
        choices=desk.recipient_choices(),
        named=tuple(named),
        form_action=action,
        record=None,
        **(extra or {}),
    )


# --- reports -----------------------------------------------------------------------------------


def report_home(page: Page) -> Response:
    return redirect("/report/sighting")


def report_form(page: Page) -> Response:
    kind = page.params["kind"]
    desk = _desk(page)
    return _form_page(
        page,
        desk,
        form_spec(kind),
        title=f"Report a {kind}",
        action=f"/report/{kind}",
        values={},
        errors={},
    )


def report_post(page: Page) -> Response:
    kind = page.params["kind"]
    desk = _desk(page)
    result = validate_form(kind, page.request.form, page.console.clock(), ignore=_OWN)
    return _two_steps(
        page,
        desk,
        result,
        form_spec(kind),
        title=f"Report a {kind}",
        action=f"/report/{kind}",
    )


def _two_steps(
    page: Page,
    desk: Desk,
    result: FormResult,
    spec: FormSpec,
    *,
    title: str,
    action: str,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """Edit, preview or publish a posted form (each step validates it all again)."""
    step = page.request.field("action") or "preview"
    named, named_error = _named(page, desk)
    errors = dict(result.errors)
    if named_error is not None:
        errors[""] = (*errors.get("", ()), named_error)
    record = result.record
    if step == "edit" or errors or record is None:
        status = 200 if step == "edit" else 422
        shown_errors = {} if step == "edit" else errors
        return _form_page(
            page,
            desk,
            spec,
            title=title,
            action=action,
            values=result.values,
            errors=shown_errors,
            named=named,
            status=status,
            extra=extra,
        )
    if step == "publish":
        return _publish(page, desk, record, named)
    if step != "preview":
        raise PageError(400, "unknown action")
    preview = desk.preview(record, named, page.console.clock())
    log.info(
        "web.previewed",
        record_id=record.record_id,
        kind=record.KIND,
        recipients=len(preview.recipients),
        refused=preview.refusal is not None,
        user=page.user,
    )
    return page.render(
        "producer_preview.html",
        title=title,
        form_action=action,
        record_id=record.record_id,
        record_kind=record.KIND,
        tlp=record.grading.tlp.value,
        preview=preview,
        hidden=[(k, v) for k, vs in result.values.items() for v in vs],
        named=named,
    )


def _publish(page: Page, desk: Desk, record: DomainRecord, named: Sequence[str]) -> Response:
    outcome = desk.publish(record, named)
    log.info(
        "web.publish_outcome",
        record_id=record.record_id,
        kind=record.KIND,
        ok=outcome.published is not None,
        user=page.user,
    )
    status = 200 if outcome.published is not None else (202 if outcome.pending else 409)
    return page.render(
        "producer_outcome.html",
        status=status,
        record_id=record.record_id,
        record_kind=record.KIND,
        outcome=outcome,
    )


# --- what was sent ---------------------------------------------------------------------------------


def sent_list(page: Page) -> Response:
    desk = _desk(page)
    try:
        # Bounded: a page number past SQLite's 64-bit integers would fail the query (a 500).
        number = min(max(1, int(page.request.arg("page") or "1")), _MAX_PAGE)
    except ValueError:
        number = 1
    rows, total = desk.sent(limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    return page.render(
        "producer_sent.html",
        rows=rows,
        total=total,
        number=number,
        pages=pages,
        previous=with_query("/sent", page=str(number - 1)) if number > 1 else None,
        following=with_query("/sent", page=str(number + 1)) if number < pages else None,
    )


def _own(page: Page, desk: Desk) -> tuple[str, PriorSend]:
    """The record id of the page and what the state holds of it (refused if not this
    producer's)."""
    record_id = page.params["record_id"]
    prior = desk.prior(record_id)
    if prior is None:
        raise PageError(404, "this producer did not publish that record")
    return record_id, prior


def sent_record(page: Page) -> Response:
    desk = _desk(page)
    record_id, prior = _own(page, desk)
    held = desk.copy(record_id)
    log.info("web.sent_viewed", record_id=record_id, copy=held is not None, user=page.user)
    return _record_page(page, desk, record_id, prior=prior, held=held)


def _record_page(
    page: Page,
    desk: Desk,
    record_id: str,
    *,
    prior: PriorSend,
    held: Copy | None,
    values: Mapping[str, Sequence[str]] | None = None,
    errors: Mapping[str, Sequence[str]] | None = None,
    retract_errors: Mapping[str, Sequence[str]] | None = None,
    retract_values: Mapping[str, Sequence[str]] | None = None,
    named: Sequence[str] = (),
    status: int = 200,
) -> Response:
    """A sent record's page: its status, and with the console's copy, the copy and the
    correction form (filled from the copy unless ``values``) and the retraction form."""
    spec = correction_spec(held.kind) if held is not None and held.kind in FORM_KINDS else None
    if spec is not None and held is not None and values is None:
        values = form_values(spec, held.data)
    return page.render(
        "producer_record.html",
        status=status,
        record_id=record_id,
        prior=prior,
        held=held,
        flat=_flatten(held.data) if held is not None else [],
        groups=spec.groups() if spec is not None else (),
        values=values or {},
        errors=errors or {},
        error_list=_error_list(spec, errors or {}) if spec is not None else [],
        retract_errors=retract_errors or {},
        retract_values=retract_values or {},
        choices=desk.recipient_choices(),
        named=tuple(named),
    )


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:  # noqa: ANN401 - JSON
    out: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.extend(_flatten(v, f"{prefix}{k}."))
    elif isinstance(data, list):
        if data and all(not isinstance(v, (dict, list)) for v in data):
            out.append((prefix.rstrip("."), ", ".join(str(v) for v in data)))
        else:
            for i, v in enumerate(data):
                out.extend(_flatten(v, f"{prefix}{i}."))
    elif data is not None:
        out.append((prefix.rstrip("."), str(data)))
    return out


def correct(page: Page) -> Response:
    desk = _desk(page)
    record_id, _ = _own(page, desk)
    held = desk.copy(record_id)
    if held is None or held.kind not in FORM_KINDS:
        raise PageError(404, "this console keeps no copy of that record to correct")
    result = validate_form(
        held.kind, page.request.form, page.console.clock(), correction_of=record_id, ignore=_OWN
    )
    return _two_steps(
        page,
        desk,
        result,
        correction_spec(held.kind),
        title=f"Correct {held.kind} {record_id}",
        action=f"/sent/{record_id}/correct",
    )


def retract(page: Page) -> Response:
    desk = _desk(page)
    record_id, prior = _own(page, desk)
    held = desk.copy(record_id)
    if held is None or not isinstance(held.data.get("grading"), dict):
        raise PageError(404, "this console keeps no copy of that record to retract")
    result = validate_retraction(
        page.request.form,
        page.console.clock(),
        retracts_record_id=record_id,
        grading=held.data["grading"],
        ignore=_OWN,
    )
    step = page.request.field("action") or "preview"
    named, named_error = _named(page, desk)
    errors = dict(result.errors)
    if named_error is not None:
        errors[""] = (*errors.get("", ()), named_error)
    if errors or result.record is None or step == "edit":
        return _record_page(
            page,
            desk,
            record_id,
            prior=prior,
            held=held,
            retract_errors={} if step == "edit" else errors,
            retract_values=result.values,
            named=named,
            status=200 if step == "edit" else 422,
        )
    if step == "publish":
        return _publish(page, desk, result.record, named)
    preview = desk.preview(result.record, named, page.console.clock())
    return page.render(
        "producer_preview.html",
        title=f"Retract {record_id}",
        form_action=f"/sent/{record_id}/retract",
        record_id=result.record.record_id,
        record_kind="retraction",
        tlp=result.record.grading.tlp.value,
        preview=preview,
        hidden=[(k, v) for k, vs in result.values.items() for v in vs],
        named=named,
    )


# --- pending -----------------------------------------------------------------------------------


def pending_list(page: Page) -> Response:
    desk = _desk(page)
    return page.render("producer_pending.html", rows=desk.unsettled())


def pending_retry(page: Page) -> Response:
    desk = _desk(page)
    sent, error = desk.retry()
    page.notice(f"{sent} pending record(s) sent and acknowledged.")
    if error is not None:
        page.notice(error)
    return redirect("/pending")


def pending_abandon(page: Page) -> Response:
    desk = _desk(page)
    record_id = page.params["record_id"]
    if desk.abandon(record_id):
        page.notice(f"{record_id} abandoned: never resent; consumers will report a gap.")
    else:
        page.notice(f"{record_id} is not pending.")
    return redirect("/pending")


ROUTES: tuple[Route, ...] = (
    Route("GET", r"/report", report_home),
    Route("GET", rf"/report/{_KIND}", report_form),
    Route("POST", rf"/report/{_KIND}", report_post),
    Route("GET", r"/sent", sent_list),
    Route("GET", rf"/sent/{_UUID}", sent_record),
    Route("POST", rf"/sent/{_UUID}/correct", correct),
    Route("POST", rf"/sent/{_UUID}/retract", retract),
    Route("GET", r"/pending", pending_list),
    Route("POST", r"/pending/retry", pending_retry),
    Route("POST", rf"/pending/{_UUID}/abandon", pending_abandon),
)
NAV: tuple[NavItem, ...] = (
    NavItem("/report", "Report"),
    NavItem("/sent", "Sent"),
    NavItem("/pending", "Pending"),
)

"""The analyst's pages of a force's console: records (list, search, one record), timeline, map,
links and export.

Every page writes the store's access log (web/access.py) before it shows a record or its id,
with the signed-in user and the query (search text only as a digest). Lists show what ``store
list`` shows of a restricted record (id, kind, time, TLP, area) and a summary only of the others;
a restricted record's contents need a justification typed on its page (a POST form), and the
map and links leave restricted records out (counted). Exports run the CLI's own functions
(intelbus/store/export.py) with the same options, the recipient required.
"""

from __future__ import annotations

import io
import re
from datetime import datetime
from typing import Any, Final

from intelbus.store import Store, StoredRecordView
from intelbus.store.access import RecordRef, refs, restriction, text_digest
from intelbus.store.export import (
    STREAM_FORMATS,
    event_time,
    export_selection,
    export_views,
    record_filter,
    status_flags,
    write_format,
)
from web import access
from web.app import NavItem, Page, PageError, Route
from web.filters import AREAS, KINDS, TLPS, Filters, parse_filters
from web.http import Response, redirect
from web.links import link_groups, links_for
from web.mapview import MapPoint, map_view
from web.provenance import key_provenance, load_history
from web.recordview import payload_items, position, summary
from web.timeline import TimelineItem, bars, timeline

_UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PRODUCER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Records a timeline, map or links page reads at most (its own limit field says so).
_CONTENT_TYPES: Final = {
    "jsonl": ("application/x-ndjson", "jsonl"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "geojson": ("application/geo+json", "geojson"),
    "stix": ("application/stix+json;version=2.1", "stix.json"),
    "misp": ("application/json", "misp.json"),
}
_CHART_HEIGHT: Final = 60.0
_BAR: Final = 12


def _choices() -> dict[str, Any]:
    return {"kinds": KINDS, "areas": AREAS, "tlps": TLPS}


def _filters(page: Page, *, with_limit: bool = True) -> Filters:
    return parse_filters(page.request.arg, with_limit=with_limit)


def _listed(store: Store, f: Filters) -> list[StoredRecordView]:
    return store.list_records(
        kind=f.kind, since=f.since, until=f.until, force_area=f.area, tlp=f.tlp, limit=f.limit
    )


def _row(v: StoredRecordView) -> dict[str, Any]:
    restricted = restriction(v) is not None
    return {
        "when": event_time(v),
        "kind": v.kind,
        "record_id": v.record_id,
        "producer": v.producer_id,
        "tlp": v.tlp or "",
        "area": v.force_area or "",
        "flags": status_flags(v),
        "restricted": restricted,
        # Contents only of what needs no justification (the list's rule, as `store list`).
        "summary": None if restricted else summary(v),
    }


# --- /records -------------------------------------------------------------------------------------


def records(page: Page) -> Response:
    if page.request.method == "GET" and page.request.arg("q") is not None:
        raise PageError(
            400,
            "type a search in the search box: in an address it would stay in the browser's history",
        )
    if page.request.method == "POST":
        f = parse_filters(page.request.field)
        if f.text is None and f.ok:
            return redirect("/records")
    else:
        f = _filters(page)
    rows: list[dict[str, Any]] = []
    if f.ok:
        with page.console.store() as store:
            if f.text is not None:
                # A hit on a restricted record would say what it holds ("the TLP:RED record
                # mentions Zebedee") without a justification: guessing word by word reads it.
                # Restricted records are left out of search results (the page says so); they are
                # found through the list's filters and read one by one with a justification.
                views = [v for v in store.search(f.text, limit=f.limit) if restriction(v) is None]
                # A search term is personal data: its digest, never the text.
                query = {**text_digest(f.text), "limit": f.limit, "restricted_not_searched": True}
                access.log_read(store, page.user, "search", views, query)
            else:
                views = _listed(store, f)
                access.log_read(store, page.user, "list", views, f.query())
        rows = [_row(v) for v in views]
    return page.render(
        "analyst_records.html", status=200 if f.ok else 400, f=f, rows=rows, **_choices()
    )


# --- /records/<id> --------------------------------------------------------------------------------


def _producer_arg(page: Page) -> str | None:
    producer = page.request.arg("producer") or page.request.field("producer")
    if producer is None:
        return None
    if not _PRODUCER.fullmatch(producer):
        raise PageError(400, "not a producer id")
    return producer


def _related(store: Store, held: list[StoredRecordView], record_id: str) -> list[dict[str, Any]]:
    """The groups the record shares a key with, over the store's unrestricted records."""
    others = [
        v
        for v in store.iter_records()
        if v.record_id != record_id and v.payload is not None and restriction(v) is None
    ]
    by_id = {v.record_id: v for v in others}
    pairs = [(v.record_id, v.payload or {}) for v in others]
    pairs += [(v.record_id, v.payload or {}) for v in held]
    out = []
    for group in links_for(record_id, pairs):
        members = [by_id[r] for r in group.record_ids if r in by_id]
        out.append({"key": group.key, "rows": [_row(v) for v in members]})
    return out


def _record(page: Page, justification: str | None, error: str | None) -> Response:
    record_id = page.params["record_id"].lower()
    producer = _producer_arg(page)
    query = {"record_id": record_id, "producer": producer}
    with page.console.store() as store:
        views = [
            v for v in store.get_all(record_id) if producer is None or v.producer_id == producer
        ]
        held = [v for v in views if v.payload is not None]
        # Over every view, not only those with a current payload: the page shows each view's
        # amendment history, and a record whose latest version is withheld here (payload None)
        # still holds its earlier, possibly TLP:RED or handling-code-C, versions.
        restricted = access.first_restriction(views)
        related: list[dict[str, Any]] = []
        if restricted is not None and justification is None:
            refusal = access.gate_refs(
                store,
                page.user,
                "show",
                refs(views),
                restricted,
                query=query,
                justification=None,
            )
        else:
            related = _related(store, held, record_id) if held else []
            named: list[RecordRef] = list(refs(views))
            named += [(r["producer"], r["record_id"]) for g in related for r in g["rows"]]
            refusal = access.gate_refs(
                store,
                page.user,
                "show",
                tuple(dict.fromkeys(named)),
                restricted,
                query=query,
                justification=justification,
            )
    if not views:
        raise PageError(404, f"no record {record_id} in this store")
    if refusal is not None:
        return page.render(
            "analyst_justify.html",
            status=403,
            record_id=record_id,
            producer=producer,
            reason=refusal.reason,
            error=error,
        )
    history = load_history(getattr(page.console.settings.config, "directory", None))
    shown = [{**_shown(v), "key": key_provenance(history, v)} for v in views]
    return page.render(
        "analyst_record.html",
        record_id=record_id,
        records=shown,
        related=related,
        justification=justification,
    )


def _shown(v: StoredRecordView) -> dict[str, Any]:
    return {
        "view": v,
        "when": event_time(v),
        "flags": status_flags(v),
        "key_id": None if v.key_id is None else v.key_id.hex(),
        "digest": v.digest.hex(),
        "fields": None if v.payload is None else payload_items(v.payload, v.redacted_fields),
        "history": [
            {
                "entry": h,
                "fields": None
                if h.payload is None
                else payload_items(h.payload, v.redacted_fields),
            }
            for h in v.history
        ],
    }


def record_page(page: Page) -> Response:
    return _record(page, None, None)


def record_justified(page: Page) -> Response:
    why, error = access.justification_of(page.request.field("justification"))
    if why is None:
        # Blank or unprintable: asked again (the refusal is logged as on a first visit).
        return _record(page, None, error or "type why you need to read this record")
    return _record(page, why, None)


# --- /timeline, /map, /links ----------------------------------------------------------------------


def timeline_page(page: Page) -> Response:
    f = _filters(page)
    days: list[Any] = []
    if f.ok:
        with page.console.store() as store:
            views = _listed(store, f)
            access.log_read(store, page.user, "timeline", views, f.query())
        items = [
            TimelineItem(
                v.record_id,
                v.kind,
                event_time(v),
                summary(v) if restriction(v) is None else "restricted: open it to read it",
            )
            for v in views
        ]
        days = timeline(items)
    chart = bars(days, _CHART_HEIGHT)
    return page.render(
        "analyst_timeline.html",
        status=200 if f.ok else 400,
        f=f,
        days=days,
        chart=chart,
        bar=_BAR,
        chart_height=_CHART_HEIGHT,
        **_choices(),
    )


def map_page(page: Page) -> Response:
    f = _filters(page)
    view = None
    hidden = 0
    if f.ok:
        with page.console.store() as store:
            views = _listed(store, f)
            shown = [v for v in views if restriction(v) is None]
            hidden = len(views) - len(shown)
            access.log_read(
                store, page.user, "map", shown, {**f.query(), "restricted_left_out": hidden}
            )
        points = []
        for v in shown:
            lat, lon = position(v)
            points.append(
                MapPoint(v.record_id, lat, lon, summary(v) or v.kind, v.kind, event_time(v))
            )
        view = map_view(points, tile_url=page.console.settings.web.tile_url)
    # The same points as a list under the map: readable by a screen reader, and on a phone,
    # where a map's points are small to tap.
    placed = [p for p in points if p.lat is not None and p.lon is not None] if view else []
    return page.render(
        "analyst_map.html",
        status=200 if f.ok else 400,
        f=f,
        view=view,
        hidden=hidden,
        placed=placed,
        **_choices(),
    )


def links_page(page: Page) -> Response:
    f = _filters(page)
    groups: list[dict[str, Any]] = []
    hidden = 0
    if f.ok:
        with page.console.store() as store:
            views = _listed(store, f)
            open_ = [v for v in views if restriction(v) is None and v.payload is not None]
            hidden = len(views) - len(open_)
            by_id = {v.record_id: v for v in open_}
            for g in link_groups((v.record_id, v.payload or {}) for v in open_):
                groups.append({"key": g.key, "rows": [_row(by_id[r]) for r in g.record_ids]})
            named = {(r["producer"], r["record_id"]) for g in groups for r in g["rows"]}
            access.log_read(
                store,
                page.user,
                "links",
                sorted(named),
                {**f.query(), "restricted_left_out": hidden},
            )
    return page.render(
        "analyst_links.html",
        status=200 if f.ok else 400,
        f=f,
        groups=groups,
        hidden=hidden,
        **_choices(),
    )


# --- /export ----------------------------------------------------------------------------------------


def _export_form(page: Page, status: int = 200, **context: Any) -> Response:  # noqa: ANN401
    values = {
        "format": "jsonl",
        "kind": "",
        "since": "",
        "until": "",
        "area": "",
        "tlp": "",
        "to": "",
        "justification": "",
    }
    values.update(context.pop("values", {}))
    return page.render(
        "analyst_export.html",
        status=status,
        values=values,
        errors=context.pop("errors", {}),
        refusal=context.pop("refusal", None),
        formats=STREAM_FORMATS,
        **_choices(),
    )


def export_page(page: Page) -> Response:
    return _export_form(page)


def export(page: Page) -> Response:
    form = page.request.field
    f = parse_filters(form, with_limit=False)
    values = {
        k: (form(k) or "").strip()
        for k in ("format", "kind", "since", "until", "area", "tlp", "to", "justification")
    }
    errors = dict(f.errors)
    fmt = values["format"]
    if fmt not in STREAM_FORMATS:
        errors["format"] = f"use one of {', '.join(STREAM_FORMATS)}"
    recipient, bad = access.recipient_of(values["to"])
    if bad is not None:
        errors["to"] = bad
    why, bad = access.justification_of(values["justification"])
    if bad is not None:
        errors["justification"] = bad
    if errors:
        return _export_form(page, 400, values=values, errors=errors)
    filters = {
        "kind": f.kind,
        "since": f.raw.get("since") or None,
        "until": f.raw.get("until") or None,
        "area": f.area,
        "tlp": f.tlp,
    }
    keep = record_filter(kind=f.kind, since=f.since, until=f.until, area=f.area, tlp=f.tlp)
    now = page.console.clock()
    buffer = io.StringIO()
    with page.console.store() as store:
        ids, restricted = export_selection(store, keep)
        query = {**filters, "format": fmt, "destination": "download"}
        refusal = access.gate_refs(
            store,
            page.user,
            "export",
            ids,
            restricted,
            query=query,
            justification=why,
            recipient=recipient,
        )
        if refusal is not None:
            return _export_form(page, 403, values=values, errors={}, refusal=refusal)
        # Built whole before the first byte goes out: a failure midway sends an error page,
        # never half a file.
        write_format(
            fmt,
            export_views(store, frozenset(ids), justified=why is not None),
            buffer,
            exported_at=now,
        )
    content_type, extension = _CONTENT_TYPES[fmt]
    name = f"intelbus-export-{_stamp(now)}.{extension}"
    return Response(200, buffer.getvalue().encode("utf-8"), content_type).with_headers(
        ("Content-Disposition", f'attachment; filename="{name}"')
    )


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


ROUTES: tuple[Route, ...] = (
    Route("GET", r"/records", records),
    Route("POST", r"/records", records),
    Route("GET", rf"/records/(?P<record_id>{_UUID})", record_page),
    Route("POST", rf"/records/(?P<record_id>{_UUID})", record_justified),
    Route("GET", r"/timeline", timeline_page),
    Route("GET", r"/map", map_page),
    Route("GET", r"/links", links_page),
    Route("GET", r"/export", export_page),
    Route("POST", r"/export", export),
)
NAV: tuple[NavItem, ...] = (
    NavItem("/records", "Records"),
    NavItem("/timeline", "Timeline"),
    NavItem("/map", "Map"),
    NavItem("/links", "Links"),
    NavItem("/export", "Export"),
)

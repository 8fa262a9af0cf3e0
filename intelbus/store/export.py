"""Turning stored records into what an analyst takes away: JSON Lines, CSV, or a STIX 2.1 bundle.

Every exporter streams: it takes an iterable of :class:`StoredRecordView` and writes as it goes, so
exporting a store of any size needs memory for one record at a time. The STIX bundle is the one
exception: a single JSON document, built in memory (:mod:`intelbus.interop.stix` owns the mapping;
there, unlike here, a redacted field is left out: STIX has no place for a placeholder).

What an export carries is exactly what the store holds: redacted fields stay ``"[REDACTED]"`` and
the stored policy hash and rule id travel with each row, so whoever receives the file can tell
under which policy each record was admitted. Exports never contain quarantined bytes or
withheld records (the store has only receipts for those).

CSV is written for spreadsheets, which must never run what a producer wrote:

* one record is exactly one CSV row, whatever its text holds: line breaks inside a cell are
  written as LF (a CRLF or a lone CR becomes LF) and every cell is quoted. (The csv module
  quotes a field only for the delimiter, the quote character and the characters of the line
  terminator; with an LF terminator a lone CR went out unquoted and any CSV reader ended the row
  there.) Quoting every cell also keeps a reader that splits on ``;`` or a tab, as some
  locales do, from cutting a cell in two and starting a new one with ``=``;
* no line of a cell can start a formula: a line whose first character, after any whitespace
  (spaces, tabs, line breaks, no-break spaces) or zero-width characters, is ``=``, ``+``, ``-``,
  ``@`` (or their full-width forms), or that starts with a tab, gets a leading apostrophe.
  Every line is checked, not only the first: tools that split a cell's lines, or skip leading
  blanks, would otherwise find ``=cmd`` on a line of its own.

:func:`write_export_file` writes an export to disk: created 0600, never through a link.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

from intelbus.files import PRIVATE_MODE, atomic_writer
from intelbus.interop.stix import EXTENSION_ID, stix_bundle
from intelbus.store.access import RecordRef, restriction
from intelbus.store.base import Store, StoredRecordView

#: Columns of the CSV export, in order. Nested payload fields are flattened with dots.
CSV_COLUMNS: Final = (
    "record_id",
    "kind",
    "producer_id",
    "sequence",
    "occurred_at",
    "created_at",
    "appended_at",
    "tlp",
    "classification",
    "force_area",
    "site_kind",
    "site_name",
    "address_or_area",
    "latitude",
    "longitude",
    "summary",
    "description",
    "behaviours",
    "persons",
    "vehicles",
    "category",
    "mode",
    "victim_type",
    "victim_details",
    "offender_description",
    "case_status",
    "police_crime_reference",
    "reporter_ref",
    "source_evaluation",
    "assessment",
    "handling_code",
    "handling_conditions",
    "version",
    "retracted",
    "superseded",
    "action",
    "redacted_fields",
    "rule_id",
    "policy_hash",
    "digest",
    "topic",
    "partition",
    "offset",
)

# A line of a cell that a spreadsheet could run as a formula (CSV injection) gets a leading
# apostrophe: its first character after blanks is one of these (with the full-width forms some
# locales also accept), or it starts with a tab.
_FORMULA_STARTS: Final = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# Characters that are not str.isspace() but that a spreadsheet may skip or not show.
_INVISIBLE: Final = frozenset("\u200b\u200c\u200d\u2060\ufeff")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def status_flags(view: StoredRecordView) -> list[str]:
    """A record's status as `store list` and the console show it: retracted, superseded (its
    status), vN, redacted."""
    out = []
    if view.retracted:
        out.append("retracted")
    if view.superseded:
        out.append(view.status)
    if view.version > 1:
        out.append(f"v{view.version}")
    if view.redacted_fields:
        out.append("redacted")
    return out


def record_dict(view: StoredRecordView, *, history: bool = True) -> dict[str, Any]:
    """A JSON-ready dict of one stored record: provenance, policy decision, payload, history."""
    out: dict[str, Any] = {
        "record_id": view.record_id,
        "kind": view.kind,
        "producer_id": view.producer_id,
        "sequence": view.sequence,
        "topic": view.topic,
        "partition": view.partition,
        "offset": view.offset,
        "digest": view.digest.hex(),
        "created_at": _iso(view.created_at),
        "appended_at": _iso(view.appended_at),
        "occurred_at": _iso(view.occurred_at),
        "tlp": view.tlp,
        "classification": view.classification,
        "force_area": view.force_area,
        "policy_hash": view.policy_hash,
        "rule_id": view.rule_id,
        "action": view.action,
        "redacted_fields": list(view.redacted_fields),
        "version": view.version,
        "status": view.status,
        "key_id": None if view.key_id is None else view.key_id.hex(),
        "retracted": view.retracted,
        "superseded": view.superseded,
        "payload": view.payload,
    }
    if history:
        out["history"] = [
            {
                "version": h.version,
                "amendment_record_id": h.amendment_record_id,
                "kind": h.kind,
                "outcome": h.outcome,
                "withdrawn": h.withdrawn,
                "at": _iso(h.at),
                "reason": h.reason,
                "payload": h.payload,
            }
            for h in view.history
        ]
    return out


def write_jsonl(views: Iterable[StoredRecordView], out: IO[str]) -> int:
    """One JSON object per line, history included. Returns the number of records written."""
    n = 0
    for view in views:
        out.write(json.dumps(record_dict(view), ensure_ascii=False, sort_keys=True))
        out.write("\n")
        n += 1
    return n


def _place(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    place = payload.get("place")
    return place if isinstance(place, Mapping) else {}


def _summary(view: StoredRecordView) -> str:
    """A short human description: the behaviours of a sighting or the category of an incident."""
    p = view.payload or {}
    if view.kind == "sighting":
        behaviours = p.get("behaviours")
        if isinstance(behaviours, list):
            return ", ".join(str(b) for b in behaviours)
        return str(behaviours or "")
    parts = [str(p.get(k)) for k in ("category", "mode", "status") if p.get(k) is not None]
    return ", ".join(parts)


def _json_cell(value: object) -> str | None:
    """People and vehicles: a list of objects, kept whole as JSON in one cell."""
    if value is None or value == []:
        return None
    if isinstance(value, str):
        return value  # a redaction placeholder
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def write_geojson(views: Iterable[StoredRecordView], out: IO[str]) -> int:
    """Records that carry coordinates, as a GeoJSON FeatureCollection of points (RFC 7946:
    longitude first). Returns the number of features written; records without a position (or
    whose position the policy redacted) are left out."""
    out.write('{"type": "FeatureCollection", "features": [')
    n = 0
    for view in views:
        place = _place(view.payload or {})
        lat, lon = place.get("latitude"), place.get("longitude")
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            continue
        payload = view.payload or {}
        feature = {
            "type": "Feature",
            "id": view.record_id,
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "record_id": view.record_id,
                "producer_id": view.producer_id,
                "kind": view.kind,
                "occurred_at": view.occurred_at.isoformat() if view.occurred_at else None,
                "tlp": view.tlp,
                "force_area": view.force_area,
                "site_name": place.get("site_name"),
                "site_kind": place.get("site_kind"),
                "summary": _summary(view),
                "description": payload.get("description"),
                "version": view.version,
            },
        }
        out.write(
            ("," if n else "") + "\n" + json.dumps(feature, ensure_ascii=False, sort_keys=True)
        )
        n += 1
    out.write("\n]}\n")
    return n


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, (list, tuple)):
        text = ";".join(str(v) for v in value)
    else:
        text = str(value)
    return _neutralise(text)


def _first_visible(line: str) -> str:
    """The first character of ``line`` that is neither whitespace nor invisible ("" if none)."""
    return next((c for c in line if not (c.isspace() or c in _INVISIBLE)), "")


def _neutralise(text: str) -> str:
    """``text`` as a safe CSV cell: line breaks as LF, and no line that could start a formula."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # splitlines also breaks on VT, FF, NEL, U+2028...: a tool might treat those as new lines too.
    return "".join(
        "'" + line if line.startswith("\t") or _first_visible(line) in _FORMULA_STARTS else line
        for line in text.splitlines(keepends=True)
    )


def csv_row(view: StoredRecordView) -> dict[str, str]:
    """One CSV row (see :data:`CSV_COLUMNS`); the full payload is in the JSON Lines export."""
    payload = view.payload or {}
    place = _place(payload)
    raw_grading = payload.get("grading")
    grading: Mapping[str, Any] = raw_grading if isinstance(raw_grading, Mapping) else {}
    values: dict[str, object] = {
        "record_id": view.record_id,
        "kind": view.kind,
        "producer_id": view.producer_id,
        "sequence": view.sequence,
        "occurred_at": view.occurred_at,
        "created_at": view.created_at,
        "appended_at": view.appended_at,
        "tlp": view.tlp,
        "classification": view.classification,
        "force_area": view.force_area,
        "site_kind": place.get("site_kind"),
        "site_name": place.get("site_name"),
        "address_or_area": place.get("address_or_area"),
        "latitude": place.get("latitude"),
        "longitude": place.get("longitude"),
        "summary": _summary(view),
        # Every field the policy let this agency keep; a redacted one shows its placeholder.
        "description": payload.get("description"),
        "behaviours": payload.get("behaviours"),
        "persons": _json_cell(payload.get("persons")),
        "vehicles": _json_cell(payload.get("vehicles")),
        "category": payload.get("category"),
        "mode": payload.get("mode"),
        "victim_type": payload.get("victim_type"),
        "victim_details": payload.get("victim_details"),
        "offender_description": payload.get("offender_description"),
        "case_status": payload.get("status"),
        "police_crime_reference": payload.get("police_crime_reference"),
        "reporter_ref": payload.get("reporter_ref"),
        "source_evaluation": grading.get("source_evaluation"),
        "assessment": grading.get("assessment"),
        "handling_code": grading.get("handling_code"),
        "handling_conditions": grading.get("handling_conditions"),
        "version": view.version,
        "retracted": view.retracted,
        "superseded": view.superseded,
        "action": view.action,
        "redacted_fields": view.redacted_fields,
        "rule_id": view.rule_id,
        "policy_hash": view.policy_hash,
        "digest": view.digest,
        "topic": view.topic,
        "partition": view.partition,
        "offset": view.offset,
    }
    return {k: _cell(values[k]) for k in CSV_COLUMNS}


def write_csv(views: Iterable[StoredRecordView], out: IO[str]) -> int:
    """A header and one row per record, every cell quoted. Returns the number of records written.

    ``out`` should be opened with ``newline=""`` (as :func:`write_export_file` does), so the LFs
    inside cells are written as they are.
    """
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    n = 0
    for view in views:
        writer.writerow(csv_row(view))
        n += 1
    return n


def write_export_file(path: Path, write: Callable[[IO[str]], int]) -> int:
    """Write an export to ``path`` with ``write`` (e.g. ``lambda fh: write_csv(views, fh)``).

    Returns what ``write`` returns (the number of records). The file is created 0600 (an export
    holds shared intelligence: who else may read it is for its owner to decide, not the umask)
    under a unique name beside ``path``, without following links, then renamed over ``path``
    (see :func:`intelbus.files.atomic_writer`): a failed export leaves no half file, and a
    symbolic link planted at ``path`` is replaced, never written through. Text is UTF-8 with
    ``newline=""``.

    Raises:
        OSError: the file cannot be created, written or renamed.
    """
    with atomic_writer(path, mode=PRIVATE_MODE) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            n = write(text)
            text.flush()
        finally:
            # Hand the file back (unclosed) to atomic_writer, which syncs, renames or removes it.
            with contextlib.suppress(OSError, ValueError):
                text.detach()
    return n


# --- STIX 2.1 ----------------------------------------------------------------------------------------


def write_stix(views: Iterable[StoredRecordView], out: IO[str], *, exported_at: datetime) -> int:
    """Write a STIX 2.1 bundle of ``views`` (:func:`intelbus.interop.stix.stix_bundle`: sightings
    and incidents, strict STIX, redacted fields left out); returns the number of records in it."""
    bundle = stix_bundle(views, exported_at=exported_at)
    json.dump(bundle, out, ensure_ascii=False, indent=2, sort_keys=True)
    out.write("\n")
    return len(
        {
            ext[EXTENSION_ID]["record_id"]
            for o in bundle["objects"]
            if isinstance(ext := o.get("extensions"), dict) and EXTENSION_ID in ext
        }
    )


# --- One export, as the CLI and the web console run it -----------------------------------------------

#: The formats written to one stream (misp-feed, a directory, is the CLI's alone).
STREAM_FORMATS: Final = ("jsonl", "csv", "stix", "geojson", "misp")


def event_time(view: StoredRecordView) -> datetime:
    """When the event happened (observed or occurred), else when the record was created: what
    ``--since`` and ``--until`` compare to."""
    return view.occurred_at if view.occurred_at is not None else view.created_at


def record_filter(
    *,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
    area: str | None,
    tlp: str | None,
) -> Callable[[StoredRecordView], bool]:
    """The same filter :meth:`Store.list_records` applies (``since`` inclusive, ``until``
    exclusive), for streaming exports."""

    def keep(v: StoredRecordView) -> bool:
        t = event_time(v)
        return (
            (kind is None or v.kind == kind)
            and (since is None or t >= since)
            and (until is None or t < until)
            and (area is None or v.force_area == area)
            and (tlp is None or v.tlp == tlp)
        )

    return keep


def export_selection(
    store: Store, keep: Callable[[StoredRecordView], bool]
) -> tuple[tuple[RecordRef, ...], tuple[str, str] | None]:
    """An export's first pass: the ids it names, and the first restricted record's id and why
    (None when none is), for the access log entry written before the first byte."""
    ids: list[RecordRef] = []
    restricted: tuple[str, str] | None = None
    for v in store.iter_records():
        if keep(v):
            ids.append((v.producer_id, v.record_id))
            if restricted is None and (reason := restriction(v)) is not None:
                restricted = (v.record_id, reason)
    return tuple(ids), restricted


def export_views(
    store: Store, logged: frozenset[RecordRef], *, justified: bool
) -> Iterator[StoredRecordView]:
    """An export's second pass: exactly the records its entry named (one the consumer stored in
    between is left out, not exported unlogged), and restricted ones only with a justification."""
    return (
        v
        for v in store.iter_records()
        if (v.producer_id, v.record_id) in logged and (justified or restriction(v) is None)
    )


def write_format(
    fmt: str, views: Iterable[StoredRecordView], out: IO[str], *, exported_at: datetime
) -> int:
    """Write ``views`` to ``out`` in one of :data:`STREAM_FORMATS`; returns how many records."""
    if fmt == "csv":
        return write_csv(views, out)
    if fmt == "stix":
        return write_stix(views, out, exported_at=exported_at)
    if fmt == "geojson":
        return write_geojson(views, out)
    if fmt == "misp":
        from intelbus.interop.misp import write_misp  # noqa: PLC0415 - PyMISP is slow to import

        return write_misp(views, out)
    if fmt == "jsonl":
        return write_jsonl(views, out)
    raise ValueError(f"{fmt!r} is not an export format")

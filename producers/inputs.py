"""Reading records to publish from JSON, JSON Lines, CSV, a STIX 2.1 bundle or MISP events, one
item at a time, errors per item (STIX: :mod:`intelbus.interop.stix_import`; MISP:
:mod:`intelbus.interop.misp`).

CSV columns use dotted names for nested fields (``place.force_area``, ``grading.tlp``); list fields
(``behaviours``, ``grading.handling_conditions``) are separated by ``;``; a cell starting with ``[``
or ``{`` is read as JSON (``vehicles``, ``persons``); an empty cell is left out (an empty list column is an empty list).

What people type is then made canonical (:func:`normalise`, docs/inputs.md), for every format:
a byte order mark (Excel's "CSV UTF-8") is dropped; coordinates written as text become numbers;
enumerations take any common spelling (``amber``, ``TLP:AMBER``, ``metropolitan``); times take
any ISO 8601 offset or ``Z`` and are converted to UTC; a missing ``record_id`` is generated. The
models then validate as strictly as ever: what travels on the bus is always canonical.
"""

from __future__ import annotations

import copy
import csv
import enum
import functools
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from intelbus.interop.stix_import import records_from_stix
from intelbus.policy.facts import Classification, Tlp
from intelbus.policy.redact import REDACTED
from intelbus.records import (
    KIND_TYPES,
    Behaviour,
    DomainRecord,
    ForceArea,
    HandlingCode,
    IncidentCategory,
    IncidentMode,
    IncidentStatus,
    IntelligenceAssessment,
    SiteKind,
    SourceEvaluation,
    VictimType,
)
from intelbus.spelling import canonical

#: A record may describe a time at most this far ahead (clocks drift; reports are not prophecy).
MAX_SKEW = timedelta(minutes=5)
#: Why a document nested too deeply to read is refused (json and every walker of it recurse).
TOO_DEEP = "nested too deeply to be a record"
_LIST_FIELDS = frozenset({"behaviours", "grading.handling_conditions"})


@dataclass(frozen=True, slots=True)
class Item:
    """One input item: where it came from (line or index) and its data, or why it could not be read."""

    where: str
    data: dict[str, Any] | None
    error: str | None = None


def detect_format(name: str) -> str:
    """json, jsonl or csv from a file name (stdin defaults to jsonl)."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".json"):
        return "json"
    return "jsonl"


def read_items(  # noqa: PLR0912 - a branch per format
    text: str, fmt: str, kind: str | None = None
) -> Iterator[Item]:
    """Items of a document in the given format; unreadable items are yielded with an error.

    ``kind`` keeps the records of one kind where a document holds several (a STIX bundle)."""
    text = text.removeprefix("\ufeff")  # a byte order mark: Excel's "CSV UTF-8"
    if fmt == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            yield Item("document", None, f"not JSON: {e.msg} at line {e.lineno}")
            return
        except RecursionError:  # json's parser recurses: refused in one line, not a traceback
            yield Item("document", None, TOO_DEEP)
            return
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items, 1):
            yield Item(
                f"item {i}",
                item if isinstance(item, dict) else None,
                None if isinstance(item, dict) else "not an object",
            )
    elif fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                yield Item(f"line {n}", None, f"not JSON: {e.msg}")
                continue
            except RecursionError:
                yield Item(f"line {n}", None, TOO_DEEP)
                continue
            yield Item(
                f"line {n}",
                item if isinstance(item, dict) else None,
                None if isinstance(item, dict) else "not an object",
            )
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        for n, row in enumerate(reader, 2):
            try:
                yield Item(f"line {n}", _unflatten(row))
            except ValueError as e:
                yield Item(f"line {n}", None, str(e))
    elif fmt == "stix":
        # A STIX 2.1 bundle (OpenCTI, MISP or an intelbus export): one item per record.
        for where, data, error in records_from_stix(text, kind):
            yield Item(where, data, error)
    elif fmt == "misp":
        # MISP events (intelbus/interop/misp.py); PyMISP is imported only when asked for.
        from intelbus.interop.misp import records_from_misp  # noqa: PLC0415

        for where, data, error in records_from_misp(text):
            yield Item(where, data, error)
    else:
        raise ValueError(f"unknown input format {fmt!r}")


def _unflatten(row: dict[str | Any, str | Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in row.items():
        if not isinstance(key, str) or not isinstance(raw, str):
            continue  # DictReader's overflow (None key) and missing (None value) cells
        value: Any = raw
        if raw == "":
            if key not in _LIST_FIELDS:
                continue
            value = []  # an empty list column means "none", e.g. no handling conditions
        elif raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"column {key}: not JSON") from e
        elif key in _LIST_FIELDS:
            value = [v.strip() for v in raw.split(";") if v.strip()]
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


_ENUMS: dict[str, type[enum.Enum]] = {
    "grading.source_evaluation": SourceEvaluation,
    "grading.assessment": IntelligenceAssessment,
    "grading.handling_code": HandlingCode,
    "grading.tlp": Tlp,
    "grading.classification": Classification,
    "place.site_kind": SiteKind,
    "place.force_area": ForceArea,
    "behaviours": Behaviour,
    "category": IncidentCategory,
    "mode": IncidentMode,
    "victim_type": VictimType,
    "status": IncidentStatus,
}
#: The namespace of record ids derived from a row's contents (an arbitrary, fixed UUID).
_ID_NAMESPACE = uuid.UUID("5b0f1c4e-8d8e-4b57-9f3e-7a2c61d0b7a4")
_TIMES = ("observed_at", "occurred_at", "corrected_at", "retracted_at", "erased_at")
_NUMBERS = ("place.latitude", "place.longitude")


def normalise(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``data`` made canonical (module docstring); True if its record id was generated.

    Values that cannot be made canonical are left as they are, for the model to refuse with its
    own message (and every other problem of the item beside it).
    """
    out = copy.deepcopy(data)
    place = out.get("place")
    if isinstance(place, dict):
        place.setdefault("site_name", None)  # an empty cell: no site name (it is optional)
    _fix(out)
    replacement = out.get("replacement")
    if isinstance(replacement, dict):
        if not replacement.get("record_id") and isinstance(out.get("corrects_record_id"), str):
            replacement["record_id"] = out["corrects_record_id"]
        _fix(replacement)
    generated = False
    if not out.get("record_id"):
        # Derived from the contents, not random: publishing the same file again (the normal
        # retry) gives each row the same id, so it is recognised as already published.
        canonical_json = json.dumps(
            {k: v for k, v in out.items() if k != "record_id"}, sort_keys=True, default=str
        )
        out["record_id"] = str(uuid.uuid5(_ID_NAMESPACE, canonical_json))
        generated = True
    return out, generated


def _fix(node: dict[str, Any]) -> None:
    for dotted, kind in _ENUMS.items():
        _apply(node, dotted, functools.partial(_enum, kind))
    for dotted in _NUMBERS:
        _apply(node, dotted, _number)
    for name in _TIMES:
        _apply(node, name, _time)


def _apply(node: dict[str, Any], dotted: str, fix: Callable[[Any], Any]) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            return
        node = child
    if last not in node:
        return
    value = node[last]
    node[last] = [fix(v) for v in value] if isinstance(value, list) else fix(value)


def _enum(kind: type[enum.Enum], value: Any) -> Any:  # noqa: ANN401 - whatever was typed
    if isinstance(value, str):
        member = canonical(kind, value)
        if member is not None:
            return member.value
    return value


def _number(value: Any) -> Any:  # noqa: ANN401 - whatever was typed
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _time(value: Any) -> Any:  # noqa: ANN401 - whatever was typed
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if parsed.tzinfo is None:
        return value  # a time without an offset is ambiguous: the model refuses it, saying so
    return parsed.astimezone(UTC).isoformat()


def redaction_placeholders(data: object, path: str = "") -> list[str]:
    """The dotted paths of ``data`` whose value is the redaction placeholder ``[REDACTED]``.

    A store's JSON Lines or CSV export (or a MISP or STIX file another tool made from one) keeps
    the placeholder where a policy withheld a value. Published again, the placeholder would travel
    as if the producer had said it, and every receiving store would take the field for one its
    own policy redacted: such an item is refused, naming the fields (never their values).
    """
    found: list[str] = []
    pending: list[tuple[str, object]] = [(path, data)]
    while pending:  # iterative: an item nested deeply is not a stack overflow
        at, node = pending.pop()
        if node == REDACTED:
            found.append(at or "record")
        elif isinstance(node, dict):
            pending.extend((f"{at}.{k}" if at else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            pending.extend((at, v) for v in node)
    return sorted(set(found))


def future_times(data: dict[str, Any], now: datetime, skew: timedelta) -> list[str]:
    """The time fields of an item that lie beyond ``now + skew`` (each a problem to report)."""
    return [f"{path}: {message}" for path, message in _future(data, now, skew)]


def _future(data: dict[str, Any], now: datetime, skew: timedelta) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    nodes = [("", data)]
    replacement = data.get("replacement")
    if isinstance(replacement, dict):
        nodes.append(("replacement.", replacement))
    for prefix, node in nodes:
        for name in _TIMES:
            value = node.get(name)
            if not isinstance(value, str):
                continue
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            if when.tzinfo is not None and when > now + skew:
                found.append((f"{prefix}{name}", f"{value} is in the future"))
    return found


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an item is refused, and where: ``path`` is dotted as the item is nested
    (``place.force_area``, ``persons.0.summary``), "" for the item as a whole. A form puts each
    beside its field; the CLI joins them into one line."""

    path: str
    message: str


class InputInvalid(ValueError):
    """An item that is not a valid record: every problem at once, and the one line the CLI prints.

    ``record_id`` and ``generated`` are known once the item was made canonical (None and False
    when it was refused before that), so a caller can still say which record was refused.
    """

    def __init__(
        self,
        message: str,
        problems: tuple[Problem, ...],
        record_id: str | None = None,
        generated: bool = False,
    ) -> None:
        super().__init__(message)
        self.problems = problems
        self.record_id = record_id
        self.generated = generated


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid record made from an item, its id, and whether that id was generated."""

    record: DomainRecord
    record_id: str
    generated: bool


_PLACEHOLDER = "holds the redaction placeholder [REDACTED] (a redacted copy, not the record)"


def check_record(kind: str, data: dict[str, Any], now: datetime) -> Checked:
    """``data`` as a record of ``kind``, validated as the CLI and the web console both validate.

    One place for the rules, so a report typed into the console is refused or accepted exactly as
    the same report in a file would be: no redaction placeholder, made canonical
    (:func:`normalise`), no time beyond ``now + MAX_SKEW``, and the model's own rules.

    Raises:
        InputInvalid: every problem of the item (its str() is the CLI's one line).
        KeyError: ``kind`` is not a record kind.
        RecursionError: the item is nested deeper than can be walked (the caller says so).
    """
    model = KIND_TYPES[kind]
    if placeholders := redaction_placeholders(data):
        # A redacted copy (a store's export): what its policy withheld must not be published as
        # if it had been said.
        raise InputInvalid(
            f"{_PLACEHOLDER}: {', '.join(placeholders)}",
            tuple(Problem(path, _PLACEHOLDER) for path in _placeholder_paths(data)),
        )
    canonical_data, generated = normalise(data)
    record_id = str(canonical_data["record_id"])
    future = _future(canonical_data, now, MAX_SKEW)
    problems = [Problem(path, message) for path, message in future]
    try:
        record = model.model_validate(canonical_data)
    except ValidationError as e:
        problems += [
            Problem(".".join(map(str, x["loc"])), x["msg"]) for x in e.errors(include_url=False)
        ]
    if problems:
        message = "; ".join(f"{p.path or 'record'}: {p.message}" for p in problems)
        raise InputInvalid(message, tuple(problems), record_id, generated) from None
    return Checked(record, record_id, generated)


def _placeholder_paths(data: object) -> list[str]:
    # As redaction_placeholders, but with list indexes (``persons.1.summary``), so a form can
    # show the problem beside the right person; the CLI's line keeps the unindexed paths.
    found: list[str] = []
    pending: list[tuple[str, object]] = [("", data)]
    while pending:
        at, node = pending.pop()
        if node == REDACTED:
            found.append(at)
        elif isinstance(node, dict):
            pending.extend((f"{at}.{k}" if at else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            pending.extend((f"{at}.{i}" if at else str(i), v) for i, v in enumerate(node))
    return sorted(set(found))

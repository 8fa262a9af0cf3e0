"""Reading records to publish from JSON, JSON Lines or CSV, one item at a time, errors per item.

CSV columns use dotted names for nested fields (``place.force_area``, ``grading.tlp``); list fields
(``behaviours``, ``grading.handling_conditions``) are separated by ``;``; a cell starting with ``[``
or ``{`` is read as JSON (``vehicles``, ``persons``); an empty cell is left out (an empty list column is an empty list).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


def read_items(text: str, fmt: str) -> Iterator[Item]:
    """Items of a document in the given format; unreadable items are yielded with an error."""
    if fmt == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            yield Item("document", None, f"not JSON: {e.msg} at line {e.lineno}")
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

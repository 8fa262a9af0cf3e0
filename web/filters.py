"""The filters of ``intelbus store list`` as a GET form: parsed from a page's query, with an error
per field instead of a usage error, so a bad date is shown beside its input.

Same meanings as the CLI: ``since`` inclusive, ``until`` exclusive, both ISO 8601 compared to when
the event happened; a time without an offset is UTC; kind, area and TLP in any common spelling.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from intelbus.policy.facts import Tlp
from intelbus.records import ForceArea
from intelbus.spelling import allowed, canonical

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 5000
MAX_TEXT: Final = 200
KINDS: Final = ("sighting", "incident")
AREAS: Final = tuple(a.value for a in ForceArea)
TLPS: Final = tuple(t.value for t in Tlp)


@dataclass(frozen=True, slots=True)
class Filters:
    """A valid filter (None: not filtered), the form's raw values, and errors by field."""

    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    area: str | None = None
    tlp: str | None = None
    limit: int = DEFAULT_LIMIT
    text: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def query(self) -> dict[str, Any]:
        """The filters as ``store list`` logs them (the raw dates as typed; no search text)."""
        return {
            "kind": self.kind,
            "since": self.raw.get("since") or None,
            "until": self.raw.get("until") or None,
            "area": self.area,
            "tlp": self.tlp,
            "limit": self.limit,
        }


def parse_time(value: str) -> datetime:
    """An ISO 8601 date or time; naive values are UTC. Raises ValueError."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _enum(kind: type[Any], value: str) -> str:
    member = canonical(kind, value)
    if member is None:
        raise ValueError(f"use one of {allowed(kind)}")
    return str(member.value)


def parse_filters(  # noqa: PLR0912 - one branch per field, in the form's order
    arg: Callable[[str], str | None], *, with_limit: bool = True
) -> Filters:
    """The filters from a page's query (``arg(name)`` gives a parameter or None)."""
    names = ("kind", "since", "until", "area", "tlp", "limit", "q")
    raw = {n: (arg(n) or "").strip() for n in names}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if raw["kind"]:
        kind = {"sightings": "sighting", "incidents": "incident"}.get(
            raw["kind"].lower(), raw["kind"].lower()
        )
        if kind in KINDS:
            values["kind"] = kind
        else:
            errors["kind"] = "use sighting or incident"
    for name in ("since", "until"):
        if raw[name]:
            try:
                values[name] = parse_time(raw[name])
            except ValueError:
                errors[name] = "not an ISO 8601 date or time (e.g. 2026-09-01 or 2026-09-01T18:30)"
    for name, kind_enum in (("area", ForceArea), ("tlp", Tlp)):
        if raw[name]:
            try:
                values[name] = _enum(kind_enum, raw[name])
            except ValueError as e:
                errors[name] = str(e)
    if with_limit and raw["limit"]:
        try:
            limit = int(raw["limit"])
            if not 0 <= limit <= MAX_LIMIT:
                raise ValueError
            values["limit"] = limit
        except ValueError:
            errors["limit"] = f"a whole number from 0 to {MAX_LIMIT}"
    if raw["q"]:
        if len(raw["q"]) > MAX_TEXT or not raw["q"].isprintable():
            errors["q"] = f"at most {MAX_TEXT} printable characters"
        else:
            values["text"] = raw["q"]
    if (
        "since" in values
        and "until" in values
        and values["since"] >= values["until"]
        and "until" not in errors
    ):
        errors["until"] = "must be after the start"
    return Filters(**values, raw=raw, errors=errors)

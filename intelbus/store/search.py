"""Search that finds what an analyst typed in a record's values, never in its field names.

``grading`` must not find every record because every payload has a ``grading`` key; ``AB12 CDE``
must find the vehicle ``AB12CDE`` (registrations are stored without spaces), and ``ab12-cde`` too.
A value matches when the text occurs in it ignoring case, or, ignoring case, spaces and hyphens
in both. Redacted values are their placeholder, so what a policy withheld is never found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_LOOSE = re.compile(r"[\s\-]+")


def _leaves(value: Any) -> Iterator[str]:  # noqa: ANN401 - any JSON value
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def matches(payload: dict[str, Any] | None, text: str) -> bool:
    """Whether ``text`` occurs in one of the payload's values (module docstring)."""
    if not payload or not text.strip():
        return False
    needle = text.strip().casefold()
    loose = _LOOSE.sub("", needle)
    for leaf in _leaves(payload):
        folded = leaf.casefold()
        if needle in folded or (loose and loose in _LOOSE.sub("", folded)):
            return True
    return False

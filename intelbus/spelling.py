"""The spellings people use for the bus's enumerations, mapped to the one each schema holds.

``TLP:AMBER``, ``amber`` and ``Amber`` are all ``AMBER``; ``TLP:AMBER+STRICT`` is
``AMBER_STRICT``; ``Official-Sensitive`` is ``OFFICIAL_SENSITIVE``; ``metropolitan`` is
``METROPOLITAN``. Used where people type values (publish inputs, an analyst's filters); what
travels on the bus is always the canonical symbol, which the models require.
"""

from __future__ import annotations

import enum
import re
from typing import TypeVar

E = TypeVar("E", bound=enum.Enum)

_SEPARATORS = re.compile(r"[\s+\-/]+")


def key(text: str) -> str:
    """The comparison key of a spelling: upper case, ``TLP:`` dropped, separators as ``_``."""
    cleaned = text.strip().upper()
    if cleaned.startswith("TLP:"):
        cleaned = cleaned[4:]
    return _SEPARATORS.sub("_", cleaned).strip("_")


def canonical(kind: type[E], text: str) -> E | None:
    """The member of ``kind`` that ``text`` spells, or None."""
    wanted = key(text)
    for member in kind:
        if key(str(member.value)) == wanted or key(member.name) == wanted:
            return member
    return None


def allowed(kind: type[enum.Enum]) -> str:
    """The canonical values, for an error message."""
    return ", ".join(str(m.value) for m in kind)

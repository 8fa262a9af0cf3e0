"""Field-level redaction of a decoded record (a JSON-like dict), by dotted paths.

A redacted field keeps its key with the value ``"[REDACTED]"`` (lists and nested records are
replaced whole), so an analyst can see that something was withheld and where.

A path names a field at any depth. A step through a list applies the rest of the path to every
element: ``vehicles.registration`` redacts the registration of each vehicle, ``persons`` the whole
list of persons, and lists inside list elements are walked the same way. A field that is absent or
null in a record is left alone: a policy may name fields only some record kinds have (the policy
loader refuses paths no record kind has: :mod:`intelbus.policy.rules`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"


def redact(payload: dict[str, Any], paths: Iterable[str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A redacted deep copy of ``payload`` and the paths that were actually present and redacted.

    A path counts as redacted when at least one value was replaced (through a list, in at least
    one element). ``payload`` itself is never changed.
    """
    out = copy.deepcopy(payload)
    done: list[str] = []
    for path in paths:
        if _redact_path(out, path.split(".")):
            done.append(path)
    return out, tuple(done)


def _redact_path(root: dict[str, Any], parts: list[str]) -> bool:
    """Replace every value ``parts`` reaches under ``root``; whether any was replaced."""
    replaced = False
    # (node, index of the next path part): iterative, so nesting depth never meets the stack limit.
    pending: list[tuple[Any, int]] = [(root, 0)]
    while pending:
        node, at = pending.pop()
        if isinstance(node, list):
            pending.extend((element, at) for element in node)
            continue
        if not isinstance(node, dict):
            continue
        key = parts[at]
        if node.get(key) is None:
            continue
        if at == len(parts) - 1:
            node[key] = REDACTED
            replaced = True
        else:
            pending.append((node[key], at + 1))
    return replaced

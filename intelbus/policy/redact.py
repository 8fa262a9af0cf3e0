"""Field-level redaction of a decoded record (a JSON-like dict), by dotted paths.

A redacted field keeps its key with the value ``"[REDACTED]"`` (lists and nested records are
replaced whole), so an analyst can see that something was withheld and where. Paths that do not
exist in a record are ignored: a policy may name fields only some record kinds have.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"


def redact(payload: dict[str, Any], paths: Iterable[str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A redacted deep copy of ``payload`` and the paths that were actually present and redacted."""
    out = copy.deepcopy(payload)
    done: list[str] = []
    for path in paths:
        parts = path.split(".")
        node: Any = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and parts[-1] in node and node[parts[-1]] is not None:
            node[parts[-1]] = REDACTED
            done.append(path)
    return out, tuple(done)

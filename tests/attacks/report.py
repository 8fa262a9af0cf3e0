"""Machine-readable results of the attack and fuzz suites, for the report card.

When ``INTELBUS_ATTACK_REPORT`` names a file, every attack case and every fuzz target appends one
JSON line to it (JSON Lines, one object per line; the report-card builder reads them back):

* attack: ``{"suite": "attacks", "case", "source": "simulated"|"broker", "expected_reason",
  "outcome": "rejected"|"accepted", "reason", "trusted_state_unchanged"}``
* fuzz: ``{"suite": "fuzz", "target", "examples", "typed_errors", "crashes"}``, where a crash is
  an exception outside the typed hierarchy (:class:`~intelbus.errors.IntelbusError`).

Unset, every call is a no-op. Lines are appended with one ``write`` on a file opened in append
mode, so parallel writers (pytest-xdist workers) do not interleave within a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPORT_ENV = "INTELBUS_ATTACK_REPORT"


def _append(line: dict[str, object]) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")


def attack_result(
    *,
    case: str,
    source: Literal["simulated", "broker"],
    expected_reason: str,
    outcome: Literal["rejected", "accepted"],
    reason: str,
    trusted_state_unchanged: bool,
) -> None:
    """Record one attack case (a no-op unless ``INTELBUS_ATTACK_REPORT`` is set)."""
    _append(
        {
            "suite": "attacks",
            "case": case,
            "source": source,
            "expected_reason": expected_reason,
            "outcome": outcome,
            "reason": reason,
            "trusted_state_unchanged": trusted_state_unchanged,
        }
    )


@dataclass
class FuzzTally:
    """Counts for one fuzz target: examples run, typed errors seen, crashes (untyped errors)."""

    target: str
    examples: int = 0
    typed_errors: int = 0
    crashes: int = 0

    def run(self, fn: Callable[[], object], typed: tuple[type[BaseException], ...]) -> bool:
        """Call ``fn``: True if it returned, False on a typed error; an untyped one is re-raised.

        A crash is counted before it propagates, so the test (and Hypothesis's shrinking) still
        sees it and fails.
        """
        self.examples += 1
        try:
            fn()
        except typed:
            self.typed_errors += 1
            return False
        except Exception:
            self.crashes += 1
            raise
        return True

    def write(self) -> None:
        """Append this target's line (a no-op unless ``INTELBUS_ATTACK_REPORT`` is set)."""
        _append(
            {
                "suite": "fuzz",
                "target": self.target,
                "examples": self.examples,
                "typed_errors": self.typed_errors,
                "crashes": self.crashes,
            }
        )

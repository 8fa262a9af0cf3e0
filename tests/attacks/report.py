"""Machine-readable results of the attack and fuzz suites, for the report card.

When ``INTELBUS_ATTACK_REPORT`` names a file, every attack case and every fuzz target appends one
JSON line to it (JSON Lines, one object per line; the report-card builder reads them back):

* attack: ``{"suite": "attacks", "case", "source": "simulated"|"broker", "expected_reason",
  "outcome": "rejected"|"accepted", "reason", "trusted_state_unchanged"}``
* fuzz: ``{"suite": "fuzz", "target", "examples", "typed_errors", "crashes"}``, where a crash is
  an exception outside the typed hierarchy (:class:`~intelbus.errors.IntelbusError`).
* genuine: ``{"suite": "genuine", "case", "source", "published", "kept"}``: after an attack, how
  many of CST's genuine records published next were kept; ``published - kept`` were lost to it.
* availability: ``{"suite": "availability", "case", "source", "stopped"}``: a validly signed
  hostile value was delivered; ``stopped`` is true if the consumer raised outside the typed
  hierarchy, or a restarted consumer could not read its store back.
* completeness: ``{"suite": "completeness", "case", "source", "withheld", "reported"}``: records
  vouched for by heartbeats were withheld or deleted; how many of them the reader reported
  missing (``withheld - reported`` went unnoticed).

Unset, every call is a no-op. Lines are appended with one ``write`` on a file opened in append
mode, so parallel writers (pytest-xdist workers) do not interleave within a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

REPORT_ENV = "INTELBUS_ATTACK_REPORT"
T = TypeVar("T")


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


#: The longest exception description a :class:`FuzzRun` keeps (type name and a cut-down repr).
CRASH_TEXT_MAX = 160


def describe_exception(exc: BaseException) -> str:
    """``TypeName: repr`` of an exception, the repr cut to keep the text short.

    The repr is cut so a report or an assertion message carries little of the input that caused
    the exception: Hypothesis prints the (shrunk) input itself when a test fails.
    """
    text = f"{type(exc).__name__}: {exc!r}"
    return text if len(text) <= CRASH_TEXT_MAX else text[: CRASH_TEXT_MAX - 3] + "..."


@dataclass(frozen=True)
class FuzzRun(Generic[T]):
    """What one :meth:`FuzzTally.run` call saw. It has no truth value: inspect its fields.

    * ``returned``: ``fn`` returned (``value`` is what it returned);
    * ``typed_error``: ``fn`` raised one of the typed exceptions (``error`` is it);
    * ``crash``: ``fn`` raised anything else; ``crash`` describes it (:func:`describe_exception`)
      and ``error`` is it. Assert on it: ``assert r.crash is None, r.crash``.
    """

    returned: bool
    value: T | None = None
    error: Exception | None = field(default=None, repr=False, compare=False)
    crash: str | None = None

    @property
    def typed_error(self) -> bool:
        return self.error is not None and self.crash is None

    def __bool__(self) -> bool:
        raise TypeError(
            "a FuzzRun has no truth value: check .crash (and .returned) explicitly, "
            "e.g. `assert r.crash is None, r.crash`"
        )


def genuine_result(
    *, case: str, source: Literal["simulated", "broker"], published: int, kept: int
) -> None:
    """Record how CST's genuine feed fared after an attack (a no-op unless the env is set)."""
    _append(
        {"suite": "genuine", "case": case, "source": source, "published": published, "kept": kept}
    )


@dataclass
class FuzzTally:
    """Counts for one fuzz target: examples run, typed errors seen, crashes (untyped errors)."""

    target: str
    examples: int = 0
    typed_errors: int = 0
    crashes: int = 0

    def run(self, fn: Callable[[], T], typed: tuple[type[Exception], ...]) -> FuzzRun[T]:
        """Call ``fn`` once and count the outcome; never raises what ``fn`` raised.

        An exception outside ``typed`` is a crash: counted and described in the result, not
        re-raised. The caller must assert on it (``assert r.crash is None, r.crash``) so the crash
        fails the test through that assertion (and Hypothesis shrinks on the AssertionError).
        """
        self.examples += 1
        try:
            value = fn()
        except typed as e:
            self.typed_errors += 1
            return FuzzRun(returned=False, error=e)
        except Exception as e:  # noqa: BLE001 - a crash is recorded, and the caller asserts on it
            self.crashes += 1
            return FuzzRun(returned=False, error=e, crash=describe_exception(e))
        return FuzzRun(returned=True, value=value)

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


def availability_result(
    *, case: str, source: Literal["simulated", "broker"], stopped: bool
) -> None:
    """Record whether one hostile value stopped a consumer (a no-op unless the env is set)."""
    _append({"suite": "availability", "case": case, "source": source, "stopped": stopped})


def completeness_result(
    *, case: str, source: Literal["simulated", "broker"], withheld: int, reported: int
) -> None:
    """Record how many withheld records a reader reported missing (a no-op unless the env is set)."""
    _append(
        {
            "suite": "completeness",
            "case": case,
            "source": source,
            "withheld": withheld,
            "reported": reported,
        }
    )

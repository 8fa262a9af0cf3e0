"""The facts of a record that sharing decisions may look at, as plain values.

Built from a domain model by :func:`intelbus.records`-aware code (``from_record``); kept separate
so the policy engine can be tested and fuzzed on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Tlp(enum.StrEnum):
    """Traffic Light Protocol 2.0, least to most restrictive."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER_STRICT"
    RED = "RED"


class Classification(enum.StrEnum):
    """UK Government Security Classifications, least to most sensitive."""

    OFFICIAL = "OFFICIAL"
    OFFICIAL_SENSITIVE = "OFFICIAL_SENSITIVE"
    SECRET = "SECRET"  # noqa: S105 - a classification name, not a password
    TOP_SECRET = "TOP_SECRET"  # noqa: S105 - a classification name, not a password


CLASSIFICATION_ORDER = {c: i for i, c in enumerate(Classification)}


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What a sharing decision may depend on. No free text, no personal data."""

    # "sighting" | "incident". A correction is judged as the new version of the record it
    # corrects (that record's kind); a retraction always applies and is not judged. So
    # "correction" and "retraction" in a policy's ``kinds`` have no effect (policy.rules).
    kind: str
    tlp: Tlp
    classification: Classification
    handling_code: str  # "P" | "C"
    conditions: tuple[str, ...]  # handling conditions when the code is C
    source_evaluation: str  # "1" | "2" | "3"
    assessment: str  # "A".."E"
    force_area: str | None
    occurred_at: datetime | None

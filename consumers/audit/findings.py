"""Audit findings: one frozen value per problem found while replaying a topic.

A finding names where the problem is (topic, partition, offset), what it is (a stable
:class:`~intelbus.errors.ReasonCode`) and, when known, which record (record id, producer,
sequence). ``authentic`` says whether the record itself passed envelope verification: for a
record that did not, the ids are the *claims* of unverified bytes, kept to help find it, never to
be trusted. Messages carry ids, counts and times only, never contents or keys (as every error in
:mod:`intelbus.errors`).

Severity: *integrity* findings (forgery, tampering, wrong place, revoked keys, broken chains,
frozen feeds, over-addressing) make the verdict fail and the command exit non-zero. *Warnings*
(clock skew; a byte-identical re-delivery of the newest record, which the publisher's resend of an
unacknowledged record legitimately produces; a record that arrived late and filled a range reported
missing, which a resend after a refused send produces, and which consumers accept) are reported
but do not fail the audit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from intelbus.errors import ReasonCode


class Severity(enum.StrEnum):
    """Whether a finding fails the audit."""

    INTEGRITY = "integrity"
    WARNING = "warning"


WARNING_REASONS: frozenset[ReasonCode] = frozenset(
    {ReasonCode.CLOCK_SKEW, ReasonCode.CHAIN_DUPLICATE, ReasonCode.CHAIN_REORDER}
)


def severity_of(reason: ReasonCode) -> Severity:
    """The severity of a reason code (integrity unless listed as a warning)."""
    return Severity.WARNING if reason in WARNING_REASONS else Severity.INTEGRITY


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at one offset of one topic."""

    topic: str
    partition: int
    offset: int
    reason: ReasonCode
    message: str
    record_id: str | None = None
    producer_id: str | None = None
    sequence: int | None = None
    authentic: bool = False

    @property
    def severity(self) -> Severity:
        return severity_of(self.reason)

    def to_json(self) -> dict[str, Any]:
        """A JSON object (one line of the report's findings)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason.value,
            "severity": self.severity.value,
            "record_id": self.record_id,
            "producer_id": self.producer_id,
            "sequence": self.sequence,
            "authentic": self.authentic,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """Read back one finding written by :meth:`to_json`.

        Raises:
            ValueError, KeyError: not a finding.
        """
        return cls(
            topic=str(data["topic"]),
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            reason=ReasonCode(data["reason"]),
            message=str(data["message"]),
            record_id=data.get("record_id"),
            producer_id=data.get("producer_id"),
            sequence=data.get("sequence"),
            authentic=bool(data.get("authentic", False)),
        )

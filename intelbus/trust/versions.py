"""A record's current state, as the fold of its versions.

Every version of a record is kept (the original, each correction, each retraction), each with the
sharing decision made for it when it arrived. What an analyst sees now is derived, never edited
in place: so a re-judgement (a key declared compromised withdraws every version it signed after a
time) recomputes the current state from the versions that remain, and a forged correction
withdrawn later leaves exactly the state the genuine versions make.

Rules: the newest content version that is not withdrawn is current (its payload, or none when it
was withheld or quarantined, and its labels); a retraction that is not withdrawn makes the record
retracted for good (a later correction does not bring it back); a record whose every content
version was withdrawn is itself withdrawn, keeping its newest content as evidence.

An erasure (issue 16) ends the record's contents for good: its status is erased whatever came
before or after, even if the erasure itself is later withdrawn (a key found compromised): the
store deleted the payloads when the erasure applied, and a fold cannot bring deleted data back.
Restoring after a forged erasure means replaying the record from the topic into a new store
(docs/data-protection.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from intelbus.trust.model import STATUS_OF_OUTCOME, Change, RecordStatus, VersionDecision


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One stored version, as the fold needs it."""

    version: int
    change: Change
    decision: VersionDecision
    withdrawn: bool = False


@dataclass(frozen=True, slots=True)
class Current:
    """A record's current state: its status, its newest version number, and the version whose
    content and labels are current."""

    status: RecordStatus
    version: int
    decision: VersionDecision
    content_version: int


def fold(versions: Iterable[VersionRow]) -> Current:
    """The current state of a record from all its versions (module docstring).

    Raises:
        ValueError: no versions, or no content version at all (a store bug: every record starts
            with its original).
    """
    rows = sorted(versions, key=lambda r: r.version)
    if not rows:
        raise ValueError("a record has at least its original version")
    latest = rows[-1].version
    content = [r for r in rows if r.change not in (Change.RETRACTION, Change.ERASURE)]
    if not content:
        raise ValueError("a record's versions hold no original")
    standing = [r for r in content if not r.withdrawn]
    retracted = any(r.change is Change.RETRACTION and not r.withdrawn for r in rows)
    if any(r.change is Change.ERASURE for r in rows):
        # Whatever a version row still says, an erased record holds no payload.
        gone = replace(content[-1].decision, payload=None, redacted_fields=())
        return Current(RecordStatus.ERASED, latest, gone, content[-1].version)
    if not standing:
        evidence = content[-1]
        return Current(RecordStatus.WITHDRAWN, latest, evidence.decision, evidence.version)
    current = standing[-1]
    status = RecordStatus.RETRACTED if retracted else STATUS_OF_OUTCOME[current.decision.outcome]
    return Current(status, latest, current.decision, current.version)

"""The bus's vocabulary of record kinds and topic families: one home for both.

A *kind* says what one record is (signed in its envelope header, so a sighting cannot be passed
off as a retraction). A *family* is a group of kinds that share a topic: sightings, incidents,
heartbeats, and the directory. A correction or a retraction lives on the topic of the record it
amends, so the topic's family also says which kind of record it may amend: a correction on the
sightings topic can only correct a sighting.
"""

from __future__ import annotations

import enum


class RecordKind(enum.IntEnum):
    """What a record is; the number is its byte in the envelope header."""

    SIGHTING = 1
    INCIDENT = 2
    CORRECTION = 3
    RETRACTION = 4
    HEARTBEAT = 5
    WITHHELD = 6  # reserved in the wire format; no producer writes it
    ERASURE = 7  # erases its own producer's record wherever it is held (issue 16)

    @property
    def label(self) -> str:
        """The lower-case name used in stores, policies and exports (``"sighting"``)."""
        return self.name.lower()

    @property
    def is_amendment(self) -> bool:
        return self in (RecordKind.CORRECTION, RecordKind.RETRACTION, RecordKind.ERASURE)

    @property
    def is_content(self) -> bool:
        """A record that stands on its own and can be stored (not an amendment or a heartbeat)."""
        return self in CONTENT_KINDS


class Family(enum.StrEnum):
    """Record families; each has its own topic (``<prefix>.<family>``)."""

    SIGHTINGS = "sightings"
    INCIDENTS = "incidents"
    DIRECTORY = "directory"
    HEARTBEATS = "heartbeats"


CONTENT_KINDS: frozenset[RecordKind] = frozenset({RecordKind.SIGHTING, RecordKind.INCIDENT})

#: The content kind each content family carries (and whose amendments it carries).
FAMILY_CONTENT: dict[Family, RecordKind] = {
    Family.SIGHTINGS: RecordKind.SIGHTING,
    Family.INCIDENTS: RecordKind.INCIDENT,
}
CONTENT_FAMILY: dict[RecordKind, Family] = {k: f for f, k in FAMILY_CONTENT.items()}

KIND_BY_LABEL: dict[str, RecordKind] = {k.label: k for k in RecordKind}


def family_of_topic(topic: str) -> Family | None:
    """The family a bus topic carries, from its name (``intelbus.sightings`` -> SIGHTINGS).

    None for a topic that is not named ``<prefix>.<family>``: such a topic carries no record kind.
    """
    _, _, suffix = topic.rpartition(".")
    try:
        return Family(suffix)
    except ValueError:
        return None


def kind_belongs_on(kind: RecordKind, family: Family | None) -> bool:
    """Whether a record of ``kind`` may be published on a topic of ``family``.

    Sightings and their amendments go on sightings topics, incidents and theirs on incidents
    topics, heartbeats on heartbeat topics. (Which content kind an amendment amends is checked
    against its target: :data:`FAMILY_CONTENT`.)
    """
    if family is None:
        return False
    if kind is RecordKind.HEARTBEAT:
        return family is Family.HEARTBEATS
    if kind.is_amendment:
        return family in FAMILY_CONTENT
    return FAMILY_CONTENT.get(family) is kind

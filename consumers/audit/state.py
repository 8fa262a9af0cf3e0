"""What a replay carries from one record to the next in memory: counters and open gaps.

Stream heads, the record ids seen and waiting amendments live in the auditor's ledger (a store
of its own, :mod:`consumers.audit.run`), because the judge the auditor shares with consumers
needs them. What stays here grows with the number of producer streams, producers and partitions
(all bounded by the directory and the topic), never with the number of records: per stream at
most :data:`~intelbus.chain.MAX_OPEN_GAPS` ranges of missing sequence numbers, each with where it
was noticed (reported at the end if no late record fills it); the digest is 512 bytes; findings
go to the report file as they are found. The whole state round-trips through JSON for
checkpoints.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from consumers.audit.digest import TopicDigest

UNVERIFIED_PRODUCER = "(unverified)"


@dataclass(slots=True)
class OpenGap:
    """A range of sequence numbers missing from a stream, and the record that revealed it."""

    first: int
    last: int
    partition: int
    offset: int
    record_id: str
    sequence: int


@dataclass(slots=True)
class ProducerCounts:
    """Per producer: records read, how many were authentic, findings, and the lowest and highest
    sequence numbers of its authentic records (over all its streams on the topic)."""

    records: int = 0
    authentic: int = 0
    findings: int = 0
    lowest_sequence: int | None = None
    highest_sequence: int | None = None

    def saw(self, sequence: int) -> None:
        if self.lowest_sequence is None or sequence < self.lowest_sequence:
            self.lowest_sequence = sequence
        if self.highest_sequence is None or sequence > self.highest_sequence:
            self.highest_sequence = sequence


@dataclass(slots=True)
class PartitionSpan:
    """Per partition: the first and last offsets read, and how many records."""

    first_offset: int
    last_offset: int
    records: int = 0


@dataclass(slots=True)
class HeartbeatSeen:
    """A producer's newest heartbeat: when (microseconds, broker time if known) and where."""

    at_us: int
    partition: int
    offset: int
    interval_ms: int | None = None


@dataclass(slots=True)
class AuditState:
    """Everything a replay keeps between records."""

    topic: str
    digest: TopicDigest
    records: int = 0
    authentic: int = 0
    addressed: int = 0
    decrypted: int = 0
    integrity: int = 0
    warnings: int = 0
    #: Authentic erasure records accepted in their place (issue 16): each erased its target at
    #: every agency holding it. The erased records stay on the topic, counted and digested.
    erasures: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    producers: dict[str, ProducerCounts] = field(default_factory=dict)
    partitions: dict[int, PartitionSpan] = field(default_factory=dict)
    gaps: dict[str, list[OpenGap]] = field(default_factory=dict)  # by stream label
    seen: set[str] = field(default_factory=set)  # stream labels seen (bounded like the streams)
    heartbeats: dict[str, HeartbeatSeen] = field(default_factory=dict)

    @classmethod
    def empty(cls, topic: str) -> AuditState:
        return cls(topic=topic, digest=TopicDigest(topic))

    def producer(self, producer_id: str) -> ProducerCounts:
        found = self.producers.get(producer_id)
        if found is None:
            found = self.producers[producer_id] = ProducerCounts()
        return found

    def to_json(self) -> dict[str, Any]:
        """A JSON object (for a checkpoint file)."""
        return {
            "topic": self.topic,
            "digest": self.digest.to_json(),
            "counts": {
                "records": self.records,
                "authentic": self.authentic,
                "addressed": self.addressed,
                "decrypted": self.decrypted,
                "integrity": self.integrity,
                "warnings": self.warnings,
                "erasures": self.erasures,
            },
            "by_reason": dict(sorted(self.by_reason.items())),
            "producers": {
                p: [c.records, c.authentic, c.findings, c.lowest_sequence, c.highest_sequence]
                for p, c in sorted(self.producers.items())
            },
            "partitions": {
                str(p): [s.first_offset, s.last_offset, s.records]
                for p, s in sorted(self.partitions.items())
            },
            "gaps": {
                stream: [
                    [g.first, g.last, g.partition, g.offset, g.record_id, g.sequence] for g in gs
                ]
                for stream, gs in sorted(self.gaps.items())
            },
            "seen": sorted(self.seen),
            "heartbeats": {
                p: [h.at_us, h.partition, h.offset, h.interval_ms]
                for p, h in sorted(self.heartbeats.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditState:
        """Restore from :meth:`to_json`.

        Raises:
            ValueError, KeyError, TypeError: not a state written by this version.
        """
        counts = data["counts"]
        state = cls(
            topic=str(data["topic"]),
            digest=TopicDigest.from_json(data["digest"]),
            records=int(counts["records"]),
            authentic=int(counts["authentic"]),
            addressed=int(counts["addressed"]),
            decrypted=int(counts["decrypted"]),
            integrity=int(counts["integrity"]),
            warnings=int(counts["warnings"]),
            # A checkpoint written before erasures existed has none to count.
            erasures=int(counts.get("erasures", 0)),
            by_reason=Counter({str(k): int(v) for k, v in data["by_reason"].items()}),
        )
        for p, (records, authentic, findings, first, last) in data["producers"].items():
            state.producers[str(p)] = ProducerCounts(records, authentic, findings, first, last)
        for p, (first, last, records) in data["partitions"].items():
            state.partitions[int(p)] = PartitionSpan(first, last, records)
        state.seen = {str(x) for x in data["seen"]}
        for stream, gs in data["gaps"].items():
            state.gaps[str(stream)] = [
                OpenGap(int(a), int(b), int(p), int(o), str(r), int(q)) for a, b, p, o, r, q in gs
            ]
        for p, (at_us, partition, offset, interval) in data["heartbeats"].items():
            state.heartbeats[str(p)] = HeartbeatSeen(at_us, partition, offset, interval)
        return state

"""What a replay carries from one record to the next: fixed-size heads and counters, nothing per record.

The state grows with the number of producer streams, producers and partitions (all bounded by the
directory and the topic), never with the number of records: chain heads hold the last sequence
and digest of each stream plus at most :data:`MAX_OPEN_GAPS` ranges of missing sequence numbers
(to tell a late, reordered record from a replay); the digest is 512 bytes; findings go to the
report file as they are found. The whole state round-trips through JSON for checkpoints.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from consumers.audit.digest import TopicDigest
from intelbus.chain import ChainState

MAX_OPEN_GAPS = 8
UNVERIFIED_PRODUCER = "(unverified)"


@dataclass(slots=True)
class StreamHead:
    """One producer stream's chain head, and the newest ranges of sequence numbers it missed."""

    producer_id: str
    stream: str
    last_sequence: int
    last_digest: bytes
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def chain(self) -> ChainState:
        return ChainState(self.producer_id, self.stream, self.last_sequence, self.last_digest)

    def advance_to(self, chain: ChainState) -> None:
        self.last_sequence = chain.last_sequence
        self.last_digest = chain.last_digest

    def note_gap(self, first: int, last: int) -> None:
        self.gaps.append((first, last))
        del self.gaps[:-MAX_OPEN_GAPS]  # keep the newest: older ones are reported already

    def fill(self, sequence: int) -> bool:
        """True, and the range shrinks, if ``sequence`` was reported missing (a late record)."""
        for i, (first, last) in enumerate(self.gaps):
            if first <= sequence <= last:
                parts = [(a, b) for a, b in ((first, sequence - 1), (sequence + 1, last)) if a <= b]
                self.gaps[i : i + 1] = parts
                del self.gaps[:-MAX_OPEN_GAPS]
                return True
        return False


@dataclass(slots=True)
class ProducerCounts:
    """Per producer: records read, how many were authentic, findings, sequence span."""

    records: int = 0
    authentic: int = 0
    findings: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None


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
    by_reason: Counter[str] = field(default_factory=Counter)
    producers: dict[str, ProducerCounts] = field(default_factory=dict)
    partitions: dict[int, PartitionSpan] = field(default_factory=dict)
    heads: dict[tuple[str, str], StreamHead] = field(default_factory=dict)
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
            },
            "by_reason": dict(sorted(self.by_reason.items())),
            "producers": {
                p: [c.records, c.authentic, c.findings, c.first_sequence, c.last_sequence]
                for p, c in sorted(self.producers.items())
            },
            "partitions": {
                str(p): [s.first_offset, s.last_offset, s.records]
                for p, s in sorted(self.partitions.items())
            },
            "heads": [
                [h.producer_id, h.stream, h.last_sequence, h.last_digest.hex(), h.gaps]
                for h in self.heads.values()
            ],
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
            by_reason=Counter({str(k): int(v) for k, v in data["by_reason"].items()}),
        )
        for p, (records, authentic, findings, first, last) in data["producers"].items():
            state.producers[str(p)] = ProducerCounts(records, authentic, findings, first, last)
        for p, (first, last, records) in data["partitions"].items():
            state.partitions[int(p)] = PartitionSpan(first, last, records)
        for producer, stream, seq, digest, gaps in data["heads"]:
            state.heads[(producer, stream)] = StreamHead(
                producer, stream, int(seq), bytes.fromhex(digest), [(a, b) for a, b in gaps]
            )
        for p, (at_us, partition, offset, interval) in data["heartbeats"].items():
            state.heartbeats[str(p)] = HeartbeatSeen(at_us, partition, offset, interval)
        return state

"""What producers' heartbeats vouch for: read from the heartbeats topic beside an audited topic.

A heartbeat (schema version 2) names each of its producer's streams as the chain does (topic,
partition, key epoch) and the last sequence number sent on it. The auditor reads the heartbeats
topic **before** it fixes the audited topic's end offsets, so every record a heartbeat vouches
for was appended before the replay's end, and must be on the topic unless it was withheld or
deleted (:meth:`consumers.audit.replay.AuditJudge.completeness` reports what is not).

Only heartbeats that pass the same intake as every record count (signature, key valid for the
producer at the broker's time, topic and partition binding, opened and decoded with the
auditor's key), and only format 2 ones with a broker time (their place is signed). For each
stream the highest sequence any of them vouched for is kept: a heartbeat only ever vouches for
what its producer sent, so an older one appended again cannot lower it.
"""

from __future__ import annotations

from datetime import datetime

from consumers.audit.source import RecordSource
from intelbus.kinds import RecordKind
from intelbus.records import Heartbeat
from intelbus.trust.intake import Intake
from intelbus.trust.model import FeedBeat, Position, VouchedHead

_Stream = tuple[str, str, int, str]  # producer, topic, partition, epoch


def vouched_heads(source: RecordSource, intake: Intake, *, batch: int = 2000) -> list[FeedBeat]:
    """One :class:`FeedBeat` per producer with the highest vouched head of each of its streams.

    Raises:
        KafkaUnavailableError: the heartbeats topic could not be read.
    """
    best: dict[_Stream, tuple[int, datetime]] = {}
    intervals: dict[str, int] = {}
    for partition, (start, end) in sorted(source.bounds().items()):
        if start >= end:
            continue
        for messages in source.read(partition, start, end, batch):
            for m in messages:
                at = m.appended_at
                if at is None:
                    continue
                p = intake.prepare(Position(m.topic, m.partition, m.offset, at), m.value)
                v, beat = p.verified, p.content
                if v is None or v.header.format_version < 2 or v.kind is not RecordKind.HEARTBEAT:
                    continue
                if not isinstance(beat, Heartbeat) or beat.producer_id != v.producer_id:
                    continue
                intervals[v.producer_id] = beat.interval_ms
                for s in beat.streams:
                    if not s.bound:
                        continue
                    key = (v.producer_id, s.stream, s.partition, s.epoch)
                    held = best.get(key)
                    if held is None or s.last_sequence > held[0]:
                        best[key] = (s.last_sequence, at)
    by_producer: dict[str, list[tuple[VouchedHead, datetime]]] = {}
    for (producer, topic, partition, epoch), (seq, at) in sorted(best.items()):
        by_producer.setdefault(producer, []).append((VouchedHead(topic, partition, epoch, seq), at))
    return [
        FeedBeat(
            producer,
            source.topic,
            max(at for _, at in heads),
            intervals[producer],
            tuple(h for h, _ in heads),
        )
        for producer, heads in sorted(by_producer.items())
    ]

"""Completeness: what heartbeats vouch for, against what a reader holds (issue 20). Pure.

Signed heartbeats say a producer is alive; on their own they do not say that its records
arrived. A schema version 2 heartbeat names each of its producer's streams as the chain does
(topic, partition, key epoch) with the last sequence number sent on it, so a reader can hold the
records it vouches for to account: every sequence number at or below the vouched one that the
reader's chain does not hold (above its head, or inside one of its gaps) is missing. Consumers
(``intelbus store feeds``, the running consumer's log) and the auditor use this one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from intelbus.chain import ChainState, StreamKey
from intelbus.trust.model import FeedBeat

#: How old a heartbeat must be before the records it vouches for must all be held: they may be a
#: poll behind it, on another topic or partition.
DEFAULT_SETTLE = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class MissingRange:
    """Sequence numbers ``first``..``last`` (inclusive) of one stream: vouched for by the producer's
    heartbeat of ``vouched_at`` (broker time), and not held."""

    producer_id: str
    topic: str
    partition: int
    epoch: str
    first: int
    last: int
    vouched_at: datetime

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def describe(self) -> str:
        seqs = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return (
            f"{self.producer_id} {self.topic}[{self.partition}] epoch {self.epoch[:8]}: "
            f"sequence {seqs} ({self.count} record(s)) vouched for at "
            f"{self.vouched_at.isoformat(timespec='seconds')} and not held"
        )


def missing_records(
    feeds: Iterable[FeedBeat],
    chain: Mapping[StreamKey, ChainState],
    now: datetime,
    settle: timedelta = DEFAULT_SETTLE,
    *,
    include_gaps: bool = True,
) -> list[MissingRange]:
    """What the newest heartbeats vouch for and the chain does not hold (module docstring).

    A range is missing when its sequence numbers are at or below the vouched last sequence and
    either above the held head or (``include_gaps``) inside one of the held chain's gaps. The
    auditor passes False: it reports the chain's gaps itself (``chain_gap``), once.
    """
    out: list[MissingRange] = []
    for f in feeds:
        if now - f.at < settle:
            continue
        for h in f.heads:
            if h.last_sequence < 0:
                continue
            state = chain.get(StreamKey(f.producer_id, h.topic, h.partition, h.epoch))
            held = state.last_sequence if state is not None else -1
            ranges = [
                (a, min(b, h.last_sequence))
                for a, b in (state.gaps if state is not None and include_gaps else ())
                if a <= h.last_sequence
            ]
            if h.last_sequence > held:
                ranges.append((held + 1, h.last_sequence))
            out.extend(
                MissingRange(f.producer_id, h.topic, h.partition, h.epoch, a, b, f.at)
                for a, b in ranges
            )
    return sorted(out, key=lambda m: (m.producer_id, m.topic, m.partition, m.epoch, m.first))

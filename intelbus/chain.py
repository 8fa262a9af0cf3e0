"""Per-producer hash chains: detect replays, forks, gaps and fast-forward jumps.

Every sealed record carries its stream's sequence number (0, 1, 2, ...) and the digest of the
previous record of the same producer stream (32 zero bytes for sequence 0); see docs/envelope.md.
A *stream* is one producer on one topic. This module decides, with no I/O, whether a verified
record continues its stream:

* ``seq == last + 1`` and ``prev == last_digest``: the next record; the chain advances.
* ``seq == last + 1`` and ``prev != last_digest``: a fork (two histories) or a splice: refused.
* ``seq <= last``: already seen; delivered again, perhaps at a new offset: refused as a replay.
  (A benign resend of the same record is also refused here; the store already holds it, and the
  quarantine row keeps the evidence rather than silently dropping it.)
* ``last + 1 < seq <= last + 1 + max_gap``: records are missing (suppressed, or not yet read).
  The record is accepted and the gap reported; the chain restarts from it.
* ``seq > last + 1 + max_gap``: a jump far ahead. Accepting it would make every genuine record
  that follows look like a replay (TUF's fast-forward attack), so it is refused and the chain
  state is left unchanged.

The first record of a stream that a reader sees is judged against an empty state (``last = -1``,
zero digest): a reader that starts at the beginning of a topic must see sequence 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from intelbus.errors import ChainFork, ChainJump, ChainReplay

GENESIS_DIGEST = bytes(32)
DEFAULT_MAX_GAP = 10_000


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where a stream's chain stands: the last accepted sequence number and digest."""

    producer_id: str
    stream: str
    last_sequence: int
    last_digest: bytes

    @classmethod
    def empty(cls, producer_id: str, stream: str) -> ChainState:
        return cls(producer_id, stream, -1, GENESIS_DIGEST)


@dataclass(frozen=True, slots=True)
class ChainStep:
    """The outcome of accepting a record: the new state and how many records are missing before it."""

    state: ChainState
    missing: int  # 0 when the record is exactly the next one

    @property
    def gap(self) -> tuple[int, int] | None:
        """The missing sequence numbers as an inclusive range, or None."""
        if self.missing == 0:
            return None
        last = self.state.last_sequence
        return (last - self.missing, last - 1)


def advance(
    state: ChainState,
    *,
    sequence: int,
    prev_digest: bytes,
    digest: bytes,
    max_gap: int = DEFAULT_MAX_GAP,
) -> ChainStep:
    """Judge one verified record against its stream's state.

    Raises:
        ChainReplay: ``sequence`` is not beyond the last accepted one.
        ChainFork: it is the next sequence number but its previous digest is not the chain's.
        ChainJump: it is further ahead than ``max_gap`` missing records.
    """
    expected = state.last_sequence + 1
    where = f"{state.producer_id} on {state.stream}"
    if sequence < expected:
        raise ChainReplay(f"{where}: sequence {sequence} already seen (last {state.last_sequence})")
    if sequence == expected:
        if prev_digest != state.last_digest:
            raise ChainFork(f"{where}: sequence {sequence} does not follow the chain's last record")
        return ChainStep(ChainState(state.producer_id, state.stream, sequence, digest), 0)
    missing = sequence - expected
    if missing > max_gap:
        raise ChainJump(
            f"{where}: sequence {sequence} jumps {missing} ahead of {state.last_sequence} "
            f"(more than {max_gap})"
        )
    return ChainStep(ChainState(state.producer_id, state.stream, sequence, digest), missing)

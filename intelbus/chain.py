"""Producer streams and their hash chains: where a record stands in what its producer signed.

A *stream* is the run of records one producer signs with one key on one partition of one topic
(:class:`StreamKey`). Kafka orders records within a partition only, so a chain is only meaningful
there: format v2 binds each record to its partition in what is signed (a copy on another
partition is refused before it reaches this module), and a producer's new key starts a new
stream *epoch*, so records forged with a leaked key can never block the genuine stream that
follows under the next key. Format v1 records (written before partitions were bound) are chained
per partition they were read from, with one legacy epoch.

Every record carries its stream's sequence number (0, 1, 2, ...) and the digest of the stream's
previous record (32 zero bytes, or for a new epoch's first record the digest of the producer's
last record under its previous key). :func:`advance` decides, with no I/O, whether a verified
record continues its stream (``last`` is the stream's newest sequence number):

* ``seq == last + 1``, ``prev == last digest``: the next record (:attr:`Step.NEXT`).
* ``seq == last + 1``, another ``prev``: two histories, or a splice: :class:`ChainFork`.
* ``seq == last``, the same digest: the newest record again, byte for byte (a resend after a lost
  acknowledgement, or a copy): :class:`ChainDuplicate`. Another digest: :class:`ChainFork`.
* ``seq < last``, inside a range reported missing: a late record (:attr:`Step.FILL`), accepted;
  the range shrinks. Otherwise: an old record delivered again: :class:`ChainReplay`.
* ``last + 1 < seq <= last + 1 + max_gap``: records are missing (:attr:`Step.GAP`); accepted, and
  the missing range is kept (at most :data:`MAX_OPEN_GAPS` ranges) so a late one can still fill it.
* ``seq > last + 1 + max_gap``: a jump far ahead. Accepting it would make every genuine record
  that follows look like a replay (TUF's fast-forward attack): :class:`ChainJump`, and the state
  is left unchanged.

A stream never seen before starts from ``last = -1``. Its first record must be sequence 0 (a
reader that starts at the beginning of a topic sees every stream from its start); sequence 0 of a
v1 stream must point at the genesis digest, while a v2 epoch's first record may link to the
producer's previous epoch. A first record with ``seq > 0`` is a gap from the start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from intelbus.errors import ChainDuplicate, ChainFork, ChainJump, ChainReplay

GENESIS_DIGEST = bytes(32)
DEFAULT_MAX_GAP = 10_000
MAX_OPEN_GAPS = 8
#: The epoch of every format v1 stream (v1 did not start a new stream per key).
LEGACY_EPOCH = "v1"
#: The partition of a v1 stream head kept topic-wide by stores made before streams were bound
#: to partitions (store schema 2). New v1 heads are per partition.
ANY_PARTITION = -1


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    """One producer's records under one key epoch on one partition of one topic."""

    producer_id: str
    topic: str
    partition: int
    epoch: str  # the signing key id (hex) for format v2; LEGACY_EPOCH for v1

    @property
    def legacy(self) -> bool:
        return self.epoch == LEGACY_EPOCH

    def topic_wide(self) -> StreamKey:
        """The legacy topic-wide key of a v1 stream (see :data:`ANY_PARTITION`)."""
        return StreamKey(self.producer_id, self.topic, ANY_PARTITION, self.epoch)

    def __str__(self) -> str:
        return f"{self.producer_id} on {self.topic}[{self.partition}] epoch {self.epoch[:8]}"


@dataclass(frozen=True, slots=True)
class ChainState:
    """Where a stream's chain stands: the newest sequence number and digest, and the newest
    ranges of sequence numbers reported missing (inclusive), oldest first."""

    stream: StreamKey
    last_sequence: int
    last_digest: bytes
    gaps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def empty(cls, stream: StreamKey) -> ChainState:
        return cls(stream, -1, GENESIS_DIGEST)

    @property
    def missing(self) -> int:
        """How many sequence numbers are still reported missing (in the ranges kept)."""
        return sum(b - a + 1 for a, b in self.gaps)


class Step(enum.Enum):
    """How an accepted record continued its stream."""

    NEXT = "next"
    GAP = "gap"  # accepted; records before it are missing
    FILL = "fill"  # accepted; a record reported missing arrived late


@dataclass(frozen=True, slots=True)
class ChainStep:
    """The outcome of accepting a record: the new state, how, and what it revealed or filled."""

    state: ChainState
    step: Step
    gap: tuple[int, int] | None = None  # the missing range this record revealed (GAP)
    evicted: tuple[tuple[int, int], ...] = ()  # missing ranges pushed out of the state

    @property
    def missing(self) -> int:
        return 0 if self.gap is None else self.gap[1] - self.gap[0] + 1


def advance(
    state: ChainState,
    *,
    sequence: int,
    prev_digest: bytes,
    digest: bytes,
    max_gap: int = DEFAULT_MAX_GAP,
) -> ChainStep:
    """Judge one verified record against its stream's state (module docstring).

    Raises:
        ChainReplay: an old sequence number that was not reported missing.
        ChainDuplicate: the newest record again, byte for byte.
        ChainFork: the next sequence chained to something else, or a second newest record.
        ChainJump: further ahead than ``max_gap`` missing records.
    """
    # The stream's name is only for a refusal's message: made when one is raised, not per record.
    last = state.last_sequence
    expected = last + 1
    if sequence == expected:
        links_epoch = last == -1 and sequence == 0 and not state.stream.legacy
        if prev_digest != state.last_digest and not links_epoch:
            raise ChainFork(
                f"{state.stream}: sequence {sequence} does not follow the chain's last record"
            )
        return ChainStep(ChainState(state.stream, sequence, digest, state.gaps), Step.NEXT)
    where = str(state.stream)
    if sequence == last:
        if digest == state.last_digest:
            raise ChainDuplicate(f"{where}: sequence {sequence} again, byte for byte")
        raise ChainFork(f"{where}: a second, different record with sequence {sequence}")
    if sequence < last:
        filled = _fill(state.gaps, sequence)
        if filled is None:
            raise ChainReplay(f"{where}: sequence {sequence} already seen (last {last})")
        # Filling the middle of a range splits it in two: the oldest range may fall out of memory,
        # and is reported as evicted (no late record can be matched to it any more).
        kept, evicted = filled[-MAX_OPEN_GAPS:], filled[:-MAX_OPEN_GAPS]
        return ChainStep(replace(state, gaps=kept), Step.FILL, evicted=evicted)
    missing = sequence - expected
    if missing > max_gap:
        raise ChainJump(
            f"{where}: sequence {sequence} jumps {missing} ahead of {last} (more than {max_gap})"
        )
    gap = (expected, sequence - 1)
    gaps = (*state.gaps, gap)
    kept, evicted = gaps[-MAX_OPEN_GAPS:], gaps[:-MAX_OPEN_GAPS]
    new = ChainState(state.stream, sequence, digest, kept)
    return ChainStep(new, Step.GAP, gap, evicted)


def _fill(gaps: tuple[tuple[int, int], ...], sequence: int) -> tuple[tuple[int, int], ...] | None:
    """The ranges with ``sequence`` taken out, or None if no range holds it."""
    for i, (first, last) in enumerate(gaps):
        if first <= sequence <= last:
            parts = tuple(
                (a, b) for a, b in ((first, sequence - 1), (sequence + 1, last)) if a <= b
            )
            return (*gaps[:i], *parts, *gaps[i + 1 :])
    return None

"""Stream chains (intelbus/chain.py): next, duplicate, fork, replay, gap, fill, eviction, jump.

A stream is (producer, topic, partition, key epoch). :func:`advance` is pure: it returns the new
state or raises, and a refusal leaves the caller's state as it was.
"""

from __future__ import annotations

import hashlib

import pytest

from intelbus.chain import (
    ANY_PARTITION,
    DEFAULT_MAX_GAP,
    GENESIS_DIGEST,
    LEGACY_EPOCH,
    MAX_OPEN_GAPS,
    ChainState,
    ChainStep,
    Step,
    StreamKey,
    advance,
)
from intelbus.errors import (
    ChainDuplicate,
    ChainError,
    ChainFork,
    ChainJump,
    ChainReplay,
    ReasonCode,
    Refused,
)

EPOCH = "7e96e2858bcc6615db73d35b653eb18c"  # a signing key id, hex: a v2 stream's epoch
V2 = StreamKey("cst", "intelbus.sightings", 2, EPOCH)
V1 = StreamKey("cst", "intelbus.sightings", 2, LEGACY_EPOCH)
PREVIOUS_EPOCH_LAST = hashlib.sha256(b"the last record under CST's previous key").digest()


def _digest(n: int, stream: StreamKey = V2) -> bytes:
    return hashlib.sha256(f"{stream}/{n}".encode()).digest()


def _next(
    state: ChainState, seq: int, *, digest: bytes | None = None, max_gap: int = 1000
) -> ChainStep:
    """The record ``seq`` of the stream, chained to the state's newest record."""
    return advance(
        state,
        sequence=seq,
        prev_digest=state.last_digest,
        digest=_digest(seq, state.stream) if digest is None else digest,
        max_gap=max_gap,
    )


def _run(n: int, stream: StreamKey = V2) -> ChainState:
    """A stream that has seen records 0..n-1, each chained to the one before."""
    state = ChainState.empty(stream)
    for seq in range(n):
        state = _next(state, seq).state
    return state


# --- Streams --------------------------------------------------------------------------------------


def test_a_stream_is_producer_topic_partition_and_epoch() -> None:
    """Streams differing in any one part are different keys; v1 streams have the legacy epoch."""
    variants = {
        V2,
        StreamKey("gmp", V2.topic, V2.partition, EPOCH),
        StreamKey("cst", "intelbus.incidents", V2.partition, EPOCH),
        StreamKey("cst", V2.topic, 0, EPOCH),
        StreamKey("cst", V2.topic, V2.partition, "00" * 16),
    }
    assert len(variants) == 5
    assert not V2.legacy
    assert V1.legacy
    assert V1.topic_wide() == StreamKey("cst", V1.topic, ANY_PARTITION, LEGACY_EPOCH)
    assert str(V2) == f"cst on intelbus.sightings[2] epoch {EPOCH[:8]}"


def test_an_empty_stream_starts_before_sequence_zero_at_genesis() -> None:
    state = ChainState.empty(V2)
    assert (state.stream, state.last_sequence, state.last_digest, state.gaps) == (
        V2,
        -1,
        GENESIS_DIGEST,
        (),
    )
    assert bytes(32) == GENESIS_DIGEST
    assert state.missing == 0


# --- Next -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [V2, V1], ids=["v2", "v1"])
def test_a_clean_chain_advances_one_by_one(stream: StreamKey) -> None:
    """0, 1, 2... each pointing at the previous digest: NEXT every time, no gaps."""
    state = ChainState.empty(stream)
    for seq in range(5):
        step = _next(state, seq)
        assert (step.step, step.gap, step.evicted, step.missing) == (Step.NEXT, None, (), 0)
        state = step.state
    assert (state.stream, state.last_sequence, state.last_digest) == (stream, 4, _digest(4, stream))
    assert state.gaps == ()


def test_a_v2_epoch_may_start_by_linking_to_the_previous_epoch() -> None:
    """A new key's first record (sequence 0) may point at the producer's last record under its
    previous key: the link is accepted, and the chain then follows it as usual."""
    step = advance(
        ChainState.empty(V2), sequence=0, prev_digest=PREVIOUS_EPOCH_LAST, digest=_digest(0)
    )
    assert step.step is Step.NEXT
    assert (step.state.last_sequence, step.state.last_digest) == (0, _digest(0))
    # Only the first record of the epoch may: record 1 must follow record 0.
    with pytest.raises(ChainFork):
        advance(step.state, sequence=1, prev_digest=PREVIOUS_EPOCH_LAST, digest=_digest(1))
    assert _next(step.state, 1).step is Step.NEXT


def test_a_v1_stream_must_start_at_genesis() -> None:
    """Sequence 0 of a v1 stream with a non-zero previous digest is a fork of the stream's start;
    pointing at genesis it is accepted."""
    with pytest.raises(ChainFork) as info:
        advance(
            ChainState.empty(V1), sequence=0, prev_digest=PREVIOUS_EPOCH_LAST, digest=_digest(0)
        )
    assert info.value.reason is ReasonCode.CHAIN_FORK
    ok = advance(ChainState.empty(V1), sequence=0, prev_digest=GENESIS_DIGEST, digest=_digest(0))
    assert ok.step is Step.NEXT


@pytest.mark.parametrize("stream", [V2, V1], ids=["v2", "v1"])
def test_the_next_sequence_chained_to_something_else_is_a_fork(stream: StreamKey) -> None:
    """The next sequence number, but chained to something else: two histories, or a splice."""
    state = _run(3, stream)
    with pytest.raises(ChainFork) as info:
        advance(state, sequence=3, prev_digest=_digest(99), digest=_digest(3, stream))
    assert info.value.reason is ReasonCode.CHAIN_FORK
    assert isinstance(info.value, Refused)


# --- The newest record again: duplicate or fork ---------------------------------------------------


def test_the_newest_record_again_byte_for_byte_is_a_duplicate() -> None:
    """Same sequence, same digest: a resend after a lost acknowledgement, or a copy."""
    state = _run(4)
    with pytest.raises(ChainDuplicate) as info:
        advance(state, sequence=3, prev_digest=_digest(2), digest=_digest(3))
    assert info.value.reason is ReasonCode.CHAIN_DUPLICATE
    assert isinstance(info.value, ChainError)


def test_a_second_different_newest_record_is_a_fork_not_a_duplicate() -> None:
    """Same sequence as the newest, another digest: the producer signed two records there."""
    state = _run(4)
    with pytest.raises(ChainFork) as info:
        advance(state, sequence=3, prev_digest=_digest(2), digest=_digest(333))
    assert info.value.reason is ReasonCode.CHAIN_FORK


def test_the_first_record_again_is_a_duplicate() -> None:
    """The duplicate rule holds from the stream's first record on."""
    state = _run(1)
    with pytest.raises(ChainDuplicate):
        advance(state, sequence=0, prev_digest=GENESIS_DIGEST, digest=_digest(0))


# --- Replays ---------------------------------------------------------------------------------------


def test_an_old_record_again_is_a_replay() -> None:
    """An old sequence number again (e.g. re-published at a new offset) is a replay, whatever
    its digest: no gap was reported there."""
    state = _run(5)
    for seq in (0, 2, 3):
        with pytest.raises(ChainReplay) as info:
            advance(state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq))
        assert info.value.reason is ReasonCode.CHAIN_REPLAY
    with pytest.raises(ChainReplay):
        advance(state, sequence=2, prev_digest=_digest(1), digest=_digest(222))


# --- Gaps and late records ------------------------------------------------------------------------


def test_a_gap_is_accepted_and_reported() -> None:
    """Records 3 and 4 missing: record 5 is accepted, the gap 3..4 reported and remembered."""
    state = _run(3)
    step = advance(state, sequence=5, prev_digest=_digest(4), digest=_digest(5))
    assert step.step is Step.GAP
    assert step.gap == (3, 4)
    assert step.missing == 2
    assert step.evicted == ()
    assert (step.state.last_sequence, step.state.last_digest) == (5, _digest(5))
    assert step.state.gaps == ((3, 4),)
    assert step.state.missing == 2


def test_a_first_record_after_zero_is_a_gap_from_the_start() -> None:
    """A stream first seen at sequence 7: records 0..6 are missing."""
    step = advance(ChainState.empty(V2), sequence=7, prev_digest=_digest(6), digest=_digest(7))
    assert (step.step, step.gap, step.state.gaps) == (Step.GAP, (0, 6), ((0, 6),))


def test_a_late_record_inside_a_reported_gap_fills_it() -> None:
    """Records 2..6 reported missing; each arriving late is FILL, and the range shrinks; the
    newest record stays where it was. A filled number arriving again is a replay."""
    state = _run(2)
    state = advance(state, sequence=7, prev_digest=_digest(6), digest=_digest(7)).state
    assert state.gaps == ((2, 6),)
    expected = {
        4: ((2, 3), (5, 6)),  # the middle splits the range
        2: ((3, 3), (5, 6)),  # its start
        6: ((3, 3), (5, 5)),  # its end
        3: ((5, 5),),  # a range of one: gone
        5: (),
    }
    for seq, gaps in expected.items():
        step = advance(state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq))
        assert (step.step, step.gap, step.evicted) == (Step.FILL, None, ())
        assert step.state.gaps == gaps
        assert (step.state.last_sequence, step.state.last_digest) == (7, _digest(7))
        state = step.state
        with pytest.raises(ChainReplay):
            advance(state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq))
    assert state.missing == 0
    assert _next(state, 8).step is Step.NEXT


def test_gap_memory_is_bounded_and_the_oldest_range_is_evicted() -> None:
    """At most MAX_OPEN_GAPS ranges are kept; the next gap pushes the oldest out and says so,
    and a late record from the evicted range can no longer be told from a replay."""
    state = _run(1)
    seq = 0
    for _ in range(MAX_OPEN_GAPS):
        seq += 3  # two missing before each record
        step = advance(state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq))
        assert step.evicted == ()
        state = step.state
    assert len(state.gaps) == MAX_OPEN_GAPS
    oldest = state.gaps[0]
    assert oldest == (1, 2)
    seq += 3
    step = advance(state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq))
    assert step.step is Step.GAP
    assert step.evicted == (oldest,)
    assert len(step.state.gaps) == MAX_OPEN_GAPS
    assert step.state.gaps == (*state.gaps[1:], step.gap)
    with pytest.raises(ChainReplay):
        advance(step.state, sequence=1, prev_digest=_digest(0), digest=_digest(1))
    # A range still kept can be filled.
    kept = step.state.gaps[0][0]
    filled = advance(step.state, sequence=kept, prev_digest=_digest(kept - 1), digest=_digest(kept))
    assert filled.step is Step.FILL


def test_filling_the_middle_of_a_range_at_the_limit_reports_what_it_pushes_out() -> None:
    """Eight ranges of three kept; a late record in the middle of one splits it in two, so nine
    ranges: the oldest is pushed out and reported as evicted (it was silently dropped before)."""
    state = _run(1)
    seq = 0
    for _ in range(MAX_OPEN_GAPS):
        seq += 4  # three missing before each record
        state = advance(
            state, sequence=seq, prev_digest=_digest(seq - 1), digest=_digest(seq)
        ).state
    assert state.gaps[0] == (1, 3)
    middle = state.gaps[3][0] + 1
    step = advance(state, sequence=middle, prev_digest=_digest(middle - 1), digest=_digest(middle))
    assert step.step is Step.FILL
    assert step.evicted == ((1, 3),)
    assert len(step.state.gaps) == MAX_OPEN_GAPS
    assert (middle - 1, middle - 1) in step.state.gaps
    assert (middle + 1, middle + 1) in step.state.gaps


# --- Jumps ----------------------------------------------------------------------------------------


def test_a_huge_jump_is_refused_and_the_state_is_unchanged() -> None:
    """Fast-forward: a jump beyond max_gap is CHAIN_JUMP; the state is what it was, so the
    genuine next record is still NEXT (not made a replay by the forgery)."""
    state = _run(3)
    before = ChainState(state.stream, state.last_sequence, state.last_digest, state.gaps)
    with pytest.raises(ChainJump) as info:
        advance(state, sequence=2**40, prev_digest=_digest(1), digest=_digest(7), max_gap=1000)
    assert info.value.reason is ReasonCode.CHAIN_JUMP
    assert state == before
    step = _next(state, 3)
    assert (step.step, step.missing) == (Step.NEXT, 0)


def test_max_gap_is_the_largest_number_of_missing_records_accepted() -> None:
    """Exactly max_gap missing is a GAP; one more is a JUMP (from an empty stream too)."""
    state = _run(3)
    ok = advance(state, sequence=3 + 10, prev_digest=_digest(12), digest=_digest(13), max_gap=10)
    assert (ok.step, ok.missing) == (Step.GAP, 10)
    with pytest.raises(ChainJump):
        advance(state, sequence=3 + 11, prev_digest=_digest(13), digest=_digest(14), max_gap=10)
    with pytest.raises(ChainJump):
        advance(
            ChainState.empty(V2), sequence=11, prev_digest=_digest(10), digest=b"x" * 32, max_gap=10
        )
    assert DEFAULT_MAX_GAP == 10_000
    far = advance(state, sequence=3 + DEFAULT_MAX_GAP, prev_digest=b"p" * 32, digest=b"d" * 32)
    assert far.missing == DEFAULT_MAX_GAP

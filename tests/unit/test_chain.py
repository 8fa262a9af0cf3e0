"""Hash-chain decisions: next, fork, replay, gap and fast-forward jump."""

from __future__ import annotations

import hashlib

import pytest

from intelbus.chain import GENESIS_DIGEST, ChainState, advance
from intelbus.errors import ChainFork, ChainJump, ChainReplay, ReasonCode


def _digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def _run(n: int) -> ChainState:
    state = ChainState.empty("cst", "intelbus.sightings")
    for seq in range(n):
        prev = GENESIS_DIGEST if seq == 0 else _digest(seq - 1)
        state = advance(state, sequence=seq, prev_digest=prev, digest=_digest(seq)).state
    return state


def test_a_clean_chain_advances_one_by_one() -> None:
    """0, 1, 2... each pointing at the previous digest: no gaps, state at the last."""
    state = _run(5)
    assert (state.last_sequence, state.last_digest) == (4, _digest(4))


def test_the_first_record_must_point_at_genesis() -> None:
    """Sequence 0 with a non-zero previous digest is a fork of the stream's start."""
    with pytest.raises(ChainFork) as info:
        advance(ChainState.empty("cst", "t"), sequence=0, prev_digest=_digest(9), digest=_digest(0))
    assert info.value.reason is ReasonCode.CHAIN_FORK


def test_a_replayed_record_is_refused_and_state_unchanged() -> None:
    """An old sequence number again (e.g. re-published at a new offset) is a replay."""
    state = _run(5)
    with pytest.raises(ChainReplay) as info:
        advance(state, sequence=2, prev_digest=_digest(1), digest=_digest(2))
    assert info.value.reason is ReasonCode.CHAIN_REPLAY
    with pytest.raises(ChainReplay):
        advance(state, sequence=4, prev_digest=_digest(3), digest=_digest(4))


def test_a_fork_is_refused() -> None:
    """The next sequence number, but chained to something else: refused."""
    state = _run(3)
    with pytest.raises(ChainFork):
        advance(state, sequence=3, prev_digest=_digest(99), digest=_digest(3))


def test_a_gap_is_accepted_and_reported() -> None:
    """Records 3 and 4 missing: record 5 is accepted and the gap 3..4 reported."""
    state = _run(3)
    step = advance(state, sequence=5, prev_digest=_digest(4), digest=_digest(5))
    assert step.missing == 2
    assert step.gap == (3, 4)
    assert step.state.last_sequence == 5


def test_a_huge_jump_is_refused_so_genuine_records_are_not_made_replays() -> None:
    """Fast-forward: a jump beyond max_gap is refused and the chain stays where it was."""
    state = _run(3)
    with pytest.raises(ChainJump) as info:
        advance(state, sequence=2**40, prev_digest=_digest(1), digest=_digest(7), max_gap=1000)
    assert info.value.reason is ReasonCode.CHAIN_GAP
    step = advance(state, sequence=3, prev_digest=_digest(2), digest=_digest(3))
    assert step.missing == 0

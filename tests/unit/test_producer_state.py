"""The producer's durable stream state: reservations chain, stale heads are refused, acks stick."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intelbus.chain import GENESIS_DIGEST
from producers.state import ProducerState, Reservation, StreamHead


def _d(n: int) -> bytes:
    return hashlib.sha256(bytes([n])).digest()


def test_reserve_many_chains_per_stream_in_one_go(tmp_path: Path) -> None:
    state = ProducerState(tmp_path / "s.sqlite")
    a0 = StreamHead("a", -1, GENESIS_DIGEST)
    b0 = StreamHead("b", -1, GENESIS_DIGEST)
    state.reserve_many(
        [
            Reservation(a0, "r1", _d(1), b"one"),
            Reservation(b0, "r2", _d(2), b"two"),
            Reservation(StreamHead("a", 0, _d(1)), "r3", _d(3), b"three"),
        ]
    )
    assert state.head("a") == StreamHead("a", 1, _d(3))
    assert state.head("b") == StreamHead("b", 0, _d(2))
    assert [(p.stream, p.sequence, p.record_id, p.sealed) for p in state.pending()] == [
        ("a", 0, "r1", b"one"),
        ("a", 1, "r3", b"three"),
        ("b", 0, "r2", b"two"),
    ]
    state.acknowledge_many([("r1", 0, 10), ("r3", 0, 11)])
    assert [p.record_id for p in state.pending()] == ["r2"]
    assert state.acked_count() == 2
    state.close()
    # Durable: a new process sees the same heads and pending sends.
    again = ProducerState(tmp_path / "s.sqlite")
    assert again.head("a") == StreamHead("a", 1, _d(3))
    assert [p.record_id for p in again.pending()] == ["r2"]
    again.close()


@pytest.mark.parametrize(
    "second",
    [
        StreamHead("a", 0, _d(9)),  # the right sequence but another digest: a fork
        StreamHead("a", 1, _d(1)),  # skips a sequence number
        StreamHead("a", -1, GENESIS_DIGEST),  # reuses sequence 0
    ],
)
def test_reservations_that_do_not_chain_write_nothing(tmp_path: Path, second: StreamHead) -> None:
    state = ProducerState(tmp_path / "s.sqlite")
    with pytest.raises(RuntimeError, match="moved on"):
        state.reserve_many(
            [
                Reservation(StreamHead("a", -1, GENESIS_DIGEST), "r1", _d(1), b"one"),
                Reservation(second, "r2", _d(2), b"two"),
            ]
        )
    assert state.head("a") == StreamHead("a", -1, GENESIS_DIGEST)
    assert state.pending() == []
    state.close()


def test_a_stale_head_is_refused(tmp_path: Path) -> None:
    state = ProducerState(tmp_path / "s.sqlite")
    head = StreamHead("a", -1, GENESIS_DIGEST)
    state.reserve(head, record_id="r1", digest=_d(1), sealed=b"one")
    with pytest.raises(RuntimeError):
        state.reserve(head, record_id="r2", digest=_d(2), sealed=b"two")
    assert state.head("a") == StreamHead("a", 0, _d(1))
    state.close()

"""Hypothesis properties of the envelope: round trip, mutate-then-reject, hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelbus import _nacl
from intelbus.envelope import RecordKind, open_record, parse, seal, verify
from intelbus.envelope.wire import FIXED_BYTES, MAGIC
from intelbus.errors import EnvelopeError, NotARecipient
from intelbus.identity import AgencyIdentity, StaticKeyRing

ENV = "test"
TOPIC = "intelbus.incidents"


def _ident(agency: str) -> AgencyIdentity:
    seed = _nacl.blake2b(agency.encode(), digest_size=32)
    return AgencyIdentity(agency, seed, _nacl.blake2b(seed, digest_size=32))


PRODUCER = _ident("cst")
AGENCIES = [_ident(f"force-{i}") for i in range(6)]
RING = StaticKeyRing([PRODUCER.public])
BASE = seal(
    PRODUCER,
    environment=ENV,
    topic=TOPIC,
    kind=RecordKind.INCIDENT,
    sequence=3,
    prev_digest=b"\x07" * 32,
    schema_fingerprint=b"\x01\x02",
    payload=b"hate mail by post",
    recipients=[AGENCIES[0].public, AGENCIES[1].public],
).data


def _verify(data: bytes) -> object:
    return verify(data, RING, expected_environment=ENV, expected_topic=TOPIC)


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=2048),
    recipient_idx=st.sets(st.integers(0, len(AGENCIES) - 1), min_size=1),
    sequence=st.integers(0, 2**63 - 1),
    prev=st.binary(min_size=32, max_size=32),
    fingerprint=st.binary(min_size=1, max_size=32),
    kind=st.sampled_from(RecordKind),
)
def test_round_trip(
    *,
    payload: bytes,
    recipient_idx: set[int],
    sequence: int,
    prev: bytes,
    fingerprint: bytes,
    kind: RecordKind,
) -> None:
    """Whatever is sealed verifies with public keys and opens, unchanged, for every recipient."""
    recipients = [AGENCIES[i] for i in sorted(recipient_idx)]
    sealed = seal(
        PRODUCER,
        environment=ENV,
        topic=TOPIC,
        kind=kind,
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=fingerprint,
        payload=payload,
        recipients=[r.public for r in recipients],
    )
    v = verify(sealed.data, RING, expected_environment=ENV, expected_topic=TOPIC)
    assert v.digest == sealed.digest
    assert (v.sequence, v.prev_digest, v.schema_fingerprint, v.kind) == (
        sequence,
        prev,
        fingerprint,
        kind,
    )
    for r in recipients:
        assert open_record(v, r) == payload
    for other in AGENCIES:
        if other not in recipients:
            with pytest.raises(NotARecipient):
                open_record(v, other)


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, len(BASE) - 1),
    replacement=st.binary(min_size=1, max_size=8),
    mode=st.sampled_from(["overwrite", "insert", "delete"]),
)
def test_any_mutation_is_rejected_with_an_envelope_error(
    position: int, replacement: bytes, mode: str
) -> None:
    """Overwriting, inserting or deleting bytes anywhere never verifies, and fails typed."""
    data = bytearray(BASE)
    if mode == "overwrite":
        data[position : position + len(replacement)] = replacement
        data = data[: len(BASE)] if len(data) > len(BASE) else data
    elif mode == "insert":
        data[position:position] = replacement
    else:
        del data[position : position + len(replacement)]
    if bytes(data) == BASE:
        return
    try:
        _verify(bytes(data))
    except EnvelopeError:
        pass
    else:
        raise AssertionError(f"mutation {mode} at {position} still verifies")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1024))
def test_random_bytes_give_only_envelope_errors(data: bytes) -> None:
    """Hostile bytes never raise anything but an EnvelopeError subclass, from parse or verify."""
    for fn in (parse, _verify):
        with contextlib.suppress(EnvelopeError):
            fn(data)


@settings(max_examples=500, deadline=None)
@given(
    fixed_tail=st.binary(min_size=FIXED_BYTES - 8, max_size=FIXED_BYTES - 8),
    rest=st.binary(max_size=600),
)
def test_bytes_with_a_valid_prefix_give_only_envelope_errors(
    fixed_tail: bytes, rest: bytes
) -> None:
    """With the magic, version and suite right, the parser goes deeper; still only typed errors."""
    data = MAGIC + struct.pack(">BBBB", 1, 1, 1, 0) + fixed_tail + rest
    with contextlib.suppress(EnvelopeError):
        _verify(data)

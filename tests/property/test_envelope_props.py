"""Hypothesis properties of the envelope: round trip, mutate-then-reject, hostile bytes."""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelbus import _nacl
from intelbus.envelope import open_record, parse, seal, verify
from intelbus.envelope.wire import FIXED_BYTES, FORMAT_V1, FORMAT_V2, MAGIC, MAX_PARTITION
from intelbus.errors import EnvelopeError, NotARecipient
from intelbus.identity import AgencyIdentity, StaticKeyRing
from intelbus.kinds import RecordKind

ENV = "test"
TOPIC = "intelbus.incidents"
PARTITION = 4


def _ident(agency: str) -> AgencyIdentity:
    seed = _nacl.blake2b(agency.encode(), digest_size=32)
    return AgencyIdentity(agency, seed, _nacl.blake2b(seed, digest_size=32))


PRODUCER = _ident("cst")
AGENCIES = [_ident(f"force-{i}") for i in range(6)]
RING = StaticKeyRing([PRODUCER.public])


def _base(version: int) -> bytes:
    return seal(
        PRODUCER,
        environment=ENV,
        topic=TOPIC,
        kind=RecordKind.INCIDENT,
        sequence=3,
        prev_digest=b"\x07" * 32,
        schema_fingerprint=b"\x01\x02",
        payload=b"hate mail by post",
        recipients=[AGENCIES[0].public, AGENCIES[1].public],
        partition=PARTITION,
        format_version=version,
    ).data


BASE = _base(FORMAT_V2)
BASE_V1 = _base(FORMAT_V1)  # legacy records are read too: they get the same hostile treatment


def _verify(data: bytes, partition: int | None = PARTITION) -> object:
    return verify(
        data,
        RING,
        expected_environment=ENV,
        expected_topic=TOPIC,
        expected_partition=partition,
        witnessed_at=None,
    )


def test_the_bases_verify() -> None:
    """The records the mutation properties start from are genuine (the oracle is live)."""
    for base in (BASE, BASE_V1):
        _verify(base)


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=2048),
    recipient_idx=st.sets(st.integers(0, len(AGENCIES) - 1), min_size=1),
    sequence=st.integers(0, 2**63 - 1),
    prev=st.binary(min_size=32, max_size=32),
    fingerprint=st.binary(min_size=1, max_size=32),
    kind=st.sampled_from(RecordKind),
    version=st.sampled_from([FORMAT_V1, FORMAT_V2]),
    partition=st.integers(0, MAX_PARTITION),
    target=st.none() | st.uuids().filter(lambda u: u.int != 0),
)
def test_round_trip(
    *,
    payload: bytes,
    recipient_idx: set[int],
    sequence: int,
    prev: bytes,
    fingerprint: bytes,
    kind: RecordKind,
    version: int,
    partition: int,
    target: uuid.UUID | None,
) -> None:
    """Whatever is sealed verifies with public keys and opens, unchanged, for every recipient;
    a v2 record keeps its partition and target, a v1 record binds neither."""
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
        partition=partition,
        target_record_id=target,
        format_version=version,
    )
    v = verify(
        sealed.data,
        RING,
        expected_environment=ENV,
        expected_topic=TOPIC,
        expected_partition=partition,
        witnessed_at=None,
    )
    assert v.digest == sealed.digest
    assert (v.sequence, v.prev_digest, v.schema_fingerprint, v.kind) == (
        sequence,
        prev,
        fingerprint,
        kind,
    )
    bound = (partition, target) if version == FORMAT_V2 else (None, None)
    assert (v.format_version, v.partition, v.target_record_id) == (version, *bound)
    for r in recipients:
        assert open_record(v, r) == payload
    for other in AGENCIES:
        if other not in recipients:
            with pytest.raises(NotARecipient):
                open_record(v, other)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([BASE, BASE_V1]),
    position=st.integers(0, len(BASE) - 1),
    replacement=st.binary(min_size=1, max_size=8),
    mode=st.sampled_from(["overwrite", "insert", "delete"]),
)
def test_any_mutation_is_rejected_with_an_envelope_error(
    base: bytes, position: int, replacement: bytes, mode: str
) -> None:
    """Overwriting, inserting or deleting bytes anywhere never verifies, and fails typed."""
    data = bytearray(base)
    position %= len(base)
    if mode == "overwrite":
        data[position : position + len(replacement)] = replacement
        data = data[: len(base)] if len(data) > len(base) else data
    elif mode == "insert":
        data[position:position] = replacement
    else:
        del data[position : position + len(replacement)]
    if bytes(data) == base:
        return
    try:
        _verify(bytes(data))
    except EnvelopeError:
        pass
    else:
        raise AssertionError(f"mutation {mode} at {position} still verifies")


# Plain random bytes almost never reach past the 88-byte fixed header (Hypothesis draws short
# strings, and a long one fails on the magic), so half the examples keep a genuine record's first
# ``cut`` bytes and replace the rest: every later field of the layout gets hostile bytes too.
_FIRST_CHECKS = ("truncated envelope: fixed header", "bad magic")
_hostile_bytes = st.binary(max_size=1024) | st.builds(
    lambda base, cut, tail: base[:cut] + tail,
    st.sampled_from([BASE, BASE_V1]),
    st.integers(0, len(BASE_V1)),
    st.binary(max_size=256),
)


def test_random_bytes_give_only_envelope_errors() -> None:
    """Hostile bytes never raise anything but an EnvelopeError subclass, from parse or verify."""
    deeper: list[str] = []  # refusals from past the fixed header: the examples were not all trivial

    @settings(max_examples=500, deadline=None)
    @given(_hostile_bytes)
    def run(data: bytes) -> None:
        for fn in (parse, _verify):
            try:
                fn(data)
            except EnvelopeError as e:
                if not any(check in str(e) for check in _FIRST_CHECKS):
                    deeper.append(str(e))

    run()
    assert len(deeper) >= 50, f"only {len(deeper)} refusals came from past the fixed header"


@settings(max_examples=500, deadline=None)
@given(
    version=st.sampled_from([FORMAT_V1, FORMAT_V2]),
    fixed_tail=st.binary(min_size=FIXED_BYTES - 8, max_size=FIXED_BYTES - 8),
    rest=st.binary(max_size=600),
)
def test_bytes_with_a_valid_prefix_give_only_envelope_errors(
    version: int, fixed_tail: bytes, rest: bytes
) -> None:
    """With the magic, version and suite right, the parser goes deeper; still only typed errors.
    (In v2 the partition and target are the first 20 bytes of ``rest``.)"""
    data = MAGIC + struct.pack(">BBBB", version, 1, 1, 0) + fixed_tail + rest
    with contextlib.suppress(EnvelopeError):
        _verify(data)

"""Fuzzing the envelope parser and the consumer pipeline (Hypothesis; settings in profile.py).

* ``envelope.wire_round_trip``: any header the writer accepts parses back to itself, and
  re-encodes to the same bytes (one record, one encoding).
* ``envelope.mutate_then_reject``: genuine records of a simulated federation, overwritten,
  inserted into, cut or spliced with another record anywhere: the pipeline never keeps one.
* ``envelope.random_bytes``: arbitrary bytes, and bytes behind a valid fixed-header prefix (format
  v1 or v2), give only typed errors from parse and verify, and a refusal from the pipeline.

tests/property/test_envelope_props.py holds the seal/open round trip and mutations against a
static key ring; these targets add the directory, the chain and the pipeline, and report counts.
"""

from __future__ import annotations

import struct
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.pipeline import AgencyPipeline, RawRecord
from intelbus.envelope import verify
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FORMAT_V1,
    FORMAT_V2,
    MAGIC,
    MAX_PARTITION,
    MAX_SEQUENCE,
    EnvelopeHeader,
    RecipientEntry,
    encode,
    parse,
)
from intelbus.errors import EnvelopeError
from intelbus.kinds import RecordKind
from intelbus.trust.model import Snapshot, Verdict
from tests.attacks.harness import sighting
from tests.attacks.report import FuzzTally
from tests.fuzz.profile import FUZZ
from tests.simulator import ENV, SIGHTINGS, BusSimulator


@pytest.fixture(scope="module")
def sim() -> Iterator[BusSimulator]:
    with tempfile.TemporaryDirectory() as tmp:
        s = BusSimulator(Path(tmp))
        pub = s.publisher()
        pub.publish(sighting(seed=80))
        pub.publish(sighting(seed=81, tlp="AMBER"))
        pub.publish(sighting(seed=82, tlp="RED"), named=["herts-police"])
        pub.heartbeat(30)
        yield s


def _process(
    pipe: AgencyPipeline,
    value: bytes,
    topic: str = SIGHTINGS,
    partition: int = 0,
    appended_at: datetime | None = None,
) -> Verdict:
    """The pipeline's verdict on one record, judged against the same (empty) trusted state every
    time: no chain heads, no records held. Intake and judge are pure: nothing is written."""
    raw = RawRecord(topic, partition, 0, value, appended_at or datetime.now(UTC))
    _, (verdict,) = pipe.judge(pipe.prepare([raw]), Snapshot(), "fuzz", {})
    return verdict


_ids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
_recipients = st.lists(
    st.tuples(_ids, st.binary(min_size=16, max_size=16), st.binary(min_size=80, max_size=80)),
    min_size=1,
    max_size=5,
    unique_by=lambda r: r[0],
).map(lambda rs: tuple(RecipientEntry(a, k, w) for a, k, w in sorted(rs)))
_common = {
    "kind": st.sampled_from(RecordKind),
    "created_at": st.integers(0, 2**53).map(
        lambda us: datetime.fromtimestamp(0, UTC) + (us * datetime.resolution)
    ),
    "sequence": st.integers(0, MAX_SEQUENCE),
    "record_id": st.uuids(),
    "key_id": st.binary(min_size=16, max_size=16),
    "prev_digest": st.binary(min_size=32, max_size=32),
    "environment": _ids,
    "topic": st.from_regex(r"[A-Za-z0-9._-]{1,249}", fullmatch=True),
    "producer_id": _ids,
    "schema_fingerprint": st.binary(min_size=1, max_size=32),
    "recipients": _recipients,
}
_headers = st.builds(EnvelopeHeader, format_version=st.just(FORMAT_V1), **_common) | st.builds(
    EnvelopeHeader,
    format_version=st.just(FORMAT_V2),
    partition=st.integers(0, MAX_PARTITION),
    target_record_id=st.none() | st.uuids().filter(lambda u: u.int != 0),
    **_common,
)


def test_wire_round_trip() -> None:
    """parse(encode(h, ...)) gives back h and its parts; encoding the result again is identical."""
    tally = FuzzTally("envelope.wire_round_trip")

    @FUZZ
    @given(
        header=_headers,
        nonce=st.binary(min_size=24, max_size=24),
        ciphertext=st.binary(min_size=16, max_size=2048),
        signature=st.binary(min_size=64, max_size=64),
    )
    def run(header: EnvelopeHeader, nonce: bytes, ciphertext: bytes, signature: bytes) -> None:
        data = encode(header, nonce, ciphertext, signature)
        r = tally.run(lambda: parse(data), (EnvelopeError,))
        assert r.crash is None, f"untyped exception: {r.crash}"
        assert r.returned, f"a header the writer accepted did not parse: {r.error!r}"
        sealed = r.value
        assert sealed is not None
        assert sealed.header == header
        assert (sealed.nonce, sealed.ciphertext, sealed.signature) == (nonce, ciphertext, signature)
        assert encode(sealed.header, sealed.nonce, sealed.ciphertext, sealed.signature) == data

    try:
        run()
    finally:
        tally.write()


def test_mutated_genuine_records_are_never_kept(sim: BusSimulator) -> None:
    """Overwrite, insert, delete or splice anywhere in a genuine record: always Rejected."""
    tally = FuzzTally("envelope.mutate_then_reject")
    pipe = sim.pipeline()
    originals = list(sim.log)
    for raw in originals:  # the templates themselves are accepted (the oracle is live)
        verdict = _process(pipe, raw.value, raw.topic, raw.partition, raw.appended_at)
        assert verdict.accepted, verdict.refusal

    @FUZZ
    @given(
        which=st.integers(0, len(originals) - 1),
        other=st.integers(0, len(originals) - 1),
        position=st.integers(0, 4096),
        length=st.integers(1, 64),
        replacement=st.binary(min_size=1, max_size=16),
        mode=st.sampled_from(["overwrite", "insert", "delete", "splice", "xor"]),
    )
    def run(
        *, which: int, other: int, position: int, length: int, replacement: bytes, mode: str
    ) -> None:
        original = originals[which]
        value = original.value
        data = bytearray(value)
        at = position % len(value)
        if mode == "overwrite":
            data[at : at + len(replacement)] = replacement
        elif mode == "insert":
            data[at:at] = replacement
        elif mode == "delete":
            del data[at : at + length]
        elif mode == "xor":
            data[at] ^= replacement[0] or 1
        else:  # the same span taken from another record
            donor = originals[other].value
            data[at : at + length] = donor[at : at + length]
        if bytes(data) == value:
            return
        r = tally.run(
            lambda: _process(
                pipe, bytes(data), original.topic, original.partition, original.appended_at
            ),
            (),
        )
        assert r.crash is None, f"the pipeline raised on {mode} at {at}: {r.crash}"
        assert r.value is not None
        assert not r.value.accepted, f"{mode} at {at} was accepted"
        tally.typed_errors += 1  # a refusal, counted as the typed outcome

    try:
        run()
    finally:
        tally.write()


def test_random_bytes_give_typed_errors_only(sim: BusSimulator) -> None:
    """Arbitrary bytes (half behind a valid fixed-header prefix): typed errors, pipeline refusal."""
    tally = FuzzTally("envelope.random_bytes")
    pipe = sim.pipeline()

    @FUZZ
    @given(
        prefix=st.booleans(),
        version=st.sampled_from([FORMAT_V1, FORMAT_V2]),
        fixed_tail=st.binary(min_size=FIXED_BYTES - 8, max_size=FIXED_BYTES - 8),
        rest=st.binary(max_size=1500),
    )
    def run(*, prefix: bool, version: int, fixed_tail: bytes, rest: bytes) -> None:
        head = MAGIC + struct.pack(">BBBB", version, 1, 1, 0)
        data = (head + fixed_tail + rest) if prefix else rest
        r = tally.run(
            lambda: verify(
                data,
                sim.history,
                expected_environment=ENV,
                expected_topic=SIGHTINGS,
                expected_partition=0,
                witnessed_at=datetime.now(UTC),
            ),
            (EnvelopeError,),
        )
        assert r.crash is None, f"untyped exception: {r.crash}"
        assert not r.returned, "random bytes verified"
        assert not _process(pipe, data).accepted

    try:
        run()
    finally:
        tally.write()


def test_record_ids_do_not_collide_in_fixture(sim: BusSimulator) -> None:
    """The fixture's records are distinct (a mutation test over one record twice proves less)."""
    ids = {parse(r.value).header.record_id for r in sim.log}
    assert len(ids) == len(sim.log)
    assert all(isinstance(i, uuid.UUID) for i in ids)

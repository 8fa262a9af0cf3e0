"""Differential test of the envelope parser: the new single-pass :func:`parse` against the parser
it replaced (copied here unchanged, as the reference), on the whole fuzz corpus, the test vectors
(genuine v1, v2 and v3 records and the negative ones), and Hypothesis mutations of the genuine
records: the same SealedRecord, or the same exception type with the same message, every time.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intelbus.envelope.merkle import path_length
from intelbus.envelope.wire import (
    _BOUND_VERSIONS,
    _CT_LEN,
    _FIXED,
    _ID_BYTES_RE,
    _PROOF_HEAD,
    _V2_EXTRA,
    CT_LEN_BYTES,
    FIXED_BYTES,
    FORMAT_V3,
    KEY_ID_BYTES,
    MAGIC,
    MAX_BATCH,
    MAX_FINGERPRINT_BYTES,
    MAX_ID_BYTES,
    MAX_PARTITION,
    MAX_RECIPIENTS,
    MAX_RECORD_BYTES,
    MAX_SEQUENCE,
    MAX_TOPIC_BYTES,
    NO_TARGET,
    NONCE_BYTES,
    PATH_HASH_BYTES,
    SIGNATURE_BYTES,
    SUITE_ED25519_X25519_XCHACHA20,
    SUPPORTED_VERSIONS,
    TAG_BYTES,
    WRAPPED_KEY_BYTES,
    BatchProof,
    EnvelopeHeader,
    RecipientEntry,
    SealedRecord,
    from_micros,
    parse,
)
from intelbus.errors import MalformedEnvelope, OversizeEnvelope, UnsupportedVersion
from intelbus.kinds import RecordKind
from tests.fuzz.profile import FUZZ

CORPUS = sorted((Path(__file__).parent / "corpus" / "envelope").glob("*--*"))
VECTORS = Path(__file__).parents[1] / "vectors"


def _vectors() -> tuple[list[bytes], list[bytes]]:
    genuine: list[bytes] = []
    negative: list[bytes] = []
    for version in (1, 2, 3):
        doc = json.loads((VECTORS / f"envelope_v{version}.json").read_text())
        genuine += [bytes.fromhex(v["expected_record"]) for v in doc["positive"]]
        negative += [bytes.fromhex(v["record"]) for v in doc["negative"]]
    return genuine, negative


GENUINE, NEGATIVE = _vectors()


# --- The reference: the parser as it was before the single-pass rewrite, unchanged. -------------


class _UnverifiedReader:
    """Bounded reads over unverified bytes: every read checks what remains first."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedEnvelope(
                f"truncated envelope: {what} needs {n} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} remain"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def short(self, what: str, cap: int) -> bytes:
        n = self.u8(what)
        if n == 0:
            raise MalformedEnvelope(f"{what} is empty")
        if n > cap:
            raise OversizeEnvelope(f"{what} of {n} bytes exceeds {cap}")
        return self.take(n, what)

    def ident(self, what: str, cap: int) -> str:
        raw = self.short(what, cap)
        if _ID_BYTES_RE.fullmatch(raw) is None:
            raise MalformedEnvelope(f"{what} has characters outside [A-Za-z0-9._-]")
        return raw.decode("ascii")


@dataclass(frozen=True, slots=True)
class _Fixed:
    version: int
    kind: RecordKind
    created: datetime
    sequence: int
    record_id: bytes
    key_id: bytes
    prev: bytes
    partition: int | None
    target: uuid.UUID | None


def _unverified_fixed(r: _UnverifiedReader) -> _Fixed:
    """The fixed part (88 bytes in v1, 108 in v2 and v3): magic and version first, so a future
    layout is refused as unsupported before its length is assumed."""
    head = r.take(6, "fixed header")
    if head[:4] != MAGIC:
        raise MalformedEnvelope("not an intelbus envelope (bad magic)")
    if head[4] not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"envelope format version {head[4]} is not supported")
    r.pos -= 6
    fixed = r.take(FIXED_BYTES, "fixed header")
    _magic, version, suite, kind, flags, created_us, sequence, rid, key_id, prev = _FIXED.unpack(
        fixed
    )
    if suite != SUITE_ED25519_X25519_XCHACHA20:
        raise UnsupportedVersion(f"envelope suite {suite} is not supported")
    if flags != 0:
        raise MalformedEnvelope(f"reserved flags {flags:#04x} are set")
    if created_us < 0 or sequence > MAX_SEQUENCE:
        raise MalformedEnvelope("creation time or sequence out of range")
    try:
        record_kind = RecordKind(kind)
    except ValueError as e:
        raise MalformedEnvelope(f"unknown record kind {kind}") from e
    try:
        created = from_micros(created_us)
    except OverflowError as e:  # beyond year 9999
        raise MalformedEnvelope("creation time out of range") from e
    partition: int | None = None
    target: uuid.UUID | None = None
    if version in _BOUND_VERSIONS:
        partition, raw_target = _V2_EXTRA.unpack(r.take(_V2_EXTRA.size, "fixed header"))
        if partition > MAX_PARTITION:
            raise MalformedEnvelope(f"partition {partition} out of range")
        if raw_target != NO_TARGET:
            target = uuid.UUID(bytes=raw_target)
    return _Fixed(version, record_kind, created, sequence, rid, key_id, prev, partition, target)


def _unverified_recipients(r: _UnverifiedReader) -> tuple[RecipientEntry, ...]:
    count = r.u8("recipient count")
    if count == 0:
        raise MalformedEnvelope("no recipients")
    if count > MAX_RECIPIENTS:
        raise OversizeEnvelope(f"{count} recipients exceed {MAX_RECIPIENTS}")
    entries = []
    for _ in range(count):
        agency = r.ident("recipient agency id", MAX_ID_BYTES)
        key_id = r.take(KEY_ID_BYTES, "recipient key id")
        wrapped = r.take(WRAPPED_KEY_BYTES, "wrapped data key")
        entries.append(RecipientEntry(agency, key_id, wrapped))
    ids = [e.agency_id for e in entries]
    if ids != sorted(set(ids)):
        # One canonical form: sorted, no duplicates. Otherwise one recipient set could be written
        # two ways, and an agency listed twice could be handed two different data keys.
        raise MalformedEnvelope("recipients are not sorted by agency id and unique")
    return tuple(entries)


def reference_parse(data: bytes | bytearray | memoryview) -> SealedRecord:
    """Parse an envelope's layout (docs/envelope.md, steps 1 and 2). The result is **unverified**.

    Raises:
        OversizeEnvelope: over :data:`MAX_RECORD_BYTES`, or a count or length over its cap.
        MalformedEnvelope: any inconsistency (bad magic, lengths, order, truncation, trailing bytes).
        UnsupportedVersion: a format version or suite this build does not know.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray / memoryview from a transport: one copy, then immutable
    # Step 1: the size cap, before any other work.
    if len(data) > MAX_RECORD_BYTES:
        raise OversizeEnvelope(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
    # Step 2: the layout, by bounded reads.
    r = _UnverifiedReader(data)
    f = _unverified_fixed(r)
    environment = r.ident("environment", MAX_ID_BYTES)
    topic = r.ident("topic", MAX_TOPIC_BYTES)
    producer = r.ident("producer id", MAX_ID_BYTES)
    fingerprint = r.short("schema fingerprint", MAX_FINGERPRINT_BYTES)
    recipients = _unverified_recipients(r)
    header_end = r.pos
    nonce = r.take(NONCE_BYTES, "nonce")
    (ct_len,) = _CT_LEN.unpack(r.take(CT_LEN_BYTES, "ciphertext length"))
    if ct_len < TAG_BYTES:
        raise MalformedEnvelope(f"ciphertext of {ct_len} bytes is shorter than its tag")
    remaining = len(data) - r.pos
    proof: BatchProof | None = None
    if f.version != FORMAT_V3:
        # The length must account for exactly the bytes left before the signature: no more
        # (truncated) and no fewer (trailing bytes).
        if ct_len + SIGNATURE_BYTES != remaining:
            raise MalformedEnvelope(
                f"ciphertext length {ct_len} + signature does not match the {remaining} bytes left"
            )
        ciphertext = r.take(ct_len, "ciphertext")
        signed_end = r.pos
        signature = r.take(SIGNATURE_BYTES, "signature")
    else:
        ciphertext = r.take(ct_len, "ciphertext")
        signed_end = r.pos
        proof = _unverified_proof(r)
        signature = r.take(SIGNATURE_BYTES, "root signature")
    header = EnvelopeHeader(
        kind=f.kind,
        created_at=f.created,
        sequence=f.sequence,
        record_id=uuid.UUID(bytes=f.record_id),
        key_id=f.key_id,
        prev_digest=f.prev,
        environment=environment,
        topic=topic,
        producer_id=producer,
        schema_fingerprint=fingerprint,
        recipients=recipients,
        format_version=f.version,
        partition=f.partition,
        target_record_id=f.target,
    )
    return SealedRecord(
        header=header,
        nonce=nonce,
        ciphertext=ciphertext,
        signature=signature,
        signed_bytes=data[:signed_end],
        header_bytes=data[:header_end],
        proof=proof,
    )


def _unverified_proof(r: _UnverifiedReader) -> BatchProof:
    """A v3 proof trailer's tree size, leaf index and path, each against its bound."""
    tree_size, index, count = _PROOF_HEAD.unpack(r.take(_PROOF_HEAD.size, "proof trailer"))
    # First the trailer's length: the path and the root signature must end exactly at the last
    # byte (truncation, trailing bytes and a wrong ciphertext length are all malformed here).
    left = len(r.data) - r.pos
    if PATH_HASH_BYTES * count + SIGNATURE_BYTES != left:
        raise MalformedEnvelope(
            f"an inclusion path of {count} hashes and the root signature do not match the "
            f"{left} bytes left"
        )
    if tree_size == 0:
        raise MalformedEnvelope("batch tree size 0")
    if tree_size > MAX_BATCH:
        raise OversizeEnvelope(f"batch of {tree_size} records exceeds {MAX_BATCH}")
    if index >= tree_size:
        raise MalformedEnvelope(f"leaf index {index} is not in a batch of {tree_size}")
    # RFC 9162 fixes the path's length for (index, size): one layout per position, so a path
    # padded or cut short is refused here, before any hashing.
    expected = path_length(index, tree_size)
    if count != expected:
        raise MalformedEnvelope(
            f"inclusion path of {count} hashes; leaf {index} of {tree_size} needs {expected}"
        )
    raw = r.take(PATH_HASH_BYTES * count, "inclusion path")
    path = tuple(raw[i : i + PATH_HASH_BYTES] for i in range(0, len(raw), PATH_HASH_BYTES))
    return BatchProof(tree_size, index, path)


# --- The comparison. ---------------------------------------------------------------------------


def _run(parser: object, data: bytes) -> tuple[object, ...]:
    try:
        record = parser(data)  # type: ignore[operator]
    except Exception as e:  # noqa: BLE001 - the exception is the outcome compared
        return ("error", type(e), str(e))
    return ("ok", record, _types(record))


def _types(value: object) -> tuple[object, ...]:
    """The runtime types of every field, nested (equal values of other types would hide a
    difference: a memoryview equals the bytes it views)."""
    if isinstance(value, tuple):
        return tuple(_types(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return (type(value), tuple(_types(getattr(value, f.name)) for f in fields(value)))  # type: ignore[arg-type]
    return (type(value),)


def assert_same(data: bytes) -> str:
    old = _run(reference_parse, data)
    new = _run(parse, data)
    assert new == old
    return str(old[0])


def test_the_inputs_hold_genuine_records_of_every_format() -> None:
    assert {r[4] for r in GENUINE} == {1, 2, 3}
    assert len(CORPUS) >= 100
    assert all(assert_same(r) == "ok" for r in GENUINE)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_corpus_parses_alike(path: Path) -> None:
    assert_same(path.read_bytes())


def test_the_negative_vectors_parse_alike() -> None:
    for record in NEGATIVE:
        assert_same(record)


def test_every_prefix_of_genuine_records_parses_alike() -> None:
    """Truncation at every offset: each read's bound and message."""
    outcomes = set()
    for record in GENUINE:
        for end in range(len(record) + 1):
            outcomes.add(assert_same(record[:end]))
        assert_same(record + b"\x00")
    assert outcomes == {"ok", "error"}


_records = st.sampled_from(GENUINE)


@FUZZ
@given(_records, st.integers(0, 4096), st.binary(min_size=1, max_size=8))
def test_overwritten_records_parse_alike(record: bytes, at: int, data: bytes) -> None:
    at %= len(record)
    assert_same(record[:at] + data + record[at + len(data) :])


@FUZZ
@given(_records, st.integers(0, 4096), st.integers(0, 255))
def test_single_byte_changes_parse_alike(record: bytes, at: int, value: int) -> None:
    at %= len(record)
    assert_same(record[:at] + bytes([value]) + record[at + 1 :])


@FUZZ
@given(_records, st.integers(0, 4096), st.binary(max_size=40), st.integers(0, 40))
def test_inserted_and_cut_records_parse_alike(
    record: bytes, at: int, inserted: bytes, cut: int
) -> None:
    at %= len(record) + 1
    assert_same(record[:at] + inserted + record[at + cut :])


@FUZZ
@given(_records, _records, st.integers(0, 4096), st.integers(0, 4096))
def test_spliced_records_parse_alike(a: bytes, b: bytes, i: int, j: int) -> None:
    assert_same(a[: i % (len(a) + 1)] + b[j % (len(b) + 1) :])


@FUZZ
@given(
    st.binary(max_size=400),
    st.sampled_from([b"", MAGIC + b"\x01\x01", MAGIC + b"\x02\x01", MAGIC + b"\x03\x01"]),
)
def test_random_bytes_parse_alike(tail: bytes, head: bytes) -> None:
    assert_same(head + tail)


def test_bytearray_and_memoryview_parse_alike() -> None:
    for record in GENUINE:
        assert _run(parse, bytearray(record)) == _run(reference_parse, bytearray(record))
        assert _run(parse, memoryview(record)) == _run(reference_parse, memoryview(record))

"""The envelope's byte layout, and the only code that reads unverified bytes.

Three layouts share one reader (docs/envelope.md, "Byte layout", has the tables). Integers are
big-endian::

    fixed v1   magic "IBUS" | version u8 = 1 | suite u8 | kind u8 | flags u8 | created_us i64 |
               sequence u64 | record_id 16 | key_id 16 | prev_digest 32                (88 bytes)
    fixed v2   the same fields with version = 2, then | partition u32 | target_record_id 16
                                                                                      (108 bytes)
    fixed v3   as v2, with version = 3                                                (108 bytes)
    ids        environment, topic, producer_id, schema_fingerprint: u8 length + bytes each
    recipients count u8, then per recipient: agency u8 length + bytes | recipient key id 16 |
               wrapped data key 80
    payload    nonce 24 | ciphertext length u32 | ciphertext (payload + 16-byte tag)
    signature  v1, v2: 64
    trailer    v3: tree_size u16 | leaf_index u16 | path count u8 | path 32 x count |
               root signature 64

Version 2 binds each record to the Kafka partition its producer chose for the stream (Kafka
orders records within a partition only, so a stream's chain is only meaningful there) and names
the record a correction or retraction amends (so an auditor who cannot decrypt can still tell a
foreign amendment). Version 3 signs batches: the producer signs the root of an RFC 9162 Merkle
tree over a batch's records (:mod:`intelbus.envelope.merkle`), and each record carries that
signature and its own inclusion path, so it still verifies alone. Versions 1 and 2 stay readable
and verifiable for ever.

Everything before the signature (v1, v2) or the proof trailer (v3) is the record's body, the
"signed bytes" (in v3 the Merkle leaf, signed through the root); everything before the nonce (the
"header") is the AEAD's associated data. Parsing is bounded: every length is checked against a
named cap and against the bytes that remain, and trailing bytes are refused. Nothing here trusts
the bytes it reads: the parsed record is *unverified* until
:func:`intelbus.envelope.verify.verify` has checked its signature.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from intelbus.envelope.merkle import path_length
from intelbus.errors import MalformedEnvelope, OversizeEnvelope, UnsupportedVersion
from intelbus.kinds import RecordKind

MAGIC = b"IBUS"
FORMAT_V1 = 1
FORMAT_V2 = 2
FORMAT_V3 = 3
FORMAT_VERSION = FORMAT_V3  # what producers write; every version is read
SUPPORTED_VERSIONS = (FORMAT_V1, FORMAT_V2, FORMAT_V3)
#: Versions with the 108-byte fixed part (partition and target bound).
_BOUND_VERSIONS = (FORMAT_V2, FORMAT_V3)
SUITE_ED25519_X25519_XCHACHA20 = 1  # Ed25519, X25519 sealed box, XChaCha20-Poly1305, BLAKE2b

# Hard caps (docs/envelope.md, "Size caps"). MAX_RECORD_BYTES is checked before any other work.
MAX_RECORD_BYTES = 1024 * 1024
MAX_RECIPIENTS = 64
MAX_ID_BYTES = 64  # environment, producer id, recipient agency id
MAX_TOPIC_BYTES = 249  # Kafka's own limit on topic names
MAX_FINGERPRINT_BYTES = 32
MAX_SEQUENCE = 2**63 - 1  # stores keep it in a signed 64-bit integer (SQLite INTEGER, Kafka long)
MAX_PARTITION = 2**31 - 1  # Kafka partitions are signed 32-bit ids
#: v3: the most records one batch signature covers (docs/envelope.md, "Batch signatures (v3)":
#: chosen from measurements; each doubling adds 32 bytes to every record of the batch).
MAX_BATCH = 64

KEY_ID_BYTES = 16
DIGEST_BYTES = 32
WRAPPED_KEY_BYTES = 80  # sealed box of a 32-byte data key: 32 (ephemeral pk) + 32 + 16 (tag)
NONCE_BYTES = 24
TAG_BYTES = 16
SIGNATURE_BYTES = 64
CT_LEN_BYTES = 4

_FIXED = struct.Struct(">4sBBBBqQ16s16s32s")
FIXED_BYTES = _FIXED.size  # 88: the v1 fixed part, and the common prefix of v2's
_V2_EXTRA = struct.Struct(">I16s")
FIXED_BYTES_V2 = FIXED_BYTES + _V2_EXTRA.size  # 108
#: The v2 and v3 fixed part in one pack (big-endian structs have no padding: the same bytes as
#: _FIXED then _V2_EXTRA).
_FIXED_BOUND = struct.Struct(">4sBBBBqQ16s16s32sI16s")
NO_TARGET = bytes(16)  # v2 target_record_id of a record that amends nothing
_CT_LEN = struct.Struct(">I")
_PROOF_HEAD = struct.Struct(">HHB")  # v3 trailer: tree_size, leaf_index, path count
PATH_HASH_BYTES = 32

# Domain separation (docs/envelope.md, "What is signed"): a signature or an AEAD tag made for an
# envelope can never be mistaken for one made for anything else (a directory version, a key file).
SIGN_PREFIX = b"intelbus/envelope/v1/signature\x00"
AEAD_PREFIX = b"intelbus/envelope/v1/payload\x00"
DIGEST_PERSON = b"ibus-record-v1"  # BLAKE2b personalisation of the record digest
SIGN_PREFIX_V2 = b"intelbus/envelope/v2/signature\x00"
AEAD_PREFIX_V2 = b"intelbus/envelope/v2/payload\x00"
DIGEST_PERSON_V2 = b"ibus-record-v2"
#: v3 signs a batch root, never a record's bytes: its own prefix, so no v1/v2 signature (over a
#: prefix and a body) can ever pass for a root signature, nor the reverse.
ROOT_SIGN_PREFIX_V3 = b"intelbus/envelope/v3/batch-root\x00"
AEAD_PREFIX_V3 = b"intelbus/envelope/v3/payload\x00"
DIGEST_PERSON_V3 = b"ibus-record-v3"
_PREFIXES = {
    FORMAT_V1: (SIGN_PREFIX, AEAD_PREFIX, DIGEST_PERSON),
    FORMAT_V2: (SIGN_PREFIX_V2, AEAD_PREFIX_V2, DIGEST_PERSON_V2),
    FORMAT_V3: (ROOT_SIGN_PREFIX_V3, AEAD_PREFIX_V3, DIGEST_PERSON_V3),
}


def sign_prefix(version: int) -> bytes:
    """The signature's domain prefix for a format version (v3: of the batch-root message, see
    :func:`batch_root_message`; a v3 signature never covers a prefix and a body)."""
    return _PREFIXES[version][0]


def aead_prefix(version: int) -> bytes:
    """The AEAD associated data's domain prefix for a format version."""
    return _PREFIXES[version][1]


def digest_person(version: int) -> bytes:
    """The BLAKE2b personalisation of a format version's record digest."""
    return _PREFIXES[version][2]


# Ids are Kafka-topic-safe ASCII: no spaces, no control or look-alike characters in logs.
_ID_BYTES_RE = re.compile(rb"[A-Za-z0-9._-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RecipientEntry:
    """One recipient: its agency id, the key id of its encryption key, and the wrapped data key."""

    agency_id: str
    key_id: bytes
    wrapped_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """Everything the producer binds about a record, readable without decrypting."""

    kind: RecordKind
    created_at: datetime
    sequence: int
    record_id: uuid.UUID
    key_id: bytes
    prev_digest: bytes
    environment: str
    topic: str
    producer_id: str
    schema_fingerprint: bytes
    recipients: tuple[RecipientEntry, ...]
    #: The envelope format version the record was written in (1, 2 or 3).
    format_version: int = FORMAT_VERSION
    #: v2, v3: the Kafka partition its producer bound the record to; None in v1 (not bound).
    partition: int | None = None
    #: v2, v3: the record a correction or retraction amends (None when it amends nothing, and
    #: in v1).
    target_record_id: uuid.UUID | None = None

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        """The recipient agency ids, in the canonical (sorted) order."""
        return tuple(r.agency_id for r in self.recipients)


@dataclass(frozen=True, slots=True)
class BatchProof:
    """A v3 record's place in its batch: the tree's size, its leaf index, and its inclusion path
    (RFC 9162 §2.1.3.1, siblings from the leaf upwards). Unverified until the root it leads to
    carries a good signature."""

    tree_size: int
    leaf_index: int
    path: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A parsed but **unverified** envelope, and the byte ranges its checks need."""

    header: EnvelopeHeader
    nonce: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    #: v1, v2: the signature over the prefix and the signed bytes; v3: the batch root's.
    signature: bytes = field(repr=False)
    #: Everything before the signature (v1, v2) or the proof trailer (v3: the Merkle leaf).
    signed_bytes: bytes = field(repr=False)
    header_bytes: bytes = field(repr=False)  # everything before the nonce: the AEAD's AD
    #: v3: the record's inclusion proof in its signed batch; None in v1 and v2.
    proof: BatchProof | None = None

    @property
    def size(self) -> int:
        """The record's size in bytes on the wire."""
        if self.proof is None:
            return len(self.signed_bytes) + SIGNATURE_BYTES
        return len(self.signed_bytes) + trailer_bytes(self.proof.leaf_index, self.proof.tree_size)


def to_micros(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime.

    Raises:
        ValueError: ``t`` is naive (a time without a zone is ambiguous in a signed record).
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant")
    return (t - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    """The aware UTC datetime of microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


# --- Writing ----------------------------------------------------------------------------------------


def _check_id(value: str, what: str, cap: int) -> bytes:
    raw = value.encode("ascii", errors="replace")
    if not 1 <= len(raw) <= cap or _ID_BYTES_RE.fullmatch(raw) is None:
        raise ValueError(f"{what} must be 1..{cap} characters of [A-Za-z0-9._-]")
    return raw


def _put_short(out: bytearray, value: bytes) -> None:
    out.append(len(value))
    out += value


def encode_header(h: EnvelopeHeader) -> bytes:
    """The header bytes (fixed part, ids, recipients). Refuses anything :func:`parse` would refuse.

    The concatenation of :func:`encode_fixed`, :func:`encode_stream_ids` and
    :func:`encode_recipients`, which sealing a batch calls itself so that the parts its records
    share are checked and encoded once (tests/unit/test_envelope_batch_header.py holds the two
    ways to the same bytes).

    Raises:
        ValueError: a field is outside its bounds, or recipients are not sorted and unique.
        OversizeEnvelope: more than :data:`MAX_RECIPIENTS` recipients.
    """
    return (
        encode_fixed(
            h.format_version,
            h.kind,
            created_us=to_micros(h.created_at),
            sequence=h.sequence,
            record_id=h.record_id,
            key_id=h.key_id,
            prev_digest=h.prev_digest,
            partition=h.partition,
            target_record_id=h.target_record_id,
        )
        + encode_stream_ids(h.environment, h.topic, h.producer_id)
        + encode_recipients(h.schema_fingerprint, h.recipients)
    )


def encode_fixed(
    format_version: int,
    kind: RecordKind,
    *,
    created_us: int,
    sequence: int,
    record_id: uuid.UUID,
    key_id: bytes,
    prev_digest: bytes,
    partition: int | None,
    target_record_id: uuid.UUID | None,
) -> bytes:
    """The fixed part of a header (88 bytes in v1, 108 in v2 and v3): what differs per record.

    Raises:
        ValueError: a field is outside its bounds.
    """
    if format_version not in SUPPORTED_VERSIONS:
        raise ValueError(f"format version must be one of {SUPPORTED_VERSIONS}")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be in 0..{MAX_SEQUENCE}")
    if created_us < 0:
        raise ValueError("creation time before the Unix epoch")
    if len(key_id) != KEY_ID_BYTES or len(prev_digest) != DIGEST_BYTES:
        raise ValueError("key id must be 16 bytes and prev_digest 32 bytes")
    if format_version not in _BOUND_VERSIONS:
        if partition is not None or target_record_id is not None:
            raise ValueError("a v1 record binds no partition and names no target")
        return _FIXED.pack(
            MAGIC,
            format_version,
            SUITE_ED25519_X25519_XCHACHA20,
            kind,
            0,
            created_us,
            sequence,
            record_id.bytes,
            key_id,
            prev_digest,
        )
    if partition is None or not 0 <= partition <= MAX_PARTITION:
        raise ValueError(f"a v{format_version} record needs a partition in 0..{MAX_PARTITION}")
    target = NO_TARGET if target_record_id is None else target_record_id.bytes
    if target == NO_TARGET and target_record_id is not None:
        raise ValueError("the nil UUID cannot be a target record id")
    return _FIXED_BOUND.pack(
        MAGIC,
        format_version,
        SUITE_ED25519_X25519_XCHACHA20,
        kind,
        0,
        created_us,
        sequence,
        record_id.bytes,
        key_id,
        prev_digest,
        partition,
        target,
    )


def encode_stream_ids(environment: str, topic: str, producer_id: str) -> bytes:
    """The header's environment, topic and producer id, each u8-length-prefixed: the same for
    every record of a producer's stream.

    Raises:
        ValueError: an id is empty, too long, or outside ``[A-Za-z0-9._-]``.
    """
    out = bytearray()
    _put_short(out, _check_id(environment, "environment", MAX_ID_BYTES))
    _put_short(out, _check_id(topic, "topic", MAX_TOPIC_BYTES))
    _put_short(out, _check_id(producer_id, "producer id", MAX_ID_BYTES))
    return bytes(out)


def encode_recipients(schema_fingerprint: bytes, recipients: Sequence[RecipientEntry]) -> bytes:
    """The header's tail: the schema fingerprint, then the recipient count and entries. Shared
    by the records of a batch written with one schema and one data key.

    Raises:
        ValueError: the fingerprint's length, no recipients, recipients not sorted and unique, an
            agency id or a key of the wrong shape.
        OversizeEnvelope: more than :data:`MAX_RECIPIENTS` recipients.
    """
    if not 1 <= len(schema_fingerprint) <= MAX_FINGERPRINT_BYTES:
        raise ValueError(f"schema fingerprint must be 1..{MAX_FINGERPRINT_BYTES} bytes")
    if len(recipients) > MAX_RECIPIENTS:
        raise OversizeEnvelope(f"{len(recipients)} recipients exceed {MAX_RECIPIENTS}")
    if not recipients:
        raise ValueError("a record needs at least one recipient")
    ids = [r.agency_id for r in recipients]
    if ids != sorted(set(ids)):
        raise ValueError("recipients must be sorted by agency id and unique")
    out = bytearray()
    _put_short(out, schema_fingerprint)
    out.append(len(recipients))
    for r in recipients:
        _put_short(out, _check_id(r.agency_id, "recipient agency id", MAX_ID_BYTES))
        if len(r.key_id) != KEY_ID_BYTES or len(r.wrapped_key) != WRAPPED_KEY_BYTES:
            raise ValueError("recipient key id or wrapped key has the wrong length")
        out += r.key_id
        out += r.wrapped_key
    return bytes(out)


def encode_body(
    header_bytes: bytes, nonce: bytes, ciphertext: bytes, trailer: int = SIGNATURE_BYTES
) -> bytes:
    """Header, nonce, ciphertext length and ciphertext: the signed bytes (v3: the leaf bytes).

    ``trailer`` is the size of what will follow: the signature (v1, v2), or the proof trailer
    (v3, :func:`trailer_bytes`), so the whole record is held to the size cap.

    Raises:
        ValueError: the nonce is not 24 bytes or the ciphertext is shorter than its tag.
        OversizeEnvelope: the record would exceed :data:`MAX_RECORD_BYTES`.
    """
    if len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise ValueError("nonce must be 24 bytes and the ciphertext at least its tag")
    size = len(header_bytes) + NONCE_BYTES + CT_LEN_BYTES + len(ciphertext) + trailer
    if size > MAX_RECORD_BYTES:
        raise OversizeEnvelope(f"record of {size} bytes would exceed {MAX_RECORD_BYTES}")
    return header_bytes + nonce + _CT_LEN.pack(len(ciphertext)) + ciphertext


def encode(
    header: EnvelopeHeader,
    nonce: bytes,
    ciphertext: bytes,
    signature: bytes,
    proof: BatchProof | None = None,
) -> bytes:
    """A whole record from its parts (the signature is not checked here; see ``seal``).

    ``proof`` is required for a v3 header and refused for the others.

    Raises:
        ValueError, OversizeEnvelope: as :func:`encode_header`, :func:`encode_body` and
            :func:`encode_trailer`.
    """
    if (proof is not None) != (header.format_version == FORMAT_V3):
        raise ValueError("a v3 record needs its batch proof, and only a v3 record has one")
    if proof is None:
        if len(signature) != SIGNATURE_BYTES:
            raise ValueError("signature must be 64 bytes")
        return encode_body(encode_header(header), nonce, ciphertext) + signature
    trailer = encode_trailer(proof, signature)
    return encode_body(encode_header(header), nonce, ciphertext, len(trailer)) + trailer


def trailer_bytes(leaf_index: int, tree_size: int) -> int:
    """The size of a v3 proof trailer: 5 bytes, the path, the root signature.

    Raises:
        ValueError: ``leaf_index`` is not in a tree of ``tree_size`` leaves.
    """
    return _PROOF_HEAD.size + PATH_HASH_BYTES * path_length(leaf_index, tree_size) + SIGNATURE_BYTES


def encode_trailer(proof: BatchProof, signature: bytes) -> bytes:
    """A v3 proof trailer. Refuses anything :func:`parse` would refuse.

    Raises:
        ValueError: the tree size is outside 1..:data:`MAX_BATCH`, the index outside the tree,
            the path not exactly as long as RFC 9162 makes it for (index, size), a hash or the
            signature of the wrong length.
    """
    if not 1 <= proof.tree_size <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} records, not {proof.tree_size}")
    if len(proof.path) != path_length(proof.leaf_index, proof.tree_size):
        raise ValueError("the inclusion path does not have the length its index and size give")
    if any(len(p) != PATH_HASH_BYTES for p in proof.path) or len(signature) != SIGNATURE_BYTES:
        raise ValueError("path hashes must be 32 bytes and the signature 64")
    head = _PROOF_HEAD.pack(proof.tree_size, proof.leaf_index, len(proof.path))
    return head + b"".join(proof.path) + signature


def encode_trailers(
    tree_size: int, paths: Sequence[Sequence[bytes]], signature: bytes
) -> list[bytes]:
    """The v3 proof trailers of a whole batch, leaf 0 first: :func:`encode_trailer` of each
    (index, path), with the checks the batch shares (size, signature) made once.

    Raises:
        ValueError: as :func:`encode_trailer`, or not one path per leaf.
    """
    if not 1 <= tree_size <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} records, not {tree_size}")
    if len(paths) != tree_size:
        raise ValueError("a batch needs one inclusion path per record")
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError("path hashes must be 32 bytes and the signature 64")
    out = []
    for index, path in enumerate(paths):
        if len(path) != path_length(index, tree_size):
            raise ValueError("the inclusion path does not have the length its index and size give")
        # Every length in one C-level pass (as encode_trailer's check, without a generator).
        if path and set(map(len, path)) != {PATH_HASH_BYTES}:
            raise ValueError("path hashes must be 32 bytes and the signature 64")
        out.append(_PROOF_HEAD.pack(tree_size, index, len(path)) + b"".join(path) + signature)
    return out


def batch_root_message(h: EnvelopeHeader, tree_size: int, root: bytes) -> bytes:
    """What a v3 root signature covers, built from a record's own (signed) header.

    ``prefix || environment || topic || partition u32 || producer id || key id || tree_size u16
    || root``, the variable ids length-prefixed (u8) as in the header: a root and its signature
    made for one environment, topic, partition, producer, key or tree size verify for no other.

    Raises:
        ValueError: not a v3 header, or a field out of its bounds.
    """
    if h.format_version != FORMAT_V3 or h.partition is None:
        raise ValueError("only a v3 record, bound to a partition, has a batch root")
    if not 1 <= tree_size <= MAX_BATCH or len(root) != PATH_HASH_BYTES:
        raise ValueError("tree size or root out of bounds")
    if len(h.key_id) != KEY_ID_BYTES or not 0 <= h.partition <= MAX_PARTITION:
        raise ValueError("key id or partition out of bounds")
    out = bytearray(ROOT_SIGN_PREFIX_V3)
    _put_short(out, _check_id(h.environment, "environment", MAX_ID_BYTES))
    _put_short(out, _check_id(h.topic, "topic", MAX_TOPIC_BYTES))
    out += struct.pack(">I", h.partition)
    _put_short(out, _check_id(h.producer_id, "producer id", MAX_ID_BYTES))
    out += h.key_id
    out += struct.pack(">H", tree_size)
    out += root
    return bytes(out)


# --- Reading unverified bytes (docs/envelope.md, verification step 2) --------------------------------


def _truncated(what: str, n: int, pos: int, size: int) -> MalformedEnvelope:
    return MalformedEnvelope(
        f"truncated envelope: {what} needs {n} bytes at offset {pos}, {size - pos} remain"
    )


def _unverified_short(data: bytes, pos: int, what: str, cap: int) -> int:
    """The length of the u8-prefixed field at ``pos`` (1..``cap``), checked against the bytes
    that remain; its bytes are ``data[pos + 1 : pos + 1 + length]``."""
    size = len(data)
    if pos >= size:
        raise _truncated(what, 1, pos, size)
    n = data[pos]
    if n == 0:
        raise MalformedEnvelope(f"{what} is empty")
    if n > cap:
        raise OversizeEnvelope(f"{what} of {n} bytes exceeds {cap}")
    if pos + 1 + n > size:
        raise _truncated(what, n, pos + 1, size)
    return n


def _unverified_ident(data: bytes, pos: int, what: str, cap: int) -> tuple[str, int]:
    """An id (u8 length, 1..``cap`` bytes of [A-Za-z0-9._-]) at ``pos``, and the offset after it."""
    n = _unverified_short(data, pos, what, cap)
    end = pos + 1 + n
    raw = data[pos + 1 : end]
    if _ID_BYTES_RE.fullmatch(raw) is None:
        raise MalformedEnvelope(f"{what} has characters outside [A-Za-z0-9._-]")
    return raw.decode("ascii"), end


#: The fixed part as read: version, kind, creation time, sequence, record id, key id, previous
#: digest, partition and target (None in v1), and the offset after it.
_FixedPart = tuple[
    int, RecordKind, datetime, int, bytes, bytes, bytes, int | None, uuid.UUID | None, int
]


def _unverified_fixed(data: bytes) -> _FixedPart:
    """The fixed part (88 bytes in v1, 108 in v2 and v3): magic and version first, so a future
    layout is refused as unsupported before its length is assumed."""
    size = len(data)
    if size < 6:
        raise _truncated("fixed header", 6, 0, size)
    if data[:4] != MAGIC:
        raise MalformedEnvelope("not an intelbus envelope (bad magic)")
    version = data[4]
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(f"envelope format version {version} is not supported")
    if size < FIXED_BYTES:
        raise _truncated("fixed header", FIXED_BYTES, 0, size)
    _magic, _version, suite, kind, flags, created_us, sequence, rid, key_id, prev = (
        _FIXED.unpack_from(data)
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
    if version not in _BOUND_VERSIONS:
        return version, record_kind, created, sequence, rid, key_id, prev, None, None, FIXED_BYTES
    if size < FIXED_BYTES_V2:
        raise _truncated("fixed header", _V2_EXTRA.size, FIXED_BYTES, size)
    partition, raw_target = _V2_EXTRA.unpack_from(data, FIXED_BYTES)
    if partition > MAX_PARTITION:
        raise MalformedEnvelope(f"partition {partition} out of range")
    target = None if raw_target == NO_TARGET else uuid.UUID(bytes=raw_target)
    return (
        version,
        record_kind,
        created,
        sequence,
        rid,
        key_id,
        prev,
        partition,
        target,
        FIXED_BYTES_V2,
    )


def _unverified_payload(data: bytes, pos: int, version: int) -> tuple[int, BatchProof | None]:
    """The nonce and ciphertext from ``pos`` (the header's end), and what follows them: the
    offset where the ciphertext ends (the signed bytes' end), and a v3 record's proof."""
    size = len(data)
    if pos + NONCE_BYTES > size:
        raise _truncated("nonce", NONCE_BYTES, pos, size)
    pos += NONCE_BYTES
    if pos + CT_LEN_BYTES > size:
        raise _truncated("ciphertext length", CT_LEN_BYTES, pos, size)
    (ct_len,) = _CT_LEN.unpack_from(data, pos)
    pos += CT_LEN_BYTES
    if ct_len < TAG_BYTES:
        raise MalformedEnvelope(f"ciphertext of {ct_len} bytes is shorter than its tag")
    remaining = size - pos
    if version != FORMAT_V3:
        # The length must account for exactly the bytes left before the signature: no more
        # (truncated) and no fewer (trailing bytes).
        if ct_len + SIGNATURE_BYTES != remaining:
            raise MalformedEnvelope(
                f"ciphertext length {ct_len} + signature does not match the {remaining} bytes left"
            )
        return pos + ct_len, None
    if ct_len > remaining:
        raise _truncated("ciphertext", ct_len, pos, size)
    return pos + ct_len, _unverified_proof(data, pos + ct_len)


def parse(data: bytes | bytearray | memoryview) -> SealedRecord:
    """Parse an envelope's layout (docs/envelope.md, steps 1 and 2). The result is **unverified**.

    One pass over the bytes with a local offset: every read is checked against the bytes that
    remain before it is made, and every length against its named cap.

    Raises:
        OversizeEnvelope: over :data:`MAX_RECORD_BYTES`, or a count or length over its cap.
        MalformedEnvelope: any inconsistency (bad magic, lengths, order, truncation, trailing bytes).
        UnsupportedVersion: a format version or suite this build does not know.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # bytearray / memoryview from a transport: one copy, then immutable
    size = len(data)
    # Step 1: the size cap, before any other work.
    if size > MAX_RECORD_BYTES:
        raise OversizeEnvelope(f"record of {size} bytes exceeds {MAX_RECORD_BYTES}")
    # Step 2: the layout, in order.
    version, kind, created, sequence, rid, key_id, prev, partition, target, pos = _unverified_fixed(
        data
    )
    environment, pos = _unverified_ident(data, pos, "environment", MAX_ID_BYTES)
    topic, pos = _unverified_ident(data, pos, "topic", MAX_TOPIC_BYTES)
    producer, pos = _unverified_ident(data, pos, "producer id", MAX_ID_BYTES)
    n = _unverified_short(data, pos, "schema fingerprint", MAX_FINGERPRINT_BYTES)
    fingerprint = data[pos + 1 : pos + 1 + n]  # opaque bytes: no character check
    recipients, header_end = _unverified_recipients(data, pos + 1 + n)
    signed_end, proof = _unverified_payload(data, header_end, version)
    header = EnvelopeHeader(
        kind=kind,
        created_at=created,
        sequence=sequence,
        record_id=uuid.UUID(bytes=rid),
        key_id=key_id,
        prev_digest=prev,
        environment=environment,
        topic=topic,
        producer_id=producer,
        schema_fingerprint=fingerprint,
        recipients=recipients,
        format_version=version,
        partition=partition,
        target_record_id=target,
    )
    ct_start = header_end + NONCE_BYTES + CT_LEN_BYTES
    return SealedRecord(
        header=header,
        nonce=data[header_end : header_end + NONCE_BYTES],
        ciphertext=data[ct_start:signed_end],
        # v1, v2: right after the ciphertext; v3: after the trailer's path. The last 64 bytes
        # either way (the length checks above made it so).
        signature=data[size - SIGNATURE_BYTES :],
        signed_bytes=data[:signed_end],
        header_bytes=data[:header_end],
        proof=proof,
    )


def _unverified_recipients(data: bytes, pos: int) -> tuple[tuple[RecipientEntry, ...], int]:
    """The recipient list at ``pos`` (count, then agency id, key id, wrapped key each), and the
    offset after it."""
    size = len(data)
    if pos >= size:
        raise _truncated("recipient count", 1, pos, size)
    count = data[pos]
    pos += 1
    if count == 0:
        raise MalformedEnvelope("no recipients")
    if count > MAX_RECIPIENTS:
        raise OversizeEnvelope(f"{count} recipients exceed {MAX_RECIPIENTS}")
    entries = []
    ids = []
    for _ in range(count):
        agency, pos = _unverified_ident(data, pos, "recipient agency id", MAX_ID_BYTES)
        if pos + KEY_ID_BYTES > size:
            raise _truncated("recipient key id", KEY_ID_BYTES, pos, size)
        key_end = pos + KEY_ID_BYTES
        if key_end + WRAPPED_KEY_BYTES > size:
            raise _truncated("wrapped data key", WRAPPED_KEY_BYTES, key_end, size)
        wrapped_end = key_end + WRAPPED_KEY_BYTES
        entries.append(RecipientEntry(agency, data[pos:key_end], data[key_end:wrapped_end]))
        ids.append(agency)
        pos = wrapped_end
    if ids != sorted(set(ids)):
        # One canonical form: sorted, no duplicates. Otherwise one recipient set could be written
        # two ways, and an agency listed twice could be handed two different data keys.
        raise MalformedEnvelope("recipients are not sorted by agency id and unique")
    return tuple(entries), pos


def _unverified_proof(data: bytes, pos: int) -> BatchProof:
    """A v3 proof trailer at ``pos``: tree size, leaf index and path, each against its bound."""
    size = len(data)
    if pos + _PROOF_HEAD.size > size:
        raise _truncated("proof trailer", _PROOF_HEAD.size, pos, size)
    tree_size, index, count = _PROOF_HEAD.unpack_from(data, pos)
    pos += _PROOF_HEAD.size
    # First the trailer's length: the path and the root signature must end exactly at the last
    # byte (truncation, trailing bytes and a wrong ciphertext length are all malformed here).
    left = size - pos
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
    path = tuple(
        data[i : i + PATH_HASH_BYTES]
        for i in range(pos, pos + PATH_HASH_BYTES * count, PATH_HASH_BYTES)
    )
    return BatchProof(tree_size, index, path)

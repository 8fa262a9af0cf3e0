"""The envelope: round trips, every bit flip and truncation, forwarding, splices, copies, data-key reuse,
keys and key files. One test per attack; each asserts the typed error (docs/envelope.md)."""

from __future__ import annotations

import base64
import json
import stat
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from intelbus import _nacl
from intelbus.envelope import (
    MAX_RECIPIENTS,
    MAX_RECORD_BYTES,
    DataKeyCache,
    Sealed,
    VerifiedRecord,
    open_record,
    parse,
    seal,
    verify,
)
from intelbus.envelope.datakey import new_data_key, wrap_data_key
from intelbus.envelope.seal import _seal_from_parts
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    FORMAT_V1,
    FORMAT_V2,
    MAX_PARTITION,
    NO_TARGET,
    EnvelopeHeader,
    aead_prefix,
    encode_body,
    encode_header,
    sign_prefix,
)
from intelbus.errors import (
    BadSignature,
    BindingMismatch,
    ConfigError,
    DecryptionFailed,
    EnvelopeError,
    KeyNotValid,
    KeyRevoked,
    MalformedEnvelope,
    NotARecipient,
    OversizeEnvelope,
    UnknownKey,
)
from intelbus.identity import AgencyIdentity, PublicIdentity, StaticKeyRing
from intelbus.kinds import RecordKind

ENV = "test"
TOPIC = "intelbus.sightings"
FP = bytes.fromhex("0123456789abcdef")
PARTITION = 2  # the partition the test records are bound to (format v2)
FAST = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


def _ident(agency: str, n: int = 0) -> AgencyIdentity:
    seed = _nacl.blake2b(f"{agency}/{n}".encode(), digest_size=32)
    return AgencyIdentity(agency, seed, _nacl.blake2b(seed, digest_size=32))


CST = _ident("cst")
MET = _ident("met-police")
HERTS = _ident("herts-police")
GMP = _ident("gmp")
AUDITOR = _ident("auditor")
FORCES = [_ident(f"force-{i:02d}") for i in range(10)]
RING = StaticKeyRing([CST.public, MET.public, HERTS.public, GMP.public])


def _seal(
    payload: bytes = b"person photographing the entrance",
    recipients: list[AgencyIdentity] | None = None,
    *,
    signer: AgencyIdentity = CST,
    sequence: int = 0,
    prev: bytes = bytes(32),
    topic: str = TOPIC,
    datakeys: DataKeyCache | None = None,
    partition: int | None = PARTITION,
    kind: RecordKind = RecordKind.SIGHTING,
    target: uuid.UUID | None = None,
    format_version: int = FORMAT_V2,
) -> Sealed:
    return seal(
        signer,
        environment=ENV,
        topic=topic,
        kind=kind,
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=FP,
        payload=payload,
        recipients=[r.public for r in (recipients or [MET])],
        datakeys=datakeys,
        partition=partition,
        target_record_id=target,
        format_version=format_version,
    )


def _verify(
    data: bytes,
    ring: StaticKeyRing = RING,
    *,
    topic: str = TOPIC,
    env: str = ENV,
    partition: int | None = PARTITION,
) -> VerifiedRecord:
    """Verify as a reader of ``topic``'s ``partition`` (offline: a static ring has no times)."""
    return verify(
        data,
        ring,
        expected_environment=env,
        expected_topic=topic,
        expected_partition=partition,
        witnessed_at=None,
    )


def _resign(
    signer: AgencyIdentity,
    header: EnvelopeHeader,
    nonce: bytes,
    ct: bytes,
    *,
    prefix_version: int | None = None,
) -> bytes:
    """Assemble and sign a record as a holder of ``signer``'s key would (with the header's own
    format version's prefix unless ``prefix_version`` names another)."""
    body = encode_body(encode_header(header), nonce, ct)
    version = header.format_version if prefix_version is None else prefix_version
    return body + signer.sign(sign_prefix(version) + body)


# --- Round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 10])
def test_round_trip_for_n_recipients(n: int) -> None:
    """Every recipient opens the payload; the header says what the producer bound."""
    recipients = FORCES[:n]
    payload = b"vehicle circling the school, registration AB12 CDE"
    sealed = _seal(payload, recipients, sequence=7, prev=b"\x11" * 32)
    v = _verify(sealed.data, StaticKeyRing([CST.public]))
    assert v.digest == sealed.digest
    assert v.header == sealed.header
    assert (v.producer_id, v.topic, v.environment, v.sequence) == ("cst", TOPIC, ENV, 7)
    assert v.prev_digest == b"\x11" * 32
    assert v.schema_fingerprint == FP
    assert v.recipient_ids == tuple(sorted(r.agency_id for r in recipients))
    assert v.size == len(sealed.data)
    for r in recipients:
        assert open_record(v, r) == payload


def test_empty_payload_round_trips() -> None:
    """A zero-byte payload is still authenticated (its ciphertext is the 16-byte tag)."""
    assert open_record(_verify(_seal(b"").data), MET) == b""


def test_digest_chains_records() -> None:
    """The digest of one record is what the next record carries as prev_digest."""
    first = _seal(sequence=0)
    second = _seal(sequence=1, prev=first.digest)
    assert _verify(second.data).prev_digest == _verify(first.data).digest


# --- Arbitrary data: every bit flip, every truncation, trailing bytes ------------------------------------


@pytest.mark.parametrize(
    ("n", "version"), [(1, FORMAT_V2), (3, FORMAT_V2), (1, FORMAT_V1)], ids=["1-v2", "3-v2", "1-v1"]
)
def test_every_single_bit_flip_is_rejected_with_a_typed_error(n: int, version: int) -> None:
    """No single-bit change anywhere in a record verifies, and every rejection is an EnvelopeError."""
    data = _seal(b"drone overhead", [MET, HERTS, GMP][:n], format_version=version).data
    reasons = set()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            _verify(bytes(flipped))
        except EnvelopeError as e:
            reasons.add(e.reason.value)
        else:
            pytest.fail(f"bit {i} flipped still verifies")
    assert "bad_signature" in reasons
    assert "malformed" in reasons


def test_every_truncation_is_malformed() -> None:
    """Every proper prefix of a record is refused as malformed (never IndexError/struct.error)."""
    data = _seal().data
    for end in range(len(data)):
        with pytest.raises(MalformedEnvelope):
            _verify(data[:end])


@pytest.mark.parametrize("extra", [b"\x00", b"\xff" * 64, bytes(1000)])
def test_trailing_bytes_are_malformed(extra: bytes) -> None:
    """Bytes after the signature are refused, however many."""
    with pytest.raises(MalformedEnvelope, match="does not match"):
        _verify(_seal().data + extra)


def test_oversize_record_is_refused_before_parsing() -> None:
    """Anything over MAX_RECORD_BYTES is oversize, whatever it contains."""
    with pytest.raises(OversizeEnvelope):
        _verify(b"IBUS" + bytes(MAX_RECORD_BYTES))


def test_seal_refuses_an_oversize_payload() -> None:
    """The producer cannot make a record the consumer would refuse for its size."""
    with pytest.raises(OversizeEnvelope):
        _seal(bytes(MAX_RECORD_BYTES))


def test_seal_refuses_too_many_recipients() -> None:
    """More than MAX_RECIPIENTS recipients is refused at sealing."""
    many = [
        PublicIdentity.from_public_bytes(f"a{i:03d}", MET.sign_public, MET.enc_public)
        for i in range(MAX_RECIPIENTS + 1)
    ]
    with pytest.raises(OversizeEnvelope):
        seal(
            CST,
            environment=ENV,
            topic=TOPIC,
            kind=RecordKind.SIGHTING,
            sequence=0,
            prev_digest=bytes(32),
            schema_fingerprint=FP,
            payload=b"x",
            recipients=many,
            partition=0,
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [("environment", "has space"), ("topic", "a/b"), ("topic", "t" * 250), ("environment", "")],
)
def test_seal_refuses_bad_ids(field: str, value: str) -> None:
    """Ids outside [A-Za-z0-9._-] or their length caps are refused at sealing."""
    kwargs = {"environment": ENV, "topic": TOPIC, field: value}
    with pytest.raises(ValueError, match=field.replace("_", " ")):
        seal(
            CST,
            kind=RecordKind.SIGHTING,
            sequence=0,
            prev_digest=bytes(32),
            schema_fingerprint=FP,
            payload=b"x",
            recipients=[MET.public],
            partition=0,
            **kwargs,
        )


def test_seal_refuses_an_agency_listed_twice() -> None:
    """Two entries for one agency could carry two different data keys: refused."""
    with pytest.raises(ValueError, match="twice"):
        _seal(recipients=[MET, MET])


# --- Surreptitious forwarding (Davis 2001) -----------------------------------------------------------


def test_forwarding_by_adding_a_wrap_keeps_a_signature_that_no_longer_verifies() -> None:
    """(a) MET opens a record, adds a wrap for GMP and keeps CST's signature: BadSignature."""
    sealed = _seal(recipients=[MET])
    p = parse(sealed.data)
    data_key = _nacl.seal_open(MET._enc_secret, MET.enc_public, p.header.recipients[0].wrapped_key)
    wraps = wrap_data_key(data_key, [MET.public, GMP.public]).wraps
    forged = (
        encode_body(encode_header(replace(p.header, recipients=wraps)), p.nonce, p.ciphertext)
        + p.signature
    )
    with pytest.raises(BadSignature):
        _verify(forged)


def test_forwarding_resigned_with_the_forwarders_key_is_refused() -> None:
    """(b) MET re-seals to GMP, signs with its own key, keeps producer 'cst'.

    A verifier that knows MET's key refuses the key for producer 'cst' (KeyNotValid); one that
    does not know it refuses it as unknown; a resolver that wrongly answers is caught by the
    envelope's own check (BindingMismatch).
    """
    payload = open_record(_verify(_seal(b"report").data), MET)
    dk = new_data_key([MET.public, GMP.public])
    original = parse(_seal(b"report").data).header
    header = replace(original, key_id=MET.key_id, recipients=dk.wraps)
    nonce = _nacl.random_bytes(24)
    ct = _nacl.aead_encrypt(dk.key, nonce, payload, aead_prefix(2) + encode_header(header))
    forged = _resign(MET, header, nonce, ct)
    with pytest.raises(KeyNotValid):
        _verify(forged)
    with pytest.raises(UnknownKey):
        _verify(forged, StaticKeyRing([CST.public]))

    class CarelessResolver:
        def resolve_signing_key(self, key_id, producer_id, topic, at, witnessed_at=None):
            return MET.public

    with pytest.raises(BindingMismatch):
        verify(
            forged,
            CarelessResolver(),
            expected_environment=ENV,
            expected_topic=TOPIC,
            expected_partition=PARTITION,
            witnessed_at=None,
        )


def test_forwarded_record_not_listing_the_agency_cannot_be_opened_by_it() -> None:
    """(c) GMP is handed a genuine record addressed to MET only: it verifies, but NotARecipient."""
    v = _verify(_seal(recipients=[MET]).data)
    with pytest.raises(NotARecipient):
        open_record(v, GMP)


# --- Mix-and-match ------------------------------------------------------------------------------------


def _two_records() -> tuple[bytes, bytes]:
    cache = DataKeyCache()
    a = _seal(b"record A", [MET, HERTS], datakeys=cache).data
    b = _seal(b"record B", [MET, HERTS], sequence=1, datakeys=cache).data
    return a, b


def test_header_of_one_record_with_ciphertext_of_another_is_refused() -> None:
    """Header+signature of A with nonce and ciphertext of B: BadSignature."""
    a, b = _two_records()
    ha, hb = len(parse(a).header_bytes), len(parse(b).header_bytes)
    with pytest.raises(BadSignature):
        _verify(a[:ha] + b[hb:-64] + a[-64:])
    with pytest.raises(BadSignature):
        _verify(a[:ha] + b[hb:])


def test_key_wrap_of_another_record_is_refused() -> None:
    """A's wrap for MET replaced by the wrap from a record with another data key: BadSignature."""
    a = _seal(b"A", [MET]).data
    b = _seal(b"B", [MET]).data
    wa, wb = parse(a).header.recipients[0].wrapped_key, parse(b).header.recipients[0].wrapped_key
    with pytest.raises(BadSignature):
        _verify(a.replace(wa, wb))


def test_a_validly_signed_header_does_not_decrypt_another_ciphertext() -> None:
    """Even the producer's own key cannot pair header A with ciphertext B: the AD binds the header."""
    a, b = _two_records()
    pa, pb = parse(a), parse(b)
    forged = _resign(CST, pa.header, pb.nonce, pb.ciphertext)
    v = _verify(forged)
    with pytest.raises(DecryptionFailed):
        open_record(v, MET)


def test_every_ciphertext_bit_flip_under_a_valid_signature_is_decryption_failed() -> None:
    """Once decryption starts, every failure is the one DecryptionFailed with one message."""
    sealed = _seal(b"short payload")
    p = parse(sealed.data)
    messages = set()
    for i in range(len(p.ciphertext) * 8):
        ct = bytearray(p.ciphertext)
        ct[i // 8] ^= 1 << (i % 8)
        v = _verify(_resign(CST, p.header, p.nonce, bytes(ct)))
        with pytest.raises(DecryptionFailed) as info:
            open_record(v, MET)
        messages.add(str(info.value))
    bad_wrap = replace(p.header.recipients[0], wrapped_key=bytes(80))
    v = _verify(_resign(CST, replace(p.header, recipients=(bad_wrap,)), p.nonce, p.ciphertext))
    with pytest.raises(DecryptionFailed) as info:
        open_record(v, MET)
    messages.add(str(info.value))
    assert len(messages) == 1


# --- Wrong target ---------------------------------------------------------------------------------------


def test_cross_topic_copy_is_binding_mismatch() -> None:
    """A genuine record read from another topic than the one it was signed for."""
    with pytest.raises(BindingMismatch, match="topic"):
        _verify(_seal().data, topic="intelbus.incidents")


def test_cross_environment_copy_is_binding_mismatch() -> None:
    """A genuine record from the test bus replayed into production."""
    with pytest.raises(BindingMismatch, match="environment"):
        _verify(_seal().data, env="prod")


# --- Partition and target bindings (format v2) ------------------------------------------------------

PARTITION_AT = FIXED_BYTES  # v2: partition u32 after the 88 bytes v1 also has
TARGET_AT = FIXED_BYTES + 4  # then the 16-byte target record id


def _with(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def test_a_v2_record_is_bound_to_its_partition() -> None:
    """Read from the partition it was sealed for, it verifies; read from any other, it is a
    BindingMismatch (a genuine copy in the wrong place). None (not read from Kafka) skips it."""
    data = _seal(partition=PARTITION).data
    v = _verify(data)
    assert (v.format_version, v.partition) == (FORMAT_V2, PARTITION)
    assert data[PARTITION_AT:TARGET_AT] == PARTITION.to_bytes(4, "big")
    for elsewhere in (0, PARTITION + 1, MAX_PARTITION):
        with pytest.raises(BindingMismatch, match=f"partition {PARTITION}, read from {elsewhere}"):
            _verify(data, partition=elsewhere)
    assert _verify(data, partition=None).partition == PARTITION


def test_a_tampered_partition_is_a_bad_signature_not_a_binding_mismatch() -> None:
    """The partition is signed and checked after the signature: moving a record's claimed
    partition to where it is read fails the signature, and so does any other change to it."""
    data = _seal(partition=PARTITION).data
    moved = _with(data, PARTITION_AT, (PARTITION + 1).to_bytes(4, "big"))
    with pytest.raises(BadSignature):
        _verify(moved, partition=PARTITION + 1)
    with pytest.raises(BadSignature):
        _verify(moved, partition=PARTITION)
    # Both wrong: the signature is checked first, so the answer is BadSignature, never a
    # BindingMismatch that would mean "genuine".
    with pytest.raises(BadSignature):
        _verify(moved, partition=7)


def test_partition_zero_is_bound_too() -> None:
    """Partition 0 is a real binding (its field is four zero bytes, not "none")."""
    data = _seal(partition=0).data
    assert _verify(data, partition=0).partition == 0
    with pytest.raises(BindingMismatch, match="partition"):
        _verify(data, partition=1)


@pytest.mark.parametrize("partition", [None, -1, MAX_PARTITION + 1, 2**32])
def test_seal_refuses_a_v2_record_without_a_valid_partition(partition: int | None) -> None:
    """A v2 record needs a partition in 0..2^31-1 (Kafka partitions are signed 32-bit)."""
    with pytest.raises(ValueError, match="partition"):
        _seal(partition=partition)


def test_a_partition_beyond_kafkas_range_is_malformed() -> None:
    """Refused by the parser, before any key or signature work."""
    data = _with(_seal().data, PARTITION_AT, (MAX_PARTITION + 1).to_bytes(4, "big"))
    with pytest.raises(MalformedEnvelope, match="partition"):
        _verify(data)
    assert _verify(_seal(partition=MAX_PARTITION).data, partition=MAX_PARTITION).partition == (
        MAX_PARTITION
    )


def test_an_amendments_target_is_signed() -> None:
    """A retraction's target record id is bound: changing, removing or adding one breaks the
    signature. A record that amends nothing carries no target."""
    target = uuid.UUID("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b")
    other = uuid.UUID("11111111-2222-4333-8444-555555555555")
    retraction = _seal(kind=RecordKind.RETRACTION, target=target).data
    v = _verify(retraction)
    assert (v.kind, v.target_record_id) == (RecordKind.RETRACTION, target)
    assert retraction[TARGET_AT : TARGET_AT + 16] == target.bytes
    with pytest.raises(BadSignature):
        _verify(_with(retraction, TARGET_AT, other.bytes))
    with pytest.raises(BadSignature):
        _verify(_with(retraction, TARGET_AT, NO_TARGET))
    plain = _seal().data
    assert _verify(plain).target_record_id is None
    assert plain[TARGET_AT : TARGET_AT + 16] == NO_TARGET
    with pytest.raises(BadSignature):
        _verify(_with(plain, TARGET_AT, target.bytes))


def test_the_nil_uuid_cannot_be_a_target() -> None:
    """Zeros mean "no target" on the wire, so the nil UUID cannot be named as one."""
    with pytest.raises(ValueError, match="nil UUID"):
        _seal(kind=RecordKind.CORRECTION, target=uuid.UUID(int=0))


# --- Format v1 and the version boundary ---------------------------------------------------------------


def test_v1_records_still_verify_and_carry_no_partition() -> None:
    """A legacy v1 record verifies from any partition and has neither partition nor target; its
    digest uses the v1 personalisation, its fixed part is 88 bytes."""
    sealed = _seal(format_version=FORMAT_V1, partition=None)
    data = sealed.data
    assert data[4] == FORMAT_V1
    assert data[FIXED_BYTES] == len(ENV)  # the environment's length follows the 88 bytes
    for read_from in (0, PARTITION, 9, None):
        v = _verify(data, partition=read_from)
        assert (v.format_version, v.partition, v.target_record_id) == (FORMAT_V1, None, None)
    assert v.digest == sealed.digest
    assert v.digest == _nacl.blake2b(data[:-64], digest_size=32, person=b"ibus-record-v1")
    assert open_record(v, MET) == b"person photographing the entrance"


def test_v1_and_v2_digests_are_personalised_per_version() -> None:
    """A v2 record's digest is BLAKE2b-256 with person "ibus-record-v2", not v1's."""
    sealed = _seal()
    body = sealed.data[:-64]
    assert sealed.digest == _nacl.blake2b(body, digest_size=32, person=b"ibus-record-v2")
    assert sealed.digest != _nacl.blake2b(body, digest_size=32, person=b"ibus-record-v1")
    assert sealed.data[FIXED_BYTES_V2] == len(ENV)  # the ids follow the 108-byte fixed part


@pytest.mark.parametrize(
    ("body_version", "prefix_version"), [(FORMAT_V2, FORMAT_V1), (FORMAT_V1, FORMAT_V2)]
)
def test_a_body_signed_with_the_other_versions_prefix_is_a_bad_signature(
    body_version: int, prefix_version: int
) -> None:
    """Domain separation between versions: the producer's own key, signing one version's body
    with the other's prefix, makes nothing that verifies."""
    p = parse(_seal(format_version=body_version, partition=PARTITION).data)
    control = _verify(_resign(CST, p.header, p.nonce, p.ciphertext))  # its own prefix verifies
    assert control.format_version == body_version
    with pytest.raises(BadSignature):
        _verify(_resign(CST, p.header, p.nonce, p.ciphertext, prefix_version=prefix_version))


def test_a_payload_encrypted_under_the_other_versions_prefix_does_not_open() -> None:
    """The AEAD's associated data is prefixed per version too: a v2 header over a ciphertext made
    with v1's prefix verifies (the producer signed it) but never opens."""
    recipient_dk = new_data_key([MET.public])
    p = parse(_seal().data)
    header = replace(p.header, recipients=recipient_dk.wraps)
    ad = encode_header(header)
    nonce = _nacl.random_bytes(24)
    good = _nacl.aead_encrypt(recipient_dk.key, nonce, b"x", aead_prefix(FORMAT_V2) + ad)
    assert open_record(_verify(_resign(CST, header, nonce, good)), MET) == b"x"
    wrong = _nacl.aead_encrypt(recipient_dk.key, nonce, b"x", aead_prefix(FORMAT_V1) + ad)
    with pytest.raises(DecryptionFailed):
        open_record(_verify(_resign(CST, header, nonce, wrong)), MET)


def test_a_record_reframed_as_the_other_version_is_a_bad_signature() -> None:
    """A v1 record given version byte 2 and a partition (a well-formed v2 layout), or a v2 record
    given version byte 1 without its partition and target: the signature binds the version."""
    v1 = _seal(format_version=FORMAT_V1, partition=None).data
    as_v2 = (
        v1[:4] + bytes([FORMAT_V2]) + v1[5:FIXED_BYTES]
        + PARTITION.to_bytes(4, "big") + NO_TARGET + v1[FIXED_BYTES:]
    )  # fmt: skip
    assert parse(as_v2).header.partition == PARTITION  # it parses: only the signature refuses it
    with pytest.raises(BadSignature):
        _verify(as_v2)
    v2 = _seal().data
    as_v1 = v2[:4] + bytes([FORMAT_V1]) + v2[5:FIXED_BYTES] + v2[FIXED_BYTES_V2:]
    assert parse(as_v1).header.format_version == FORMAT_V1
    with pytest.raises(BadSignature):
        _verify(as_v1)


def test_resolver_refusals_propagate_and_see_the_claimed_context() -> None:
    """The resolver is asked with the key id, producer, topic, creation time and witness time."""
    calls = []

    class Revoking:
        def resolve_signing_key(self, key_id, producer_id, topic, at, witnessed_at=None):
            calls.append((key_id, producer_id, topic, at, witnessed_at))
            raise KeyRevoked("revoked")

    sealed = _seal()
    seen = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(KeyRevoked):
        verify(
            sealed.data,
            Revoking(),
            expected_environment=ENV,
            expected_topic=TOPIC,
            expected_partition=PARTITION,
            witnessed_at=seen,
        )
    assert calls == [(CST.key_id, "cst", TOPIC, sealed.header.created_at, seen)]


# --- Auditors ----------------------------------------------------------------------------------------------


def test_auditor_verifies_without_decrypting_but_cannot_open() -> None:
    """Public keys suffice to verify; the auditor is not a recipient and cannot open."""
    sealed = _seal(recipients=[MET, HERTS])
    v = _verify(sealed.data, StaticKeyRing([CST.public]))
    assert v.digest == sealed.digest
    with pytest.raises(NotARecipient):
        open_record(v, AUDITOR)


def test_rotated_recipient_key_is_not_a_recipient() -> None:
    """A record sealed to MET's old key is NotARecipient for MET's new key (key ids differ)."""
    v = _verify(_seal(recipients=[MET]).data)
    with pytest.raises(NotARecipient, match="key"):
        open_record(v, _ident("met-police", 1))


# --- Data-key reuse window ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _wraps(data: bytes) -> tuple[bytes, ...]:
    return tuple(r.wrapped_key for r in parse(data).header.recipients)


def _data_key(data: bytes, reader: AgencyIdentity) -> bytes:
    """The data key of a record, unwrapped by one of its recipients.

    Wraps are sealed boxes with a fresh ephemeral key each, so two wraps of one data key differ:
    comparing wraps cannot show that two records do *not* share a data key; comparing keys can.
    """
    (entry,) = (r for r in parse(data).header.recipients if r.agency_id == reader.agency_id)
    return _nacl.seal_open(reader._enc_secret, reader.enc_public, entry.wrapped_key)


def test_data_key_reused_up_to_max_uses() -> None:
    """max_uses records share one data key (same wraps); the next gets a new one. Nonces differ."""
    cache = DataKeyCache(max_uses=3, max_age=timedelta(hours=1), clock=FakeClock())
    records = [
        _seal(f"r{i}".encode(), [MET, HERTS], sequence=i, datakeys=cache).data for i in range(4)
    ]
    assert len({_wraps(r) for r in records[:3]}) == 1
    assert _data_key(records[3], MET) != _data_key(records[0], MET)
    assert len({parse(r).nonce for r in records}) == 4
    assert cache.keys_made == 2
    for r in records:
        assert open_record(_verify(r), HERTS).startswith(b"r")


def test_data_key_expires_after_max_age() -> None:
    """A data key older than max_age is replaced; a clock that goes backwards also ends it."""
    clock = FakeClock()
    cache = DataKeyCache(max_uses=100, max_age=timedelta(minutes=5), clock=clock)
    first = _seal(datakeys=cache).data
    clock.now += timedelta(minutes=4, seconds=59)
    assert _wraps(_seal(datakeys=cache).data) == _wraps(first)
    clock.now += timedelta(seconds=1)
    second = _seal(datakeys=cache).data
    assert _data_key(second, MET) != _data_key(first, MET)
    clock.now -= timedelta(minutes=1)
    third = _seal(datakeys=cache).data
    assert _data_key(third, MET) not in {_data_key(first, MET), _data_key(second, MET)}
    assert cache.keys_made == 3


def test_data_key_is_per_recipient_set() -> None:
    """Another recipient set, or a rotated recipient key, never shares a data key."""
    cache = DataKeyCache(clock=FakeClock())
    a = _seal(recipients=[MET], datakeys=cache).data
    b = _seal(recipients=[MET, HERTS], datakeys=cache).data
    met_rotated = _ident("met-police", 1)
    c = _seal(recipients=[met_rotated], datakeys=cache).data
    keys = {_data_key(a, MET), _data_key(b, MET), _data_key(b, HERTS), _data_key(c, met_rotated)}
    assert len(keys) == 3  # b's two wraps hold one key; a, b and c each have their own
    assert cache.keys_made == 3


def test_data_key_cache_bounds_are_checked() -> None:
    """Non-positive bounds are a configuration error, and the cache's repr shows no key."""
    with pytest.raises(ValueError, match="positive"):
        DataKeyCache(max_uses=0)
    with pytest.raises(ValueError, match="positive"):
        DataKeyCache(max_age=timedelta(0))
    dk = new_data_key([MET.public])
    assert dk.key.hex() not in repr(dk)


def test_seal_from_parts_refuses_wraps_for_another_recipient_set() -> None:
    """A data key wrapped for one set cannot be used to seal to another (a stale cache bug)."""
    dk = new_data_key([MET.public])
    with pytest.raises(ValueError, match="recipient set"):
        _seal_from_parts(
            CST,
            environment=ENV,
            topic=TOPIC,
            kind=RecordKind.SIGHTING,
            record_id=uuid.uuid4(),
            sequence=0,
            prev_digest=bytes(32),
            schema_fingerprint=FP,
            payload=b"x",
            recipients=[HERTS.public],
            data_key=dk,
            nonce=bytes(24),
            now=datetime.now(UTC),
        )


# --- Keys ------------------------------------------------------------------------------------------------

ED25519_IDENTITY = bytes.fromhex("01" + "00" * 31)
ED25519_ORDER_2 = bytes.fromhex("ec" + "ff" * 30 + "7f")
X25519_ORDER_8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.mark.parametrize("bad_sign", [ED25519_IDENTITY, ED25519_ORDER_2, bytes(32), b"\xff" * 32])
def test_invalid_signing_keys_are_refused_at_registration(bad_sign: bytes) -> None:
    """Identity, small-order and non-canonical Ed25519 keys are refused, however they are built."""
    with pytest.raises(ValueError, match="Ed25519"):
        PublicIdentity.from_public_bytes("rogue", bad_sign, MET.enc_public)
    direct = PublicIdentity("rogue", bad_sign, MET.enc_public, b"\x00" * 16)
    with pytest.raises(ValueError, match="Ed25519"):
        StaticKeyRing([direct])


@pytest.mark.parametrize("bad_enc", [bytes(32), ED25519_IDENTITY, X25519_ORDER_8])
def test_small_order_encryption_keys_are_refused_at_registration(bad_enc: bytes) -> None:
    """X25519 keys of small order (all-zero shared secret) are refused."""
    with pytest.raises(ValueError, match="X25519"):
        PublicIdentity.from_public_bytes("rogue", MET.sign_public, bad_enc)


def test_key_ring_refuses_a_key_id_that_does_not_match() -> None:
    """A PublicIdentity with a forged key id cannot be registered."""
    forged = PublicIdentity("met-police", MET.sign_public, MET.enc_public, CST.key_id)
    with pytest.raises(ValueError, match="does not match"):
        StaticKeyRing([forged])


def test_key_file_is_created_0600(tmp_path: Path) -> None:
    """The private key file is owner-only from creation, and loads back to the same identity."""
    path = tmp_path / "cst.key"
    CST.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AgencyIdentity.load(path).public == CST.public


def test_secrets_never_appear_in_reprs() -> None:
    """repr/str of identities, records and data keys carry no secret key bytes in any encoding."""
    secrets = [CST.signing_seed(), CST._sign_secret, CST._enc_secret]
    sealed = _seal(b"payload that must not leak")
    v = _verify(sealed.data)
    dk = new_data_key([MET.public])
    texts = [
        repr(CST),
        str(CST),
        repr(CST.public),
        repr(sealed),
        repr(v),
        repr(dk),
        repr(parse(sealed.data)),
    ]
    for secret in [*secrets, dk.key]:
        for encoded in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            for text in texts:
                assert encoded not in text
    for text in texts:
        assert "payload that must not leak" not in text


def test_identity_is_immutable() -> None:
    """An AgencyIdentity cannot be changed after construction."""
    with pytest.raises(AttributeError):
        CST.public = MET.public  # type: ignore[misc]


def test_passphrase_encrypted_key_round_trip(tmp_path: Path) -> None:
    """Argon2id-protected key files open with the right passphrase only."""
    path = tmp_path / "cst.key"
    CST.save(path, passphrase=b"correct horse battery staple", **FAST)
    assert CST.signing_seed().hex() not in path.read_text()
    assert "secret" not in json.loads(path.read_text())
    assert (
        AgencyIdentity.load(path, passphrase=b"correct horse battery staple").public == CST.public
    )
    with pytest.raises(ConfigError, match="wrong passphrase"):
        AgencyIdentity.load(path, passphrase=b"wrong")


def test_static_key_ring_refuses_unknown_and_foreign_keys() -> None:
    """Unknown key ids are UnknownKey; a key used for another producer is KeyNotValid."""
    ring = StaticKeyRing([CST.public])
    at = datetime.now(UTC)
    with pytest.raises(UnknownKey):
        ring.resolve_signing_key(MET.key_id, "met-police", TOPIC, at)
    with pytest.raises(KeyNotValid):
        ring.resolve_signing_key(CST.key_id, "met-police", TOPIC, at)
    assert ring.resolve_signing_key(CST.key_id, "cst", TOPIC, at) == CST.public


@pytest.mark.parametrize("person", [b"", b"ibus-record-v1", b"ibus-key-id"])
@pytest.mark.parametrize("size", [16, 32])
def test_blake2b_is_libsodiums_generichash(person: bytes, size: int) -> None:
    """_nacl.blake2b (stdlib) equals libsodium's crypto_generichash with the same personalisation."""
    from nacl.bindings import crypto_generichash_blake2b_salt_personal  # noqa: PLC0415

    data = bytes(range(256)) * 3
    expected = crypto_generichash_blake2b_salt_personal(
        data, digest_size=size, person=person.ljust(16, b"\0") if person else b""
    )
    assert _nacl.blake2b(data, digest_size=size, person=person) == expected


def test_unsorted_or_duplicate_recipients_are_malformed() -> None:
    """Only one canonical recipient list exists: swapped or repeated entries are malformed."""
    data = _seal(recipients=[HERTS, MET]).data
    p = parse(data)
    first, second = p.header.recipients
    raw_first = (
        bytes([len(first.agency_id)]) + first.agency_id.encode() + first.key_id + first.wrapped_key
    )
    raw_second = (
        bytes([len(second.agency_id)])
        + second.agency_id.encode()
        + second.key_id
        + second.wrapped_key
    )
    assert raw_first + raw_second in data
    with pytest.raises(MalformedEnvelope, match="sorted"):
        _verify(data.replace(raw_first + raw_second, raw_second + raw_first))
    with pytest.raises(MalformedEnvelope, match="sorted"):
        _verify(data.replace(raw_first + raw_second, raw_first + raw_first))


def test_key_ring_refuses_the_same_keys_for_two_agencies() -> None:
    """The same key pair registered under another agency id is refused; re-adding is harmless."""
    ring = StaticKeyRing([MET.public, MET.public])
    impostor = PublicIdentity.from_public_bytes("gmp", MET.sign_public, MET.enc_public)
    with pytest.raises(ValueError, match="another agency"):
        ring.add(impostor)

"""Verifying a sealed record with public keys only (docs/envelope.md, "Verification steps").

Anyone can run this, an auditor without read rights included. The steps, in this order:

1. Size cap, before any other work (:data:`~intelbus.envelope.wire.MAX_RECORD_BYTES`).
2. Parse the layout with bounded code; refuse truncation, trailing bytes, unknown versions and
   non-canonical recipient lists (sorted, no agency twice).
3. Resolve the signing key by key id, for the claimed producer and topic, at the broker's append
   time (the signed creation time only offline, where no broker witnessed the record): unknown,
   not valid for that producer/role/topic/time, or revoked.
4. Check the resolved key is the one asked for, and belongs to the claimed producer.
5. Verify the Ed25519 signature over the domain prefix and every byte before the signature.
6. Bindings: the signed environment, topic and (format v2) partition must be the ones the record
   was read from.
7. Compute the record digest (BLAKE2b-256 of the signed bytes, personalised per format version).

Bindings are checked after the signature on purpose: a :class:`~intelbus.errors.BindingMismatch`
then always means "a genuine record, in the wrong place" (a copy), never random damage.

Only a :class:`VerifiedRecord` can be opened (:mod:`intelbus.envelope.unseal`) or decoded. The hash
chain is judged by the caller (:mod:`intelbus.chain`) from ``sequence``, ``prev_digest`` and
``digest``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from intelbus import _nacl
from intelbus.envelope.wire import (
    DIGEST_BYTES,
    FORMAT_V1,
    EnvelopeHeader,
    RecipientEntry,
    SealedRecord,
    digest_person,
    parse,
    sign_prefix,
)
from intelbus.errors import BindingMismatch, UnknownKey
from intelbus.identity import KeyResolver, PublicIdentity
from intelbus.kinds import RecordKind


def record_digest(signed_bytes: bytes, version: int = FORMAT_V1) -> bytes:
    """The 32-byte record digest: the next record's ``prev_digest``, and what auditors list.

    BLAKE2b-256, personalised per format version, over every byte before the signature. Ed25519
    signatures are deterministic and libsodium refuses malleated ones, so one signed body has one
    valid record.
    """
    return _nacl.blake2b(signed_bytes, digest_size=DIGEST_BYTES, person=digest_person(version))


@dataclass(frozen=True, slots=True)
class VerifiedRecord:
    """A record whose layout, key, signature and bindings have been checked (steps 1-7)."""

    sealed: SealedRecord = field(repr=False)
    signer: PublicIdentity
    digest: bytes

    @property
    def header(self) -> EnvelopeHeader:
        return self.sealed.header

    @property
    def record_id(self) -> uuid.UUID:
        return self.sealed.header.record_id

    @property
    def kind(self) -> RecordKind:
        return self.sealed.header.kind

    @property
    def environment(self) -> str:
        return self.sealed.header.environment

    @property
    def topic(self) -> str:
        return self.sealed.header.topic

    @property
    def producer_id(self) -> str:
        return self.sealed.header.producer_id

    @property
    def key_id(self) -> bytes:
        return self.sealed.header.key_id

    @property
    def sequence(self) -> int:
        return self.sealed.header.sequence

    @property
    def prev_digest(self) -> bytes:
        return self.sealed.header.prev_digest

    @property
    def format_version(self) -> int:
        return self.sealed.header.format_version

    @property
    def partition(self) -> int | None:
        """The partition the producer bound the record to (format v2), else None."""
        return self.sealed.header.partition

    @property
    def target_record_id(self) -> uuid.UUID | None:
        """The record a v2 correction or retraction amends, else None."""
        return self.sealed.header.target_record_id

    @property
    def schema_fingerprint(self) -> bytes:
        return self.sealed.header.schema_fingerprint

    @property
    def created_at(self) -> datetime:
        return self.sealed.header.created_at

    @property
    def recipients(self) -> tuple[RecipientEntry, ...]:
        return self.sealed.header.recipients

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return self.sealed.header.recipient_ids

    @property
    def size(self) -> int:
        """The record's size in bytes on the wire."""
        return len(self.sealed.signed_bytes) + len(self.sealed.signature)


def verify(
    record_bytes: bytes | bytearray | memoryview,
    resolver: KeyResolver,
    *,
    expected_environment: str,
    expected_topic: str,
    expected_partition: int | None = None,
    witnessed_at: datetime | None,
) -> VerifiedRecord:
    """Verify an envelope (docs/envelope.md steps 1-7, as numbered in this module's docstring).

    ``witnessed_at`` is the broker's append time of a record read from Kafka: the key is judged at
    it, so a leaked or retired key cannot back-date what it signs. Pass None only offline (a file
    checked by hand), where the signed creation time is all there is; consumers and auditors
    refuse a bus record without a broker time before calling this.

    ``expected_partition`` is the partition the record was read from: a v2 record bound to another
    partition is a copy in the wrong place. None skips the check (a record not read from Kafka).

    Raises:
        OversizeEnvelope, MalformedEnvelope, UnsupportedVersion: steps 1-2.
        UnknownKey, KeyNotValid, KeyRevoked: step 3 (from the resolver).
        BindingMismatch: step 4 (resolver answered for another key or agency) and step 6.
        BadSignature: step 5.
    """
    sealed = parse(record_bytes)  # steps 1 and 2: the only read of unverified bytes
    h = sealed.header
    rid = h.record_id
    # Step 3: the resolver treats every argument as an untrusted claim (ids and a time only).
    signer = resolver.resolve_signing_key(
        h.key_id, h.producer_id, h.topic, h.created_at, witnessed_at
    )
    # Step 4: defence in depth against a resolver that answers for a different key or agency.
    if signer.key_id != h.key_id:
        raise UnknownKey(f"record {rid}: the resolver returned another key than {h.key_id.hex()}")
    if signer.agency_id != h.producer_id:
        raise BindingMismatch(
            f"record {rid}: key {h.key_id.hex()} belongs to {signer.agency_id}, "
            f"the record claims producer {h.producer_id}"
        )
    # Step 5: the signature over the domain prefix and every byte before it.
    _nacl.verify_signature(
        signer.sign_public, sign_prefix(h.format_version) + sealed.signed_bytes, sealed.signature
    )
    # Step 6: the signed context must be where the record was read (cross-topic/environment copy).
    if h.environment != expected_environment:
        raise BindingMismatch(
            f"record {rid} is bound to environment {h.environment}, read in {expected_environment}"
        )
    if h.topic != expected_topic:
        raise BindingMismatch(
            f"record {rid} is bound to topic {h.topic}, read from {expected_topic}"
        )
    # Kafka orders records within a partition only: a stream's chain means nothing elsewhere, so
    # a genuine record copied to another partition is refused here.
    if h.partition is not None and expected_partition not in (None, h.partition):
        raise BindingMismatch(
            f"record {rid} is bound to partition {h.partition}, read from {expected_partition}"
        )
    # Step 7.
    return VerifiedRecord(sealed, signer, record_digest(sealed.signed_bytes, h.format_version))

"""Verifying a sealed record with public keys only (docs/envelope.md, "Verification steps").

Anyone can run this, an auditor without read rights included. The steps, in this order:

1. Size cap, before any other work (:data:`~intelbus.envelope.wire.MAX_RECORD_BYTES`).
2. Parse the layout with bounded code; refuse truncation, trailing bytes, unknown versions and
   non-canonical recipient lists (sorted, no agency twice).
3. Resolve the signing key by key id, for the claimed producer and topic, at the broker's append
   time (the signed creation time only offline, where no broker witnessed the record): unknown,
   not valid for that producer/role/topic/time, or revoked.
4. Check the resolved key is the one asked for, and belongs to the claimed producer.
5. Verify the Ed25519 signature. Formats 1 and 2: over the domain prefix and every byte before
   the signature. Format 3: hash the record's leaf bytes, follow its inclusion path to the batch
   root (RFC 9162 §2.1.3.2, :mod:`intelbus.envelope.merkle`), build the root message from the
   record's own header (:func:`~intelbus.envelope.wire.batch_root_message`), and verify the root
   signature over it, unless a :class:`RootCache` holds exactly this (key, root message,
   signature) from an earlier success.
6. Bindings: the signed environment, topic and (formats 2 and 3) partition must be the ones the
   record was read from.
7. Compute the record digest (BLAKE2b-256 of the signed bytes, personalised per format version;
   in format 3 the leaf bytes, so a record's digest does not depend on the batch that signed it).

Bindings are checked after the signature on purpose: a :class:`~intelbus.errors.BindingMismatch`
then always means "a genuine record, in the wrong place" (a copy), never random damage.

Only a :class:`VerifiedRecord` can be opened (:mod:`intelbus.envelope.unseal`) or decoded. The hash
chain is judged by the caller (:mod:`intelbus.chain`) from ``sequence``, ``prev_digest`` and
``digest``.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from intelbus import _nacl
from intelbus.envelope import merkle
from intelbus.envelope.wire import (
    DIGEST_BYTES,
    FORMAT_V1,
    EnvelopeHeader,
    RecipientEntry,
    SealedRecord,
    batch_root_message,
    digest_person,
    parse,
    sign_prefix,
)
from intelbus.errors import BadSignature, BindingMismatch, MalformedEnvelope, UnknownKey
from intelbus.identity import KeyResolver, PublicIdentity
from intelbus.kinds import RecordKind


def record_digest(signed_bytes: bytes, version: int = FORMAT_V1) -> bytes:
    """The 32-byte record digest: the next record's ``prev_digest``, and what auditors list.

    BLAKE2b-256, personalised per format version, over every byte before the signature. Ed25519
    signatures are deterministic and libsodium refuses malleated ones, so one signed body has one
    valid record.
    """
    return _nacl.blake2b(signed_bytes, digest_size=DIGEST_BYTES, person=digest_person(version))


DEFAULT_ROOT_CACHE = 4_096


class RootCache:
    """Batch-root signatures already verified: a bounded LRU of (signer public key, root message,
    signature) triples, shared by the threads of one reader.

    A format-3 batch of n records carries one root signature; verifying it once and remembering
    the success saves n - 1 Ed25519 verifications. What is remembered is only ever a success, and
    only what the verifier computed itself: the public key its resolver returned for this record
    (key resolution is never cached: a key revoked since is refused before the cache is asked),
    the root message it built from this record's own header and the root its leaf and path lead
    to, and the signature bytes the record carries. So a hit means "this exact Ed25519 check
    succeeded before", a deterministic computation repeated, and a record that would fail alone
    fails with a warm cache too: a forged path leads to another root (a miss, then a failed
    verification), and a record with its signature bytes replaced is another key (libsodium's
    signatures are non-malleable, so one (key, message) has one valid signature).
    """

    def __init__(self, capacity: int = DEFAULT_ROOT_CACHE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ok: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self._lock = threading.Lock()  # auditors verify in worker threads (consumers/audit/replay)
        #: Root messages already built, by exactly the header fields and root they are built from
        #: (a batch's records share one; building it re-checks three ids). Bounded: cleared when
        #: full. A plain dict: a race at worst builds one message twice.
        self._messages: dict[tuple[object, ...], bytes] = {}

    def __repr__(self) -> str:
        return f"RootCache({len(self._ok)}/{self.capacity})"

    def __len__(self) -> int:
        return len(self._ok)

    def root_message(self, h: EnvelopeHeader, tree_size: int, root: bytes) -> bytes:
        """:func:`~intelbus.envelope.wire.batch_root_message` of (``h``, ``tree_size``, ``root``),
        remembered: a pure function of the fields in the key below, so a hit is the very message
        that call would return (and a header it would refuse is never remembered).

        Raises:
            ValueError: as :func:`~intelbus.envelope.wire.batch_root_message`.
        """
        key = (
            h.format_version,
            h.environment,
            h.topic,
            h.partition,
            h.producer_id,
            h.key_id,
            tree_size,
            root,
        )
        message = self._messages.get(key)
        if message is None:
            message = batch_root_message(h, tree_size, root)
            if len(self._messages) >= self.capacity:
                self._messages.clear()
            self._messages[key] = message
        return message

    def verify(self, public: bytes, message: bytes, signature: bytes) -> None:
        """Verify ``signature`` over ``message`` by ``public``, or find that exact success cached.

        Raises:
            BadSignature: it does not verify (nothing is cached).
        """
        key = (public, message, signature)
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return
        _nacl.verify_signature(public, message, signature)  # outside the lock: the slow part
        with self._lock:
            self._ok[key] = None
            if len(self._ok) > self.capacity:
                self._ok.popitem(last=False)


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
        """The partition the producer bound the record to (formats 2 and 3), else None."""
        return self.sealed.header.partition

    @property
    def target_record_id(self) -> uuid.UUID | None:
        """The record a v2/v3 correction or retraction amends, else None."""
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
        return self.sealed.size


def verify(
    record_bytes: bytes | bytearray | memoryview,
    resolver: KeyResolver,
    *,
    expected_environment: str,
    expected_topic: str,
    expected_partition: int | None = None,
    witnessed_at: datetime | None,
    roots: RootCache | None = None,
) -> VerifiedRecord:
    """Verify an envelope (docs/envelope.md steps 1-7, as numbered in this module's docstring).

    ``witnessed_at`` is the broker's append time of a record read from Kafka: the key is judged at
    it, so a leaked or retired key cannot back-date what it signs. Pass None only offline (a file
    checked by hand), where the signed creation time is all there is; consumers and auditors
    refuse a bus record without a broker time before calling this.

    ``expected_partition`` is the partition the record was read from: a v2 or v3 record bound to
    another partition is a copy in the wrong place. None skips the check (a record not read from
    Kafka).

    ``roots``, a reader's :class:`RootCache`, spares the Ed25519 verification of a format-3 batch
    root this reader has already verified with the same key (every other step is still done for
    every record, key resolution included).

    Raises:
        OversizeEnvelope, MalformedEnvelope, UnsupportedVersion: steps 1-2.
        UnknownKey, KeyNotValid, KeyRevoked: step 3 (from the resolver).
        BindingMismatch: step 4 (resolver answered for another key or agency) and step 6.
        BadSignature: step 5 (in format 3 also: an inclusion path that leads to no signed root).
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
    # Step 5.
    proof = sealed.proof
    if proof is None:
        # Formats 1 and 2: the signature over the domain prefix and every byte before it.
        _nacl.verify_signature(
            signer.sign_public,
            sign_prefix(h.format_version) + sealed.signed_bytes,
            sealed.signature,
        )
    else:
        # Format 3: the leaf hash is computed here from the record's bytes (never taken from it),
        # and the root message from its own signed header, never from the trailer.
        try:
            root = merkle.root_from_proof(
                merkle.leaf_hash(sealed.signed_bytes), proof.leaf_index, proof.tree_size, proof.path
            )
        except ValueError as e:  # parse() checked these bounds already: defence in depth
            raise MalformedEnvelope(f"record {rid}: {e}") from None
        message = (
            batch_root_message(h, proof.tree_size, root)
            if roots is None
            else roots.root_message(h, proof.tree_size, root)
        )
        try:
            if roots is None:
                _nacl.verify_signature(signer.sign_public, message, sealed.signature)
            else:
                roots.verify(signer.sign_public, message, sealed.signature)
        except BadSignature:
            raise BadSignature(
                f"record {rid}: its inclusion path leads to no root signed by key {h.key_id.hex()}"
            ) from None
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

"""Sealing a record: encrypt to its recipients, bind the header, sign (docs/envelope.md, "Sealing").

1. Take a data key for the recipient set (fresh, or reused within the bounded window, see
   :mod:`intelbus.envelope.datakey`), wrapped to each recipient's encryption key.
2. Build the header: format, suite, kind, creation time, sequence, record id, key id, previous
   digest, environment, topic, producer id, schema fingerprint, and the recipient entries (agency,
   recipient key id, wrapped data key), sorted by agency id.
3. Encrypt the payload with XChaCha20-Poly1305 under the data key and a fresh random 24-byte nonce;
   the associated data is a domain prefix plus the header bytes.
4. Sign a domain prefix plus every byte so far with the producer's Ed25519 key; append the signature.

Format 3 (what producers write) signs batches: steps 1-3 make each record's leaf bytes; step 4
builds the RFC 9162 Merkle tree over the batch's leaves (:mod:`intelbus.envelope.merkle`), signs
the root message once (:func:`~intelbus.envelope.wire.batch_root_message`), and appends to every
record its proof trailer: tree size, leaf index, inclusion path, root signature. A record still
verifies alone; a reader of the batch verifies one signature. :func:`seal` of one record is a
batch of one (tree size 1, empty path).

:func:`seal` and :func:`seal_batch` draw the nonces, data keys (and their ephemeral keys) and
times; :func:`_seal_from_parts` and :func:`_seal_batch_from_parts` take them, for test vectors
(STYLE.md pattern 8).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from intelbus import _nacl
from intelbus.envelope import merkle
from intelbus.envelope.datakey import DataKey, DataKeyCache, new_data_key, recipient_set
from intelbus.envelope.verify import record_digest
from intelbus.envelope.wire import (
    FORMAT_V1,
    FORMAT_V3,
    FORMAT_VERSION,
    MAX_BATCH,
    EnvelopeHeader,
    aead_prefix,
    batch_root_message,
    encode_body,
    encode_fixed,
    encode_header,
    encode_recipients,
    encode_stream_ids,
    encode_trailers,
    from_micros,
    sign_prefix,
    to_micros,
    trailer_bytes,
)
from intelbus.identity import AgencyIdentity, SealingKey
from intelbus.kinds import RecordKind

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed record: the bytes to send, and its digest (the next record's ``prev_digest``)."""

    data: bytes = field(repr=False)
    digest: bytes
    header: EnvelopeHeader

    @property
    def record_id(self) -> uuid.UUID:
        return self.header.record_id


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One record of a batch: what differs between the records :func:`seal_batch` signs at once.

    ``prev_digest`` None means "the digest of the item before it in this batch", the stream's
    chain (refused for the first item, which must name its predecessor).
    """

    kind: RecordKind
    sequence: int
    prev_digest: bytes | None
    schema_fingerprint: bytes
    payload: bytes = field(repr=False)
    recipients: tuple[SealingKey, ...]
    target_record_id: uuid.UUID | None = None
    record_id: uuid.UUID | None = None


def seal(
    identity: AgencyIdentity,
    *,
    environment: str,
    topic: str,
    kind: RecordKind,
    sequence: int,
    prev_digest: bytes,
    schema_fingerprint: bytes,
    payload: bytes,
    recipients: Sequence[SealingKey],
    partition: int | None,
    target_record_id: uuid.UUID | None = None,
    record_id: uuid.UUID | None = None,
    datakeys: DataKeyCache | None = None,
    format_version: int = FORMAT_VERSION,
) -> Sealed:
    """Seal ``payload`` for ``recipients`` and sign it as ``identity``.

    ``partition`` is the Kafka partition the record will be sent to, bound into the signature
    (formats 2 and 3); ``target_record_id`` the record a correction or retraction amends.
    ``record_id`` defaults to a random UUID; ``datakeys`` enables the bounded data-key reuse
    window (without it every record gets a fresh data key). Format 3 (the default) signs a batch
    of one (:func:`seal_batch`); ``format_version`` 2 and 1 write the earlier layouts: only tests
    and vectors need them.

    Raises:
        ValueError: a field is out of its bounds (id charset or length, no recipients, an agency
            listed twice, sequence, digest length).
        OversizeEnvelope: the record would exceed the size or recipient caps.
    """
    data_key = datakeys.get(recipients) if datakeys is not None else new_data_key(recipients)
    return _seal_from_parts(
        identity,
        environment=environment,
        topic=topic,
        kind=kind,
        record_id=record_id if record_id is not None else uuid.uuid4(),
        sequence=sequence,
        prev_digest=prev_digest,
        schema_fingerprint=schema_fingerprint,
        payload=payload,
        recipients=recipients,
        data_key=data_key,
        nonce=_nacl.random_bytes(_nacl.AEAD_NONCE_BYTES),
        now=datetime.now(UTC),
        partition=partition,
        target_record_id=target_record_id,
        format_version=format_version,
    )


def _seal_from_parts(
    identity: AgencyIdentity,
    *,
    environment: str,
    topic: str,
    kind: RecordKind,
    record_id: uuid.UUID,
    sequence: int,
    prev_digest: bytes,
    schema_fingerprint: bytes,
    payload: bytes,
    recipients: Sequence[SealingKey],
    data_key: DataKey,
    nonce: bytes,
    now: datetime,
    partition: int | None = None,
    target_record_id: uuid.UUID | None = None,
    format_version: int = FORMAT_VERSION,
) -> Sealed:
    """:func:`seal` with every random or time-dependent input given (test vectors only).

    ``data_key`` comes from :func:`~intelbus.envelope.datakey.wrap_data_key` (which takes the
    ephemeral keys) or from a cache. Never call this with a fixed nonce in production.
    """
    if format_version == FORMAT_V3:
        item = BatchItem(
            kind=kind,
            sequence=sequence,
            prev_digest=prev_digest,
            schema_fingerprint=schema_fingerprint,
            payload=payload,
            recipients=tuple(recipients),
            target_record_id=target_record_id,
            record_id=record_id,
        )
        (sealed,) = _seal_batch_from_parts(
            identity,
            [item],
            environment=environment,
            topic=topic,
            partition=partition,
            data_keys=[data_key],
            nonces=[nonce],
            times=[now],
        )
        return sealed
    header = _header(
        identity,
        environment=environment,
        topic=topic,
        kind=kind,
        record_id=record_id,
        sequence=sequence,
        prev_digest=prev_digest,
        schema_fingerprint=schema_fingerprint,
        recipients=recipients,
        data_key=data_key,
        nonce=nonce,
        now=now,
        partition=None if format_version == FORMAT_V1 else partition,
        target_record_id=None if format_version == FORMAT_V1 else target_record_id,
        format_version=format_version,
    )
    signed = _leaf(header, data_key, nonce, payload)
    # Sealing step 4: the signature covers every byte before it.
    signature = identity.sign(sign_prefix(format_version) + signed)
    return Sealed(signed + signature, record_digest(signed, format_version), header)


def seal_batch(
    identity: AgencyIdentity,
    items: Sequence[BatchItem],
    *,
    environment: str,
    topic: str,
    partition: int,
    datakeys: DataKeyCache | None = None,
) -> list[Sealed]:
    """Seal a batch of records of one stream place and sign them with one signature (format 3).

    Every record of a batch shares the environment, topic, partition, producer and key id (the
    root message binds them, so the API takes them once). Each item gets its own data key (from
    ``datakeys`` if given), random nonce, creation time and, unless it names one, random record
    id. Returns the sealed records in the items' order; ``Sealed.digest`` is each record's digest
    (its leaf's, independent of the batch).

    Raises:
        ValueError: no items or more than :data:`~intelbus.envelope.wire.MAX_BATCH`, the first
            item without a ``prev_digest``, two items with one record id, or a field out of its
            bounds (as :func:`seal`).
        OversizeEnvelope: a record would exceed the size or recipient caps.
    """
    return _seal_batch_from_parts(
        identity,
        items,
        environment=environment,
        topic=topic,
        partition=partition,
        data_keys=[
            datakeys.get(i.recipients) if datakeys is not None else new_data_key(i.recipients)
            for i in items
        ],
        nonces=_random_nonces(len(items)),
        times=[datetime.now(UTC)] * len(items),
    )


def _random_nonces(count: int) -> list[bytes]:
    """``count`` fresh random 24-byte nonces, drawn from the CSPRNG in one call instead of one
    per record (the same independent random bytes either way)."""
    size = _nacl.AEAD_NONCE_BYTES
    pool = _nacl.random_bytes(size * count)
    return [pool[i : i + size] for i in range(0, size * count, size)]


def _seal_batch_from_parts(
    identity: AgencyIdentity,
    items: Sequence[BatchItem],
    *,
    environment: str,
    topic: str,
    partition: int | None,
    data_keys: Sequence[DataKey],
    nonces: Sequence[bytes],
    times: Sequence[datetime],
) -> list[Sealed]:
    """:func:`seal_batch` with every random or time-dependent input given (test vectors only).

    An item without a record id gets a random one. Never call this with fixed nonces in
    production.
    """
    size = len(items)
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} records, not {size}")
    if not len(data_keys) == len(nonces) == len(times) == size:
        raise ValueError("one data key, nonce and time per item")
    if items[0].prev_digest is None:
        raise ValueError("the first record of a batch must name its previous digest")
    record_ids = [i.record_id if i.record_id is not None else uuid.uuid4() for i in items]
    if len(set(record_ids)) != size:
        raise ValueError("two records of one batch have one record id")
    # What every record of the batch shares is checked and encoded once: the stream's ids, and
    # (per run of items with one schema, data key and recipient set) the recipient entries.
    # Only the fixed part is packed per record; encode_header would give the same bytes
    # (tests/unit/test_envelope_batch_header.py).
    ids = encode_stream_ids(environment, topic, identity.agency_id)
    ad_prefix = aead_prefix(FORMAT_V3)
    key_id = identity.key_id
    last_time: datetime | None = None
    created_us, created_at = 0, _EPOCH_UTC
    last_key: DataKey | None = None
    last_recipients: tuple[SealingKey, ...] | None = None
    last_fingerprint = b""
    tail = b""
    # Sealing steps 1-3 per record: its leaf bytes, chained to the record before it unless told.
    headers: list[EnvelopeHeader] = []
    leaves: list[bytes] = []
    digests: list[bytes] = []
    for index, (item, rid, data_key, nonce, now) in enumerate(
        zip(items, record_ids, data_keys, nonces, times, strict=True)
    ):
        prev = item.prev_digest if item.prev_digest is not None else digests[-1]
        if len(nonce) != _nacl.AEAD_NONCE_BYTES:
            raise ValueError("nonce must be 24 bytes")
        if now is not last_time:
            # As parse() will see it: UTC, whole microseconds (a naive time is refused here).
            created_us = to_micros(now)
            created_at = from_micros(created_us)
            last_time = now
        # Identity, not equality: the objects are immutable, so "the same object" is a sound
        # reason not to check again, and costs nothing.
        if data_key is not last_key or item.recipients is not last_recipients:
            _check_wraps(data_key, item.recipients)
            last_key, last_recipients = data_key, item.recipients
            tail = b""
        if not tail or item.schema_fingerprint != last_fingerprint:
            tail = encode_recipients(item.schema_fingerprint, data_key.wraps)
            last_fingerprint = item.schema_fingerprint
        header_bytes = (
            encode_fixed(
                FORMAT_V3,
                item.kind,
                created_us=created_us,
                sequence=item.sequence,
                record_id=rid,
                key_id=key_id,
                prev_digest=prev,
                partition=partition,
                target_record_id=item.target_record_id,
            )
            + ids
            + tail
        )
        # The AD binds the whole header, so this ciphertext opens under no other header.
        ciphertext = _nacl.aead_encrypt(data_key.key, nonce, item.payload, ad_prefix + header_bytes)
        leaf = encode_body(header_bytes, nonce, ciphertext, trailer_bytes(index, size))
        # Positional (in the field order): keywords cost ~2 us more per record.
        headers.append(
            EnvelopeHeader(
                item.kind,
                created_at,
                item.sequence,
                rid,
                key_id,
                prev,
                environment,
                topic,
                identity.agency_id,
                item.schema_fingerprint,
                data_key.wraps,
                FORMAT_V3,
                partition,
                item.target_record_id,
            )
        )
        leaves.append(leaf)
        digests.append(record_digest(leaf, FORMAT_V3))
    # Sealing step 4: one signature over the root message, built as a verifier will build it.
    tree = merkle.levels([merkle.leaf_hash(leaf) for leaf in leaves])
    signature = identity.sign(batch_root_message(headers[0], size, tree[-1][0]))
    trailers = encode_trailers(size, merkle.paths_from_levels(tree), signature)
    return [
        Sealed(leaf + trailer, digest, header)
        for leaf, trailer, digest, header in zip(leaves, trailers, digests, headers, strict=True)
    ]


def _header(
    identity: AgencyIdentity,
    *,
    environment: str,
    topic: str,
    kind: RecordKind,
    record_id: uuid.UUID,
    sequence: int,
    prev_digest: bytes,
    schema_fingerprint: bytes,
    recipients: Sequence[SealingKey],
    data_key: DataKey,
    nonce: bytes,
    now: datetime,
    partition: int | None,
    target_record_id: uuid.UUID | None,
    format_version: int,
) -> EnvelopeHeader:
    """Sealing step 2's header (checking the nonce and the data key's recipients on the way)."""
    if len(nonce) != _nacl.AEAD_NONCE_BYTES:
        raise ValueError("nonce must be 24 bytes")
    _check_wraps(data_key, recipients)
    return EnvelopeHeader(
        kind=kind,
        # As parse() will see it: UTC, whole microseconds (a naive time is refused here).
        created_at=from_micros(to_micros(now)),
        sequence=sequence,
        record_id=record_id,
        key_id=identity.key_id,
        prev_digest=prev_digest,
        environment=environment,
        topic=topic,
        producer_id=identity.agency_id,
        schema_fingerprint=schema_fingerprint,
        recipients=data_key.wraps,
        format_version=format_version,
        partition=partition,
        target_record_id=target_record_id,
    )


def _check_wraps(data_key: DataKey, recipients: Sequence[SealingKey]) -> None:
    """The wraps must be for exactly the recipients asked for (a stale cache entry would be a bug).

    Raises:
        ValueError: they are not.
    """
    if tuple((w.agency_id, w.key_id) for w in data_key.wraps) != recipient_set(recipients):
        raise ValueError("data key is not wrapped for this recipient set")


def _leaf(
    header: EnvelopeHeader,
    data_key: DataKey,
    nonce: bytes,
    payload: bytes,
    trailer: int = _nacl.SIGNATURE_BYTES,
) -> bytes:
    """Sealing steps 2-3: the header's bytes, the payload encrypted under them, as one body."""
    header_bytes = encode_header(header)  # checks every cap parse() enforces
    # The AD binds the whole header, so this ciphertext opens under no other header.
    ciphertext = _nacl.aead_encrypt(
        data_key.key, nonce, payload, aead_prefix(header.format_version) + header_bytes
    )
    return encode_body(header_bytes, nonce, ciphertext, trailer)

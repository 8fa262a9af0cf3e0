"""Sealing a record: encrypt to its recipients, bind the header, sign (docs/envelope.md, "Sealing").

1. Take a data key for the recipient set (fresh, or reused within the bounded window, see
   :mod:`intelbus.envelope.datakey`), wrapped to each recipient's encryption key.
2. Build the header: format, suite, kind, creation time, sequence, record id, key id, previous
   digest, environment, topic, producer id, schema fingerprint, and the recipient entries (agency,
   recipient key id, wrapped data key), sorted by agency id.
3. Encrypt the payload with XChaCha20-Poly1305 under the data key and a fresh random 24-byte nonce;
   the associated data is a domain prefix plus the header bytes.
4. Sign a domain prefix plus every byte so far with the producer's Ed25519 key; append the signature.

:func:`seal` draws the nonce, the data key (and its ephemeral keys) and the time;
:func:`_seal_from_parts` takes them, for test vectors (STYLE.md pattern 8).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from intelbus import _nacl
from intelbus.envelope.datakey import DataKey, DataKeyCache, new_data_key, recipient_set
from intelbus.envelope.verify import record_digest
from intelbus.envelope.wire import (
    FORMAT_V1,
    FORMAT_VERSION,
    EnvelopeHeader,
    aead_prefix,
    encode_body,
    encode_header,
    from_micros,
    sign_prefix,
    to_micros,
)
from intelbus.identity import AgencyIdentity, SealingKey
from intelbus.kinds import RecordKind


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed record: the bytes to send, and its digest (the next record's ``prev_digest``)."""

    data: bytes = field(repr=False)
    digest: bytes
    header: EnvelopeHeader

    @property
    def record_id(self) -> uuid.UUID:
        return self.header.record_id


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
    (format v2); ``target_record_id`` the record a correction or retraction amends. ``record_id``
    defaults to a random UUID; ``datakeys`` enables the bounded data-key reuse window (without it
    every record gets a fresh data key). ``format_version`` 1 writes the legacy layout (no
    partition, no target): only tests and vectors need it.

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
    if len(nonce) != _nacl.AEAD_NONCE_BYTES:
        raise ValueError("nonce must be 24 bytes")
    # The wraps must be for exactly the recipients asked for (a stale cache entry would be a bug).
    if tuple((w.agency_id, w.key_id) for w in data_key.wraps) != recipient_set(recipients):
        raise ValueError("data key is not wrapped for this recipient set")
    header = EnvelopeHeader(
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
        partition=None if format_version == FORMAT_V1 else partition,
        target_record_id=None if format_version == FORMAT_V1 else target_record_id,
    )
    header_bytes = encode_header(header)  # sealing step 2; checks every cap parse() enforces
    # Sealing step 3: the AD binds the whole header, so this ciphertext opens under no other header.
    ciphertext = _nacl.aead_encrypt(
        data_key.key, nonce, payload, aead_prefix(format_version) + header_bytes
    )
    signed = encode_body(header_bytes, nonce, ciphertext)
    # Sealing step 4: the signature covers every byte before it.
    signature = identity.sign(sign_prefix(format_version) + signed)
    return Sealed(signed + signature, record_digest(signed, format_version), header)

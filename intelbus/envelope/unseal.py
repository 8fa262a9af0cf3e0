"""Opening a verified record as one of its recipients (docs/envelope.md, steps 8-10).

8. Find this agency among the signed recipients, with the key id of the identity in hand, or the
   id of one of its encryption epochs (:mod:`intelbus.envelope.epochs`). If it is not there the
   record was not addressed to this agency (or to this key of it): NotARecipient. If it names an
   epoch whose private key this agency destroyed, the record is :class:`~intelbus.errors.Shredded`
   (crypto-shredding: its contents are gone on purpose); an epoch this keyring made but no longer
   holds, without a record of its destruction, is :class:`~intelbus.errors.EpochKeyMissing`.
9. Open its wrapped data key (X25519 sealed box).
10. Decrypt the payload; the associated data is the domain prefix plus the header bytes.

From step 9 on, every failure is the single :class:`~intelbus.errors.DecryptionFailed` with the same
message, so nothing tells an attacker which step failed (Fernet's ``InvalidToken``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from intelbus import _nacl
from intelbus.envelope.epochs import EpochKeys
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import EnvelopeHeader, RecipientEntry, aead_prefix
from intelbus.errors import DecryptionFailed, EpochKeyMissing, NotARecipient, Shredded
from intelbus.identity import AgencyIdentity


class BoxOpener(Protocol):
    """A private X25519 key that opens sealed boxes (an agency key or an epoch key)."""

    def open_sealed(self, sealed: bytes) -> bytes: ...


DEFAULT_UNWRAP_CACHE = 1_024


class UnwrapCache:
    """Data keys already unwrapped, by their wrapped bytes: a bounded LRU, for one identity.

    A producer reuses a data key, wrapped once per recipient, for up to a thousand records
    (:mod:`intelbus.envelope.datakey`), so most records a consumer reads carry a wrap it has
    already opened. Opening a sealed box costs about as much as verifying a signature; looking the
    wrap up costs a dictionary probe. Only wraps that opened are cached, so a forged wrap is tried
    (and fails) every time. Every payload is still decrypted and authenticated against its own
    header; the cache only skips repeating a deterministic computation.
    """

    def __init__(self, identity: AgencyIdentity, capacity: int = DEFAULT_UNWRAP_CACHE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.identity = identity
        self.capacity = capacity
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()

    def __repr__(self) -> str:  # never show keys
        return f"UnwrapCache({self.identity.agency_id!r}, {len(self._keys)}/{self.capacity})"

    def open(self, wrapped: bytes, opener: BoxOpener | None = None) -> bytes:
        """The data key inside ``wrapped`` (opened with ``opener``, by default the identity; a
        wrap names one recipient key, so caching by its bytes is sound across keys).

        Raises:
            DecryptionFailed: it does not open.
        """
        key = self._keys.get(wrapped)
        if key is not None:
            self._keys.move_to_end(wrapped)
            return key
        key = (opener if opener is not None else self.identity).open_sealed(wrapped)
        self._keys[wrapped] = key
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return key


def open_record(
    record: VerifiedRecord,
    identity: AgencyIdentity,
    unwrap: UnwrapCache | None = None,
    epochs: EpochKeys | None = None,
) -> bytes:
    """The decrypted payload of a verified record (still to be schema-decoded by the caller).

    ``unwrap``, a cache for the same identity, skips re-opening data keys seen before; ``epochs``,
    the agency's epoch keyring, opens records sealed to its encryption epochs.

    Raises:
        NotARecipient: this agency, with this key or one of its epochs, is not a recipient.
        Shredded: it was sealed to an epoch whose private key this agency destroyed.
        EpochKeyMissing: it was sealed to an epoch this keyring made but no longer holds.
        DecryptionFailed: the wrapped key or the payload does not open.
    """
    h = record.header
    # Step 8.
    entry = next((r for r in h.recipients if r.agency_id == identity.agency_id), None)
    if entry is None:
        raise NotARecipient(f"{identity.agency_id} is not a recipient of record {h.record_id}")
    opener = _opener(h, entry, identity, epochs)
    # Steps 9 and 10: one error class and one message for every failure.
    try:
        if unwrap is not None and unwrap.identity is identity:
            data_key = unwrap.open(entry.wrapped_key, opener)
        else:
            data_key = opener.open_sealed(entry.wrapped_key)
        return _nacl.aead_decrypt(
            data_key,
            record.sealed.nonce,
            record.sealed.ciphertext,
            aead_prefix(h.format_version) + record.sealed.header_bytes,
        )
    except (DecryptionFailed, ValueError, TypeError):
        raise DecryptionFailed(f"record {h.record_id} does not open") from None


def _opener(
    h: EnvelopeHeader, entry: RecipientEntry, identity: AgencyIdentity, epochs: EpochKeys | None
) -> BoxOpener:
    """The private key the entry is sealed to: the agency key, or one of its epoch keys."""
    if entry.key_id == identity.key_id:
        return identity
    if epochs is not None and epochs.agency_id == identity.agency_id:
        held = epochs.held.get(entry.key_id)
        if held is not None:
            return held
        gone = epochs.destroyed.get(entry.key_id)
        if gone is not None:
            when = gone.destroyed_at.date().isoformat()
            raise Shredded(
                f"record {h.record_id} was sealed to epoch {entry.key_id.hex()} of "
                f"{identity.agency_id}, whose key was destroyed on {when} (crypto-shredded)",
                epoch_id=entry.key_id.hex(),
                agency_id=identity.agency_id,
                destroyed_at=gone.destroyed_at.isoformat(),
            )
        if entry.key_id in epochs.known:
            raise EpochKeyMissing(
                f"record {h.record_id} is sealed to epoch {entry.key_id.hex()} of "
                f"{identity.agency_id}, whose private key is missing from the keyring and was "
                "never destroyed: restore the key file"
            )
    raise NotARecipient(
        f"record {h.record_id} is sealed to {identity.agency_id}'s key {entry.key_id.hex()}, "
        f"not to key {identity.key_id.hex()}"
    )

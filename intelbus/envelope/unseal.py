"""Opening a verified record as one of its recipients (docs/envelope.md, steps 8-10).

8. Find this agency among the signed recipients, with the key id of the identity in hand. If it is
   not there the record was not addressed to this agency (or to this key of it): NotARecipient.
9. Open its wrapped data key (X25519 sealed box).
10. Decrypt the payload; the associated data is the domain prefix plus the header bytes.

From step 9 on, every failure is the single :class:`~intelbus.errors.DecryptionFailed` with the same
message, so nothing tells an attacker which step failed (Fernet's ``InvalidToken``).
"""

from __future__ import annotations

from collections import OrderedDict

from intelbus import _nacl
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import aead_prefix
from intelbus.errors import DecryptionFailed, NotARecipient
from intelbus.identity import AgencyIdentity

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

    def open(self, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped``. Raises :class:`DecryptionFailed` if it does not open."""
        key = self._keys.get(wrapped)
        if key is not None:
            self._keys.move_to_end(wrapped)
            return key
        key = self.identity.open_sealed(wrapped)
        self._keys[wrapped] = key
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return key


def open_record(
    record: VerifiedRecord, identity: AgencyIdentity, unwrap: UnwrapCache | None = None
) -> bytes:
    """The decrypted payload of a verified record (still to be schema-decoded by the caller).

    ``unwrap``, a cache for the same identity, skips re-opening data keys seen before.

    Raises:
        NotARecipient: this agency, with this key, is not among the record's recipients.
        DecryptionFailed: the wrapped key or the payload does not open.
    """
    h = record.header
    # Step 8.
    entry = next((r for r in h.recipients if r.agency_id == identity.agency_id), None)
    if entry is None:
        raise NotARecipient(f"{identity.agency_id} is not a recipient of record {h.record_id}")
    if entry.key_id != identity.key_id:
        raise NotARecipient(
            f"record {h.record_id} is sealed to {identity.agency_id}'s key {entry.key_id.hex()}, "
            f"not to key {identity.key_id.hex()}"
        )
    # Steps 9 and 10: one error class and one message for every failure.
    try:
        if unwrap is not None and unwrap.identity is identity:
            data_key = unwrap.open(entry.wrapped_key)
        else:
            data_key = identity.open_sealed(entry.wrapped_key)
        return _nacl.aead_decrypt(
            data_key,
            record.sealed.nonce,
            record.sealed.ciphertext,
            aead_prefix(h.format_version) + record.sealed.header_bytes,
        )
    except (DecryptionFailed, ValueError, TypeError):
        raise DecryptionFailed(f"record {h.record_id} does not open") from None

"""A recipient's encryption epochs in memory: the private keys it holds, and those it destroyed.

An agency key may list encryption epochs in the directory (one a month, say); producers seal each
record's data key to the epoch covering the sealing time and put the epoch id in the recipient
entry's key id slot. The recipient keeps one X25519 private key per epoch (files:
:mod:`intelbus.keyring`) and destroys a past epoch's key once its records' retention has passed.
After that nobody can open those records from Kafka (crypto-shredding), while their signatures,
chains and digests still verify with public keys only.

No I/O here: :func:`~intelbus.envelope.unseal.open_record` asks these values which key opens an
entry, or learns that the record was shredded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from intelbus import _nacl
from intelbus.identity import derive_epoch_id


class EpochSecret:
    """One epoch's X25519 private key. ``repr`` shows the epoch id only; it cannot be pickled."""

    __slots__ = ("_secret", "enc_public", "epoch_id", "not_after", "not_before")

    _secret: bytes
    epoch_id: bytes
    enc_public: bytes
    not_before: datetime
    not_after: datetime

    def __init__(self, secret: bytes, not_before: datetime, not_after: datetime) -> None:
        """Derive the public key and epoch id from a 32-byte X25519 secret.

        Raises:
            ValueError: the secret has the wrong length or gives an unusable public key, or the
                window is empty.
        """
        if len(secret) != 32:
            raise ValueError("an epoch secret is 32 bytes")
        if not_after <= not_before:
            raise ValueError("an epoch's not_after must be later than its not_before")
        public = _nacl.box_public_from_secret(secret)
        _nacl.check_box_public_key(public)
        object.__setattr__(self, "_secret", bytes(secret))
        object.__setattr__(self, "enc_public", public)
        object.__setattr__(self, "epoch_id", derive_epoch_id(public))
        object.__setattr__(self, "not_before", not_before)
        object.__setattr__(self, "not_after", not_after)

    @classmethod
    def generate(cls, not_before: datetime, not_after: datetime) -> EpochSecret:
        """A fresh random epoch key for ``[not_before, not_after)``."""
        return cls(_nacl.random_bytes(32), not_before, not_after)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"EpochSecret is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"EpochSecret is immutable (cannot delete {name})")

    def __repr__(self) -> str:
        return f"EpochSecret(epoch_id={self.epoch_id.hex()}, secret=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("EpochSecret cannot be pickled (it holds a private key)")

    def secret_bytes(self) -> bytes:
        """The raw secret, for writing the keyring file only."""
        return self._secret

    def open_sealed(self, sealed: bytes) -> bytes:
        """Open a sealed box addressed to this epoch.

        Raises:
            DecryptionFailed: it does not open.
        """
        return _nacl.seal_open(self._secret, self.enc_public, sealed)


@dataclass(frozen=True, slots=True)
class DestroyedEpoch:
    """An epoch whose private key its holder destroyed, and when."""

    epoch_id: bytes
    destroyed_at: datetime


def _frozen(value: Mapping[bytes, Any]) -> Mapping[bytes, Any]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class EpochKeys:
    """One agency's epoch keyring as loaded: keys held, keys destroyed, and every epoch it made.

    ``known`` holds the id of every epoch the keyring ever created (its public part stays): an
    entry sealed to one of them whose key is neither held nor destroyed was lost, not shredded,
    and is refused (``epoch_key_missing``) rather than counted as shredded.
    """

    agency_id: str
    held: Mapping[bytes, EpochSecret] = field(default_factory=dict)
    destroyed: Mapping[bytes, DestroyedEpoch] = field(default_factory=dict)
    known: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "held", _frozen(self.held))
        object.__setattr__(self, "destroyed", _frozen(self.destroyed))

    def __repr__(self) -> str:
        return (
            f"EpochKeys({self.agency_id!r}, held={len(self.held)}, destroyed={len(self.destroyed)})"
        )

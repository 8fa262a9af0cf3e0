"""Data keys, their wrapping to recipients, and their bounded reuse window.

Sealing a data key to one recipient costs ~60 us and an Ed25519 signature ~27 us (SECURITY.md).
Sealing afresh for every record and every recipient would dominate publishing, so a data key, with
its wrapped copies, may be reused for the *same recipient set* (same agencies, same recipient key
ids) for at most ``max_uses`` records and for at most ``max_age``. Every record still gets a fresh
random 24-byte XChaCha20 nonce; with 192-bit random nonces, reusing a key across records is safe far
beyond these bounds. The bounds limit how much one leaked data key exposes, and make a recipient
added or removed, or a key rotated, take effect on the next record (docs/envelope.md, "Data-key
reuse"). When a recipient's key has encryption epochs, its "recipient key id" is the epoch id, so
a new epoch is a new recipient set: no data key wrapped to a past epoch outlives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from intelbus import _nacl
from intelbus.envelope.wire import RecipientEntry
from intelbus.identity import SealingKey

DEFAULT_MAX_USES = 1_000
DEFAULT_MAX_AGE = timedelta(minutes=5)
DEFAULT_MAX_SETS = 256

RecipientSet = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key and its wrapped copies, one per recipient, sorted by agency id."""

    key: bytes = field(repr=False)
    wraps: tuple[RecipientEntry, ...]


def _canonical(recipients: Sequence[SealingKey]) -> list[SealingKey]:
    """Recipients sorted by agency id (the wire's canonical order); refuses an agency listed twice."""
    if not recipients:
        raise ValueError("a record needs at least one recipient")
    ordered = sorted(recipients, key=lambda r: r.agency_id)
    if len({r.agency_id for r in ordered}) != len(ordered):
        raise ValueError("an agency is listed twice among the recipients")
    return ordered


def recipient_set(recipients: Sequence[SealingKey]) -> RecipientSet:
    """The cache key of a recipient set: (agency id, recipient key id) pairs, sorted."""
    return tuple((r.agency_id, r.key_id) for r in _canonical(recipients))


def wrap_data_key(
    key: bytes,
    recipients: Sequence[SealingKey],
    *,
    ephemeral_secrets: Sequence[bytes] | None = None,
) -> DataKey:
    """Seal ``key`` to every recipient (X25519 sealed box), in agency-id order.

    ``ephemeral_secrets`` (one per recipient, in agency-id order) is the deterministic seam for
    test vectors; in production libsodium draws each ephemeral key.

    Raises:
        ValueError: no recipients, an agency listed twice, or the wrong number of ephemeral secrets.
    """
    if len(key) != _nacl.AEAD_KEY_BYTES:
        raise ValueError("a data key is 32 bytes")
    ordered = _canonical(recipients)
    if ephemeral_secrets is None:
        secrets: list[bytes | None] = [None] * len(ordered)
    elif len(ephemeral_secrets) != len(ordered):
        raise ValueError("one ephemeral secret per recipient")
    else:
        secrets = list(ephemeral_secrets)
    return DataKey(
        key,
        tuple(
            RecipientEntry(r.agency_id, r.key_id, _nacl.seal(r.enc_public, key, ephemeral_secret=e))
            for r, e in zip(ordered, secrets, strict=True)
        ),
    )


def new_data_key(recipients: Sequence[SealingKey]) -> DataKey:
    """A fresh random data key sealed to every recipient."""
    return wrap_data_key(_nacl.random_bytes(_nacl.AEAD_KEY_BYTES), recipients)


@dataclass(slots=True)
class _Slot:
    data_key: DataKey
    created: datetime
    uses: int


class DataKeyCache:
    """Reuses a data key per recipient set within ``max_uses`` records and ``max_age``.

    Not thread-safe: one cache per producer thread (a producer seals on one thread).
    """

    def __init__(
        self,
        *,
        max_uses: int = DEFAULT_MAX_USES,
        max_age: timedelta = DEFAULT_MAX_AGE,
        max_sets: int = DEFAULT_MAX_SETS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Check the bounds once here.

        Raises:
            ValueError: a bound is not positive.
        """
        if max_uses < 1 or max_age <= timedelta(0) or max_sets < 1:
            raise ValueError("data key reuse bounds must be positive")
        self.max_uses = max_uses
        self.max_age = max_age
        self.max_sets = max_sets
        self._clock = clock
        self._slots: dict[RecipientSet, _Slot] = {}
        self.keys_made = 0
        self._last_recipients: tuple[SealingKey, ...] | None = None
        self._last_ident: RecipientSet = ()

    def __repr__(self) -> str:
        return (
            f"DataKeyCache(max_uses={self.max_uses}, max_age={self.max_age}, "
            f"sets={len(self._slots)}, keys_made={self.keys_made})"
        )

    def _expired(self, slot: _Slot, now: datetime) -> bool:
        # A clock that went backwards also ends the window: the age could not be trusted.
        return slot.uses >= self.max_uses or not slot.created <= now < slot.created + self.max_age

    def get(self, recipients: Sequence[SealingKey]) -> DataKey:
        """The data key for this recipient set: reused within the bounds, else a fresh one.

        Raises:
            ValueError: no recipients, or an agency listed twice.
        """
        if recipients is self._last_recipients:
            ident = self._last_ident
        else:
            ident = recipient_set(recipients)
            if type(recipients) is tuple:
                # A tuple of immutable keys cannot change behind our back: a publisher passes
                # one tuple for every record of a recipient set, so its set is computed once.
                self._last_recipients, self._last_ident = recipients, ident
        now = self._clock()
        slot = self._slots.get(ident)
        if slot is None or self._expired(slot, now):
            if slot is None and len(self._slots) >= self.max_sets:
                # Bounded memory: forget the oldest recipient set.
                oldest = min(self._slots, key=lambda k: self._slots[k].created)
                del self._slots[oldest]
            slot = _Slot(new_data_key(recipients), now, 0)
            self._slots[ident] = slot
            self.keys_made += 1
        slot.uses += 1
        return slot.data_key

    def clear(self) -> None:
        """Forget every data key (for example after a directory update changed recipients)."""
        self._slots.clear()

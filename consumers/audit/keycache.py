"""Signing-key resolution for replays, cached without changing a single answer.

:meth:`intelbus.directory.trust.DirectoryHistory.key_status` walks the versions, finds the key and
rebuilds (and re-validates) its public identity on every call: fine for a consumer, too slow for
a replay of hundreds of thousands of records. Its answer depends on the key id, producer and
topic, and on one time (the broker's append time, or the signed creation time offline) only
through comparisons ``t >= b`` with a finite set of directory times ``b`` (version issue times,
key windows, agency removals, revocations and compromise starts). So two calls whose times fall
between the same directory times get the same answer, and the cache key is ``(key id, producer,
topic, interval of the judged time)``. Only successes are cached
(a refusal is rare and recomputed, so its message keeps the record's own time); the cache is
bounded because successes need a listed key.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime

from intelbus.directory.trust import DirectoryHistory, KeyStatus
from intelbus.identity import PublicIdentity

MAX_CACHED = 4096


def directory_times(history: DirectoryHistory) -> list[datetime]:
    """Every time at which some key's status can change, sorted."""
    times: set[datetime] = set()
    for doc in history.versions:
        body = doc.signed
        times.add(body.issued_at)
        for agency in body.agencies:
            if agency.removed_at is not None:
                times.add(agency.removed_at)
            for key in agency.keys:
                times.add(key.not_before)
                if key.not_after is not None:
                    times.add(key.not_after)
                if key.revocation is not None:
                    times.add(key.revocation.revoked_at)
                    if key.revocation.compromised_since is not None:
                        times.add(key.revocation.compromised_since)
    return sorted(times)


class CachedResolver:
    """The envelope's ``KeyResolver`` over a directory history, with an exact cache.

    Safe to share between threads: a lost race only computes the same answer twice.
    """

    def __init__(self, history: DirectoryHistory) -> None:
        self.history = history
        self._times = directory_times(history)
        self._cache: dict[tuple[bytes, str, str, int], KeyStatus] = {}

    def key_status(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> KeyStatus:
        """As :meth:`DirectoryHistory.key_status`, cached.

        Raises:
            UnknownKey, KeyNotValid, KeyRevoked: as the directory says.
        """
        judged = at if witnessed_at is None else witnessed_at
        slot = (key_id, producer_id, topic, bisect_right(self._times, judged))
        hit = self._cache.get(slot)
        if hit is not None:
            return hit
        status = self.history.key_status(key_id, producer_id, topic, at, witnessed_at)
        if len(self._cache) < MAX_CACHED:
            self._cache[slot] = status
        return status

    def resolve_signing_key(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> PublicIdentity:
        """The ``KeyResolver`` protocol (docs/envelope.md step 3)."""
        return self.key_status(key_id, producer_id, topic, at, witnessed_at).identity

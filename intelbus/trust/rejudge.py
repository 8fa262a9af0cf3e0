"""What a directory's rules withdraw from what a reader already accepted.

A record is judged at the broker's append time against the directory a reader holds then. When a
later version says a key stopped being trustworthy earlier (revoked at a time, presumed leaked
since a time, retired by ``not_after``, or its agency removed), a record that key signed and the
broker appended at or after that time would be refused by a reader starting today. A reader that
accepted it before learning the news must converge on the same answer: every such record is
withdrawn (kept as evidence, out of lists, searches and exports), and the key's streams roll back
to their last record that stands.

:func:`cutoffs` gives, for each key, the earliest time from which the newest directory no longer
trusts it; the store applies each (key, time) once (``Store.withdraw``).
"""

from __future__ import annotations

from datetime import datetime

from intelbus.directory.trust import DirectoryHistory


def cutoffs(history: DirectoryHistory, *, now: datetime) -> dict[str, datetime]:
    """key id (hex) -> the time from which the newest version no longer trusts it, for every key
    where that time has already come (``<= now``: later ones are refused as they arrive)."""
    out: dict[str, datetime] = {}
    body = history.latest
    for agency in body.agencies:
        for key in agency.keys:
            times: list[datetime] = []
            if key.revocation is not None:
                times.append(key.revocation.revoked_at)
                if key.revocation.compromised_since is not None:
                    times.append(key.revocation.compromised_since)
            if key.not_after is not None:
                times.append(key.not_after)
            if agency.removed_at is not None:
                times.append(agency.removed_at)
            if times and min(times) <= now:
                out[key.key_id] = min(times)
    return out

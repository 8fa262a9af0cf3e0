"""An agency's store checked against the topic it was filled from (issue 16).

A force's store keeps, for every record it holds and for every tombstone of a record it erased or
pruned, where the record was read (partition, offset), its id, producer and the digest of its
signed bytes. An auditor replaying the topic from the beginning sees every authentic record with
the same facts. So the store can be held to the topic without reading any contents: every row must
name an authentic record at that position with that id, producer and digest. A row that does not
(a record the topic never held there, or one whose digest differs) is a ``store_mismatch`` finding.
Tombstones are checked like any row: that is how a pruned or erased record is still proven to have
existed, and to have been exactly what the producer signed.

The other way round, nothing may be missing from the store: every record the replay accepts
between the first position the store holds anything of and where the store has read to, on each
partition, must be in it: a sighting or incident as a record row (a tombstone counts), a
correction, retraction or erasure as a registered amendment, or, if the force refused it, as a
quarantine row. A record sealed to the store's agency under an encryption epoch the store recorded
as destroyed leaves nothing on purpose (crypto-shredding): it is counted as shredded. A row deleted
from the store (a tombstone included) is a ``store_mismatch`` at the
position of the record it was. The window starts where the store began reading each partition (kept in
its ``meta`` table with its first batch), or, for a store older than that, at the first position
it holds anything of; the report's ``store`` section gives the window checked.

Memory is bounded by the store's rows for the topic (not by the topic's length).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from intelbus.envelope.wire import RecipientEntry
from intelbus.store.base import Coverage, HeldPosition


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A store row the topic does not bear out, and why."""

    row: HeldPosition
    why: str


@dataclass(slots=True)
class StoreCheck:
    """The rows of one store for one topic, ticked off as the replay reaches their positions."""

    rows: dict[tuple[int, int], HeldPosition]
    registered: frozenset[tuple[int, int]]
    window: dict[int, tuple[int, int]]  # partition -> [from, to) the store must account for
    statuses: Counter[str] = field(default_factory=Counter)
    owner: str | None = None
    shredded_epochs: frozenset[str] = frozenset()
    matched: int = 0
    missing: int = 0
    shredded: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @classmethod
    def of(cls, coverage: Coverage) -> StoreCheck:
        held = [(r.partition, r.offset) for r in coverage.rows]
        registered = coverage.amendments | coverage.quarantined
        # From where the store began reading (recorded since schema 4), else from the first
        # position it holds anything of.
        firsts: dict[int, int] = dict(coverage.read_from)
        for partition, offset in [*held, *registered]:
            if partition not in coverage.read_from:
                firsts[partition] = min(offset, firsts.get(partition, offset))
        window = {
            p: (first, coverage.read_to[p]) for p, first in firsts.items() if p in coverage.read_to
        }
        return cls(
            {(r.partition, r.offset): r for r in coverage.rows},
            registered,
            window,
            Counter(r.status for r in coverage.rows),
            coverage.owner,
            coverage.shredded_epochs,
        )

    def observe(
        self,
        partition: int,
        offset: int,
        producer_id: str,
        record_id: str,
        digest: bytes,
        *,
        accepted_content: bool,
        accepted_amendment: bool,
        recipients: Sequence[RecipientEntry] = (),
    ) -> None:
        """An authentic record the replay read at (partition, offset), and whether the replay
        accepted it as a sighting or incident, or as an amendment."""
        row = self.rows.pop((partition, offset), None)
        if row is None:
            start, end = self.window.get(partition, (0, 0))
            accepted = accepted_content or accepted_amendment
            in_window = start <= offset < end
            if accepted and in_window and (partition, offset) not in self.registered:
                epoch = next(
                    (r.key_id.hex() for r in recipients if r.agency_id == self.owner), None
                )
                if epoch is not None and epoch in self.shredded_epochs:
                    # Sealed to the store's agency under an epoch it destroyed: crypto-shredded,
                    # nothing of it is kept on purpose.
                    self.shredded += 1
                    return
                self.missing += 1
                self.mismatches.append(
                    Mismatch(
                        HeldPosition(partition, offset, producer_id, record_id, digest, "missing"),
                        "the store read past it and holds no trace of it (no record, "
                        "tombstone, amendment or quarantine row)",
                    )
                )
            return
        if (row.producer_id, row.record_id, row.digest) == (producer_id, record_id, digest):
            self.matched += 1
        else:
            self.mismatches.append(
                Mismatch(
                    row,
                    f"the topic holds {producer_id}'s record {record_id} there, digest "
                    f"{digest.hex()[:16]}; the store says {row.producer_id}'s {row.record_id}, "
                    f"digest {row.digest.hex()[:16]}",
                )
            )

    def finish(self) -> list[Mismatch]:
        """Every row not borne out: mismatched, or at a position with no authentic record."""
        for row in sorted(self.rows.values(), key=lambda r: (r.partition, r.offset)):
            self.mismatches.append(
                Mismatch(row, "no authentic record at that position of the topic")
            )
        self.rows.clear()
        return list(self.mismatches)

    def summary(self) -> dict[str, Any]:
        """The report's ``store`` section: rows by status, tombstones, matched, mismatched (missing
        included), and the offsets each partition was held from and to."""
        statuses = self.statuses
        return {
            "rows": sum(statuses.values()),
            "matched": self.matched,
            "mismatched": len(self.mismatches),
            "missing": self.missing,
            "shredded": self.shredded,
            "by_status": dict(sorted(statuses.items())),
            "erased": statuses.get("erased", 0),
            "pruned": statuses.get("pruned", 0),
            "window": {str(p): list(w) for p, w in sorted(self.window.items())},
        }

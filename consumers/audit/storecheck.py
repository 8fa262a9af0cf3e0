"""An agency's store checked against the topic it was filled from (issue 16).

A force's store keeps, for every record it holds and for every tombstone of a record it erased or
pruned, where the record was read (partition, offset), its id, producer and the digest of its
signed bytes. An auditor replaying the topic from the beginning sees every authentic record with
the same facts. So the store can be held to the topic without reading any contents: every row must
name an authentic record at that position with that id, producer and digest. A row that does not
(a record the topic never held there, or one whose digest differs) is a ``store_mismatch`` finding.
Tombstones are checked like any row: that is how a pruned or erased record is still proven to have
existed, and to have been exactly what the producer signed.

Memory is bounded by the store's rows for the topic (not by the topic's length).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from intelbus.store.base import HeldPosition


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A store row the topic does not bear out, and why."""

    row: HeldPosition
    why: str


@dataclass(slots=True)
class StoreCheck:
    """The rows of one store for one topic, ticked off as the replay reaches their positions."""

    rows: dict[tuple[int, int], HeldPosition]
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list[HeldPosition]) -> StoreCheck:
        return cls({(r.partition, r.offset): r for r in rows})

    def observe(
        self, partition: int, offset: int, producer_id: str, record_id: str, digest: bytes
    ) -> None:
        """An authentic record the replay read at (partition, offset)."""
        row = self.rows.pop((partition, offset), None)
        if row is None:
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

    def summary(self, statuses: Counter[str]) -> dict[str, Any]:
        """The report's ``store`` section: rows by status, tombstones, matched and mismatched."""
        return {
            "rows": sum(statuses.values()),
            "matched": self.matched,
            "mismatched": len(self.mismatches),
            "by_status": dict(sorted(statuses.items())),
            "erased": statuses.get("erased", 0),
            "pruned": statuses.get("pruned", 0),
        }

"""An agency's record pipeline: intake, then the one judge inside the store's transaction.

1. **Intake** (:class:`~intelbus.trust.intake.Intake`, outside any transaction: the cryptography
   is the slow part): size, broker time, envelope verification against the directory at the
   broker's append time, and for records addressed to this agency, opening and decoding.
2. **Judge** (:class:`~intelbus.trust.judge.Judge`, inside the store's transaction): against the
   stream heads, record ids and waiting amendments the store reads for exactly this batch, decide
   every record: stored (maybe redacted), withheld, not addressed, amended, a heartbeat, or
   quarantined with its reason code. The batch is written in the same transaction, with the next
   offsets, so the state a decision was made against is the state it is committed over, even
   when several consumer instances share one PostgreSQL store.

Nothing here raises for bad input: every refusal is a verdict and a quarantine row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from intelbus.chain import DEFAULT_MAX_GAP
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope.epochs import EpochKeys
from intelbus.identity import AgencyIdentity
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.registry import SchemaRegistry
from intelbus.store.base import Store, read_from_key
from intelbus.trust.intake import Intake
from intelbus.trust.judge import Judge, LateRefusal, Reader, keys_for
from intelbus.trust.model import Batch, Position, Prepared, Snapshot, Verdict


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    value: bytes
    appended_at: datetime | None

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset, self.appended_at)


def next_offsets(raws: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after the last record of ``raws`` there."""
    out: dict[tuple[str, int], int] = {}
    for r in raws:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out


class AgencyPipeline:
    """Intake and judge for one agency: its key, directory, schemas and sharing policy."""

    def __init__(
        self,
        *,
        identity: AgencyIdentity,
        directory: DirectoryHistory,
        registry: SchemaRegistry,
        policy: SharingPolicy,
        environment: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_gap: int = DEFAULT_MAX_GAP,
        reads: frozenset[str] | None = None,
        epochs: EpochKeys | None = None,
    ) -> None:
        if policy.agency != identity.agency_id:
            raise ValueError(f"policy is for {policy.agency}, identity is {identity.agency_id}")
        self.identity = identity
        self.directory = directory
        self.policy = policy
        self.environment = environment
        self.intake = Intake(
            resolver=directory,
            environment=environment,
            identity=identity,
            registry=registry,
            directory=directory,
            clock=clock,
            epochs=epochs,
        )
        self.reader = Reader(identity.agency_id, policy, clock, max_gap, reads=reads)
        #: Amendments the last judged batch refused once their target arrived (registered
        #: pending by an earlier batch): no quarantine row of their own, so reported here.
        self.late_refusals: list[LateRefusal] = []

    def swap_policy(self, policy: SharingPolicy) -> None:
        """Judge every later batch under ``policy`` (its hash on every later decision).

        Called between batches only. The judge's :class:`Reader` is frozen, so a new one is made;
        a batch already being judged keeps the reader it started with.

        Raises:
            ValueError: the policy is another agency's (nothing changes).
        """
        reader = dataclasses.replace(self.reader, policy=policy)  # checks the agency
        self.policy, self.reader = policy, reader

    def prepare(self, raws: Sequence[RawRecord]) -> list[Prepared]:
        """Intake every record (no I/O)."""
        return [self.intake.prepare(r.position, r.value) for r in raws]

    def judge(
        self,
        prepared: Sequence[Prepared],
        snapshot: Snapshot,
        group_id: str,
        offsets: dict[tuple[str, int], int],
    ) -> tuple[Batch, list[Verdict]]:
        """Judge prepared records in order against ``snapshot`` (no I/O)."""
        judge = Judge(self.reader, snapshot)
        verdicts = [judge.judge(p) for p in prepared]
        self.late_refusals = list(judge.late_refusals)
        # Where this store began reading each partition (kept once: the first batch's offset), so
        # an auditor holding the store to the topic knows from where it must account for records.
        first: dict[tuple[str, int], int] = {}
        for p in prepared:
            key = (p.position.topic, p.position.partition)
            first[key] = min(p.position.offset, first.get(key, p.position.offset))
        meta = {read_from_key(t, part): str(o) for (t, part), o in first.items()}
        return judge.batch(group_id, offsets, meta), verdicts

    def commit(
        self,
        store: Store,
        group_id: str,
        raws: Sequence[RawRecord],
        prepared: Sequence[Prepared] | None = None,
        *,
        before_write: Callable[[Batch], Batch] | None = None,
    ) -> tuple[Batch, list[Verdict]]:
        """Judge ``raws`` inside the store's transaction and commit the batch with its offsets.

        ``before_write`` sees the judged batch just before the store writes it (the fault suite's
        crash injection uses it; production passes nothing).

        Raises:
            StoreError: nothing of the batch was kept.
        """
        ready = list(prepared) if prepared is not None else self.prepare(raws)
        offsets = next_offsets(raws)
        verdicts: list[Verdict] = []

        def decide(snapshot: Snapshot) -> Batch:
            batch, judged = self.judge(ready, snapshot, group_id, offsets)
            verdicts[:] = judged
            return batch if before_write is None else before_write(batch)

        batch = store.judge_and_commit(keys_for(ready), decide)
        return batch, verdicts

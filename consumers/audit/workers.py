"""Intake for a replay, on every core: serial in the judging process, or in forked worker processes.

Measured per record on a 2-core machine (bench/audit_profile.py): parsing an envelope costs about
50 us of Python and verifying its signature about 45 us in libsodium, while judging it costs
about 100 us more on the one thread that must judge in order. Threads overlap only libsodium with
the judge (the parse holds the GIL), so the pool is made of processes: each worker parses and
verifies a chunk of the batch, and sends back, per record, the verified header as a tuple of
plain values (bytes, ints, strings: pickled in C, a few microseconds), never the parsed objects.
The judging process rebuilds the :class:`~intelbus.envelope.VerifiedRecord` from that tuple in
about a fifth of the time a parse takes, and judges in offset order as before. A worker also adds
up the replay digest's items of the records it sends back as tuples (consumers/audit/digest.py:
a sum, so a chunk's part is exact), and the judging process adds the chunk's sum instead of
expanding each record's item itself (:class:`IntakeBatch`).

What a worker does not send back as a tuple — a record it refused, one addressed to the auditor
(whose contents are opened and decoded), anything it could not handle — the judging process
prepares itself with the same :class:`~consumers.audit.replay.Verifier`, so every finding is
exactly the serial path's (tests/unit/test_audit_workers.py). A worker that dies, or answers for
a different number of records than it was given, stops the replay with
:class:`~intelbus.errors.AuditWorkerError`: no report counts records nobody checked.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING, Any

from consumers.audit.digest import authentic_item
from consumers.forking import die_with_parent
from intelbus.envelope import VerifiedRecord
from intelbus.envelope.wire import EnvelopeHeader, RecipientEntry, SealedRecord
from intelbus.errors import AuditWorkerError
from intelbus.identity import PublicIdentity
from intelbus.kinds import RecordKind
from intelbus.transport.kafka import Message
from intelbus.trust.model import Position, Prepared

if TYPE_CHECKING:
    from consumers.audit.replay import Verifier

#: A verified record's header and digest, as plain values (see :func:`_compact`).
Compact = tuple[Any, ...]
_KINDS = {k.value: k for k in RecordKind}
#: Distinct recipients lists remembered (bounded: memory stays flat however long the topic).
_MAX_ENTRIES = 1024
#: The verifier a forked worker inherits (set in the parent just before the pool forks).
_WORKER_VERIFIER: Verifier | None = None


def _compact(p: Prepared) -> Compact | None:
    """The tuple a worker sends back for a record verified and not opened, else None (the judging
    process prepares that record itself)."""
    v = p.verified
    if v is None or p.addressed or p.error is not None:
        return None
    h = v.header
    return (
        h.kind.value,
        h.created_at,
        h.sequence,
        h.record_id.bytes,
        h.key_id,
        h.prev_digest,
        h.environment,
        h.topic,
        h.producer_id,
        h.schema_fingerprint,
        tuple((r.agency_id, r.key_id, r.wrapped_key) for r in h.recipients),
        h.format_version,
        h.partition,
        None if h.target_record_id is None else h.target_record_id.bytes,
        v.digest,
    )


class IntakeBatch(list[Prepared]):
    """A batch prepared by the workers, in offset order, with the replay digest's items of some
    of its records already added up: ``digested[i]`` says whether record ``i``'s authentic item
    is in ``digest_sum`` (only a record rebuilt from a worker's tuple, which is authentic)."""

    __slots__ = ("digest_sum", "digested")

    def __init__(self) -> None:
        super().__init__()
        self.digested: list[bool] = []
        self.digest_sum = 0


def _verify_chunk(
    topic: str, items: Sequence[tuple[int, int, datetime | None, bytes]]
) -> tuple[list[Compact | None], int]:
    """In a worker: intake for each (partition, offset, appended_at, value) of one chunk; and the
    sum of the digest items of the records answered with a tuple."""
    verifier = _WORKER_VERIFIER
    if verifier is None:  # pragma: no cover - a pool is only made after the verifier is set
        raise AuditWorkerError("worker started without a verifier")
    out: list[Compact | None] = []
    total = 0
    for partition, offset, appended_at, value in items:
        try:
            p = verifier.intake.prepare(Position(topic, partition, offset, appended_at), value)
            c = _compact(p)
            item = 0 if c is None else authentic_item(c[3], c[14])
        except Exception:  # noqa: BLE001 - the judging process prepares it again, and decides
            c, item = None, 0
        out.append(c)
        total += item
    return out, total


class IntakePool:
    """Prepares batches of messages for the judge: ``workers`` 1 is serial, in this process."""

    def __init__(self, verifier: Verifier, workers: int) -> None:
        self.verifier = verifier
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._signers: dict[bytes, PublicIdentity] = {}
        self._entries: dict[tuple[tuple[str, bytes, bytes], ...], tuple[RecipientEntry, ...]] = {}

    def __enter__(self) -> IntakePool:
        if self.workers > 1:
            global _WORKER_VERIFIER  # noqa: PLW0603 - what a forked worker inherits
            _WORKER_VERIFIER = self.verifier
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, batch: list[Message]) -> Callable[[], list[Prepared]]:
        """Start preparing ``batch``; the returned call waits for it, in offset order (with
        workers, an :class:`IntakeBatch`).

        Raises (from the call):
            AuditWorkerError: a worker died or answered for other records.
        """
        if self._pool is None:
            return lambda: self.verifier.check_all(batch)
        size = max(1, -(-len(batch) // (self.workers * 2)))
        chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
        futures: list[Future[tuple[list[Compact | None], int]]] = [
            self._pool.submit(
                _verify_chunk,
                chunk[0].topic,
                [(m.partition, m.offset, m.appended_at, m.value) for m in chunk],
            )
            for chunk in chunks
        ]

        def result() -> list[Prepared]:
            out = IntakeBatch()
            for chunk, future in zip(chunks, futures, strict=True):
                try:
                    compact, total = future.result()
                except BrokenProcessPool as e:
                    raise AuditWorkerError(
                        f"a verify worker died while checking {chunk[0].topic}"
                        f"[{chunk[0].partition}]@{chunk[0].offset}..{chunk[-1].offset}: the "
                        "replay stops (nothing after the last checkpoint is reported)"
                    ) from e
                if len(compact) != len(chunk):
                    raise AuditWorkerError(
                        f"a verify worker answered for {len(compact)} records, not {len(chunk)}"
                    )
                for m, c in zip(chunk, compact, strict=True):
                    rebuilt = self._rebuild(m, c)
                    if c is not None and rebuilt is None:
                        # Prepared here after all: judged as the serial path would, and its
                        # item is the judging process's to add, not the worker's.
                        total -= authentic_item(c[3], c[14])
                    out.append(rebuilt if rebuilt is not None else self.verifier.check(m))
                    out.digested.append(rebuilt is not None)
                out.digest_sum += total
            return out

        return result

    def cancel(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _recipients(
        self, plain: tuple[tuple[str, bytes, bytes], ...]
    ) -> tuple[RecipientEntry, ...]:
        """The entries of a recipients list: one tuple shared by every record of a data key's
        reuse window (the same wrapped keys), so judging can tell them alike at a glance."""
        found = self._entries.get(plain)
        if found is None:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            found = self._entries[plain] = tuple(RecipientEntry(a, k, w) for a, k, w in plain)
        return found

    def _rebuild(self, m: Message, c: Compact | None) -> Prepared | None:
        """The worker's answer as the serial path would have prepared it, or None when this
        process must prepare the record itself."""
        if c is None:
            return None
        (
            kind,
            created_at,
            sequence,
            record_id,
            key_id,
            prev_digest,
            environment,
            topic,
            producer_id,
            fingerprint,
            recipients,
            format_version,
            partition,
            target,
            digest,
        ) = c
        header = EnvelopeHeader(
            _KINDS[kind],
            created_at,
            sequence,
            uuid.UUID(bytes=record_id),
            key_id,
            prev_digest,
            environment,
            topic,
            producer_id,
            fingerprint,
            self._recipients(recipients),
            format_version,
            partition,
            None if target is None else uuid.UUID(bytes=target),
        )
        signer = self._signers.get(key_id)
        if signer is None:
            # The key the worker verified with (a key id names one key for good); resolved here
            # once per key, exactly as the worker did.
            try:
                signer = self.verifier.intake.resolver.resolve_signing_key(
                    key_id, producer_id, topic, created_at, m.appended_at
                )
            except Exception:  # noqa: BLE001 - then prepare it here, and judge what that says
                return None
            self._signers[key_id] = signer
        # The byte ranges stay behind in the worker: the judge reads the header and digest only
        # (a record the auditor opens is never sent back as a tuple).
        sealed = SealedRecord(header, b"", b"", b"", b"", b"")
        position = Position(m.topic, m.partition, m.offset, m.appended_at)
        return Prepared(position, m.value, VerifiedRecord(sealed, signer, digest))

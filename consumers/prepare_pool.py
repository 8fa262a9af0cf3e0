"""Intake on both cores: a batch's records prepared by worker processes, judged in order here.

Intake (:meth:`~intelbus.trust.intake.Intake.prepare`: size, verification, unwrap, decryption,
Avro decode, validation) is a pure function of a record's bytes and position, the agency's keys
and the directory, so records may be prepared in any order by any worker. Everything that
depends on order (the judge's chain check, the store commit, the offsets) stays in the calling
process, exactly as in the serial path: a batch's :class:`Prepared` list comes back in the
batch's order, and the caller judges and commits it as it would a serially prepared one.

**Processes, not threads**, measured (bench/consume_profile.py): libsodium releases the GIL, but
most of intake's time is Python (the envelope parse, Avro decode, pydantic validation), so worker
threads gained little; forked processes run it on the other core.

**Keys.** Workers are *forked* from the consumer with the pipeline's :class:`Intake` already in
memory (its private keys included): nothing secret is pickled, sent or written anywhere. What
crosses the pipes is a record's bytes and position in, and a compact result out (the decrypted
contents among it: process to process, never to disk).

**Compact results.** The consumer's process is the pipeline's critical path, and unpickling a
whole :class:`Prepared` cost it more per record than parsing the envelope. So a worker sends back
a :class:`_Result` without the record's bytes (the consumer holds them), and the envelope's frozen
dataclasses cross the pipe as their field values, rebuilt by one constructor call each
(:func:`_register_reducers`: multiprocessing's pickler only) instead of pickle's generic
per-field ``__setstate__``. Measured (bench/consume_profile.py records): 4.3 KB and ~50 us of
unpickling per record before, 3.1 KB and ~24 us after.

**The directory in force.** A worker holds the directory as it was when the worker was forked.
Each batch is tagged with the directory's generation (its number of trusted versions) and the
intake it was prepared for; when either changed since the fork (a directory version followed
between batches, a new pipeline), the workers are replaced by fresh forks before the batch is
prepared, so a batch is always prepared under the directory the consumer holds when it submits it.

**A worker that dies** (killed, out of memory) breaks the pool: the batch is prepared once more by
fresh workers, and if that fails too, :class:`~intelbus.errors.PrepareFailed` is raised. Nothing
of the batch has been judged or committed by then, so the consumer reads it again from the
store's offsets; no record is lost and no offset moves.

``workers`` 0 or 1 prepares in the calling thread (the serial path, and the default in tests).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import operator
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.reduction import ForkingPickler
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

from consumers.forking import die_with_parent
from intelbus.envelope.verify import VerifiedRecord
from intelbus.envelope.wire import BatchProof, EnvelopeHeader, RecipientEntry, SealedRecord
from intelbus.errors import PrepareFailed, RecordError, Shredded
from intelbus.log import get_logger
from intelbus.trust.intake import Intake
from intelbus.trust.model import Claim, Content, Position, Prepared

if TYPE_CHECKING:
    from consumers.pipeline import AgencyPipeline, RawRecord

log = get_logger("consumers.prepare_pool")

#: Records per task: small enough that both workers stay busy to the end of a batch, large
#: enough that the per-task overhead (a pickle round trip) is a few percent.
CHUNK_RECORDS = 50


# --- inside a worker --------------------------------------------------------------------------------

_INTAKE: Intake | None = None


def _install(intake: Intake, parent: int) -> None:
    # Runs in the forked worker: the intake (with its keys) is the parent's object, inherited
    # through fork, not pickled.
    global _INTAKE  # noqa: PLW0603 - the worker's one piece of state, set once at its start
    die_with_parent(parent)
    _INTAKE = intake


#: A record as sent to a worker: topic, partition, offset, broker time, bytes (a tuple: pickles
#: in C, where a Position dataclass takes a Python call each way).
_Item = tuple[str, int, int, datetime | None, bytes]


class _Result(NamedTuple):
    """A prepared record as it comes back: :class:`Prepared` without its position and bytes
    (the consumer holds them)."""

    verified: VerifiedRecord | None
    error: RecordError | None
    claim: Claim
    addressed: bool
    content: Content | None
    content_error: RecordError | None
    shredded: Shredded | None


def _compact(p: Prepared) -> _Result:
    return _Result(
        p.verified, p.error, p.claim, p.addressed, p.content, p.content_error, p.shredded
    )


def _prepare_chunk(items: list[_Item]) -> list[_Result]:
    intake = _INTAKE
    if intake is None:  # pragma: no cover - only if a worker was started without _install
        raise RuntimeError("prepare worker has no intake")
    return [
        _compact(intake.prepare(Position(topic, partition, offset, at), value))
        for topic, partition, offset, at, value in items
    ]


def _rebuild(raw: RawRecord, r: _Result) -> Prepared:
    """The worker's result for ``raw``, as the serial path makes it."""
    return Prepared(
        raw.position,
        raw.value,
        r.verified,
        r.error,
        r.claim,
        r.addressed,
        r.content,
        r.content_error,
        r.shredded,
    )


def _register_reducers() -> None:
    """Pickle the envelope's frozen dataclasses as (class, field values) in multiprocessing's
    pickler (the one the executor's pipes use; plain ``pickle`` is untouched).

    Unpickling then calls the class once with the values it had, where pickle's default for a
    slotted frozen dataclass calls a Python ``__setstate__`` walking ``dataclasses.fields`` for
    each of a record's seven such objects. Every field is an ``__init__`` argument, in order,
    and the classes do no work in ``__init__``, so the object rebuilt is equal to the one sent.
    """
    for cls in (EnvelopeHeader, RecipientEntry, BatchProof, SealedRecord, VerifiedRecord):
        fields = dataclasses.fields(cls)
        if any(not f.init or f.kw_only for f in fields):  # pragma: no cover - a future field
            raise TypeError(f"{cls.__name__} has a field its constructor does not take in order")
        values = operator.attrgetter(*(f.name for f in fields))
        ForkingPickler.register(cls, functools.partial(_by_fields, cls, values))


def _by_fields(
    cls: type, values: Callable[[object], tuple[object, ...]], obj: object
) -> tuple[type, tuple[object, ...]]:
    return cls, values(obj)


_register_reducers()


# --- in the consumer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Generation:
    """What a worker's fork captured: which intake, under which directory."""

    intake: int  # id() of the pipeline's Intake
    directory: int  # how many directory versions the pipeline trusts


def _generation(pipeline: AgencyPipeline) -> _Generation:
    return _Generation(id(pipeline.intake), len(pipeline.directory.versions))


class Pending:
    """A batch being prepared; :meth:`result` waits for it (in the batch's order)."""

    def __init__(
        self,
        pool: PreparePool,
        pipeline: AgencyPipeline,
        raws: Sequence[RawRecord],
        futures: list[Future[list[_Result]]] | None,
        done: list[Prepared] | None,
    ) -> None:
        self._pool = pool
        self._pipeline = pipeline
        self._raws = raws
        self._futures = futures
        self._done = done
        #: The directory generation the batch is being prepared under.
        self.directory_versions = len(pipeline.directory.versions)

    def result(self) -> list[Prepared]:
        """The prepared batch, in order.

        Raises:
            PrepareFailed: the workers died twice on this batch (nothing of it was judged).
        """
        if self._done is not None:
            return self._done
        assert self._futures is not None  # noqa: S101 - one of the two is always set
        try:
            results = [r for f in self._futures for r in f.result()]
        except BrokenProcessPool:
            log.warning("prepare.workers_died", records=len(self._raws))
            self._pool.reset()
            try:
                out = self._pool.run_now(self._pipeline, self._raws)
            except BrokenProcessPool:
                self._pool.reset()
                raise PrepareFailed(
                    f"the prepare workers died twice on a batch of {len(self._raws)} records; "
                    "nothing of it was judged or committed"
                ) from None
        else:
            out = [_rebuild(raw, r) for raw, r in zip(self._raws, results, strict=True)]
        self._done = out
        return out


class PreparePool:
    """Prepares batches with ``workers`` forked processes (0 or 1: in the calling thread)."""

    def __init__(self, workers: int, *, chunk: int = CHUNK_RECORDS) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        if chunk < 1:
            raise ValueError("chunk must be 1 or more")
        self.workers = workers
        self.chunk = chunk
        self._executor: ProcessPoolExecutor | None = None
        self._generation: _Generation | None = None

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def start(self, pipeline: AgencyPipeline) -> None:
        """Fork the workers now for ``pipeline`` (before other threads start, ideally)."""
        if self.parallel:
            # The executor forks its workers at the first task: one that does nothing.
            self._executor_for(pipeline).submit(_prepare_chunk, []).result()

    def submit(self, pipeline: AgencyPipeline, raws: Sequence[RawRecord]) -> Pending:
        """Start preparing ``raws`` (serially: prepared now)."""
        if not self.parallel or not raws:
            return Pending(self, pipeline, raws, None, pipeline.prepare(raws))
        try:
            futures = self._submit(pipeline, raws)
        except BrokenProcessPool:
            self.reset()
            futures = self._submit(pipeline, raws)
        return Pending(self, pipeline, raws, futures, None)

    def prepare(self, pipeline: AgencyPipeline, raws: Sequence[RawRecord]) -> list[Prepared]:
        """Prepare ``raws`` and wait (see :meth:`Pending.result`)."""
        return self.submit(pipeline, raws).result()

    def run_now(self, pipeline: AgencyPipeline, raws: Sequence[RawRecord]) -> list[Prepared]:
        """Prepare ``raws`` on the workers and wait (BrokenProcessPool propagates)."""
        results = [r for f in self._submit(pipeline, raws) for r in f.result()]
        return [_rebuild(raw, r) for raw, r in zip(raws, results, strict=True)]

    def _submit(
        self, pipeline: AgencyPipeline, raws: Sequence[RawRecord]
    ) -> list[Future[list[_Result]]]:
        executor = self._executor_for(pipeline)
        items: list[_Item] = [
            (r.topic, r.partition, r.offset, r.appended_at, r.value) for r in raws
        ]
        return [
            executor.submit(_prepare_chunk, items[i : i + self.chunk])
            for i in range(0, len(items), self.chunk)
        ]

    def _executor_for(self, pipeline: AgencyPipeline) -> ProcessPoolExecutor:
        generation = _generation(pipeline)
        if self._executor is not None and generation != self._generation:
            # A newer directory (or another pipeline): the forks hold the old one.
            log.info("prepare.workers_refreshed", directory_versions=generation.directory)
            self.reset()
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_install,
                initargs=(pipeline.intake, os.getpid()),
            )
            self._generation = generation
        return self._executor

    def reset(self) -> None:
        """Stop the workers (the next batch forks fresh ones)."""
        executor, self._executor, self._generation = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> PreparePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

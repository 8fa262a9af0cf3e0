"""The agency consume pipeline without Kafka: genuine sealed sightings fed from memory, timed and
profiled (issue 19, "Both cores" and "Less Python per record").

    python -m bench.consume_profile [--records 5000] [--batch 500] [--reps 3] [--workers N]
                                    [--publish-chunk 500] [--postgres URL] [--profile] [--top 25]

CST seals ``--records`` TLP:RED sightings to three forces through the real publisher (its broker
send replaced by an in-memory log: tests/simulator.py); herts-police, whose policy stores
everything, then runs exactly what :class:`consumers.agency.AgencyConsumer` runs after its poll:
``AgencyPipeline.prepare`` (verify, unwrap, decrypt, Avro decode, validate) and
``AgencyPipeline.commit`` (the judge inside one store transaction per batch, with the offsets),
into a fresh SQLite file and, with ``--postgres`` (a server URL we may CREATE DATABASE on, e.g.
``scripts/postgres.sh start``), into a fresh PostgreSQL database. Prints us/record and records/s
(median of ``--reps``), split into prepare and commit, and with ``--profile`` the top functions of
one cProfile run by their own time.

``--workers`` is the consumer's ``prepare_workers`` setting (0 or 1: serial).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.federation import red_sightings
from consumers.pipeline import AgencyPipeline, RawRecord
from consumers.prepare_pool import CHUNK_RECORDS, PreparePool
from intelbus.log import configure as configure_logging
from intelbus.store import open_store
from intelbus.trust.model import Prepared
from producers import publisher as publisher_mod
from tests.simulator import BusSimulator

STORE_ALL = {
    "agency": "herts-police",
    "own_force_areas": ["HERTFORDSHIRE"],
    "rules": [{"id": "all", "action": "store"}],
}
NAMED = ["herts-police", "met-police", "gmp"]
#: Records per publish_many call (bench/pipeline.py's CHUNK).
PUBLISH_CHUNK = 500


def sealed_log(
    tmp: Path, count: int, chunk: int = PUBLISH_CHUNK
) -> tuple[BusSimulator, list[RawRecord]]:
    """``count`` genuine sightings sealed by CST to three forces, as the broker would hold them.

    ``chunk`` records per ``publish_many`` call, as a busy producer sends them (format-3 batches
    of up to MAX_BATCH records, one signature each); 0: one ``publish`` per record (batches of
    one, one signature per record)."""
    sim = BusSimulator(tmp)
    publisher = sim.publisher("cst")
    # Observed in the last day (the samples' own times may lie after today: future_time).
    since = datetime.now(UTC) - timedelta(days=1)
    records = [
        r.model_copy(update={"observed_at": since + timedelta(seconds=n % 80_000)})
        for n, r in enumerate(red_sightings(count))
    ]
    if chunk < 1:
        for record in records:
            publisher.publish(record, named=NAMED)
        return sim, list(sim.log)

    def send_many(
        producer: object, items: Sequence[tuple[str, bytes, int | None]], **_: object
    ) -> list[tuple[int, int]]:
        del producer
        return [publisher._send(topic, value, partition) for topic, value, partition in items]

    # The publisher's pipelined broker calls go to the simulator's log (a harness, not a test).
    saved = (publisher_mod.transport.make_producer, publisher_mod.transport.send_many)
    publisher_mod.transport.make_producer = lambda *a, **k: object()  # type: ignore[assignment]
    publisher_mod.transport.send_many = send_many  # type: ignore[assignment]
    try:
        for i in range(0, len(records), chunk):
            publisher.publish_many(records[i : i + chunk], named=NAMED)
    finally:
        publisher_mod.transport.make_producer, publisher_mod.transport.send_many = saved
    return sim, list(sim.log)


@contextmanager
def store_at(kind: str, tmp: Path, postgres: str | None) -> Iterator[str]:
    """A fresh, empty store URL of ``kind`` (dropped afterwards)."""
    if kind == "sqlite":
        yield str(tmp / f"{uuid.uuid4().hex}.sqlite")
        return
    assert postgres is not None  # noqa: S101 - only asked for with a URL
    from tests.pgfixtures import fresh_postgres_database  # noqa: PLC0415 - needs psycopg

    with fresh_postgres_database(postgres) as url:
        yield url


class ThreadPrepare:
    """Intake in worker threads (for comparison: libsodium releases the GIL, Python does not)."""

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(workers)

    def prepare(self, pipeline: AgencyPipeline, raws: list[RawRecord]) -> list[Prepared]:
        def chunk(part: list[RawRecord]) -> list[Prepared]:
            return [pipeline.intake.prepare(r.position, r.value) for r in part]

        parts = [raws[i : i + CHUNK_RECORDS] for i in range(0, len(raws), CHUNK_RECORDS)]
        return [p for done in self.executor.map(chunk, parts) for p in done]

    def __enter__(self) -> ThreadPrepare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown()


def run_once(
    sim: BusSimulator,
    raws: list[RawRecord],
    url: str,
    batch: int,
    pool: PreparePool | ThreadPrepare,
) -> tuple[float, float, int, float]:
    """Prepare and commit every record in batches: prepare and commit seconds (wall), records
    stored, and this process's CPU seconds (with workers: the critical path if a core is free)."""
    pipeline: AgencyPipeline = sim.pipeline("herts-police", STORE_ALL)
    store = open_store(url, owner="herts-police")
    prep = commit = 0.0
    cpu0 = time.process_time()
    stored = 0
    try:
        chunks = [raws[i : i + batch] for i in range(0, len(raws), batch)]
        if isinstance(pool, PreparePool) and pool.parallel:
            # As the consumer does: batch N+1 goes to the workers before batch N is committed.
            t0 = time.perf_counter()
            ahead = pool.submit(pipeline, chunks[0])
            for n, chunk in enumerate(chunks):
                prepared = ahead.result()
                if n + 1 < len(chunks):
                    ahead = pool.submit(pipeline, chunks[n + 1])
                _, verdicts = pipeline.commit(store, "bench.herts-police", chunk, prepared)
                stored += sum(1 for v in verdicts if v.refusal is None)
            commit = time.perf_counter() - t0  # overlapped: all of it counted as one
        else:
            for chunk in chunks:
                t0 = time.perf_counter()
                prepared = pool.prepare(pipeline, chunk)
                t1 = time.perf_counter()
                _, verdicts = pipeline.commit(store, "bench.herts-police", chunk, prepared)
                t2 = time.perf_counter()
                prep += t1 - t0
                commit += t2 - t1
                stored += sum(1 for v in verdicts if v.refusal is None)
    finally:
        store.close()
    return prep, commit, stored, time.process_time() - cpu0


def measure(
    label: str,
    reps: int,
    once: Callable[[], tuple[float, float, int, float]],
    count: int,
) -> None:
    runs = []
    for _ in range(reps):
        prep, commit, stored, cpu = once()
        if stored != count:
            raise RuntimeError(f"{label}: stored {stored} of {count}")
        runs.append((prep + commit, prep, commit, cpu))
    total = statistics.median(r[0] for r in runs)
    prep = statistics.median(r[1] for r in runs)
    commit = statistics.median(r[2] for r in runs)
    cpu = statistics.median(r[3] for r in runs)
    print(
        f"{label:<28} {count / total:>9,.0f} rec/s  {total / count * 1e6:>7.1f} us/rec  "
        f"(prepare {prep / count * 1e6:.1f}, commit {commit / count * 1e6:.1f}; "
        f"main process CPU {cpu / count * 1e6:.1f} us/rec; "
        f"runs {', '.join(f'{count / r[0]:,.0f}' for r in runs)})"
    )


def profile(once: Callable[[], object], top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--publish-chunk",
        type=int,
        default=PUBLISH_CHUNK,
        help="records per publish_many (format-3 batches of up to 64); 0: one publish each",
    )
    ap.add_argument("--workers", type=int, nargs="*", default=[0])
    ap.add_argument("--threads", type=int, nargs="*", default=[], help="intake in N threads")
    ap.add_argument("--postgres", help="a PostgreSQL server URL (CREATE DATABASE allowed)")
    ap.add_argument("--profile", action="store_true", help="cProfile one run per store")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    configure_logging(level="WARNING")
    with tempfile.TemporaryDirectory(prefix="consume-profile-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        sim, raws = sealed_log(tmp, args.records, args.publish_chunk)
        print(f"sealed {len(raws)} records in {time.perf_counter() - t0:.1f} s")
        kinds = ["sqlite"] + (["postgres"] if args.postgres else [])
        pools: list[tuple[str, Callable[[], PreparePool | ThreadPrepare]]] = [
            (f"workers={n}", lambda n=n: PreparePool(n)) for n in args.workers
        ] + [(f"threads={n}", lambda n=n: ThreadPrepare(n)) for n in args.threads]
        for name, make in pools:
            with make() as pool:
                for kind in kinds:

                    def once(
                        kind: str = kind, pool: PreparePool | ThreadPrepare = pool
                    ) -> tuple[float, float, int, float]:
                        with store_at(kind, tmp, args.postgres) as url:
                            return run_once(sim, raws, url, args.batch, pool)

                    measure(f"{kind}, {name}", args.reps, once, len(raws))
                    if args.profile:
                        profile(once, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

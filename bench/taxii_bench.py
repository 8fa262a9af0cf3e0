"""Benchmark of a TAXII request's cost against the size of the force's store.

Not a test. Fills a SQLite store with N synthetic records (the sample feed, as the TAXII tests
do: three sightings to one incident, one retraction, one withheld record), then times, REPS times
each, in this process and in the same run:

* the baseline: reading every record back from the store (``Store.iter_records``), which every
  request pays because the server caches nothing between requests (docs/interop.md);
* a first-sync request: the first page (``limit`` 100) of the sightings collection;
* a poll with ``added_after`` the newest object already seen, which returns nothing.

Each figure is a median with its ratio to the baseline; the three figures at several sizes show
whether a request costs what it returns or what the store holds.

    .venv/bin/python -m bench.taxii_bench [--records 1000 4000] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from intelbus.cli.store_access import restriction
from intelbus.interop.taxii import COLLECTIONS, TaxiiService
from intelbus.interop.taxii_auth import Principal
from intelbus.log import configure
from intelbus.store import open_store
from intelbus.store.base import Store
from tests.taxii_store import fill

READER = Principal("bench", "basic", "benchmark")  # a standing justification: every record


def _median(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(records: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="intelbus-taxii-bench-") as tmp:
        path = Path(tmp) / "store.sqlite"
        fill(path, sightings=records * 3 // 4, incidents=records - records * 3 // 4)

        @contextmanager
        def opened() -> Iterator[Store]:
            store = open_store(str(path))
            try:
                yield store
            finally:
                store.close()

        service = TaxiiService(opened, restriction=restriction, title="bench", page_size=1000)
        # The whole manifest in one answer, to find the newest object (no client paging here).
        whole = TaxiiService(opened, restriction=restriction, title="bench", page_size=10**9)
        objects = f"/api/collections/{COLLECTIONS[0].id}/objects/"

        def read_all() -> int:
            with opened() as store:
                return sum(1 for _ in store.iter_records())

        manifest = whole.get(objects.replace("objects", "manifest"), {}, READER)
        if manifest.status != 200:
            raise SystemExit(f"the manifest request failed: {manifest.body}")
        newest = max(o["date_added"] for o in manifest.body["objects"])
        if whole.get(objects, {"added_after": [newest]}, READER).body.get("objects"):
            raise SystemExit("the poll after the newest object returned objects")
        return {
            "read": _median(read_all, reps),
            "first_page": _median(lambda: service.get(objects, {"limit": ["100"]}, READER), reps),
            "poll": _median(lambda: service.get(objects, {"added_after": [newest]}, READER), reps),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    configure(level="WARNING")  # the access log's entries, one per request, are not the figures
    print("records | read the store (baseline) | first page of 100 | empty poll (added_after)")
    for n in args.records:
        r = run(n, args.reps)
        print(
            f"{n:>7} | {r['read'] * 1000:8.0f} ms | {r['first_page'] * 1000:8.0f} ms "
            f"({r['first_page'] / r['read']:.1f}x) | {r['poll'] * 1000:8.0f} ms "
            f"({r['poll'] / r['read']:.1f}x)"
        )


if __name__ == "__main__":
    main()

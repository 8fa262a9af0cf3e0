"""The auditor's replay without Kafka: rate, profile and memory, fed from a file of sealed records.

Not a test. Seals N records (default 20,000) through the real publisher (its broker send replaced
by an append to a file: 4-byte length, then the record) once per ``--cache`` folder, then replays
them with :func:`consumers.audit.run.audit` from a source that streams the file (so the input
itself takes no memory), and prints records/s beside the one-core Ed25519 verify floor measured in
the same process. Options:

* ``--profile``: run under cProfile and print the top functions by own and cumulative time;
* ``--rss``: sample the process's RSS at 10%, 50% and 90% of the replay (bounded memory means
  the three stay about equal however long the topic);
* ``--workers N``: the replay's verify workers (1: serial, in the judging process).

    .venv/bin/python bench/audit_profile.py --records 20000 --profile
    .venv/bin/python bench/audit_profile.py --records 200000 --rss --cache /tmp/audit-records
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import MemorySource
from intelbus import _nacl
from intelbus.directory import store as dstore
from intelbus.envelope import parse
from intelbus.envelope.wire import SIGN_PREFIX
from intelbus.errors import NoRecipients
from intelbus.federation import ENVIRONMENT, make_directory, make_keys
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.log import configure
from intelbus.policy.agreement import SharingAgreement
from intelbus.samples import feed
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport.kafka import Message
from intelbus.transport.topics import topic_name
from producers import publisher as publisher_mod
from producers.publisher import Publisher
from producers.state import ProducerState

PREFIX = "prof"
TOPIC = topic_name(Family.SIGHTINGS, prefix=PREFIX)
AGREEMENT = {
    "producer": "cst",
    "member_forces": ["met-police", "herts-police", "gmp"],
    "auditors": ["inspectorate"],
    "auditor_tlp": ["CLEAR", "GREEN", "AMBER"],
    "force_areas": {
        "met-police": ["METROPOLITAN", "CITY_OF_LONDON"],
        "herts-police": ["HERTFORDSHIRE"],
        "gmp": ["GREATER_MANCHESTER"],
    },
}
_LEN = struct.Struct(">I")
#: The broker's append times: one record per 100 us from when the records were sealed.
_STEP = timedelta(microseconds=100)


def rss_mb() -> float:
    """The current resident set size (not the peak), in MiB."""
    with Path("/proc/self/statm").open() as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class _FileLog:
    """Stands in for the broker: each send appends the record to the file, one partition."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("ab")
        self.offset = 0

    def send_many(
        self, producer: object, items: Sequence[tuple[str, bytes, int | None]], **_: object
    ) -> list[tuple[int, int]]:
        del producer
        out = []
        for _topic, value, _partition in items:
            self.f.write(_LEN.pack(len(value)) + value)
            out.append((0, self.offset))
            self.offset += 1
        return out


def seal_records(folder: Path, n: int) -> None:
    """Keys, a directory and ``n`` sealed sightings (3 recipients and the auditor) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = make_keys(folder)
    make_directory(folder, ids, PREFIX)
    history = dstore.load_folder(folder / "directory")
    log = _FileLog(folder / "records.bin")
    t0 = datetime.now(UTC)
    # The publisher's broker calls go to the file (a benchmark harness, not a test double).
    publisher_mod.transport.make_producer = lambda *a, **k: object()  # type: ignore[assignment]
    publisher_mod.transport.send_many = log.send_many  # type: ignore[assignment]
    publisher_mod.transport.partition_count = lambda *a, **k: 1  # type: ignore[assignment]
    pub = Publisher(
        identity=ids["cst"],
        directory=history,
        agreement=SharingAgreement.model_validate(AGREEMENT),
        registry=SchemaRegistry.load(),
        state=ProducerState(folder / "cst-state.sqlite"),
        bootstrap_servers="unused:0",
        environment=ENVIRONMENT,
        topic_prefix=PREFIX,
    )
    bases = []
    for r in feed(seed=3, sightings=200, incidents=0):
        try:
            pub.recipients_for(r)
        except NoRecipients:
            continue
        bases.append(r)
    sent = 0
    while sent < n:
        batch = [
            bases[(sent + i) % len(bases)].model_copy(update={"record_id": str(uuid.uuid4())})
            for i in range(min(1000, n - sent))
        ]
        pub.publish_many(batch)
        sent += len(batch)
    log.f.close()
    (folder / "t0").write_text(t0.isoformat())
    (folder / "count").write_text(str(n))


class FileSource(MemorySource):
    """One partition streamed from the records file (only the batch being read is in memory)."""

    def __init__(self, path: Path, count: int, t0: datetime) -> None:
        super().__init__(TOPIC, [])
        self.path = path
        self.count = count
        self.t0 = t0

    def bounds(self) -> dict[int, tuple[int, int]]:
        return {0: (0, self.count)}

    def read(self, partition: int, start: int, end: int, batch: int) -> Iterator[list[Message]]:
        if partition != 0:
            return
        out: list[Message] = []
        with self.path.open("rb") as f:
            for offset in range(end):
                head = f.read(4)
                if len(head) < 4:
                    break
                value = f.read(_LEN.unpack(head)[0])
                if offset < start:
                    continue
                out.append(Message(TOPIC, 0, offset, value, self.t0 + offset * _STEP))
                if len(out) == batch:
                    yield out
                    out = []
        if out:
            yield out


def verify_floor_per_s(path: Path) -> float:
    with path.open("rb") as f:
        value = f.read(_LEN.unpack(f.read(4))[0])
    message = SIGN_PREFIX + parse(value).signed_bytes
    ident = AgencyIdentity.generate("cst")
    sig, key = ident.sign(message), ident.sign_public
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(3000):
            _nacl.verify_signature(key, message, sig)
        samples.append((time.perf_counter() - t) / 3000)
    return 1 / statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, help="keep the sealed records here between runs")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rss", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    configure(level="WARNING")
    tmp = tempfile.TemporaryDirectory(prefix="intelbus-audit-profile-")
    folder = args.cache or Path(tmp.name)
    count_file = folder / "count"
    if not count_file.exists() or int(count_file.read_text()) != args.records:
        if folder.exists() and args.cache:
            for p in sorted(folder.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
        t = time.perf_counter()
        seal_records(folder, args.records)
        print(f"sealed {args.records:,} records in {time.perf_counter() - t:.0f}s")
    history = dstore.load_folder(folder / "directory")
    floor = verify_floor_per_s(folder / "records.bin")
    rates = []
    for _ in range(args.reps):
        samples: dict[int, float] = {}

        def progress(done: int, total: int, samples: dict[int, float] = samples) -> None:
            for pct in (10, 50, 90):
                if pct not in samples and done * 100 >= pct * total:
                    samples[pct] = rss_mb()

        source = FileSource(
            folder / "records.bin",
            args.records,
            datetime.fromisoformat((folder / "t0").read_text()),
        )
        prof = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if prof is not None:
            prof.enable()
        result = audit(
            source=source,
            history=history,
            config=AuditConfig(environment=ENVIRONMENT),
            workers=args.workers,
            progress=progress if args.rss else None,
        )
        if prof is not None:
            prof.disable()
        seconds = time.perf_counter() - started
        rate = result.summary["records"] / seconds
        rates.append(rate)
        print(
            f"replay {result.summary['records']:,} records in {seconds:.1f}s: {rate:,.0f}/s "
            f"({result.run['workers']} worker(s)); findings {result.summary['findings']['integrity']}"
            f" integrity; verify floor {floor:,.0f}/s one core; ratio {rate / floor:.2f}x"
        )
        if args.rss:
            print(
                "  RSS MiB at 10/50/90%: "
                + " / ".join(f"{samples.get(p, 0):.0f}" for p in (10, 50, 90))
            )
        if prof is not None:
            stats = pstats.Stats(prof)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
    if args.reps > 1:
        median = statistics.median(rates)
        print(
            f"median {median:,.0f}/s over {args.reps}; floor {floor:,.0f}/s; ratio {median / floor:.2f}x"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()

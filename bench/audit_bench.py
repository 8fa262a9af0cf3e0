"""Benchmark of the auditor replay on a real broker: records/s and peak memory, against the floor.

Not a test. Publishes N sealed records (default 100,000) through the real publisher to a fresh
topic on a real broker (``KAFKA_BOOTSTRAP_SERVERS``, else one started from the cached jars), then
replays the topic REPS times, each in a fresh process so its peak RSS is its own, and prints the
median rate and peak RSS. Measured in the same run, for comparison:

* the Ed25519 verification floor per core: one thread verifying one record's signed bytes;
* reading the same records from Kafka with the same consumer settings, without verifying;
* the peak RSS of a process that loads everything but replays nothing, and of a replay of the
  first tenth of the topic (bounded memory means the full replay costs about the same).

    .venv/bin/python bench/audit_bench.py [--records 100000] [--reps 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nacl

from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import KafkaSource
from deploy.kafka.provider import provide_kafka
from intelbus import _nacl
from intelbus.cli import demo_cmd
from intelbus.directory import store as dstore
from intelbus.envelope import parse
from intelbus.envelope.wire import SIGN_PREFIX
from intelbus.errors import NoRecipients
from intelbus.federation import make_directory, make_keys
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.log import configure
from intelbus.samples import feed
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics, topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher

CHUNK = 2000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- child processes: one measurement each ---------------------------------------------------------


def child(
    mode: str, *, bootstrap: str, topic: str, directory: Path, workers: int, limit: int
) -> None:
    history = dstore.load_folder(directory)
    source = KafkaSource(bootstrap, topic)
    started = time.perf_counter()
    records = 0
    findings = 0
    try:
        if mode == "read":
            for partition, (begin, end) in source.bounds().items():
                for batch in source.read(partition, begin, end, 2000):
                    records += len(batch)
        elif mode == "audit":
            result = audit(
                source=source,
                history=history,
                config=AuditConfig(environment=history.environment),
                workers=workers,
                stop_after=limit or None,
            )
            records = int(result.run["records_this_run"])
            findings = result.integrity_findings
    finally:
        source.close()
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"records": records, "seconds": seconds, "rss_mb": peak_rss_mb(), "findings": findings}
        )
    )


def run_child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "INTELBUS_LOG_LEVEL": "WARNING"},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- the parent: publish once, measure many times ---------------------------------------------------


@contextmanager
def broker() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    with provide_kafka(heap_mb=768) as kafka:
        yield kafka.bootstrap_servers


def publish(root: Path, bootstrap: str, n: int) -> tuple[str, Path]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    transport.create_topics(bootstrap, bus_topics(prefix=prefix))
    ids = make_keys(root)
    make_directory(root, ids, prefix)
    (root / "agreement.toml").write_text(demo_cmd.AGREEMENT)
    (root / "producer.toml").write_text(
        f'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
        f'agreement = "agreement.toml"\nstate_file = "state/cst.sqlite"\n'
        f'environment = "{demo_cmd.ENVIRONMENT}"\nbootstrap_servers = "{bootstrap}"\n'
        f'topic_prefix = "{prefix}"\n'
    )
    pub = build_publisher(ProducerConfig.load(root / "producer.toml"))
    # Only records the sharing agreement addresses to someone (the rest would be refused).
    bases = []
    for r in feed(seed=3, sightings=200, incidents=0):
        try:
            pub.recipients_for(r)
        except NoRecipients:
            continue
        bases.append(r)
    sent = 0
    started = time.perf_counter()
    try:
        while sent < n:
            batch = [
                bases[(sent + i) % len(bases)].model_copy(update={"record_id": str(uuid.uuid4())})
                for i in range(min(CHUNK, n - sent))
            ]
            pub.publish_many(batch)
            sent += len(batch)
    finally:
        pub.close()
    print(f"published {n:,} records in {time.perf_counter() - started:.0f}s to {prefix}")
    return topic_name(Family.SIGHTINGS, prefix=prefix), root / "directory"


def verify_floor_us(bootstrap: str, topic: str) -> float:
    consumer = transport.make_consumer(bootstrap, group_id=None)
    try:
        value = next(iter(transport.read_all(consumer, topic))).value
    finally:
        consumer.close()
    sealed = parse(value)
    # Timing needs no directory: sign a record's exact signed bytes with a fresh key.
    ident = AgencyIdentity.generate("cst")
    message = SIGN_PREFIX + sealed.signed_bytes
    sig = ident.sign(message)
    key = ident.sign_public
    samples = []
    for _ in range(5):
        n = 3000
        t = time.perf_counter()
        for _ in range(n):
            _nacl.verify_signature(key, message, sig)
        samples.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=6, metavar=("MODE", "BOOT", "TOPIC", "DIR", "W", "LIMIT"))
    args = parser.parse_args()
    configure(level="WARNING")
    if args.child:
        mode, boot, topic, folder, workers, limit = args.child
        child(
            mode,
            bootstrap=boot,
            topic=topic,
            directory=Path(folder),
            workers=int(workers),
            limit=int(limit),
        )
        return
    with tempfile.TemporaryDirectory(prefix="intelbus-audit-bench-") as tmp, broker() as bootstrap:
        topic, directory = publish(Path(tmp), bootstrap, args.records)
        common = [bootstrap, topic, str(directory), str(args.workers)]
        floor_us = verify_floor_us(bootstrap, topic)
        idle = run_child(["load", *common, "0"])
        reads = [run_child(["read", *common, "0"]) for _ in range(args.reps)]
        tenth = run_child(["audit", *common, str(max(1, args.records // 10))])
        audits = [run_child(["audit", *common, "0"]) for _ in range(args.reps)]
    rate = statistics.median(a["records"] / a["seconds"] for a in audits)
    read_rate = statistics.median(r["records"] / r["seconds"] for r in reads)
    floor = 1e6 / floor_us
    print()
    print(f"audit replay benchmark: {audits[0]['records']:,.0f} records, median of {args.reps}")
    print(
        f"python {platform.python_version()}, PyNaCl {nacl.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPU(s), {args.workers} verify worker(s)"
    )
    print(f"  integrity findings           {audits[0]['findings']:>10.0f}")
    print(f"  ed25519 verify floor (1 core) {floor:>10,.0f} /s  ({floor_us:.1f} us)")
    print(f"  kafka read only              {read_rate:>10,.0f} records/s")
    print(f"  audit replay                 {rate:>10,.0f} records/s")
    print(f"  replay / verify floor        {rate / floor:>10.2f} x")
    print(f"  peak RSS, loaded, no replay  {idle['rss_mb']:>10.0f} MB")
    print(
        f"  peak RSS, replay of 1/10     {tenth['rss_mb']:>10.0f} MB  ({tenth['records']:,.0f} records)"
    )
    print(
        f"  peak RSS, full replay        {statistics.median(a['rss_mb'] for a in audits):>10.0f} MB"
    )


if __name__ == "__main__":
    main()

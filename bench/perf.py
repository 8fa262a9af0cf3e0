"""The cost of security, measured against plain Kafka clients in the same run (issues 8, 19).

    scripts/bench                       # everything, ending with issue 19's target table
    scripts/bench --quick               # a smaller run, for checking the script itself
    scripts/bench --curves-only         # only the scale curves (bench/curves.py)
    scripts/bench --no-curves --rss-records 100000

Every figure is the median of ``--reps`` repetitions, each on a fresh topic. Throughput ratios
divide our figure by the plain kafka-python figure for records of the same byte size with the same
producer settings (acks=all, idempotent, no compression), measured minutes apart on the same
broker, so a noisy shared machine moves both sides. Results go to ``bench/results/latest.json``
(every figure, versions, CPU count) and ``bench/results/latest.md`` (the tables; the target
table last, as printed); the curves' PNGs to ``docs/performance/``.

Sections: crypto floor; baseline (kafka-python produce/consume, its bundled producer benchmark,
confluent-kafka as the ceiling); sealed publish for 1, 3 and 10 recipients, and through
librdkafka when the build has that transport; the consume pipeline into SQLite and PostgreSQL for
several batch sizes; publish-to-stored latency at fixed offered loads; RSS of the consumer and the
auditor over ``--rss-records`` (1,000,000 by default) and the audit replay rate over the same
topic; the scale curves (bench/curves.py); the target table (bench/targets.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import kafka

from bench import targets
from bench.curves import CurveSettings, all_curves
from bench.federation import FORCES, BenchFederation, red_sightings
from bench.pipeline import CHUNK, consume_pipeline, publish_timed
from bench.plots import plot_all
from deploy.kafka.jars import KAFKA_VERSION
from deploy.kafka.provider import provide_kafka
from intelbus import _nacl
from intelbus.envelope import DataKeyCache, open_record, seal, verify
from intelbus.identity import AgencyIdentity, StaticKeyRing
from intelbus.kinds import RecordKind
from intelbus.log import configure
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, audit_topic_config
from producers.config import ProducerConfig
from producers.publisher import build_publisher

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIG_CHUNK = 2000  # records per publish_many call when filling the long topic


# --- helpers ------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def per_call_us(fn: Callable[[], object], iterations: int, reps: int) -> float:
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter() - start) / iterations * 1e6)
    return median(samples)


def verify_floor_us(iterations: int = 3000) -> float:
    """One Ed25519 verification of ~900 signed bytes on one core (us): the audit target's floor."""
    ident = AgencyIdentity.generate("floor")
    msg = _nacl.random_bytes(900)
    sig = _nacl.sign(ident.signing_seed(), msg)
    pub = ident.public.sign_public
    return per_call_us(lambda: _nacl.verify_signature(pub, msg, sig), iterations, 3)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fresh_topic(bootstrap: str, name: str) -> str:
    spec = TopicSpec(name, 1, 1, audit_topic_config(min_insync_replicas=1))
    transport.create_topics(bootstrap, [spec])
    return name


# --- 7. the crypto floor --------------------------------------------------------------------------


def crypto_floor(reps: int) -> dict[str, float]:
    """Per-operation cost (us) of each primitive and of our envelope steps, on one core."""
    cst = AgencyIdentity.generate("cst")
    forces = [AgencyIdentity.generate(f) for f in FORCES[:3]]
    registry = SchemaRegistry.load()
    record = red_sightings(1)[0]
    fingerprint, payload = registry.encode(record.SCHEMA, record.to_avro())
    avro_value = record.to_avro()
    seed = cst.signing_seed()
    pub = cst.public.sign_public
    msg = _nacl.random_bytes(900)
    sig = _nacl.sign(seed, msg)
    key = _nacl.random_bytes(32)
    nonce = _nacl.random_bytes(24)
    box_pub = forces[0].public.enc_public
    datakeys = DataKeyCache()

    def do_seal() -> bytes:
        return seal(
            cst,
            environment="bench",
            topic="t",
            kind=RecordKind.SIGHTING,
            sequence=0,
            prev_digest=bytes(32),
            schema_fingerprint=fingerprint,
            payload=payload,
            recipients=[f.public for f in forces],
            datakeys=datakeys,
            partition=0,
        ).data

    sealed = do_seal()
    ring = StaticKeyRing([cst.public])
    verified = verify(
        sealed, ring, expected_environment="bench", expected_topic="t", witnessed_at=None
    )
    it = 2000
    return {
        "ed25519_sign_us": per_call_us(lambda: _nacl.sign(seed, msg), it, reps),
        "ed25519_verify_us": per_call_us(lambda: _nacl.verify_signature(pub, msg, sig), it, reps),
        "sealed_box_32B_us": per_call_us(lambda: _nacl.seal(box_pub, key), it, reps),
        "aead_encrypt_payload_us": per_call_us(
            lambda: _nacl.aead_encrypt(key, nonce, payload, b"header"), it, reps
        ),
        "avro_encode_us": per_call_us(lambda: registry.encode(record.SCHEMA, avro_value), it, reps),
        "avro_decode_us": per_call_us(lambda: registry.decode(fingerprint, payload), it, reps),
        "seal_3_recipients_reused_key_us": per_call_us(do_seal, it, reps),
        "verify_envelope_us": per_call_us(
            lambda: verify(
                sealed, ring, expected_environment="bench", expected_topic="t", witnessed_at=None
            ),
            it,
            reps,
        ),
        "open_envelope_us": per_call_us(lambda: open_record(verified, forces[0]), it, reps),
        "payload_bytes": float(len(payload)),
        "sealed_bytes_3_recipients": float(len(sealed)),
    }


# --- 1. the baseline ------------------------------------------------------------------------------


def baseline_produce(bootstrap: str, count: int, size: int) -> tuple[float, str]:
    """Plain kafka-python: the bus's producer settings, random bytes of ``size``; records/s."""
    topic = fresh_topic(bootstrap, f"base-{uuid.uuid4().hex[:8]}")
    values = [os.urandom(size) for _ in range(256)]
    producer = transport.make_producer(bootstrap)
    try:
        start = time.perf_counter()
        for i in range(0, count, CHUNK):
            transport.send_many(
                producer,
                [(topic, values[j % 256], None) for j in range(i, min(count, i + CHUNK))],
                key=b"cst",
            )
        elapsed = time.perf_counter() - start
    finally:
        producer.close()
    return count / elapsed, topic


def plain_consume(bootstrap: str, topic: str, count: int) -> float:
    """Plain kafka-python: read ``count`` records of ``topic`` with no processing; records/s."""
    consumer = transport.make_consumer(bootstrap, max_poll_records=2000)
    try:
        start = time.perf_counter()
        n = sum(1 for _ in transport.read_all(consumer, topic, timeout_s=300))
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    if n != count:
        raise RuntimeError(f"read {n} records of {topic}, expected {count}")
    return count / elapsed


def bundled_producer_benchmark(bootstrap: str, count: int, size: int) -> float | None:
    """kafka-python's own producer benchmark with the same settings, as a cross-check; records/s."""
    topic = fresh_topic(bootstrap, f"kpb-{uuid.uuid4().hex[:8]}")
    cmd = [
        sys.executable,
        "-m",
        "kafka.benchmarks.producer_performance",
        "-b",
        bootstrap,
        "-t",
        topic,
        "--num-records",
        str(count),
        "--record-size",
        str(size),
        "-c",
        "acks=all",
        "enable_idempotence=True",
        "linger_ms=5",
        "--stats-interval",
        "600",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    m = re.search(r"Execution time:\s*([0-9.]+)", out.stdout)
    if out.returncode != 0 or m is None:
        say(f"kafka-python benchmark failed: {out.stderr[-500:]}")
        return None
    return count / float(m.group(1))


def confluent_ceiling(bootstrap: str, count: int, size: int) -> dict[str, float] | None:
    """librdkafka through confluent-kafka: the most a Python program gets here; records/s."""
    try:
        import confluent_kafka  # noqa: PLC0415 - optional (pip install '.[bench]')
    except ImportError:
        return None
    topic = fresh_topic(bootstrap, f"ck-{uuid.uuid4().hex[:8]}")
    values = [os.urandom(size) for _ in range(256)]
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "none",
        }
    )
    producer.produce(topic, values[0], key=b"cst")  # connect and fetch metadata: not timed
    producer.flush(30)
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, values[i % 256], key=b"cst")
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("confluent-kafka did not deliver everything")
    produce = count / (time.perf_counter() - start)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ck-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    count += 1  # the warm-up record
    n = 0
    start = 0.0
    deadline = time.monotonic() + 120
    while n < count and time.monotonic() < deadline:
        # Never ask for more than remain: consume() waits out its timeout for a short batch.
        batch = consumer.consume(num_messages=min(1000, count - n), timeout=1.0)
        if batch and not start:
            start = time.perf_counter()
        n += sum(1 for m in batch if m.error() is None)
    consume = count / (time.perf_counter() - start)
    consumer.close()
    return {"produce": produce, "consume": consume}


# --- 2. sealed publish ----------------------------------------------------------------------------


def sealed_publish(fed: BenchFederation, count: int, recipients: int) -> tuple[float, int]:
    """Publish ``count`` RED sightings to ``recipients`` forces through the Publisher; records/s
    and the sealed size. A fresh producer state each time, so every run starts a new stream."""
    records = red_sightings(count, seed=recipients)
    fed.prefix_topics_fresh()
    elapsed = publish_timed(fed, records, fed.forces[:recipients])
    consumer = transport.make_consumer(fed.bootstrap)
    try:
        sample = next(iter(transport.read_all(consumer, fed.sightings_topic)))
    finally:
        consumer.close()
    return (count - 1) / elapsed, len(sample.value)


RDKAFKA = "confluent-kafka"
#: The producer config's setting that chooses the Kafka client, by the names builds have used.
CLIENT_SETTINGS = ("kafka_client", "client")


def client_setting() -> str | None:
    """The producer config's client setting in this build, or None (no such setting)."""
    return next((k for k in CLIENT_SETTINGS if k in ProducerConfig.model_fields), None)


def rdkafka_available() -> str | None:
    """None when this build can publish through librdkafka; else why not (said in the table).

    The producer config chooses the Kafka client (``kafka_client = "confluent-kafka"``); a build
    without that setting refuses the key (unknown keys are refused), so it is checked here rather
    than measured as a wrong figure."""
    if client_setting() is None:
        return "n/a (transport not available in this build)"
    try:
        import confluent_kafka  # noqa: F401, PLC0415 - optional (the bench extra)
    except ImportError:
        return "n/a (confluent-kafka is not installed)"
    return None


def use_client(fed: BenchFederation, client: str | None) -> None:
    """Producer configs written from now on choose ``client`` (None: the build's default)."""
    setting = client_setting()
    fed.client = None if client is None or setting is None else (setting, client)
    fed.producer_config("cst", fed.root / "producer.toml")


def rdkafka_publish(
    fed: BenchFederation, count: int, reps: int, baseline_rps: float
) -> dict[str, Any]:
    """Sealed publish, 3 recipients, exactly as the kafka-python row but with the producer
    config's ``kafka_client = "confluent-kafka"``; the ratio is against plain kafka-python produce of
    the same bytes (the 3-recipient baseline of this run)."""
    why = rdkafka_available()
    if why is not None:
        return {"why": why, "ratio": None}
    use_client(fed, RDKAFKA)
    try:
        rates = [sealed_publish(fed, count, 3)[0] for _ in range(reps)]
    finally:
        use_client(fed, None)
    return {
        "sealed_rps": median(rates),
        "baseline_rps": baseline_rps,
        "ratio": median(rates) / baseline_rps,
        "samples": rates,
    }


# --- 5. latency -----------------------------------------------------------------------------------


def latency(fed: BenchFederation, rate: int, seconds: float, workdir: Path) -> dict[str, float]:
    """Publish at ``rate`` records/s for ``seconds`` while a consumer process stores them; the
    publish-to-stored latency per record is the store's commit time minus the sealing time."""
    fed.prefix_topics_fresh()
    store = workdir / f"lat-{rate}.sqlite"
    config = fed.consumer_config(f"lat{rate}", str(store), batch_size=500)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "intelbus.cli",
            "consume",
            "--agency",
            "f01",
            "--config",
            str(config),
        ],
        env={**os.environ, "INTELBUS_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    total = int(rate * seconds)
    records = red_sightings(total, seed=rate)
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    named = list(fed.forces[:3])
    tick = 0.02
    per_tick = max(1, round(rate * tick))
    try:
        time.sleep(3)  # let the consumer join its group before the clock starts
        start = time.perf_counter()
        for n, i in enumerate(range(0, total, per_tick)):
            publisher.publish_many(records[i : i + per_tick], named=named)
            pause = start + (n + 1) * tick - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        achieved = total / (time.perf_counter() - start)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if store.exists() and _count(store) >= total:
                break
            time.sleep(0.2)
    finally:
        publisher.close()
        proc.terminate()
        proc.wait(timeout=30)
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute("SELECT created_at, appended_at, stored_at FROM records").fetchall()
    finally:
        conn.close()
    times = [(_t(c), _t(a), _t(s)) for c, a, s in rows]
    lat = sorted((s - c).total_seconds() * 1000 for c, _a, s in times)
    if len(lat) != total:
        raise RuntimeError(f"latency run stored {len(lat)} of {total}")
    q = statistics.quantiles(lat, n=100)
    # Where the latency is spent: sealed -> appended by the broker (the publisher's reservation,
    # linger and acks=all) and appended -> stored (the consumer's fetch, intake, judge and commit).
    to_broker = statistics.quantiles(
        sorted((a - c).total_seconds() * 1000 for c, a, _ in times), n=100
    )
    to_store = statistics.quantiles(
        sorted((s - a).total_seconds() * 1000 for _, a, s in times), n=100
    )
    return {
        "offered": rate,
        "achieved": achieved,
        "p50_ms": q[49],
        "p95_ms": q[94],
        "p99_ms": q[98],
        "to_broker_p50_ms": to_broker[49],
        "to_broker_p99_ms": to_broker[98],
        "to_store_p50_ms": to_store[49],
        "to_store_p99_ms": to_store[98],
    }


def _count(store: Path) -> int:
    conn = sqlite3.connect(store)
    try:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


# --- 6. memory ------------------------------------------------------------------------------------


def sample_rss(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; sample its RSS every 0.25 s; report the start, quartiles and peak (MiB)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and proc.poll() is None:
            with contextlib.suppress(OSError):
                samples.append(rss_kb(proc.pid))
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, err = proc.communicate(timeout=1800)
    stop.set()
    watcher.join()
    if proc.returncode not in (0, 1) or len(samples) < 8:
        raise RuntimeError(f"{cmd[3:5]} failed ({proc.returncode}): {err.decode()[-800:]}")
    mib = [s / 1024 for s in samples if s]
    n = len(mib)
    return {
        "rss_at_10pct_mib": mib[n // 10],
        "rss_at_50pct_mib": mib[n // 2],
        "rss_at_90pct_mib": mib[(9 * n) // 10],
        "peak_mib": max(mib),
        "growth_10_to_90pct_mib": mib[(9 * n) // 10] - mib[n // 10],
        "samples": float(n),
    }


# --- the run ---------------------------------------------------------------------------------------


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """Where and with what the run measures: versions, CPUs, the command."""
    versions = {
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "kafka-python": kafka.__version__,
        "pynacl": importlib.metadata.version("pynacl"),
        "fastavro": fastavro.__version__,
    }
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["confluent-kafka"] = importlib.metadata.version("confluent-kafka")
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["scripts/bench", *sys.argv[1:]]),
        "records": args.records,
        "reps": args.reps,
        "versions": versions,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_model": cpu,
    }


def run(args: argparse.Namespace, bootstrap: str, pg_url: str | None, work: Path) -> dict[str, Any]:
    results = describe(args)
    say("== crypto floor")
    results["floor"] = crypto_floor(args.reps)
    say(json.dumps(results["floor"], indent=1))

    fed = BenchFederation(work / "fed", bootstrap, slots=24 + 4 * args.reps)
    n = args.records

    say("== sealed publish and the baseline, same sizes")
    publish: dict[str, Any] = {}
    for k in (1, 3, 10):
        sealed_rates: list[float] = []
        base_rates: list[float] = []
        sizes: list[float] = []
        for _ in range(args.reps):
            rate, size = sealed_publish(fed, n, k)
            sealed_rates.append(rate)
            sizes.append(size)
            base, _ = baseline_produce(bootstrap, n, size)
            base_rates.append(base)
        size = int(median(sizes))
        publish[str(k)] = {
            "sealed_bytes": size,
            "sealed_rps": median(sealed_rates),
            "sealed_MBps": median(sealed_rates) * size / 1e6,
            "baseline_rps": median(base_rates),
            "ratio": median(sealed_rates) / median(base_rates),
            "samples": {"sealed": sealed_rates, "baseline": base_rates},
        }
        say(f"  {k} recipient(s): {publish[str(k)]['ratio']:.2f}x baseline")
    results["publish"] = publish
    size3 = publish["3"]["sealed_bytes"]

    say("== sealed publish through librdkafka (kafka_client = confluent-kafka)")
    results["rdkafka_publish"] = rdkafka_publish(fed, n, args.reps, publish["3"]["baseline_rps"])
    say(f"  {results['rdkafka_publish'].get('why') or results['rdkafka_publish']['ratio']}")

    say("== cross-checks: kafka-python's bundled benchmark, confluent-kafka")
    bundled = [bundled_producer_benchmark(bootstrap, n, size3) for _ in range(args.reps)]
    results["kafka_python_bundled_produce_rps"] = median([b for b in bundled if b])
    ck = [confluent_ceiling(bootstrap, n, size3) for _ in range(args.reps)]
    results["confluent_kafka"] = (
        None
        if ck[0] is None
        else {
            "produce_rps": median([c["produce"] for c in ck if c]),
            "consume_rps": median([c["consume"] for c in ck if c]),
        }
    )

    say("== consume pipeline vs plain consume (3-recipient records)")
    fed.prefix_topics_fresh()
    publish_timed(fed, red_sightings(n, seed=33), fed.forces[:3])
    plain = [plain_consume(bootstrap, fed.sightings_topic, n) for _ in range(args.reps)]
    consume: dict[str, Any] = {"plain_rps": median(plain), "samples_plain": plain}
    stores: dict[str, Callable[[], str]] = {
        "sqlite": lambda: f"sqlite:///{work / f's{uuid.uuid4().hex[:6]}.sqlite'}"
    }
    if pg_url:
        stores["postgres"] = lambda: _fresh_postgres(pg_url)
    for backend, make_store in stores.items():
        for batch in args.batch_sizes:
            rates = [consume_pipeline(fed, make_store(), batch, n) for _ in range(args.reps)]
            consume[f"{backend}_batch{batch}"] = {
                "rps": median(rates),
                "ratio": median(rates) / median(plain),
                "samples": rates,
            }
            say(
                f"  {backend} batch {batch}: {median(rates):.0f}/s, {median(rates) / median(plain):.2f}x"
            )
    results["consume"] = consume

    say("== latency at a fixed offered load")
    results["latency"] = [latency(fed, r, args.latency_seconds, work) for r in args.rates]

    say(f"== audit replay, and memory over {args.rss_records:,} records")
    started = time.perf_counter()
    results["memory"], results["audit"], long_topic = memory_and_audit(
        fed, args, work, results["floor"]["ed25519_verify_us"]
    )
    results["memory"]["section_seconds"] = time.perf_counter() - started
    if not args.no_curves:
        results["curves"] = curves(args, work, bootstrap, (fed, long_topic))
    return results


def curves(
    args: argparse.Namespace,
    work: Path,
    bootstrap: str,
    audit_topic: tuple[BenchFederation, str] | None,
) -> list[dict[str, Any]]:
    """The scale curves, printed and drawn (docs/performance/curve-*.png)."""
    settings = CurveSettings.quick() if args.quick else CurveSettings(records=args.curve_records)
    if args.curve_producers:
        settings = dataclasses.replace(settings, producers=args.curve_producers)
    if args.curve_audit_lengths:
        settings = dataclasses.replace(settings, audit_lengths=args.curve_audit_lengths)
    measured = all_curves(
        work,
        bootstrap,
        settings,
        # The memory section's long topic serves when it holds the longest prefix.
        audit_topic if args.rss_records >= max(settings.audit_lengths) else None,
    )
    # A quick run checks the drawing too, but never over the docs' PNGs.
    folder = RESULTS / "quick-curves" if args.quick else None
    for path in plot_all(measured, folder) if folder else plot_all(measured):
        say(f"  wrote {path.relative_to(REPO)}")
    return [c.to_json() for c in measured]


def _fresh_postgres(admin_url: str) -> str:
    """A new empty database on the benchmark's PostgreSQL server (dropped with the cluster)."""
    import psycopg  # noqa: PLC0415 - only with PostgreSQL
    from psycopg import sql  # noqa: PLC0415

    name = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def memory_and_audit(
    fed: BenchFederation, args: argparse.Namespace, work: Path, verify_us: float
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Publish ``--rss-records`` records (a genuine chain: the real publisher in big chunks,
    through librdkafka when this build has it); run the consumer once and the auditor (``--reps``
    times up to 200,000 records, once beyond), each a separate process whose RSS is sampled. The
    audit rate is the auditor's own (its report's records/s, start-up excluded), compared with
    the Ed25519 verify floor on one core measured beside each replay (the median of those, before
    and after). Returns the topic too."""
    count = args.rss_records
    fast = rdkafka_available() is None
    use_client(fed, RDKAFKA if fast else None)
    fed.prefix_topics_fresh()
    started = time.perf_counter()
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        for i in range(0, count, BIG_CHUNK):
            publisher.publish_many(
                red_sightings(min(BIG_CHUNK, count - i), seed=i), named=list(fed.forces[:3])
            )
            if i and i % 100_000 == 0:
                done = time.perf_counter() - started
                say(f"  published {i:,} in {done:.0f} s (~{done / i * count / 60:.0f} min for all)")
    finally:
        publisher.close()
        use_client(fed, None)
    topic = fed.sightings_topic
    publish_s = time.perf_counter() - started
    say(
        f"  published {count:,} records in {publish_s:.0f} s ({'librdkafka' if fast else 'kafka-python'})"
    )
    env = {**os.environ, "INTELBUS_LOG_LEVEL": "WARNING"}
    config = fed.consumer_config("mem", str(work / "mem.sqlite"), batch_size=500)
    consume_cmd = [sys.executable, "-m", "intelbus.cli", "consume", "--agency", "f01"]
    started = time.perf_counter()
    memory: dict[str, Any] = {
        "records": count,
        "publish_seconds": publish_s,
        "publish_client": RDKAFKA if fast else "kafka-python",
        "consumer": sample_rss([*consume_cmd, "--config", str(config), "--until-idle"], env),
    }
    memory["consume_seconds"] = time.perf_counter() - started
    say(
        f"  consumer: {memory['consume_seconds']:.0f} s, {memory['consumer']['peak_mib']:.0f} MiB peak"
    )
    rates: list[float] = []
    floors: list[float] = []
    rss: list[dict[str, float]] = []
    for rep in range(args.reps if count <= 200_000 else 1):
        # The floor beside each replay, not only the run's first minute: on a shared machine
        # the load changes between sections, and the ratio must compare like with like.
        floors.append(verify_floor_us())
        report = work / f"audit-{rep}.json"
        audit_cmd = [sys.executable, "-m", "intelbus.cli", "audit", "replay"]
        rss.append(
            sample_rss(
                [
                    *audit_cmd,
                    "--topic",
                    topic,
                    "--from-beginning",
                    "--directory",
                    str(fed.root / "directory"),
                    "--bootstrap-servers",
                    fed.bootstrap,
                    "--report",
                    str(report),
                ],
                env,
            )
        )
        run = json.loads(report.read_text())["run"]
        if run["records_this_run"] != count:
            raise RuntimeError(f"the audit read {run['records_this_run']} of {count} records")
        rates.append(float(run["records_per_second"]))
    floors.append(verify_floor_us())
    memory["auditor"] = max(rss, key=lambda r: r["peak_mib"])
    floor = 1e6 / median(floors)
    audit = {
        "records": count,
        "rps": median(rates),
        "verify_floor_one_core_rps": floor,
        "vs_verify_floor": median(rates) / floor,
        "samples": rates,
        "verify_floor_us_samples": floors,
        "verify_floor_us_at_start": verify_us,
    }
    say(f"  audit replay {median(rates):.0f}/s, {median(rates) / floor:.2f}x the one-core floor")
    return memory, audit, topic


@contextlib.contextmanager
def _postgres(skip: bool) -> Iterator[str | None]:
    if skip:
        yield None
        return
    cluster = tempfile.mkdtemp(prefix="intelbus-bench-pg-")
    script = REPO / "scripts" / "postgres.sh"
    bash = shutil.which("bash") or "/bin/bash"
    try:
        started = subprocess.run(
            [bash, str(script), "start", cluster], capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            say(f"PostgreSQL unavailable, measuring SQLite only: {started.stderr[-300:]}")
            yield None
        else:
            yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([bash, str(script), "stop", cluster], capture_output=True, check=False)
        shutil.rmtree(cluster, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    # 500 is the consumer's default (the target rows use it); 100 was always slower (issue 8).
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--rss-records",
        "--memory-records",
        dest="rss_records",
        type=int,
        default=1_000_000,
        help="Records the consumer's and the auditor's RSS are sampled over (default 1,000,000).",
    )
    parser.add_argument("--curve-records", type=int, default=2_000, help="Records per curve point.")
    parser.add_argument("--curve-producers", type=int, nargs="+", help="Default 1 10 50 200.")
    parser.add_argument(
        "--curve-audit-lengths", type=int, nargs="+", help="Default 1000 10000 100000."
    )
    parser.add_argument("--curves-only", action="store_true", help="Only the scale curves.")
    parser.add_argument("--no-curves", action="store_true", help="Only the target table.")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="Small figures, to check the script.")
    args = parser.parse_args()
    configure(level="WARNING")  # the figures, not one log line per published batch
    if args.quick:
        args.records, args.reps, args.batch_sizes = 2_000, 1, [500]
        args.latency_seconds = 3.0
        args.rss_records = 5_000
    work = Path(tempfile.mkdtemp(prefix="intelbus-bench-"))
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            bootstrap = stack.enter_context(provide_kafka(nodes=1)).bootstrap_servers
            if args.curves_only:
                results = describe(args)
                results["curves"] = curves(args, work, bootstrap, None)
            else:
                pg = stack.enter_context(_postgres(args.no_postgres))
                results = run(args, bootstrap, pg, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    if "publish" in results:
        results["targets"] = targets.as_json(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A quick run checks the script: its figures never replace the last real run's.
    name = "quick" if args.quick else ("curves" if args.curves_only else "latest")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = markdown(results)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


def details(r: dict[str, Any]) -> str:
    """Every figure behind the target table."""
    v = r["versions"]
    lines = [
        f"Measured {r['when']} with `{r['command']}`: {r['records']} records per run, median of "
        f"{r['reps']}; {r['cpus']} CPUs ({r['machine']}); Kafka {v['kafka']}, kafka-python "
        f"{v['kafka-python']}, PyNaCl {v['pynacl']}, fastavro {v['fastavro']}, Python {v['python']}.",
        "",
        "| what | records/s | MB/s | vs baseline |",
        "|---|---:|---:|---:|",
    ]
    for k, p in r["publish"].items():
        lines.append(
            f"| baseline kafka-python produce, {p['sealed_bytes']} B | {p['baseline_rps']:,.0f} | "
            f"{p['baseline_rps'] * p['sealed_bytes'] / 1e6:.1f} | 1.00x |"
        )
        lines.append(
            f"| sealed publish, {k} recipient(s), {p['sealed_bytes']} B | {p['sealed_rps']:,.0f} | "
            f"{p['sealed_MBps']:.1f} | {p['ratio']:.2f}x |"
        )
    if r.get("kafka_python_bundled_produce_rps"):
        lines.append(
            f"| kafka-python bundled producer benchmark (cross-check) | "
            f"{r['kafka_python_bundled_produce_rps']:,.0f} | | |"
        )
    if r.get("confluent_kafka"):
        ck = r["confluent_kafka"]
        lines.append(f"| confluent-kafka produce (ceiling) | {ck['produce_rps']:,.0f} | | |")
        lines.append(f"| confluent-kafka consume (ceiling) | {ck['consume_rps']:,.0f} | | |")
    c = r["consume"]
    lines.append(f"| baseline kafka-python consume | {c['plain_rps']:,.0f} | | 1.00x |")
    for key, val in c.items():
        if isinstance(val, dict) and "rps" in val:
            backend, batch = key.split("_batch")
            lines.append(
                f"| consume pipeline into {backend}, batch {batch} | {val['rps']:,.0f} | | "
                f"{val['ratio']:.2f}x |"
            )
    a = r.get("audit")
    if a:
        lines.append(
            f"| audit replay, {a['records']} records | {a['rps']:,.0f} | | "
            f"{a['vs_verify_floor']:.2f}x the one-core verify floor |"
        )
    lines += [
        "",
        "| offered load | achieved | p50 ms | p95 ms | p99 ms | sealed->broker p50/p99 ms "
        "| broker->stored p50/p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lat in r["latency"]:
        split = (
            f"{lat['to_broker_p50_ms']:.1f} / {lat['to_broker_p99_ms']:.1f} | "
            f"{lat['to_store_p50_ms']:.1f} / {lat['to_store_p99_ms']:.1f}"
            if "to_store_p50_ms" in lat
            else "| "
        )
        lines.append(
            f"| {lat['offered']}/s | {lat['achieved']:.0f}/s | {lat['p50_ms']:.1f} | "
            f"{lat['p95_ms']:.1f} | {lat['p99_ms']:.1f} | {split} |"
        )
    m = r["memory"]
    lines += [
        "",
        f"Memory over {m['records']:,} records (RSS, MiB):",
        "",
        "| process | at 10% | at 50% | at 90% | peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for proc in ("consumer", "auditor"):
        if proc in m:
            s = m[proc]
            lines.append(
                f"| {proc} | {s['rss_at_10pct_mib']:.0f} | {s['rss_at_50pct_mib']:.0f} | "
                f"{s['rss_at_90pct_mib']:.0f} | {s['peak_mib']:.0f} |"
            )
    f = r["floor"]
    lines += ["", "Floor on one core (us per operation):", "", "| operation | us |", "|---|---:|"]
    for key, val in f.items():
        if key.endswith("_us"):
            lines.append(f"| {key.removesuffix('_us').replace('_', ' ')} | {val:.1f} |")
    return "\n".join(lines) + "\n"


def curves_markdown(curves: list[dict[str, Any]]) -> str:
    """Each curve's numbers, its shape, and what it should do."""
    lines: list[str] = []
    for c in curves:
        lines += ["", f"**{c['title']}** ({c['x_label']})", ""]
        if c["key"] == "auditor":
            lines += [
                "| records | seconds | us per record | peak RSS MiB |",
                "|---:|---:|---:|---:|",
            ]
            for p in c["points"]:
                lines.append(
                    f"| {p['x']:,.0f} | {p['extra']['seconds']:.1f} | {p['consume_us']:.0f} | "
                    f"{p['extra']['peak_rss_mib']:.0f} |"
                )
            lines += ["", f"Time: {c['time_shape']}; peak memory: {c['memory_shape']}."]
        else:
            lines += ["| x | publish us/record | consume us/record |", "|---:|---:|---:|"]
            for p in c["points"]:
                lines.append(f"| {p['x']:g} | {p['publish_us']:.0f} | {p['consume_us']:.0f} |")
            lines += ["", f"Publish: {c['publish_shape']}; consume: {c['consume_shape']}."]
        lines.append(f"Should: {c['expect']}")
        if c["note"]:
            lines.append(f"Note: {c['note']}")
    return "\n".join(lines) + "\n"


def markdown(r: dict[str, Any]) -> str:
    """Details first, then the curves, then the target table (last, as printed)."""
    parts = []
    if "publish" in r:
        parts.append(details(r))
    if r.get("curves"):
        parts.append("Scale curves (cost per record; see bench/curves.py for how each is made):\n")
        parts.append(curves_markdown(r["curves"]))
    if "publish" in r:
        parts.append("\n## Targets (issue 19)\n\n" + targets.markdown(r))
    else:
        parts.insert(
            0,
            f"Measured {r['when']} with `{r['command']}`; the run took "
            f"{r['elapsed_s'] / 60:.0f} min.\n",
        )
    return "\n".join(parts)


if __name__ == "__main__":
    main()

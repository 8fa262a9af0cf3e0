"""Scale curves (issue 19): how publish and consume cost per record grow with the work.

Each curve grows one thing and keeps the rest as in the target table (TLP:RED sightings to 3
named forces, SQLite store, batches of 500), through the real publisher and consumer on the
run's broker: Kafka is the same at every point of a curve (one partition, the same byte sizes
except on the record-size curve), so it adds a constant, and going through it keeps every
change to the publisher and the consumer in the figures. The auditor's curve replays prefixes
of one long topic in a fresh process each (time and peak RSS of that process).

    (a) recipients named on a TLP:RED sighting: 1, 3, 10, 43, 64 (MAX_RECIPIENTS)
    (b) producers writing one topic, each its own identity in the directory: 1, 10, 50, 200
    (c) agencies in the directory: 10, 100, 300, 1,000
    (d) record size (free text in the description and people seen): 0.5 to 24 KiB of Avro
    (e) the auditor against topic length: 1k, 10k, 100k records
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.federation import BenchFederation, red_sightings, sized_sightings
from bench.pipeline import CHUNK, consume_pipeline, publish_timed
from intelbus.envelope import MAX_RECIPIENTS
from intelbus.records import Sighting

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Point:
    """One point of a curve: x, and the median cost per record (us) over the repetitions."""

    x: float
    publish_us: float
    consume_us: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Curve:
    """A measured curve, what it should do, and what it did."""

    key: str
    title: str
    x_label: str
    expect: str  # what the design says the cost should do, and why
    points: list[Point]
    note: str = ""
    log_x: bool = False

    def shape(self, attr: str) -> str:
        """'flat', 'linear' or 'sub-linear/irregular', judged on the cost per record."""
        return shape([p.x for p in self.points], [getattr(p, attr) for p in self.points])

    def extra_shape(self, key: str) -> str:
        return shape([p.x for p in self.points], [p.extra[key] for p in self.points])

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.key == "auditor":
            # Total time (linear expected) and peak memory (flat expected) against the length.
            out["time_shape"] = self.extra_shape("seconds")
            out["memory_shape"] = self.extra_shape("peak_rss_mib")
        else:
            out["publish_shape"] = self.shape("publish_us")
            out["consume_shape"] = self.shape("consume_us")
        return out


def shape(xs: Sequence[float], ys: Sequence[float]) -> str:
    """Flat: the largest cost per record within 25% of the smallest. Linear: a straight-line
    fit explains >= 90% of the variance and the line rises by more than 25% over the range.
    Anything else is reported as it is (sub-linear or irregular)."""
    clean = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(clean) < 2:
        return "n/a"
    lo, hi = min(y for _, y in clean), max(y for _, y in clean)
    if hi <= 1.25 * lo:
        return "flat"
    n = len(clean)
    mx = sum(x for x, _ in clean) / n
    my = sum(y for _, y in clean) / n
    sxx = sum((x - mx) ** 2 for x, _ in clean)
    sxy = sum((x - mx) * (y - my) for x, y in clean)
    syy = sum((y - my) ** 2 for _, y in clean)
    slope = sxy / sxx if sxx else 0.0
    r2 = (sxy * sxy) / (sxx * syy) if sxx and syy else 0.0
    return "linear" if r2 >= 0.9 and slope > 0 else "sub-linear or irregular"


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _point(
    fed: BenchFederation,
    work: Path,
    x: float,
    make: Callable[[int], dict[str, list[Sighting]]],
    *,
    named: Sequence[str],
    reps: int,
) -> Point:
    """Publish what ``make(rep)`` gives per producer (one after another) to fresh topics, then
    consume it all; median cost per record of each half over ``reps``."""
    pubs, cons = [], []
    for rep in range(reps):
        fed.prefix_topics_fresh()
        by_producer = make(rep)
        total = sum(len(r) for r in by_producer.values())
        timed = sum(len(r) - 1 for r in by_producer.values())  # each producer's first: untimed
        seconds = sum(
            publish_timed(fed, records, named, producer=producer)
            for producer, records in by_producer.items()
        )
        pubs.append(seconds / timed * 1e6)
        store = f"sqlite:///{work / f'curve-{uuid.uuid4().hex[:8]}.sqlite'}"
        cons.append(1e6 / consume_pipeline(fed, store, CHUNK, total))
    return Point(x, _median(pubs), _median(cons))


def recipients_curve(work: Path, bootstrap: str, n: int, reps: int, counts: list[int]) -> Curve:
    fed = BenchFederation(
        work / "fed-recipients", bootstrap, forces=MAX_RECIPIENTS, slots=len(counts) * reps + 1
    )
    points = []
    for k in counts:
        points.append(
            _point(
                fed,
                work,
                k,
                lambda rep: {"cst": red_sightings(n, seed=rep)},
                named=fed.forces[:k],
                reps=reps,
            )
        )
        _say_point("recipients", points[-1])
    return Curve(
        "recipients",
        "Cost per record against the recipients named",
        "recipients named on a TLP:RED sighting",
        "Publish should grow linearly with a small slope (each record carries one wrapped data "
        "key per recipient: bytes to hash, sign, send; the wrapping itself happens once per "
        "data key, not per record). A consumer opens only its own entry, so its cost should grow "
        "only with the bytes it verifies and parses.",
        points,
    )


def producers_curve(work: Path, bootstrap: str, n: int, reps: int, counts: list[int]) -> Curve:
    fed = BenchFederation(
        work / "fed-producers",
        bootstrap,
        forces=3,
        producers=max(counts),
        slots=len(counts) * reps + 1,
    )
    points = []
    for p in counts:
        per = max(2, n // p)

        def make(rep: int, p: int = p, per: int = per) -> dict[str, list[Sighting]]:
            return {
                producer: red_sightings(per, seed=1000 * rep + i)
                for i, producer in enumerate(fed.producers[:p])
            }

        points.append(_point(fed, work, p, make, named=fed.forces[:3], reps=reps))
        _say_point("producers", points[-1])
    return Curve(
        "producers",
        "Cost per record against the producers writing one topic",
        "producers (streams) writing one topic",
        "Both should be flat: a stream's chain head and a producer's keys are looked up by id, "
        "so a consumer reading 200 streams does per record what it does for one.",
        points,
        note=f"{n} records in all, split evenly between the producers, each publishing its share "
        "in one go (one after another, so the topic holds each stream's records together); each "
        "producer's first record is untimed (it connects). A producer's publish cost does not "
        "depend on the others (each is its own process in a deployment); it rises here because "
        "each producer's share shrinks, so its fixed cost per publish_many call (one durable "
        "reservation, waiting for the acknowledgements) is spread over fewer records. The "
        "consume cost is the curve's point. The directory lists "
        f"{fed.agency_count} agencies at every point.",
        log_x=True,
    )


def directory_curve(work: Path, bootstrap: str, n: int, reps: int, sizes: list[int]) -> Curve:
    points = []
    for size in sizes:
        fed = BenchFederation(
            work / f"fed-dir-{size}", bootstrap, forces=3, agencies=size, slots=reps + 1
        )
        points.append(
            _point(
                fed,
                work,
                fed.agency_count,
                lambda rep: {"cst": red_sightings(n, seed=rep)},
                named=fed.forces[:3],
                reps=reps,
            )
        )
        _say_point("directory", points[-1])
    return Curve(
        "directory",
        "Cost per record against the directory's size",
        "agencies in the directory",
        "Both should be flat: keys and agencies are looked up by id; only loading the directory "
        "(once, at start-up, untimed here) grows with it.",
        points,
        log_x=True,
    )


def size_curve(work: Path, bootstrap: str, n: int, reps: int, sizes: list[int]) -> Curve:
    fed = BenchFederation(work / "fed-size", bootstrap, forces=3, slots=len(sizes) * reps + 1)
    points = []
    for chars in sizes:
        sample = sized_sightings(1, chars)[0]
        from intelbus.serde.registry import SchemaRegistry  # noqa: PLC0415 - once per point

        kib = len(SchemaRegistry.load().encode(sample.SCHEMA, sample.to_avro())[1]) / 1024
        # Fewer records for the largest, so every point moves about the same bytes at most.
        count = max(200, min(n, int(n * 2 / max(kib, 2))))

        def make(rep: int, c: int = chars, k: int = count) -> dict[str, list[Sighting]]:
            return {"cst": sized_sightings(k, c, seed=rep)}

        point = _point(
            fed,
            work,
            round(kib, 1),
            make,
            named=fed.forces[:3],
            reps=reps,
        )
        points.append(point)
        _say_point("record size", point)
    return Curve(
        "size",
        "Cost per record against the record's size",
        "record size (KiB of Avro payload)",
        "Should grow linearly: encryption, hashing, Avro and the bytes sent all scale with the "
        "payload, on top of a fixed cost per record (one signature, one verification).",
        points,
        note="The record schema caps free text (description 4,000 characters, 50 people of 200-"
        "character fields), so the largest valid sighting is about 24 KiB of Avro; larger sizes "
        "(32, 128 KiB) cannot be made of valid records. Fewer records are sent at the larger "
        "sizes.",
        log_x=True,
    )


def auditor_curve(fed: BenchFederation, topic: str, lengths: list[int], reps: int) -> Curve:
    """Replay the first ``length`` records of ``topic`` (which holds at least max(lengths)) in a
    fresh process each time: seconds and peak RSS of that process."""
    points = []
    for length in lengths:
        runs = [_audit_child(fed, topic, length) for _ in range(reps)]
        us = _median([r["seconds"] / max(1, r["records"]) * 1e6 for r in runs])
        # The auditor stops at a batch boundary after ``length``: x is what it read.
        point = Point(
            runs[0]["records"],
            float("nan"),
            us,
            {
                "seconds": _median([r["seconds"] for r in runs]),
                "peak_rss_mib": max(r["rss_mb"] for r in runs),
                "records": runs[0]["records"],
            },
        )
        points.append(point)
        print(
            f"  auditor {length:>9,}: {point.extra['seconds']:.1f} s, {us:.0f} us/record, "
            f"peak {point.extra['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )
    return Curve(
        "auditor",
        "The auditor against the topic's length",
        "records replayed",
        "Time should grow linearly (a constant cost per record) and peak memory should stay "
        "flat: the auditor's caches are bounded and its ledger of record ids is on disk.",
        points,
        note="`consumers.audit.run.audit` over the run's broker, in a fresh process per point "
        "(bench/audit_bench.py's child), verifying without decrypting; time excludes the "
        "interpreter's start-up but includes connecting and the last empty fetch (a constant "
        "that dominates short topics), so the time per record falls at first.",
        log_x=False,
    )


def _audit_child(fed: BenchFederation, topic: str, limit: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "audit_bench.py"),
            "--child",
            "audit",
            fed.bootstrap,
            topic,
            str(fed.root / "directory"),
            str(os.cpu_count() or 1),
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "INTELBUS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _say_point(curve: str, p: Point) -> None:
    print(
        f"  {curve} {p.x:>7g}: publish {p.publish_us:.0f} us/record, "
        f"consume {p.consume_us:.0f} us/record",
        file=sys.stderr,
        flush=True,
    )


@dataclass(frozen=True)
class CurveSettings:
    """How big each curve is (records per point, repetitions, and the x values)."""

    records: int = 2000
    reps: int = 1
    recipients: list[int] = field(default_factory=lambda: [1, 3, 10, 43, MAX_RECIPIENTS])
    producers: list[int] = field(default_factory=lambda: [1, 10, 50, 200])
    directory: list[int] = field(default_factory=lambda: [10, 100, 300, 1000])
    free_text: list[int] = field(default_factory=lambda: [300, 2000, 8000, 16000, 24000])
    audit_lengths: list[int] = field(default_factory=lambda: [1000, 10_000, 100_000])

    @classmethod
    def quick(cls) -> CurveSettings:
        return cls(
            records=300,
            recipients=[1, 10, MAX_RECIPIENTS],
            producers=[1, 5, 20],
            directory=[10, 200],
            free_text=[300, 8000, 24000],
            audit_lengths=[200, 1000, 3000],
        )


def publish_long_topic(fed: BenchFederation, count: int) -> str:
    """``count`` RED sightings to 3 forces on a fresh topic set, in big chunks; the topic."""
    fed.prefix_topics_fresh()
    from producers.config import ProducerConfig  # noqa: PLC0415
    from producers.publisher import build_publisher  # noqa: PLC0415

    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        for i in range(0, count, 2000):
            publisher.publish_many(
                red_sightings(min(2000, count - i), seed=i), named=list(fed.forces[:3])
            )
    finally:
        publisher.close()
    return fed.sightings_topic


def all_curves(
    work: Path,
    bootstrap: str,
    settings: CurveSettings,
    audit_topic: tuple[BenchFederation, str] | None = None,
) -> list[Curve]:
    """Every curve; the auditor's reuses ``audit_topic`` when it is long enough."""
    s = settings

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    say("== scale curve: recipients")
    curves = [recipients_curve(work, bootstrap, s.records, s.reps, s.recipients)]
    say("== scale curve: producers writing one topic")
    curves.append(producers_curve(work, bootstrap, s.records, s.reps, s.producers))
    say("== scale curve: directory size")
    curves.append(directory_curve(work, bootstrap, s.records, s.reps, s.directory))
    say("== scale curve: record size")
    curves.append(size_curve(work, bootstrap, s.records, s.reps, s.free_text))
    say("== scale curve: the auditor against topic length")
    longest = max(s.audit_lengths)
    if audit_topic is None:
        fed = BenchFederation(work / "fed-audit", bootstrap, forces=3, slots=2)
        audit_topic = (fed, publish_long_topic(fed, longest))
    curves.append(auditor_curve(audit_topic[0], audit_topic[1], s.audit_lengths, s.reps))
    return curves

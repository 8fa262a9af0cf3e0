"""The benchmark's verdicts (bench/targets.py, bench/curves.py): pure rules, no timing."""

from __future__ import annotations

from typing import Any

from bench.curves import shape
from bench.federation import sized_sightings
from bench.targets import rows, rss_flat


def _results(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "publish": {
            "3": {"sealed_rps": 900.0, "baseline_rps": 1000.0, "ratio": 0.9, "sealed_bytes": 800}
        },
        "consume": {"plain_rps": 10_000.0, "sqlite_batch500": {"rps": 4000.0, "ratio": 0.4}},
        "latency": [
            {"offered": 1000, "achieved": 1000.0, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 60.0},
            {"offered": 5000, "achieved": 3000.0, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 90.0},
        ],
    }
    base.update(extra)
    return base


def test_each_target_gets_its_verdict() -> None:
    by_figure = {
        r.figure: r for r in rows(_results(rdkafka_publish={"why": "n/a (x)", "ratio": None}))
    }
    assert (
        by_figure[
            "sealed publish, 3 recipients, vs plain kafka-python produce of the same bytes"
        ].verdict
        == "met"
    )  # 0.9 >= 0.85
    assert (
        by_figure["consume pipeline into SQLite vs plain kafka-python consume"].verdict == "missed"
    )
    assert (
        by_figure["consume pipeline into PostgreSQL vs plain kafka-python consume"].verdict == "n/a"
    )
    assert by_figure["publish-to-stored p99 at 1,000 records/s offered"].verdict == "missed"
    assert by_figure["publish-to-stored p99 at 5,000 records/s offered"].verdict == "reported"
    rd = by_figure["sealed publish with the librdkafka transport vs plain kafka-python produce"]
    assert (rd.measured, rd.verdict) == ("n/a (x)", "n/a")


def test_librdkafka_row_uses_its_ratio() -> None:
    r = _results(rdkafka_publish={"sealed_rps": 3500.0, "baseline_rps": 1000.0, "ratio": 3.5})
    row = next(x for x in rows(r) if "librdkafka" in x.figure)
    assert (row.ratio, row.verdict) == ("3.50x", "met")


def test_rss_flat_rule() -> None:
    flat = {"rss_at_10pct_mib": 200.0, "rss_at_90pct_mib": 219.0}  # +19 <= max(20, 16)
    grows = {"rss_at_10pct_mib": 100.0, "rss_at_90pct_mib": 117.0}  # +17 > max(10, 16)
    assert rss_flat(flat)
    assert not rss_flat(grows)


def test_curve_shapes() -> None:
    assert shape([1, 10, 100], [100, 110, 120]) == "flat"
    assert shape([1, 10, 43, 64], [100, 250, 760, 1080]) == "linear"
    assert shape([1, 10, 100, 1000], [100, 300, 100, 290]) == "sub-linear or irregular"


def test_sized_sightings_reach_their_size_within_the_schema() -> None:
    small, large = sized_sightings(1, 300)[0], sized_sightings(1, 24_000)[0]
    assert len(small.description) == 300
    assert len(large.description) == 4000  # the schema's cap; the rest goes to people seen
    assert len(large.persons) == 50

"""Issue 19's target table: every figure of one run, its ratio, the target, met or missed.

Built from the results ``bench/perf.py`` gathers; printed last and written to
``bench/results/latest.{json,md}``. A figure the run did not measure says why instead of a number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: RSS is "flat" when, from 10% to 90% of the run, it grows by at most this fraction of its value
#: at 10% or by FLAT_MIB, whichever is larger: a bounded process settles its caches early, while a
#: per-record leak over a million records grows far beyond either.
FLAT_FRACTION = 0.10
FLAT_MIB = 16.0
FLAT_RULE = (
    f"flat = RSS at 90% of the run within {FLAT_FRACTION:.0%} (or {FLAT_MIB:.0f} MiB, whichever "
    "is larger) of RSS at 10%"
)


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    ratio: str
    target: str
    verdict: str  # met, missed, reported, n/a


def _ratio_row(figure: str, measured: str, ratio: float | None, floor: float) -> Row:
    if ratio is None:
        return Row(figure, measured, "n/a", f">= {floor:g}x", "n/a")
    return Row(figure, measured, f"{ratio:.2f}x", f">= {floor:g}x", _met(ratio >= floor))


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def _consume_key(consume: dict[str, Any], backend: str) -> str | None:
    keys = [k for k in consume if k.startswith(f"{backend}_batch")]
    # The consumer's default batch (500) when measured: that is what a deployment runs.
    return f"{backend}_batch500" if f"{backend}_batch500" in keys else (keys[0] if keys else None)


def rss_flat(sample: dict[str, float]) -> bool:
    start = sample["rss_at_10pct_mib"]
    return sample["rss_at_90pct_mib"] - start <= max(FLAT_FRACTION * start, FLAT_MIB)


def rows(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    pub = r.get("publish", {}).get("3")
    if pub:
        out.append(
            _ratio_row(
                "sealed publish, 3 recipients, vs plain kafka-python produce of the same bytes",
                f"{pub['sealed_rps']:,.0f}/s vs {pub['baseline_rps']:,.0f}/s "
                f"({pub['sealed_bytes']} B)",
                pub["ratio"],
                0.85,
            )
        )
    consume = r.get("consume", {})
    for backend, floor, label in (("sqlite", 0.5, "SQLite"), ("postgres", 0.3, "PostgreSQL")):
        key = _consume_key(consume, backend)
        figure = f"consume pipeline into {label} vs plain kafka-python consume"
        if key is None:
            reason = "not measured in this run" if backend == "sqlite" else "no PostgreSQL here"
            out.append(Row(figure, reason, "n/a", f">= {floor:g}x", "n/a"))
            continue
        c = consume[key]
        batch = key.split("_batch")[1]
        out.append(
            _ratio_row(
                figure,
                f"{c['rps']:,.0f}/s vs {consume['plain_rps']:,.0f}/s (batch {batch})",
                c["ratio"],
                floor,
            )
        )
    audit = r.get("audit")
    if audit:
        out.append(
            _ratio_row(
                "audit replay vs the one-core Ed25519 verify floor",
                f"{audit['rps']:,.0f}/s vs {audit['verify_floor_one_core_rps']:,.0f}/s, "
                f"floor measured beside the replay ({audit['records']:,} records)",
                audit["vs_verify_floor"],
                2,
            )
        )
    rd = r.get("rdkafka_publish")
    figure = "sealed publish with the librdkafka transport vs plain kafka-python produce"
    if rd and rd.get("ratio") is not None:
        out.append(
            _ratio_row(
                figure,
                f"{rd['sealed_rps']:,.0f}/s vs {rd['baseline_rps']:,.0f}/s",
                rd["ratio"],
                3,
            )
        )
    else:
        why = rd["why"] if rd else "not measured in this run"
        out.append(Row(figure, why, "n/a", ">= 3x", "n/a"))
    for lat in r.get("latency", []):
        rate = lat["offered"]
        figure = f"publish-to-stored p99 at {rate:,} records/s offered"
        measured = f"p99 {lat['p99_ms']:.1f} ms (p50 {lat['p50_ms']:.1f}; achieved {lat['achieved']:,.0f}/s)"
        if rate == 1000:
            out.append(Row(figure, measured, "", "<= 50 ms", _met(lat["p99_ms"] <= 50)))
        else:
            out.append(Row(figure, measured, "", "reported", "reported"))
    memory = r.get("memory")
    if memory:
        for proc in ("consumer", "auditor"):
            s = memory.get(proc)
            if not s:
                continue
            out.append(
                Row(
                    f"{proc} RSS over {memory['records']:,} records",
                    f"{s['rss_at_10pct_mib']:.0f} -> {s['rss_at_50pct_mib']:.0f} -> "
                    f"{s['rss_at_90pct_mib']:.0f} MiB at 10/50/90% (peak {s['peak_mib']:.0f})",
                    "",
                    "flat"
                    + ("" if memory["records"] >= 1_000_000 else " over 1,000,000 (smaller run)"),
                    _met(rss_flat(s)),
                )
            )
    return out


def markdown(r: dict[str, Any]) -> str:
    """The target table, with where and how it was measured."""
    v = r["versions"]
    lines = [
        f"Measured {r['when']} with `{r['command']}` on {r['cpus']} CPUs ({r['machine']}, "
        f"{r.get('cpu_model', 'unknown CPU')}); Kafka {v['kafka']}, kafka-python "
        f"{v['kafka-python']}, confluent-kafka {v.get('confluent-kafka', 'absent')}, PyNaCl "
        f"{v['pynacl']}, fastavro {v['fastavro']}, Python {v['python']}; {r['records']:,} "
        f"records per throughput run, median of {r['reps']}; the run took "
        f"{r.get('elapsed_s', 0) / 60:.0f} min.",
        "",
        "| figure | measured | ratio | target | verdict |",
        "|---|---|---:|---|---|",
    ]
    for row in rows(r):
        lines.append(
            f"| {row.figure} | {row.measured} | {row.ratio} | {row.target} | **{row.verdict}** |"
        )
    lines += ["", f"RSS rule: {FLAT_RULE}."]
    return "\n".join(lines) + "\n"


def as_json(r: dict[str, Any]) -> list[dict[str, str]]:
    return [asdict(row) for row in rows(r)]

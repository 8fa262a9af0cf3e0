"""Sealed publish against plain kafka-python produce, side by side on one broker (issue 19's
publish rows, alone): ``baseline_produce`` and ``sealed_publish`` of bench/perf.py alternated,
``--reps`` times, with the producer config's default client and with ``confluent-kafka``.

    PYTHONPATH=$PWD python -m bench.publish_ratio                  # starts a broker
    KAFKA_BOOTSTRAP_SERVERS=host:port PYTHONPATH=$PWD python -m bench.publish_ratio --json

Prints the medians and the ratios (sealed over plain produce of the same bytes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.federation import BenchFederation
from bench.perf import (
    RDKAFKA,
    baseline_produce,
    median,
    rdkafka_available,
    sealed_publish,
    use_client,
)
from deploy.kafka.provider import provide_kafka
from intelbus.log import configure


def measure(bootstrap: str, records: int, reps: int, recipients: int) -> dict[str, object]:
    """Per rep: sealed (default client), plain produce of the sealed size, sealed (librdkafka)."""
    with tempfile.TemporaryDirectory(prefix="intelbus-ratio-") as tmp:
        fed = BenchFederation(Path(tmp) / "fed", bootstrap, slots=4 + 2 * reps)
        sealed: list[float] = []
        plain: list[float] = []
        fast: list[float] = []
        for _ in range(reps):
            rate, size = sealed_publish(fed, records, recipients)
            sealed.append(rate)
            plain.append(baseline_produce(bootstrap, records, size)[0])
            if rdkafka_available() is None:
                use_client(fed, RDKAFKA)
                try:
                    fast.append(sealed_publish(fed, records, recipients)[0])
                finally:
                    use_client(fed, None)
        out: dict[str, object] = {
            "records": records,
            "recipients": recipients,
            "sealed_bytes": size,
            "plain_rps": plain,
            "sealed_rps": sealed,
            "sealed_rdkafka_rps": fast,
            "ratio": median(sealed) / median(plain),
        }
        if fast:
            out["ratio_rdkafka"] = median(fast) / median(plain)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--recipients", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="One JSON line, no table.")
    args = parser.parse_args()
    configure(level="WARNING")
    with provide_kafka(nodes=1) as kafka:
        r = measure(kafka.bootstrap_servers, args.records, args.reps, args.recipients)
    if args.json:
        print(json.dumps(r))
        return
    for name in ("plain_rps", "sealed_rps", "sealed_rdkafka_rps"):
        rates = r[name]
        assert isinstance(rates, list)  # noqa: S101 - a harness self-check
        if rates:
            print(f"{name:20s} median {median(rates):9.0f}  samples {[round(x) for x in rates]}")
    print(f"sealed / plain (kafka-python): {r['ratio']:.2f}x  (target >= 0.85x)")
    if "ratio_rdkafka" in r:
        print(f"sealed (confluent-kafka) / plain: {r['ratio_rdkafka']:.2f}x  (target >= 3x)")


if __name__ == "__main__":
    main()

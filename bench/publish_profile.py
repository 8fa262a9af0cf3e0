"""Where a publisher's time goes, with no broker: ``publish_many`` of 3-recipient TLP:RED
sightings through a :class:`~producers.publisher.Publisher` whose transport only collects the
sealed bytes (a profiling harness, never a delivery test: nothing here reaches Kafka).

    PYTHONPATH=$PWD python -m bench.publish_profile              # us/record, then the top functions
    PYTHONPATH=$PWD python -m bench.publish_profile --records 5000 --top 40 --sort tottime

It measures the Python the producer process runs per record besides kafka-python's own send()
(about 85 us per record on this machine, docs/performance.md): what stands between sealed
publishing and the plain client.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.federation import FORCES, BenchFederation, red_sightings
from intelbus.directory import store as dstore
from intelbus.identity import AgencyIdentity
from intelbus.log import configure
from intelbus.policy.agreement import SharingAgreement
from intelbus.serde.registry import SchemaRegistry
from producers import publisher as publisher_module
from producers.config import ProducerConfig
from producers.publisher import Publisher
from producers.state import ProducerState

CHUNK = 500  # as bench/perf.py's sealed_publish


class _CollectingTransport:
    """Stands in for intelbus.transport.kafka in the publisher module: keeps the bytes, acks all."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.offset = 0

    def make_producer(self, *_: Any, **__: Any) -> object:  # noqa: ANN401 - any settings
        return object()

    def partition_count(self, *_: Any) -> int:  # noqa: ANN401
        return 1

    def send_many(
        self, _producer: object, items: Sequence[tuple[str, bytes, int | None]], **_: object
    ) -> list[tuple[int, int]]:
        out = []
        for _topic, value, partition in items:
            self.sent.append(value)
            out.append((partition or 0, self.offset))
            self.offset += 1
        return out

    def close_producer(self, *_: Any, **__: Any) -> None:  # noqa: ANN401
        return None


@contextmanager
def collecting_publisher(work: Path) -> Iterator[tuple[Publisher, _CollectingTransport]]:
    """A publisher for the bench federation's CST, with the collecting transport patched in."""
    fed = BenchFederation(work / "fed", "localhost:9", create_topics=False)
    config = ProducerConfig.load(fed.root / "producer.toml")
    fake = _CollectingTransport()
    real = publisher_module.transport
    publisher_module.transport = fake  # type: ignore[assignment]
    publisher = Publisher(
        identity=AgencyIdentity.load(config.key_file),
        directory=dstore.load_folder(config.directory),
        agreement=SharingAgreement.load(config.agreement),
        registry=SchemaRegistry.load(),
        state=ProducerState(config.state_file),
        bootstrap_servers="localhost:9",
        environment=config.environment,
        topic_prefix=config.topic_prefix,
    )
    try:
        yield publisher, fake
    finally:
        publisher.close()
        publisher_module.transport = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--recipients", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    parser.add_argument("--no-profile", action="store_true", help="Only the timing.")
    args = parser.parse_args()
    configure(level="WARNING")
    records = red_sightings(args.records + 1)
    named = list(FORCES[: args.recipients])
    with (
        tempfile.TemporaryDirectory(prefix="intelbus-pubprof-") as tmp,
        collecting_publisher(Path(tmp)) as (publisher, fake),
    ):
        publisher.publish_many(records[:1], named=named)  # warm: partition, data key

        def publish_all() -> None:
            for i in range(1, len(records), CHUNK):
                publisher.publish_many(records[i : i + CHUNK], named=named)

        start, cpu = time.perf_counter(), time.process_time()
        publish_all()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        # CPU time as well as wall time: on a shared machine the wall clock counts other loads.
        print(
            f"{elapsed / args.records * 1e6:.1f} us/record of publisher work, "
            f"{cpu / args.records * 1e6:.1f} us/record CPU ({args.records} records, untraced)"
        )
        if args.no_profile:
            return
        records = red_sightings(args.records + 1, seed=7)
        profiler = cProfile.Profile()
        profiler.enable()
        publish_all()
        profiler.disable()
        assert len(fake.sent) == 2 * args.records + 1  # noqa: S101 - a harness self-check
    stats = pstats.Stats(profiler)
    stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()

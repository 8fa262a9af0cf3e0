"""Does sealing chunk k+1 on a worker thread, while chunk k is reserved, sent and acknowledged,
make publishing faster? An experiment, not the publisher: it runs the publisher's own steps
(``_prepare``, ``seal_batch``, ``reserve_many``, ``send_many``, ``acknowledge_many``) in the same
order per chunk, once in sequence and once with the next chunk's sealing overlapped, alternating,
on one broker (docs/performance.md, "Both cores for the publisher").

    KAFKA_BOOTSTRAP_SERVERS=host:port PYTHONPATH=$PWD python -m bench.publish_overlap --client confluent-kafka
    PYTHONPATH=$PWD python -m bench.publish_overlap                  # starts a broker
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.federation import BenchFederation, red_sightings
from bench.perf import use_client
from deploy.kafka.provider import provide_kafka
from intelbus.envelope import MAX_BATCH, BatchItem, seal_batch
from intelbus.errors import SendFailed
from intelbus.log import configure
from intelbus.records import Sighting
from producers import publisher as pm
from producers.config import ProducerConfig
from producers.state import Reservation, StreamHead

CHUNK = 500  # as bench/perf.py's sealed_publish


def seal_chunk(
    pub: pm.Publisher, records: list[Sighting], named: list[str], head: StreamHead
) -> tuple[list[Reservation], StreamHead]:
    """Prepare and seal a chunk continuing ``head`` (in memory: not yet reserved)."""
    lookups = pub._lookups()
    prepared = [pub._prepare(r, named, None, lookups) for r in records]
    out = []
    for start in range(0, len(prepared), MAX_BATCH):
        chunk = prepared[start : start + MAX_BATCH]
        items = [
            BatchItem(
                p.kind,
                head.next_sequence + k,
                head.last_digest if k == 0 else None,
                p.fingerprint,
                p.payload,
                p.keys,
                p.target,
                p.record_id,
            )
            for k, p in enumerate(chunk)
        ]
        batch = seal_batch(
            pub.identity,
            items,
            environment=pub.environment,
            topic=head.stream,
            partition=head.partition,
            datakeys=pub.datakeys,
        )
        for p, s in zip(chunk, batch, strict=True):
            content = pm._content_digest(p.payload)
            out.append(Reservation(head, str(p.record_id), s.digest, s.data, content))
            head = StreamHead(head.stream, head.next_sequence, s.digest, head.partition, head.epoch)
    return out, head


def send_chunk(pub: pm.Publisher, reservations: list[Reservation]) -> None:
    """Reserve durably, send, wait for every acknowledgement, record them."""
    pub.state.reserve_many(reservations)
    results = pm.transport.send_many(
        pub._producer,
        [(r.head.stream, r.sealed, r.head.partition) for r in reservations],
        key=pub.identity.agency_id.encode(),
    )
    acks = []
    for r, result in zip(reservations, results, strict=True):
        if isinstance(result, SendFailed):
            raise result
        acks.append((r.record_id, *result))
    pub.state.acknowledge_many(acks)


def one_run(fed: BenchFederation, records: int, *, overlap: bool) -> float:
    """Records/s of one fresh stream, sequential or overlapped."""
    fed.prefix_topics_fresh()
    sightings = red_sightings(records + 1, seed=5)
    named = list(fed.forces[:3])
    pub = pm.build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        pub.publish(sightings[0], named=named)  # connects, binds the partition
        head = pub._head(pub.topic_for(sightings[1]))
        chunks = [sightings[i : i + CHUNK] for i in range(1, records + 1, CHUNK)]
        start = time.perf_counter()
        if not overlap:
            for chunk in chunks:
                reservations, head = seal_chunk(pub, chunk, named, head)
                send_chunk(pub, reservations)
        else:
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(seal_chunk, pub, chunks[0], named, head)
                for k in range(len(chunks)):
                    reservations, head = future.result()
                    if k + 1 < len(chunks):
                        future = pool.submit(seal_chunk, pub, chunks[k + 1], named, head)
                    send_chunk(pub, reservations)
        return records / (time.perf_counter() - start)
    finally:
        pub.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--client", default=None, help='e.g. "confluent-kafka"')
    args = parser.parse_args()
    configure(level="WARNING")
    with (
        provide_kafka(nodes=1) as kafka,
        tempfile.TemporaryDirectory(prefix="intelbus-overlap-") as tmp,
    ):
        fed = BenchFederation(Path(tmp) / "fed", kafka.bootstrap_servers, slots=2 + 2 * args.reps)
        use_client(fed, args.client)
        seq, over = [], []
        for _ in range(args.reps):
            seq.append(one_run(fed, args.records, overlap=False))
            over.append(one_run(fed, args.records, overlap=True))
    print(
        f"client={args.client or 'default'} sequential {statistics.median(seq):.0f} rec/s "
        f"{[round(x) for x in seq]}, overlapped {statistics.median(over):.0f} rec/s "
        f"{[round(x) for x in over]}, ratio {statistics.median(over) / statistics.median(seq):.2f}"
    )


if __name__ == "__main__":
    main()

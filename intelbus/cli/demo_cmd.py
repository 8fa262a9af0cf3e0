"""``intelbus demo``: the README's main job on embedded defaults.

Until the end-to-end pipeline lands this is a smoke round trip: start (or reach) a broker, create
the bus topics with their durable settings, publish a few records with headers, read them back and
print a summary. The end-to-end issue replaces the body with the full CST-to-police demo.
"""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

from deploy.kafka.provider import provide_kafka
from intelbus.errors import KafkaUnavailableError
from intelbus.transport import kafka as transport
from intelbus.transport.topics import Family, bus_topics, topic_name

console = Console()


def demo(
    records: int = typer.Option(20, "--records", min=1, max=100_000, help="Records to round-trip."),
) -> None:
    """Start a local Kafka (or use KAFKA_BOOTSTRAP_SERVERS) and round-trip records through it."""
    started = time.monotonic()
    try:
        with provide_kafka() as provided:
            bootstrap = provided.bootstrap_servers
            console.print(f"Kafka ({provided.provider}, {provided.nodes} node(s)) at {bootstrap}")
            prefix = f"demo{int(time.time())}"
            transport.create_topics(bootstrap, bus_topics(prefix=prefix))
            topic = topic_name(Family.SIGHTINGS, prefix=prefix)
            producer = transport.make_producer(bootstrap)
            try:
                offsets = [
                    producer.send(
                        topic,
                        value=f"smoke-{i}".encode(),
                        key=b"cst",
                        headers=[("n", str(i).encode())],
                    ).get(timeout=30)
                    for i in range(records)
                ]
            finally:
                producer.close()
            consumer = transport.make_consumer(
                bootstrap, topic, group_id=None, consumer_timeout_ms=10_000
            )
            try:
                received = 0
                for _ in consumer:
                    received += 1
                    if received == records:
                        break
            finally:
                consumer.close()
    except KafkaUnavailableError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(3) from None
    table = Table(title="intelbus smoke round trip")
    for col in ("topic", "published", "received", "partitions used", "seconds"):
        table.add_column(col)
    table.add_row(
        topic,
        str(len(offsets)),
        str(received),
        str(len({m.partition for m in offsets})),
        f"{time.monotonic() - started:.1f}",
    )
    console.print(table)
    if received != records:
        raise typer.Exit(1)

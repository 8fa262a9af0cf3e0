"""Liveness is not completeness; a signed record is still hostile input (issue 20) on the REAL
broker, on SQLite and on PostgreSQL.

* **Deleted while heartbeats flow** (an operator with the admin's rights, a broker that withholds):
  CST's records are deleted from the sightings topic (``DeleteRecords`` to the end) before Herts
  reads them; CST's heartbeats keep flowing. Every deleted record is reported missing, with its
  sequence range, by ``intelbus store feeds`` (exit 1) and by the auditor (``records_missing``,
  exit 1), and CST's next genuine records are stored.
* **A heartbeat appended again** (an insider holding a copy): CST's first heartbeat is deleted
  before Herts reads it, then its bytes are appended again later. It is authentic and fills its
  chain's gap, but it must not lend the feed its new broker time.
* **Signed hostile values** through the real consumer loop: the consumer refuses them under their
  reason codes, commits its offsets past them, restarts on the same store and reads it back.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.errors import ReasonCode
from intelbus.kinds import Family, RecordKind
from intelbus.records import Heartbeat
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import Publisher, build_publisher
from tests.attacks.report import (
    attack_result,
    availability_result,
    completeness_result,
    genuine_result,
)
from tests.federation import Federation
from tests.federation import sighting_for as _sighting

pytestmark = pytest.mark.kafka
R = ReasonCode
HERTS = "herts-police"


@pytest.fixture
def fed(tmp_path: Path, bootstrap: str, store_url: str) -> Federation:
    return Federation(tmp_path, bootstrap, store_url)


def _publisher(fed: Federation) -> Publisher:
    return build_publisher(ProducerConfig.load(fed.root / "producer.toml"))


def _delete_everything(fed: Federation, topic: str) -> int:
    """What an operator can do: move every partition's log start to its end. Returns how many
    records went."""
    ends = transport.end_offsets(fed.bootstrap, topic)
    with transport.admin_client(fed.bootstrap) as admin:
        admin.delete_records({TopicPartition(topic, p): end for p, end in ends.items() if end})
    return sum(ends.values())


def _feeds(fed: Federation) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(
        app,
        ["store", "feeds", "--store", fed.stores[HERTS], "--settle", "0", "--json"],
    )
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return result.exit_code, lines


def _audit(fed: Federation, topic: str) -> tuple[int, list[dict[str, Any]], str]:
    report = fed.root / f"audit-{uuid.uuid4().hex[:6]}.json"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            topic,
            "--directory",
            str(fed.root / "directory"),
            "--bootstrap-servers",
            fed.bootstrap,
            "--key-file",
            str(fed.root / "keys" / "inspectorate.key"),
            "--report",
            str(report),
        ],
    )
    findings = json.loads(report.read_text())["findings"] if report.exists() else []
    return result.exit_code, findings, result.output


def _genuine_flows(fed: Federation, case: str, count: int = 3) -> None:
    records = [_sighting("HERTFORDSHIRE", "GREEN") for _ in range(count)]
    fed.publish(records)
    fed.consume(HERTS)
    store = open_store(fed.stores[HERTS])
    try:
        kept = sum(
            1
            for r in records
            if (v := store.get(r.record_id, "cst")) is not None and v.status == "live"
        )
    finally:
        store.close()
    genuine_result(case=case, source="broker", published=count, kept=kept)
    assert kept == count, f"{case}: {count - kept} genuine record(s) lost"


def test_records_deleted_while_heartbeats_flow_are_reported_missing(fed: Federation) -> None:
    sightings = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(4)])
    deleted = _delete_everything(fed, sightings)
    assert deleted == 4
    publisher = _publisher(fed)
    try:
        publisher.heartbeat(30)
    finally:
        publisher.close()
    stats = fed.consume(HERTS)
    assert stats.stored == 0
    code, lines = _feeds(fed)
    missing = [x for x in lines if x.get("missing")]
    reported = sum(int(x["count"]) for x in missing if x["topic"] == sightings)
    completeness_result(
        case="completeness.deleted_while_heartbeats_flow",
        source="broker",
        withheld=deleted,
        reported=reported,
    )
    assert code == 1
    assert [(x["producer"], x["first_sequence"], x["last_sequence"]) for x in missing] == [
        ("cst", 0, 3)
    ]
    assert [x["stale"] for x in lines if not x.get("missing")] == [False]
    # The auditor, replaying the same topic with its key (it reads the heartbeats beside it),
    # reports the same range.
    code, findings, output = _audit(fed, sightings)
    assert code == 1, output
    gone = [f for f in findings if f["reason"] == "records_missing"]
    assert len(gone) == 1, findings
    assert "sequence 0-3 (4 record(s))" in gone[0]["message"], gone[0]
    _genuine_flows(fed, "completeness.deleted_while_heartbeats_flow")
    code, lines = _feeds(fed)
    assert code == 1  # still missing: deleted records never come back, and nothing pretends so
    assert [(x["first_sequence"], x["last_sequence"]) for x in lines if x.get("missing")] == [
        (0, 3)
    ]


def test_a_heartbeat_appended_again_does_not_refresh_its_feed(fed: Federation) -> None:
    heartbeats = topic_name(Family.HEARTBEATS, prefix=fed.prefix)
    publisher = _publisher(fed)
    try:
        first = publisher.heartbeat(30)
        second = publisher.heartbeat(30)
    finally:
        publisher.close()
    copy = next(
        m.value
        for m in _read(fed, heartbeats)
        if (m.partition, m.offset) == (first.partition, first.offset)
    )
    with transport.admin_client(fed.bootstrap) as admin:
        admin.delete_records({TopicPartition(heartbeats, first.partition): second.offset})
    fed.consume(HERTS)
    store = open_store(fed.stores[HERTS])
    try:
        (feed,) = store.feeds()
    finally:
        store.close()
    insider = transport.make_producer(fed.bootstrap)
    try:
        transport.send_and_wait(insider, heartbeats, copy, key=b"cst", partition=first.partition)
    finally:
        insider.close()
    stats = fed.consume(HERTS)
    store = open_store(fed.stores[HERTS])
    try:
        (after,) = store.feeds()
        quarantined = {q.reason for q in store.quarantine_entries(100)}
    finally:
        store.close()
    unchanged = after.at == feed.at
    attack_result(
        case="freeze.heartbeat_appended_again",
        source="broker",
        expected_reason="no_refresh",
        outcome="rejected" if unchanged else "accepted",
        reason="no_refresh" if unchanged else "refreshed",
        trusted_state_unchanged=unchanged,
    )
    assert stats.quarantined == {}  # authentic and in its place: it fills its chain's gap
    assert quarantined == set()
    assert after.at == feed.at, "an old heartbeat appended again refreshed the feed"
    _genuine_flows(fed, "freeze.heartbeat_appended_again")


def _read(fed: Federation, topic: str) -> list[Any]:
    consumer = transport.make_consumer(fed.bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        return list(transport.read_all(consumer, topic))
    finally:
        consumer.close()


def test_signed_hostile_values_do_not_stop_the_consumer(fed: Federation) -> None:
    """CST's genuine key signs a heartbeat promising 2^63 - 1 ms and one naming a sequence past
    any JSON integer; the real consumer loop refuses both, commits past them, restarts on its
    store and reads it back."""
    heartbeats = topic_name(Family.HEARTBEATS, prefix=fed.prefix)
    publisher = _publisher(fed)
    now = datetime.now(UTC)
    try:
        publisher.heartbeat(30)
        good = Heartbeat(producer_id="cst", sent_at=now, interval_ms=30_000, streams=())
        hostile = [
            {**good.to_avro(), "interval_ms": 2**63 - 1},
            {
                **good.to_avro(),
                "streams": [
                    {"stream": "x", "last_sequence": 2**63 - 1, "partition": 0, "epoch": ""}
                ],
            },
        ]
        readers = [publisher.directory.recipient_key(a, now) for a in (HERTS, "inspectorate")]
        for value in hostile:
            fingerprint, payload = publisher.registry.encode(Heartbeat.SCHEMA, value)
            publisher._publish_payload(
                heartbeats,
                kind=RecordKind.HEARTBEAT,
                fingerprint=fingerprint,
                payload=payload,
                keys=readers,
                record_id=uuid.uuid4(),
            )
    finally:
        publisher.close()
    stopped = True
    try:
        stats = fed.consume(HERTS)
        again = fed.consume(HERTS)  # a restart on the same store
        store = open_store(fed.stores[HERTS])
        try:
            feeds = store.feeds()
            rows = [q.reason for q in store.quarantine_entries(100)]
            list(store.iter_records())
        finally:
            store.close()
        stopped = False
    finally:
        availability_result(
            case="hostile_value.broker_heartbeats", source="broker", stopped=stopped
        )
    assert stats.quarantined == {"schema_violation": 2}
    assert again.quarantined == {}  # committed past them: read once, not for ever
    assert rows == ["schema_violation", "schema_violation"]
    assert [f.interval_ms for f in feeds] == [30_000]
    _genuine_flows(fed, "hostile_value.broker_heartbeats")

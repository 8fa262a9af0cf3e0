"""End to end on the real broker: CST publishes, forces consume under their policies into a real DB.

Every test runs on SQLite and on PostgreSQL (the ``store_url`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from consumers import liveness
from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from consumers.liveness import LivenessWatch
from intelbus.cli import demo_cmd
from intelbus.cli.main import app
from intelbus.kinds import Family
from intelbus.records import Correction, Incident, Retraction, Sighting
from intelbus.samples import feed
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher
from tests.federation import Federation, sighting_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fed(tmp_path: Path, bootstrap: str, store_url: str) -> Federation:
    return Federation(tmp_path, bootstrap, store_url)


def test_policy_actions_area_routing_and_red(fed: Federation) -> None:
    """Herts stores its own sightings, redacts incidents, withholds others; RED reaches only the Met."""
    own = sighting_for("HERTFORDSHIRE", "GREEN")
    elsewhere = sighting_for("GREATER_MANCHESTER", "GREEN")
    amber_gm = sighting_for("GREATER_MANCHESTER", "AMBER")
    false_report = sighting_for("HERTFORDSHIRE", "GREEN", assessment="E")
    base = next(r for r in feed(seed=22, sightings=0, incidents=8) if r.victim_details)
    data = base.model_dump(mode="json")
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[], assessment="B")
    incident = Incident.model_validate(data)
    fed.publish([own, elsewhere, amber_gm, false_report, incident])
    red = sighting_for("METROPOLITAN", "RED")
    fed.publish([red], named=["met-police"])

    stats = fed.consume("herts-police")
    assert (stats.stored, stats.redacted) == (1, 1)
    assert stats.quarantined == {"policy_quarantine": 1}
    store = open_store(fed.stores["herts-police"])
    try:
        assert store.get(own.record_id) is not None
        for receipt, rule in (
            (elsewhere, "elsewhere"),  # withheld by Herts' policy: a receipt only
            (amber_gm, "not-addressed"),  # not addressed to Herts at all
            (red, "not-addressed"),
        ):
            view = store.get(receipt.record_id)
            assert view is not None
            assert (view.payload, view.status, view.rule_id) == (None, "withheld", rule)
        visible = {v.record_id for v in store.list_records(limit=100)}
        assert visible == {own.record_id, incident.record_id}
        stored_incident = store.get(incident.record_id)
        assert stored_incident is not None
        assert stored_incident.payload["victim_details"] == "[REDACTED]"
    finally:
        store.close()
    assert stats.not_addressed >= 2  # the AMBER Manchester sighting and the RED one


def test_quarantine_never_stops_the_consumer(fed: Federation) -> None:
    """Tampered, replayed, forged and garbage records are quarantined; later good records still stored."""
    first = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([first])
    topic = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    consumer = transport.make_consumer(fed.bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        sealed = next(iter(transport.read_all(consumer, topic))).value
    finally:
        consumer.close()
    demo_cmd.append_hostile(fed.bootstrap, fed.prefix, sealed, fed.ids)
    last = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([last])
    stats = fed.consume("herts-police")
    assert stats.stored == 2
    assert sum(stats.quarantined.values()) == 5
    assert set(stats.quarantined) == {
        "bad_signature",
        "chain_duplicate",  # the stream's newest record again, byte for byte
        "binding_mismatch",  # the same record on another partition
        "unknown_key",
        "malformed",
    }
    store = open_store(fed.stores["herts-police"])
    try:
        assert store.get(last.record_id) is not None
        raws = {bytes(q.raw) for q in store.quarantine_entries(100)}
        assert sealed in raws  # the replayed copy is kept byte for byte (it is under 4 KiB)
    finally:
        store.close()


def test_correction_and_retraction_are_applied_with_history(fed: Federation) -> None:
    """A correction replaces the stored content (history kept); a retraction marks it withdrawn."""
    original = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([original])
    fixed = Sighting.model_validate(
        {**original.model_dump(mode="json"), "description": "Corrected text."}
    )
    fed.publish(
        [
            Correction(
                record_id=str(uuid.uuid4()),
                corrects_record_id=original.record_id,
                corrected_at=datetime.now(UTC),
                reason="typo",
                replacement=fixed,
                grading=original.grading,
            )
        ]
    )
    fed.publish(
        [
            Retraction(
                record_id=str(uuid.uuid4()),
                retracts_record_id=original.record_id,
                retracted_at=datetime.now(UTC),
                reason="duplicate",
                grading=original.grading,
            )
        ],
        family=Family.SIGHTINGS,
    )
    stats = fed.consume("herts-police")
    assert stats.amendments == 2
    store = open_store(fed.stores["herts-police"])
    try:
        view = store.get(original.record_id)
        assert view is not None
        assert view.retracted is True
        assert view.payload["description"] == "Corrected text."
        assert len(view.history) >= 1
    finally:
        store.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "two-prepare-workers"])
def test_restart_after_kill_loses_nothing_and_duplicates_nothing(
    fed: Federation, workers: int
) -> None:
    """kill -9 the consumer mid-run; the restarted one finishes with every record exactly once.

    Also with intake on forked worker processes (``prepare_workers``), whose batches overlap the
    commit: the kill lands with a batch in the workers, which must be read again, once."""
    records = [sighting_for("HERTFORDSHIRE", "GREEN") for _ in range(400)]
    fed.publish(records)
    config = fed.root / "herts-police.toml"
    env = {**os.environ, "INTELBUS_LOG_LEVEL": "WARNING"}
    cmd = [
        sys.executable,
        "-m",
        "intelbus.cli",
        "consume",
        "--agency",
        "herts-police",
        "--config",
        str(config),
        "--until-idle",
    ]
    # Small batches so the kill lands between commits.
    text = config.read_text() + f"batch_size = 20\nprepare_workers = {workers}\n"
    config.write_text(text)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            store = open_store(fed.stores["herts-police"])
            try:
                count = store.summary().get("stored", 0)
            finally:
                store.close()
            if count >= 40:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count < 400, "the consumer finished before it could be killed"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    store = open_store(fed.stores["herts-police"])
    try:
        summary = store.summary()
        assert summary.get("stored", 0) == 400
        assert sum(v for k, v in summary.items() if k.startswith("quarantined")) == 0
        assert {str(r.record_id) for r in store.list_records(limit=1000)} == {
            r.record_id for r in records
        }
    finally:
        store.close()


def test_records_signed_by_the_real_producer_that_fail_later_checks_are_quarantined(
    fed: Federation,
) -> None:
    """Signed by CST's real key, correctly chained, but undecryptable or undecodable: quarantined
    with their own reason codes, and the consumer stores the good record that follows."""
    from intelbus.envelope import RecordKind  # noqa: PLC0415
    from intelbus.identity import AgencyIdentity  # noqa: PLC0415
    from intelbus.serde.registry import SchemaRegistry  # noqa: PLC0415

    registry = SchemaRegistry.load()
    sample = sighting_for("HERTFORDSHIRE", "GREEN")
    fingerprint, payload = registry.encode(sample.SCHEMA, sample.to_avro())
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    topic = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    herts = publisher.directory.recipient_key("herts-police", datetime.now(UTC))
    # A key pair that claims to be Herts but is not the one in the directory.
    impostor = AgencyIdentity.generate("herts-police").public
    try:
        for fp, body, keys in (
            (bytes(32), payload, [herts]),  # a schema nobody registered
            (fingerprint, b"\x02\xff\xff\xff\xff\x0f", [herts]),  # bytes that are not a Sighting
            # Wrapped for "herts-police" under a key Herts does not hold: it cannot decrypt.
            (fingerprint, payload, [impostor]),
        ):
            publisher._publish_payload(
                topic,
                kind=RecordKind.SIGHTING,
                fingerprint=fp,
                payload=body,
                keys=keys,
                record_id=uuid.uuid4(),
            )
    finally:
        publisher.close()
    last = sighting_for("HERTFORDSHIRE", "GREEN")
    fed.publish([last])
    stats = fed.consume("herts-police")
    assert stats.quarantined == {
        "unknown_schema": 1,
        "schema_violation": 1,
        "not_a_recipient": 1,
    }
    assert stats.stored == 1
    assert stats.gaps == 0
    store = open_store(fed.stores["herts-police"])
    try:
        assert store.get(last.record_id) is not None
        assert len(store.quarantine_entries(10)) == 3
    finally:
        store.close()


def test_a_heartbeat_keeps_a_feed_alive_and_its_absence_raises_the_alarm(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real broker: CST's heartbeat (``intelbus heartbeat``, 1 s interval) lands in Herts's feeds;
    a consumer that is caught up and hears nothing more logs consumer.feed_stale, once."""
    result = CliRunner().invoke(
        app, ["heartbeat", "--config", str(fed.root / "producer.toml"), "--interval", "1", "--once"]
    )
    assert result.exit_code == 0, result.output
    assert "next within 1s" in result.stdout
    consumer = build_consumer(ConsumerConfig.load(fed.root / "herts-police.toml"))
    consumer.liveness = LivenessWatch(every_s=0.5)
    # The module's logger itself is swapped: capture_logs misses loggers cached by an earlier
    # configure() (the CLI's), so it cannot be relied on here.
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(liveness, "log", structlog.wrap_logger(None, processors=[capture]))
    try:
        stats = consumer.run(until_idle=True, idle_polls=8)  # 8 empty polls of 500 ms: > 1.5 s
        feeds = consumer.store.feeds()
    finally:
        consumer.store.close()
    assert stats.heartbeats == 1
    assert [(f.producer_id, f.topic, f.interval_ms) for f in feeds] == [
        ("cst", f"{fed.prefix}.heartbeats", 1000)
    ]
    assert consumer.liveness.stale == {("cst", f"{fed.prefix}.heartbeats")}
    stale = [e for e in capture.entries if e["event"] == "consumer.feed_stale"]
    assert [(e["producer"], e["topic"]) for e in stale] == [("cst", f"{fed.prefix}.heartbeats")]

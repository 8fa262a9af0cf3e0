"""Crypto-shredding on the real broker (issue 16): records sealed to a past encryption epoch whose
key was destroyed can no longer be opened from Kafka, a from-the-beginning consume stores nothing
for them (counted as shredded, none quarantined), and the auditor's replay is still clean.

Herts Police's key has two epochs: one covering now, the next starting tomorrow. CST publishes
some records now and, with its clock set past the boundary, more in the second epoch. After the
first epoch's key is destroyed (as of a time after it ended), a fresh Herts consumer with a new
store replays the topic from the beginning.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from consumers.agency import AgencyConsumer
from consumers.config import ConsumerConfig
from intelbus.cli.main import app
from intelbus.directory import store as dstore
from intelbus.envelope import parse
from intelbus.federation import FORCES
from intelbus.keyring import destroy_epoch, keyring_dir, list_epochs
from intelbus.kinds import Family
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import Publisher
from tests.federation import Federation, sighting_for

runner = CliRunner()
HERTS = "herts-police"


def _config(fed: Federation, name: str) -> tuple[Path, str]:
    """A Herts consumer config with a store and group of its own (``name``): it reads from the
    start. Returns the config file and the store."""
    base = (fed.root / f"{HERTS}.toml").read_text()
    store = fed.root / f"{name}.sqlite"
    text = base.replace(f'store = "{fed.stores[HERTS]}"', f'store = "{store}"').replace(
        f'group_id = "{fed.prefix}.{HERTS}"', f'group_id = "{fed.prefix}.{name}"'
    )
    assert text != base
    (fed.root / f"{name}.toml").write_text(text)
    return fed.root / f"{name}.toml", str(store)


def test_destroyed_epoch_shreds_old_records_and_the_audit_stays_clean(
    tmp_path: Path, bootstrap: str
) -> None:
    now = datetime.now(UTC)
    boundary = now + timedelta(days=1)
    fed = Federation(
        tmp_path,
        bootstrap,
        "sqlite",
        force_epochs=[(now - timedelta(hours=1), boundary), (boundary, now + timedelta(days=40))],
        epoch_agencies=(*FORCES, "inspectorate"),
    )
    key_file = tmp_path / "keys" / f"{HERTS}.key"
    old_epoch, new_epoch = (e.epoch_id for e in list_epochs(key_file))
    assert dstore.load_folder(tmp_path / "directory").latest.find_epoch(old_epoch) is not None

    old = [sighting_for("HERTFORDSHIRE", "GREEN") for _ in range(3)]
    new = [sighting_for("HERTFORDSHIRE", "GREEN") for _ in range(2)]
    publisher = Publisher.from_config(ProducerConfig.load(tmp_path / "producer.toml"))
    try:
        for r in old:
            publisher.publish(r)
        # A heartbeat too (sealed to the forces' and the auditor's first epochs).
        publisher.heartbeat(30)
        # Sealing happens at the publisher's clock: past the boundary, the second epoch.
        publisher.clock = lambda: datetime.now(UTC) + timedelta(days=1, hours=1)
        for r in new:
            publisher.publish(r)
    finally:
        publisher.close()

    # Each record names the epoch it was sealed to in Herts' recipient entry.
    sightings = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    reader = transport.make_consumer(bootstrap, group_id=None)
    try:
        raw = {
            str(parse(m.value).header.record_id): m.value
            for m in transport.read_all(reader, sightings)
        }
    finally:
        reader.close()

    def epoch_of(record_id: str) -> str:
        header = parse(raw[record_id]).header
        return next(r.key_id.hex() for r in header.recipients if r.agency_id == HERTS)

    assert {epoch_of(r.record_id) for r in old} == {old_epoch}
    assert {epoch_of(r.record_id) for r in new} == {new_epoch}

    # Before destruction: everything is opened and stored.
    stats = fed.consume(HERTS)
    assert stats.stored == 5
    assert stats.heartbeats == 1
    assert stats.shredded == 0
    assert not stats.quarantined

    # The first epoch has ended (as of two days on) and its retention passed: destroy it.
    destroy_epoch(key_file, old_epoch, now=now + timedelta(days=2))
    assert not (keyring_dir(key_file) / f"{old_epoch}.key").exists()

    # A fresh consumer with a new store replays from the beginning.
    config, store_url = _config(fed, "herts-replay")
    consumer = AgencyConsumer.from_config(ConsumerConfig.load(config))
    try:
        replay = consumer.run(until_idle=True, idle_polls=4)
    finally:
        consumer.store.close()
    # The three sightings and the heartbeat of the first epoch.
    assert replay.shredded == 4
    assert replay.heartbeats == 0
    assert replay.stored == 2
    assert not replay.quarantined
    store = open_store(store_url)
    try:
        for r in old:
            assert store.get_all(r.record_id) == []
        for r in new:
            view = store.get(r.record_id)
            assert view is not None
            assert view.payload is not None
        assert store.quarantine_entries() == []
        # The chain advanced through the shredded records: the head is at the last sequence.
        heads = [h for k, h in store.load_chain().items() if k.producer_id == "cst"]
        assert max(h.last_sequence for h in heads) == 4
    finally:
        store.close()

    # Opening an old record says why it cannot be opened; a current one still opens.
    old_file, new_file = tmp_path / "old.rec", tmp_path / "new.rec"
    old_file.write_bytes(raw[old[0].record_id])
    new_file.write_bytes(raw[new[0].record_id])
    args = ["--key", str(key_file), "--directory", str(tmp_path / "directory"), "--json"]
    refused = runner.invoke(app, ["envelope", "open", str(old_file), *args])
    assert refused.exit_code == 1
    assert (
        f"record {old[0].record_id} was sealed to epoch {old_epoch} of {HERTS}, whose key was "
        f"destroyed on {(now + timedelta(days=2)).date().isoformat()} (crypto-shredded)"
    ) in " ".join(refused.output.split())
    opened = runner.invoke(app, ["envelope", "open", str(new_file), *args])
    assert opened.exit_code == 0, opened.output
    assert json.loads(opened.output)["record"]["record_id"] == new[0].record_id

    # The auditor verifies without opening: every record authentic, no finding.
    report = tmp_path / "audit.json"
    audited = runner.invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            sightings,
            "--directory",
            str(tmp_path / "directory"),
            "--bootstrap-servers",
            bootstrap,
            "--report",
            str(report),
        ],
    )
    assert audited.exit_code == 0, audited.output
    data = json.loads(report.read_text())
    assert data["findings"] == []
    assert data["summary"]["verdict"] == "clean"
    assert data["summary"]["records"] == data["summary"]["authentic"] == 5

    # Held to the topic, the replayed store accounts for every record: two held, three shredded
    # (sealed to the epoch it recorded as destroyed), none missing.
    held = runner.invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            sightings,
            "--directory",
            str(tmp_path / "directory"),
            "--bootstrap-servers",
            bootstrap,
            "--report",
            str(tmp_path / "audit-store.json"),
            "--store",
            store_url,
        ],
    )
    assert held.exit_code == 0, held.output
    section = json.loads((tmp_path / "audit-store.json").read_text())["summary"]["store"]
    assert (section["rows"], section["matched"], section["shredded"], section["missing"]) == (
        2,
        2,
        3,
        0,
    )

    # An auditor whose own first epoch is destroyed: what it opened before (heartbeats) now reads
    # as not opened, never as a finding.
    auditor_key = tmp_path / "keys" / "inspectorate.key"
    auditor_old = next(e.epoch_id for e in list_epochs(auditor_key))
    destroy_epoch(auditor_key, auditor_old, now=now + timedelta(days=2))
    heartbeats = topic_name(Family.HEARTBEATS, prefix=fed.prefix)
    for topic in (heartbeats, sightings):
        with_key = tmp_path / f"audit-key-{topic}.json"
        audited = runner.invoke(
            app,
            [
                "audit",
                "replay",
                "--topic",
                topic,
                "--directory",
                str(tmp_path / "directory"),
                "--bootstrap-servers",
                bootstrap,
                "--key-file",
                str(auditor_key),
                "--report",
                str(with_key),
            ],
        )
        assert audited.exit_code == 0, audited.output
        assert json.loads(with_key.read_text())["findings"] == []

    # `intelbus consume --json` reports the shredded count.
    cli_config, _ = _config(fed, "herts-cli")
    result = runner.invoke(
        app,
        [
            "consume",
            "--agency",
            HERTS,
            "--config",
            str(cli_config),
            "--until-idle",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output.strip().splitlines()[-1])
    assert counts["shredded"] == 4
    assert counts["stored"] == 2
    assert counts["quarantined"] == {}

"""Trust model v2 on the REAL broker: what only Kafka can show.

* **Wrong place** (an insider, an operator): copies of CST's records on the topic's other
  partitions, and partitions added so keys would re-hash. The consumer's group reads partitions
  in Kafka's order, not ours.
* **Back-dating** (an operator, a leaked key): a bus topic switched to CreateTime. Consumers and
  auditors refuse to start on it; records appended meanwhile are judged conservatively.
* **The directory at run time** (an insider with write access to the directory topic, a freeze):
  a forged next version put on the topic first, a revocation learned while consuming, an expired
  directory.
* **Recovery from a leaked key**, end to end through the directory topic.

Each case asserts the refusal with its reason code (or the clear error), that trusted state did
not change, that CST's genuine records published afterwards are all stored ("genuine records lost
to an attack": 0), and where a topic holds the attack, that the auditor flags it with the
consumer's reason code (exit 1).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from intelbus import federation
from intelbus.cli import demo_cmd
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import SignedDirectory
from intelbus.directory.trust import sign
from intelbus.envelope import parse
from intelbus.errors import DirectoryExpired, ReasonCode, TopicMisconfigured
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.records import Correction, Sighting
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher
from tests.attacks.report import attack_result, genuine_result
from tests.attacks.test_broker import _add_producers
from tests.federation import Federation
from tests.federation import sighting_for as _sighting

pytestmark = pytest.mark.kafka
R = ReasonCode


@dataclass
class Bus:
    fed: Federation
    sightings: str
    directory_topic: str

    @property
    def herts_group(self) -> str:
        return f"{self.fed.prefix}.herts-police"


@pytest.fixture
def bus(tmp_path: Path, bootstrap: str) -> Bus:
    fed = Federation(tmp_path, bootstrap, "sqlite")
    return Bus(
        fed,
        topic_name(Family.SIGHTINGS, prefix=fed.prefix),
        topic_name(Family.DIRECTORY, prefix=fed.prefix),
    )


def _values(bus: Bus, topic: str) -> list[transport.Message]:
    consumer = transport.make_consumer(bus.fed.bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        return [
            transport.Message(m.topic, m.partition, m.offset, m.value, None)
            for m in transport.read_all(consumer, topic)
        ]
    finally:
        consumer.close()


def _audit(bus: Bus, topic: str, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    report = bus.fed.root / f"audit-{uuid.uuid4().hex[:6]}.json"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            topic,
            "--directory",
            str(bus.fed.root / "directory"),
            "--bootstrap-servers",
            bus.fed.bootstrap,
            "--report",
            str(report),
            *extra,
        ],
    )
    findings = json.loads(report.read_text())["findings"] if report.exists() else []
    return result.exit_code, findings, result.output


def _genuine_flows(bus: Bus, case: str, count: int = 3) -> None:
    """CST's next genuine records, after the attack: every one stored, live."""
    records = [_sighting("HERTFORDSHIRE", "GREEN") for _ in range(count)]
    bus.fed.publish(records)
    bus.fed.consume("herts-police")
    store = open_store(bus.fed.stores["herts-police"])
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


def _quarantine(bus: Bus) -> dict[tuple[str, int, int], str]:
    store = open_store(bus.fed.stores["herts-police"])
    try:
        return {(q.topic, q.partition, q.offset): q.reason for q in store.quarantine_entries(1000)}
    finally:
        store.close()


def _report(case: str, expected: ReasonCode, got: str | None, unchanged: bool) -> None:
    attack_result(
        case=case,
        source="broker",
        expected_reason=expected.value,
        outcome="rejected" if got is not None else "accepted",
        reason=got or "none",
        trusted_state_unchanged=unchanged,
    )


# --- wrong place ---------------------------------------------------------------------------------


def test_copies_on_other_partitions_and_added_partitions_cannot_reorder_cst(bus: Bus) -> None:
    """An insider copies CST's newest and oldest records to every other partition; an operator
    then doubles the partitions. Every copy is BINDING_MISMATCH at its offset, not one genuine
    record is refused, CST's stream stays on its partition, and the auditor agrees."""
    fed = bus.fed
    fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(4)])
    genuine = _values(bus, bus.sightings)
    home = genuine[0].partition
    assert {m.partition for m in genuine} == {home}
    partitions = len(transport.end_offsets(fed.bootstrap, bus.sightings))
    insider = transport.make_producer(fed.bootstrap)
    copies: list[tuple[str, int, int]] = []
    try:
        for p in range(partitions):
            if p == home:
                continue
            for m in (genuine[-1], genuine[0]):
                _, offset = transport.send_and_wait(
                    insider, bus.sightings, m.value, key=b"cst", partition=p
                )
                copies.append((bus.sightings, p, offset))
    finally:
        insider.close()
    stats = fed.consume("herts-police")
    assert stats.stored == 4
    assert stats.quarantined == {"binding_mismatch": len(copies)}
    rows = _quarantine(bus)
    for where in copies:
        _report(
            "reorder.copy_other_partition", R.BINDING_MISMATCH, rows.get(where), stats.gaps == 0
        )
        assert rows.get(where) == "binding_mismatch", where
    transport.add_partitions(fed.bootstrap, bus.sightings, partitions * 2)
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        after = [publisher.publish(_sighting("HERTFORDSHIRE", "GREEN")) for _ in range(3)]
    finally:
        publisher.close()
    assert {p.partition for p in after} == {home}
    stats = fed.consume("herts-police")
    assert (stats.stored, dict(stats.quarantined), stats.gaps) == (3, {}, 0)
    _genuine_flows(bus, "reorder.partitions_added")
    code, findings, output = _audit(bus, bus.sightings)
    assert code == 1, output
    flagged = {(f["topic"], f["partition"], f["offset"]): f["reason"] for f in findings}
    assert flagged == dict.fromkeys(copies, "binding_mismatch")


# --- back-dating ---------------------------------------------------------------------------------


def test_a_topic_switched_to_create_time_stops_consumers_and_auditors_at_start(bus: Bus) -> None:
    """An operator switches the sightings topic to CreateTime. A consumer refuses to start
    (TopicMisconfigured, one clear line, exit 3 from the CLI, nothing consumed or committed);
    the auditor too. Meanwhile CST publishes, and a revoked key back-dates a record. Once the
    topic is fixed, CST's records made in the window are stored (its key has no cutoff a false
    time could escape) and the revoked key's is refused as NO_BROKER_TIME."""
    fed = bus.fed
    extra = _add_producers(fed, bus.sightings)
    fed.publish([_sighting("HERTFORDSHIRE", "GREEN")])
    fed.consume("herts-police")
    transport.alter_topic_configs(
        fed.bootstrap, bus.sightings, {"message.timestamp.type": "CreateTime"}
    )
    consumer = build_consumer(ConsumerConfig.load(fed.root / "herts-police.toml"))
    try:
        before = consumer.store.load_offsets(bus.herts_group, bus.sightings)
        with pytest.raises(TopicMisconfigured, match="LogAppendTime"):
            consumer.run(until_idle=True, idle_polls=2)
        assert consumer.store.load_offsets(bus.herts_group, bus.sightings) == before
    finally:
        consumer.store.close()
    cli = CliRunner().invoke(
        app,
        ["consume", "--agency", "herts-police", "--config", str(fed.root / "herts-police.toml")],
    )
    assert cli.exit_code == 3, cli.output
    assert "LogAppendTime" in cli.output
    assert "Traceback" not in cli.output
    code, _, output = _audit(bus, bus.sightings)
    assert code == 3, output
    assert "LogAppendTime" in output
    # In the window: CST publishes; the thief of the revoked "leaky" key back-dates a record.
    window = [_sighting("HERTFORDSHIRE", "GREEN") for _ in range(2)]
    fed.publish(window)
    leaky = extra["leaky"]
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        herts_key = publisher.directory.recipient_key("herts-police", datetime.now(UTC))
    finally:
        publisher.close()
    from intelbus import _nacl  # noqa: PLC0415
    from intelbus.envelope.datakey import new_data_key  # noqa: PLC0415
    from intelbus.envelope.seal import _seal_from_parts  # noqa: PLC0415
    from intelbus.kinds import RecordKind  # noqa: PLC0415

    backdated = _seal_from_parts(
        leaky,
        environment=demo_cmd.ENVIRONMENT,
        topic=bus.sightings,
        kind=RecordKind.SIGHTING,
        record_id=uuid.uuid4(),
        sequence=0,
        prev_digest=bytes(32),
        schema_fingerprint=bytes(32),
        payload=b"back-dated",
        recipients=[herts_key],
        data_key=new_data_key([herts_key]),
        nonce=_nacl.random_bytes(24),
        now=datetime.now(UTC) - timedelta(days=3),
        partition=0,
    ).data
    raw = transport.make_producer(fed.bootstrap)
    try:
        _, offset = transport.send_and_wait(raw, bus.sightings, backdated, key=b"x", partition=0)
    finally:
        raw.close()
    transport.alter_topic_configs(
        fed.bootstrap, bus.sightings, {"message.timestamp.type": "LogAppendTime"}
    )
    stats = fed.consume("herts-police")
    assert stats.stored == 2
    assert stats.quarantined == {"no_broker_time": 1}
    got = _quarantine(bus).get((bus.sightings, 0, offset))
    _report("backdating.create_time_window", R.NO_BROKER_TIME, got, stats.stored == 2)
    assert got == "no_broker_time"
    _genuine_flows(bus, "backdating.create_time_window")


# --- the directory at run time ------------------------------------------------------------------


def _admins_sign(fed: Federation, doc: SignedDirectory, folder: Path) -> SignedDirectory:
    for admin in federation.ADMINS:
        doc = sign(doc, fed.ids[admin].signing_seed())
    dstore.write_file(dstore.version_path(folder, doc.signed.version), doc)
    return doc


def _publish_directory(fed: Federation, folder: Path, topic: str) -> str:
    result = CliRunner().invoke(
        app,
        [
            "directory",
            "publish",
            "--folder",
            str(folder),
            "--bootstrap",
            fed.bootstrap,
            "--topic",
            topic,
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


def _separate_folders(bus: Bus) -> Path:
    """The admins' folder (a copy); the forces' and CST's stay where their configs point."""
    admin = bus.fed.root / "admin-directory"
    shutil.copytree(bus.fed.root / "directory", admin)
    return admin


def test_a_forged_next_version_on_the_topic_first_does_not_block_the_genuine_one(bus: Bus) -> None:
    """An insider with write access to the directory topic appends a "v{N+1}" signed by one admin
    (and a copy of the genuine one stripped of a signature) before the admins publish theirs.
    `directory publish` still publishes the genuine v{N+1}, and a consumer following the topic
    trusts it and reports the others."""
    fed = bus.fed
    admin = _separate_folders(bus)
    _publish_directory(fed, admin, bus.directory_topic)
    history = dstore.load_folder(admin)
    n = history.latest.version
    newcomer = AgencyIdentity.generate("gmp")
    draft = edit.rotate_key(
        history.latest, agency_id="gmp", identity=newcomer.public, now=datetime.now(UTC)
    )
    one_admin = sign(draft, fed.ids[federation.ADMINS[0]].signing_seed())
    forged_body = draft.signed.model_copy(update={"threshold": 1})
    forged = sign(SignedDirectory(signed=forged_body), fed.ids[federation.ADMINS[0]].signing_seed())
    raw = transport.make_producer(fed.bootstrap)
    try:
        for doc in (forged, one_admin):
            transport.send_and_wait(
                raw, bus.directory_topic, doc.to_bytes(), key=str(n + 1).encode()
            )
    finally:
        raw.close()
    genuine = _admins_sign(fed, draft, admin)
    output = _publish_directory(fed, admin, bus.directory_topic)
    assert "published 1 version(s)" in output
    on_topic = [json.loads(m.value) for m in _values(bus, bus.directory_topic)]
    assert sum(1 for d in on_topic if d == json.loads(genuine.to_bytes())) == 1
    consumer = build_consumer(ConsumerConfig.load(fed.root / "herts-police.toml"))
    try:
        assert consumer.follower is not None
        consumer.follow_directory(force=True)
        assert consumer.pipeline.directory.latest.version == n + 1
        assert consumer.pipeline.directory.versions[-1].to_bytes() == genuine.to_bytes()
        assert len(consumer.follower.problems) == 2
    finally:
        consumer.store.close()
        if consumer.follower is not None:
            consumer.follower.close()
    _genuine_flows(bus, "directory.forged_next_version")


def test_an_expired_directory_stops_every_role_until_a_newer_version_is_published(
    bus: Bus,
) -> None:
    """The admins' newest version expires (nothing newer reaches the topic: a freeze). Publishing,
    consuming and auditing all refuse with one clear line (exit 3); once the admins publish the
    next version on the topic, each role picks it up by itself and works again."""
    fed = bus.fed
    admin = _separate_folders(bus)
    history = dstore.load_folder(admin)
    short = edit.renew(history.latest, now=datetime.now(UTC), validity=timedelta(seconds=3))
    short_doc = _admins_sign(fed, short, admin)
    _publish_directory(fed, admin, bus.directory_topic)
    consumer = build_consumer(ConsumerConfig.load(fed.root / "herts-police.toml"))
    try:
        consumer.follow_directory(force=True)
        assert consumer.pipeline.directory.latest.version == short_doc.signed.version
    finally:
        consumer.store.close()
    time.sleep(4)
    for argv in (
        ["consume", "--agency", "herts-police", "--config", str(fed.root / "herts-police.toml")],
    ):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 3, result.output
        assert "expired" in result.output
        assert "refresh" in result.output
        assert "Traceback" not in result.output
    publisher = build_publisher(ProducerConfig.load(fed.root / "producer.toml"))
    try:
        with pytest.raises(DirectoryExpired):
            publisher.publish(_sighting("HERTFORDSHIRE", "GREEN"))
    finally:
        publisher.close()
    code, _, output = _audit(bus, bus.sightings)
    assert code == 3, output
    status = CliRunner().invoke(
        app, ["directory", "status", "--folder", str(fed.root / "directory")]
    )
    assert status.exit_code == 1, status.output
    renewed = edit.renew(
        dstore.load_folder(admin).latest, now=datetime.now(UTC), validity=timedelta(days=30)
    )
    _admins_sign(fed, renewed, admin)
    _publish_directory(fed, admin, bus.directory_topic)
    _genuine_flows(bus, "directory.expired_then_renewed")


# --- recovery from a leaked key ----------------------------------------------------------------------


def test_a_leaked_key_is_recovered_from_through_the_directory_topic(bus: Bus) -> None:
    """A thief with CST's key forges a sighting far ahead in CST's stream and a correction of a
    genuine record; Herts stores both (they verify). The admins publish, on the directory topic,
    CST's new key and the old one compromised since before the forgeries. Herts' consumer, on its
    next run, learns it from the topic: the forgeries are withdrawn (out of lists and search,
    kept as evidence), the corrected record is genuine again, CST's new key's records are
    stored, and the auditor flags the forgeries as KEY_REVOKED."""
    fed = bus.fed
    admin = _separate_folders(bus)
    _publish_directory(fed, admin, bus.directory_topic)
    genuine = _sighting("HERTFORDSHIRE", "GREEN")
    fed.publish([genuine])
    fed.consume("herts-police")
    leaked_since = datetime.now(UTC)
    thief_root = fed.root / "thief"
    thief_root.mkdir()
    import sqlite3  # noqa: PLC0415

    # The thief's copy of CST's producer state (its tooling continues CST's stream).
    source = sqlite3.connect(fed.root / "state" / "cst.sqlite")
    copy = sqlite3.connect(thief_root / "cst.sqlite")
    source.backup(copy)
    source.close()
    copy.close()
    (thief_root / "cst.sqlite").chmod(0o600)
    text = (fed.root / "producer.toml").read_text().replace("state/cst.sqlite", "thief/cst.sqlite")
    (fed.root / "thief.toml").write_text(text)
    db = sqlite3.connect(thief_root / "cst.sqlite")
    db.execute("UPDATE streams SET last_sequence = last_sequence + 5000")
    db.commit()
    db.close()
    thief = build_publisher(ProducerConfig.load(fed.root / "thief.toml"))
    forged = _sighting("HERTFORDSHIRE", "GREEN")
    forged = Sighting.model_validate(
        {**forged.model_dump(mode="json"), "description": "A man filmed the gate (forged)."}
    )
    fake = Sighting.model_validate(
        {**genuine.model_dump(mode="json"), "description": "Nothing happened (forged)."}
    )
    try:
        thief.publish(forged)
        thief.publish(
            Correction(
                record_id=str(uuid.uuid4()),
                corrects_record_id=genuine.record_id,
                corrected_at=datetime.now(UTC),
                reason="forged",
                replacement=fake,
                grading=genuine.grading,
            )
        )
    finally:
        thief.close()
    stats = fed.consume("herts-police")
    assert (stats.stored, stats.amendments) == (1, 1)
    store = open_store(fed.stores["herts-police"])
    try:
        assert store.search("forged") != []
    finally:
        store.close()
    # CST and the admins react: a new key for CST, the old one compromised since before.
    new_key = AgencyIdentity.generate("cst")
    history = dstore.load_folder(admin)
    old_key_id = fed.ids["cst"].key_id.hex()
    now = datetime.now(UTC)
    rotated = _admins_sign(
        fed,
        edit.rotate_key(history.latest, agency_id="cst", identity=new_key.public, now=now),
        admin,
    )
    _admins_sign(
        fed,
        edit.revoke_key(
            rotated.signed,
            agency_id="cst",
            key_id=old_key_id,
            reason="key leaked",
            now=now,
            compromised_since=leaked_since,
        ),
        admin,
    )
    _publish_directory(fed, admin, bus.directory_topic)
    (fed.root / "keys" / "cst.key").unlink()
    new_key.save(fed.root / "keys" / "cst.key")
    stats = fed.consume("herts-police")  # learns the new versions from the topic
    store = open_store(fed.stores["herts-police"])
    try:
        assert store.search("forged") == []
        withdrawn = store.get(forged.record_id, "cst")
        assert withdrawn is not None
        assert withdrawn.status == "withdrawn"
        restored = store.get(genuine.record_id, "cst")
        assert restored is not None
        assert restored.payload is not None
        assert (restored.status, restored.payload["description"]) == (
            "live",
            genuine.description,
        )
        assert store.summary()["withdrawn"] == 1
    finally:
        store.close()
    _genuine_flows(bus, "recovery.leaked_key")
    code, findings, output = _audit(bus, bus.sightings)
    assert code == 1, output
    revoked = [f for f in findings if f["reason"] == "key_revoked"]
    assert len(revoked) == 2, findings
    for f in revoked:
        _report("recovery.forgery_found_by_auditor", R.KEY_REVOKED, f["reason"], True)
    parsed = {parse(m.value).header.record_id for m in _values(bus, bus.sightings)}
    assert uuid.UUID(forged.record_id) in parsed

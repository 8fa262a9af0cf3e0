"""Auditor replay on the real broker: a clean history verifies; every injected defect is found.

One federation (keys, threshold-signed directory, CST's publisher) per fixture, on the session
broker, with fresh topics. The auditor reads with a consumer of its own (no group) and the tests
check it leaves no consumer group behind. It also reads the bus's directory topic for versions
newer than its folder's, and refuses to judge with an expired directory unless told to.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import KafkaSource
from intelbus import federation
from intelbus.cli import demo_cmd
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import SignedDirectory
from intelbus.directory.trust import sign
from intelbus.envelope import seal
from intelbus.errors import ReasonCode
from intelbus.federation import make_directory, make_keys
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family, RecordKind
from intelbus.records import Incident, Sighting
from intelbus.samples import feed
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics, topic_name
from producers.config import ProducerConfig
from producers.publisher import Publisher, build_publisher

runner = CliRunner()


class AuditFederation:
    """Demo-shaped keys and directory in a folder, and CST publishing to fresh topics."""

    def __init__(self, root: Path, bootstrap: str, agreement: str = demo_cmd.AGREEMENT) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.prefix = f"audit-{uuid.uuid4().hex[:8]}"
        specs = bus_topics(prefix=self.prefix)
        transport.create_topics(bootstrap, specs)
        self.ids = make_keys(root)
        make_directory(root, self.ids, self.prefix)
        (root / "agreement.toml").write_text(agreement)
        (root / "producer.toml").write_text(
            f'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
            f'agreement = "agreement.toml"\nstate_file = "state/cst.sqlite"\n'
            f'environment = "{demo_cmd.ENVIRONMENT}"\nbootstrap_servers = "{bootstrap}"\n'
            f'topic_prefix = "{self.prefix}"\n'
        )
        self.sightings = topic_name(Family.SIGHTINGS, prefix=self.prefix)
        self.incidents = topic_name(Family.INCIDENTS, prefix=self.prefix)
        self.directory_topic = topic_name(Family.DIRECTORY, prefix=self.prefix)
        self.partitions = next(t.partitions for t in specs if t.name == self.sightings)

    def publisher(self) -> Publisher:
        return build_publisher(ProducerConfig.load(self.root / "producer.toml"))

    def publish(self, records: list[Any]) -> list[tuple[int, int]]:
        pub = self.publisher()
        try:
            return [(p.partition, p.offset) for p in pub.publish_many(records)]
        finally:
            pub.close()

    def send(self, topic: str, value: bytes, partition: int | None = None) -> tuple[int, int]:
        """Append raw bytes, as anyone with write access to the topic can."""
        producer = transport.make_producer(self.bootstrap)
        try:
            return transport.send_and_wait(producer, topic, value, key=b"cst", partition=partition)
        finally:
            producer.close()

    def read(self, topic: str) -> list[Any]:
        consumer = transport.make_consumer(self.bootstrap, group_id=None)
        try:
            return list(transport.read_all(consumer, topic))
        finally:
            consumer.close()

    def signed(self, doc: SignedDirectory) -> SignedDirectory:
        for admin in federation.ADMINS:
            doc = sign(doc, self.ids[admin].signing_seed())
        return doc

    def replay_cli(
        self, topic: str, report: Path, *extra: str, directory: Path | None = None
    ) -> Any:
        return runner.invoke(
            app,
            [
                "audit",
                "replay",
                "--topic",
                topic,
                "--directory",
                str(directory or self.root / "directory"),
                "--bootstrap-servers",
                self.bootstrap,
                "--report",
                str(report),
                *extra,
            ],
        )

    def groups(self) -> set[str]:
        with transport.admin_client(self.bootstrap) as admin:
            groups = admin.list_groups()
        # Group dicts (kafka-python 3.0) or (name, protocol) tuples (older): the names.
        return {str(g.get("group_id", g) if isinstance(g, dict) else g[0]) for g in groups}


def sighting(tlp: str = "GREEN") -> Sighting:
    base = feed(seed=41, sightings=1, incidents=0)[0]
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = "HERTFORDSHIRE"
    data["grading"].update(tlp=tlp, handling_code="P", handling_conditions=[], assessment="B")
    return Sighting.model_validate(data)


def incident() -> Incident:
    base = feed(seed=42, sightings=0, incidents=1)[0]
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[])
    return Incident.model_validate(data)


def findings_of(report: Path) -> list[tuple[str, int, int]]:
    data = json.loads(report.read_text())
    return [(f["reason"], f["partition"], f["offset"]) for f in data["findings"]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, bootstrap: str) -> AuditFederation:
    fed = AuditFederation(tmp_path_factory.mktemp("audit-clean"), bootstrap)
    fed.publish([sighting() for _ in range(30)])
    return fed


def test_a_clean_history_verifies_and_commits_nothing(
    clean: AuditFederation, tmp_path: Path
) -> None:
    """Exit 0, zero findings, every record authentic; no consumer group appears on the broker."""
    before = clean.groups()
    result = clean.replay_cli(clean.sightings, tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["findings"] == []
    assert data["summary"]["verdict"] == "clean"
    assert data["summary"]["records"] == data["summary"]["authentic"] == 30
    assert data["summary"]["producers"]["cst"]["lowest_sequence"] == 0
    assert data["summary"]["producers"]["cst"]["highest_sequence"] == 29
    assert "verdict: clean" in result.output
    assert clean.groups() == before


def test_independent_replays_agree_on_the_digest_and_a_tampered_record_changes_it(
    clean: AuditFederation, tmp_path: Path
) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert clean.replay_cli(clean.sightings, a).exit_code == 0
    assert clean.replay_cli(clean.sightings, b).exit_code == 0
    same = runner.invoke(app, ["audit", "digest", "--report", str(a), "--report", str(b)])
    assert same.exit_code == 0, same.output
    assert "digests match" in same.output
    # The broker now serves one tampered record: a third replay sees it, and the digests differ.
    tampered = bytearray(clean.read(clean.sightings)[5].value)
    tampered[-80] ^= 0x01
    partition, offset = clean.send(clean.sightings, bytes(tampered))
    third = clean.replay_cli(clean.sightings, c)
    assert third.exit_code == 1
    assert findings_of(c) == [(ReasonCode.BAD_SIGNATURE.value, partition, offset)]
    differ = runner.invoke(app, ["audit", "digest", "--report", str(a), "--report", str(c)])
    assert differ.exit_code == 1
    assert "digests differ" in differ.output
    digest_a = json.loads(a.read_text())["summary"]["digest"]["value"]
    assert json.loads(c.read_text())["summary"]["digest"]["value"] != digest_a


def _revocation(fed: AuditFederation, compromised_since: datetime) -> SignedDirectory:
    """The next directory version: CST's key revoked, presumed leaked since ``compromised_since``."""
    history = dstore.load_folder(fed.root / "directory")
    return fed.signed(
        edit.revoke_key(
            history.latest,
            agency_id="cst",
            key_id=fed.ids["cst"].key_id.hex(),
            reason="key leaked",
            now=datetime.now(UTC),
            compromised_since=compromised_since,
        )
    )


def _revoke_cst(fed: AuditFederation, compromised_since: datetime) -> None:
    """Revoke CST's key in the directory folder (the topic does not have the version)."""
    doc = _revocation(fed, compromised_since)
    dstore.write_file(dstore.version_path(fed.root / "directory", doc.signed.version), doc)


@pytest.fixture(scope="module")
def defects(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: str
) -> tuple[AuditFederation, dict[str, list[tuple[int, int]]]]:
    """One sightings topic with every defect the issue names, and where each one is."""
    fed = AuditFederation(tmp_path_factory.mktemp("audit-defects"), bootstrap)
    where: dict[str, list[tuple[int, int]]] = {}
    fed.publish([incident()])  # on the incidents topic, to be copied
    spots = fed.publish([sighting() for _ in range(5)])  # sequences 0..4
    cst = spots[0][0]  # the partition CST's sightings stream is bound to
    assert {p for p, _ in spots} == {cst}
    genuine = [m for m in fed.read(fed.sightings) if m.partition == cst]
    # 1. A record re-published at a new offset of its own partition (sequence 1 again).
    where[ReasonCode.CHAIN_REPLAY.value] = [fed.send(fed.sightings, genuine[1].value, cst)]
    # 2. Deleted by omission: sequence 5 is sealed and reserved, but never reaches the broker.
    pub = fed.publisher()
    try:
        real_send = pub._send
        pub._send = lambda topic, data, partition: (cst, -1)  # type: ignore[method-assign]
        pub.publish(sighting())
        pub._send = real_send  # type: ignore[method-assign]
        after_gap = pub.publish(sighting())  # sequence 6
    finally:
        pub.close()
    # Reported at the end of the replay, at the record that revealed it.
    where[ReasonCode.CHAIN_GAP.value] = [(after_gap.partition, after_gap.offset)]
    # 3. A forged record: a key claiming to be CST's, which the directory does not list.
    forged = seal(
        AgencyIdentity.generate("cst"),
        environment=demo_cmd.ENVIRONMENT,
        topic=fed.sightings,
        kind=RecordKind.SIGHTING,
        sequence=7,
        prev_digest=bytes(32),
        schema_fingerprint=bytes(8),
        payload=b"forged",
        recipients=[fed.ids["herts-police"].public],
        partition=cst,
    ).data
    where[ReasonCode.UNKNOWN_KEY.value] = [fed.send(fed.sightings, forged, cst)]
    # 4. A genuine record copied from another topic, and one copied to another partition.
    copied = fed.read(fed.incidents)[0].value
    other = (cst + 1) % fed.partitions
    where[ReasonCode.BINDING_MISMATCH.value] = [
        fed.send(fed.sightings, copied, cst),
        fed.send(fed.sightings, genuine[2].value, other),
    ]
    # 5. Records signed after the key's compromise started (revoked later, with compromised_since).
    compromised_since = datetime.now(UTC)
    time.sleep(0.05)
    where[ReasonCode.KEY_REVOKED.value] = fed.publish([sighting(), sighting()])
    _revoke_cst(fed, compromised_since)
    return fed, where


def test_each_injected_defect_is_found_with_its_reason_code_and_offset(
    defects: tuple[AuditFederation, dict[str, list[tuple[int, int]]]], tmp_path: Path
) -> None:
    fed, where = defects
    report = tmp_path / "defects.json"
    result = fed.replay_cli(fed.sightings, report)
    assert result.exit_code == 1, result.output
    expected = sorted((reason, p, o) for reason, spots in where.items() for p, o in spots)
    assert sorted(findings_of(report)) == expected
    summary = json.loads(report.read_text())["summary"]
    assert summary["verdict"] == "integrity findings"
    assert summary["findings"]["integrity"] == 7
    # 6 sightings that reached the broker (sequence 5 never did), the replay, the forgery,
    # the two copies and the 2 records appended after the compromise.
    assert summary["records"] == 12
    assert summary["producers"]["cst"]["lowest_sequence"] == 0
    assert summary["producers"]["cst"]["highest_sequence"] == 6
    assert "verdict: integrity findings" in result.output


def test_a_resumed_replay_gives_the_same_result_as_a_full_one(
    defects: tuple[AuditFederation, dict[str, list[tuple[int, int]]]], tmp_path: Path
) -> None:
    """Stop after a few records, resume from the checkpoint with a new consumer: same end."""
    fed, _ = defects
    history = dstore.load_folder(fed.root / "directory")
    config = AuditConfig(environment=history.environment)

    def run(**kwargs: Any) -> Any:
        source = KafkaSource(fed.bootstrap, fed.sightings)
        try:
            return audit(
                source=source,
                history=history,
                config=config,
                batch_size=3,
                checkpoint_key=fed.ids["inspectorate"],  # checkpoints are signed (issue 20)
                **kwargs,
            )
        finally:
            source.close()

    full = run(report=tmp_path / "full.json")
    ckpt = tmp_path / "audit.ckpt"
    first = run(checkpoint=ckpt, report=tmp_path / "part.json", stop_after=4, checkpoint_every=1)
    assert not first.complete
    resumed = run(checkpoint=ckpt, report=tmp_path / "part.json")
    assert resumed.complete
    assert resumed.summary == full.summary
    assert findings_of(tmp_path / "part.json") == findings_of(tmp_path / "full.json")
    assert resumed.summary["records"] == 12


# --- The directory topic, an expired directory, and the sharing agreement. ---------------------


def test_a_revocation_found_only_on_the_directory_topic_is_applied(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, bootstrap: str
) -> None:
    """The auditor's folder lacks the newest version; the bus's directory topic has it. The replay
    reads it (kept in the folder since), so records appended after the compromise are found."""
    fed = AuditFederation(tmp_path_factory.mktemp("audit-follow"), bootstrap)
    fed.publish([sighting() for _ in range(3)])
    compromised_since = datetime.now(UTC)
    time.sleep(0.05)
    late = fed.publish([sighting(), sighting()])
    doc = _revocation(fed, compromised_since)
    folder = fed.root / "directory"
    assert not dstore.version_path(folder, doc.signed.version).exists()
    dstore.publish_to_topic(bootstrap, fed.directory_topic, [doc])
    # `audit digest --topic` judges with the same directory (revoked records are other items).
    digest = runner.invoke(
        app,
        [
            "audit",
            "digest",
            "--topic",
            fed.sightings,
            "--directory",
            str(folder),
            "--bootstrap-servers",
            bootstrap,
        ],
    )
    assert digest.exit_code == 0, digest.output
    assert dstore.version_path(folder, doc.signed.version).exists()
    # A replay from a folder without the new version (a copy made before) reads it too.
    stale = tmp_path / "stale-directory"
    shutil.copytree(folder, stale)
    dstore.version_path(stale, doc.signed.version).unlink()
    report = tmp_path / "followed.json"
    result = fed.replay_cli(fed.sightings, report, directory=stale)
    assert result.exit_code == 1, result.output
    assert findings_of(report) == [(ReasonCode.KEY_REVOKED.value, p, o) for p, o in late]
    summary = json.loads(report.read_text())["summary"]
    assert summary["directory_version"] == doc.signed.version
    assert dstore.version_path(stale, doc.signed.version).exists()
    assert summary["digest"]["value"] in digest.output


def test_an_expired_directory_is_refused_unless_allowed(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, bootstrap: str
) -> None:
    """Exit 3 with a clear error (a frozen directory could hide a revocation); with
    --allow-expired-directory the replay runs, with a warning."""
    clean = AuditFederation(tmp_path_factory.mktemp("audit-expired"), bootstrap)
    clean.publish([sighting() for _ in range(3)])
    folder = tmp_path / "directory"
    shutil.copytree(clean.root / "directory", folder)
    latest = dstore.load_folder(folder).latest
    renewed = clean.signed(
        edit.renew(latest, now=datetime.now(UTC), validity=timedelta(milliseconds=300))
    )
    dstore.write_file(dstore.version_path(folder, renewed.signed.version), renewed)
    time.sleep(0.5)
    refused = clean.replay_cli(clean.sightings, tmp_path / "r.json", directory=folder)
    assert refused.exit_code == 3, refused.output
    assert "expired" in refused.output
    assert "--allow-expired-directory" in refused.output
    assert not (tmp_path / "r.json").exists()
    allowed = clean.replay_cli(
        clean.sightings, tmp_path / "r.json", "--allow-expired-directory", directory=folder
    )
    assert allowed.exit_code == 0, allowed.output
    assert "expired" in allowed.output
    assert json.loads((tmp_path / "r.json").read_text())["findings"] == []


#: CST's agreement for the --agreement case: gmp receives AMBER only as a partner, and
#: met-police is in none of its lists.
PARTNER_AGREEMENT = """producer = "cst"
member_forces = ["herts-police"]
amber_partners = ["gmp"]
auditors = ["inspectorate"]
auditor_tlp = ["CLEAR", "GREEN", "AMBER"]
[force_areas]
herts-police = ["HERTFORDSHIRE"]
"""


def test_the_agreement_option_entitles_amber_partners_and_flags_others(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, bootstrap: str
) -> None:
    """--agreement (the producer's own file): an AMBER record addressed to the area's force, an
    AMBER partner and the auditor is clean; one also addressed to an agency outside the
    agreement is recipient_not_entitled."""
    fed = AuditFederation(tmp_path_factory.mktemp("audit-agreement"), bootstrap, PARTNER_AGREEMENT)
    pub = fed.publisher()
    try:
        partner = pub.publish(sighting("AMBER"))
        named = pub.publish(sighting("AMBER"), named=["met-police"])
    finally:
        pub.close()
    assert partner.recipients == ("gmp", "herts-police", "inspectorate")
    assert "met-police" in named.recipients
    agreement = str(fed.root / "agreement.toml")
    report = tmp_path / "agreement.json"
    result = fed.replay_cli(fed.sightings, report, "--agreement", agreement)
    assert result.exit_code == 1, result.output
    assert findings_of(report) == [
        (ReasonCode.RECIPIENT_NOT_ENTITLED.value, named.partition, named.offset)
    ]
    # Without the agreement, the directory entitles every consumer.
    plain = fed.replay_cli(fed.sightings, tmp_path / "plain.json")
    assert plain.exit_code == 0, plain.output

"""The auditor's own state and rights, on the REAL broker (issue 20, classes 6 and 7).

* **A checkpoint edited by hand** (anyone who can write the auditor's files): positions moved past
  a hostile record, or the finding it produced dropped. The resumed replay refuses with the
  checkpoint's code (exit 3), and the checkpoint, its ledger and its findings file are left as
  they were; ``--restart`` then audits the whole topic again and reports the hostile record, and
  genuine records published afterwards audit clean.
* **Least privilege**: on a secured cluster (mutual TLS, directory-derived ACLs) the auditor's
  certificate cannot read ``__consumer_offsets`` (every force's group names, positions and
  hosts), which its former wildcard grant allowed, and can still run ``intelbus audit replay``
  (directory topic, timestamp-type check, every partition of a bus topic).

Each case records its outcome for the report card (tests/attacks/report.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumers.audit import checkpoint as cp
from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import KafkaSource
from deploy.kafka import acls as acl_plan
from deploy.kafka.launcher import BrokerTls, LocalKafka
from deploy.tls.certs import PRINCIPAL_MAPPING_RULES, CertificateAuthority, IssuedCert
from intelbus.cli.main import app
from intelbus.directory import store as dstore
from intelbus.errors import KafkaUnavailableError, ReasonCode
from intelbus.kinds import Family
from intelbus.store.sqlite import SqliteStore
from intelbus.transport import kafka as transport
from intelbus.transport.security import TopicNotAuthorized, TransportSecurity
from intelbus.transport.topics import bus_topics, topic_name
from tests.attacks.report import attack_result, genuine_result
from tests.integration.test_audit_replay import AuditFederation, findings_of, sighting
from tests.unit.test_acls import NOW, federation_body

pytestmark = pytest.mark.kafka
runner = CliRunner()


@dataclass
class Audited:
    """A bus topic with a hostile record, and an auditor's checkpoint stopped on that topic."""

    fed: AuditFederation
    partition: int
    hostile: int  # offset of the replayed copy
    ckpt: Path

    @property
    def key_file(self) -> Path:
        return self.fed.root / "keys" / "inspectorate.key"

    def partial(self, stop_after: int) -> None:
        """Audit part of the topic (with the auditor's signed checkpoint), as a stopped run."""
        history = dstore.load_folder(self.fed.root / "directory")
        source = KafkaSource(self.fed.bootstrap, self.fed.sightings)
        try:
            result = audit(
                source=source,
                history=history,
                config=AuditConfig(environment=history.environment),
                checkpoint=self.ckpt,
                checkpoint_key=self.fed.ids["inspectorate"],
                batch_size=2,
                checkpoint_every=1,
                stop_after=stop_after,
            )
        finally:
            source.close()
        assert not result.complete

    def replay(self, report: Path, *extra: str) -> Any:
        return self.fed.replay_cli(
            self.fed.sightings,
            report,
            "--checkpoint",
            str(self.ckpt),
            "--key-file",
            str(self.key_file),
            *extra,
        )

    def files(self) -> dict[str, bytes]:
        """The checkpoint file, its findings file, and the checkpoint its ledger holds."""
        out = {
            p.name: p.read_bytes()
            for p in (self.ckpt, self.ckpt.with_name(self.ckpt.name + ".findings.jsonl"))
        }
        ledger = SqliteStore(self.ckpt.with_name(self.ckpt.name + ".ledger"))
        try:
            out["ledger"] = (ledger.meta(cp.LEDGER_KEY) or "").encode()
        finally:
            ledger.close()
        return out

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit the checkpoint's body in the file and in the ledger, keeping the signature (what
        someone with write access to the auditor's files can do)."""

        def edited(text: str) -> str:
            outer = json.loads(text)
            body = json.loads(outer["body"])
            change(body)
            outer["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
            return json.dumps(outer, separators=(",", ":"))

        self.ckpt.write_text(edited(self.ckpt.read_text()))
        ledger = SqliteStore(self.ckpt.with_name(self.ckpt.name + ".ledger"))
        try:
            ledger._conn.execute(
                "UPDATE meta SET value = ? WHERE key = ?",
                (edited(ledger.meta(cp.LEDGER_KEY) or ""), cp.LEDGER_KEY),
            )
            ledger._conn.commit()
        finally:
            ledger.close()


@pytest.fixture
def audited(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, bootstrap: str) -> Audited:
    """CST's two genuine sightings, a copy of the first appended by someone with write access
    (a replay: chain_replay), then eight more genuine sightings, all on CST's partition."""
    fed = AuditFederation(tmp_path_factory.mktemp("auditor-state"), bootstrap)
    first = fed.publish([sighting(), sighting()])
    partition = first[0][0]
    copy = next(m for m in fed.read(fed.sightings) if (m.partition, m.offset) == first[0])
    _, hostile = fed.send(fed.sightings, copy.value, partition=partition)
    fed.publish([sighting() for _ in range(8)])
    return Audited(fed, partition, hostile, tmp_path / "audit.ckpt")


def _refused(a: Audited, case: str, code: str, before: dict[str, bytes]) -> None:
    """The resumed replay refuses with ``code`` (exit 3), writes no report, touches nothing."""
    report = a.ckpt.with_name(f"resumed-{uuid.uuid4().hex[:6]}.json")
    result = a.replay(report)
    flat = " ".join(result.output.split())
    unchanged = a.files() == before and not report.exists()
    attack_result(
        case=case,
        source="broker",
        expected_reason=code,
        outcome="rejected" if result.exit_code == 3 else "accepted",
        reason=code if f"error: {code}:" in flat else f"exit {result.exit_code}",
        trusted_state_unchanged=unchanged,
    )
    assert result.exit_code == 3, result.output
    assert f"error: {code}:" in flat
    assert "--restart" in flat
    assert unchanged


def _genuine_flow_afterwards(a: Audited, case: str) -> None:
    """--restart audits the whole topic again and reports the hostile record; CST's genuine
    records published afterwards audit with no finding."""
    report = a.ckpt.with_name("restarted.json")
    result = a.replay(report, "--restart")
    assert result.exit_code == 1, result.output
    hostile = (ReasonCode.CHAIN_REPLAY.value, a.partition, a.hostile)
    assert findings_of(report) == [hostile]
    later = a.fed.publish([sighting() for _ in range(3)])
    fresh = a.ckpt.with_name("fresh.json")
    again = a.fed.replay_cli(a.fed.sightings, fresh)
    assert again.exit_code == 1, again.output
    found = findings_of(fresh)
    kept = sum(1 for p, o in later if not any((fp, fo) == (p, o) for _, fp, fo in found))
    genuine_result(case=case, source="broker", published=len(later), kept=kept)
    assert found == [hostile]
    assert json.loads(fresh.read_text())["summary"]["records"] == 14


def test_a_checkpoint_moved_past_a_hostile_record_is_refused(audited: Audited) -> None:
    """Stopped before the replayed copy; the checkpoint (file and ledger) is edited so the resumed
    run would start after it. Refused as forged; then the genuine flow audits as it should."""
    a = audited
    a.partial(stop_after=2)
    point = cp.verified(a.ckpt.read_text(), source="t", key=a.fed.ids["inspectorate"].public)
    assert point.positions[a.partition][0] <= a.hostile  # not judged yet

    def past_it(body: dict[str, Any]) -> None:
        body["positions"][str(a.partition)][0] = a.hostile + 1

    a.edit(past_it)
    _refused(a, "auditor.checkpoint_moved_past_hostile_record", "checkpoint_forged", a.files())
    _genuine_flow_afterwards(a, "auditor.checkpoint_moved_past_hostile_record")


def test_a_checkpoint_whose_finding_was_dropped_is_refused(audited: Audited) -> None:
    """Stopped after the replayed copy was found. First the finding is blanked out of the
    findings file (same length); then the checkpoint is edited to account for no findings and
    the file emptied. Both refused, nothing touched; then the genuine flow."""
    a = audited
    a.partial(stop_after=4)
    point = cp.verified(a.ckpt.read_text(), source="t", key=a.fed.ids["inspectorate"].public)
    assert point.state["by_reason"] == {ReasonCode.CHAIN_REPLAY.value: 1}
    spool = a.ckpt.with_name(a.ckpt.name + ".findings.jsonl")
    genuine = spool.read_bytes()
    assert ReasonCode.CHAIN_REPLAY.value.encode() in genuine
    spool.write_bytes(b" " * (len(genuine) - 1) + b"\n")
    _refused(a, "auditor.finding_blanked_from_findings_file", "findings_altered", a.files())

    def no_findings(body: dict[str, Any]) -> None:
        body["findings_bytes"] = 0
        body["state"]["counts"]["integrity"] = 0
        body["state"]["by_reason"] = {}

    spool.write_bytes(b"")
    a.edit(no_findings)
    _refused(a, "auditor.checkpoint_finding_dropped", "checkpoint_forged", a.files())
    _genuine_flow_afterwards(a, "auditor.checkpoint_finding_dropped")


def test_a_checkpoint_signed_by_another_key_or_unsigned_is_refused(audited: Audited) -> None:
    """A whole checkpoint written by someone else (their key, or none): refused by code."""
    a = audited
    a.partial(stop_after=2)
    key = a.fed.ids["inspectorate"]
    point = cp.verified(a.ckpt.read_text(), source="t", key=key.public)
    moved = cp.Checkpoint(
        **{
            **{f: getattr(point, f) for f in cp.Checkpoint.__slots__},
            "positions": {**point.positions, a.partition: (a.hostile + 1, a.hostile + 9)},
        }
    )
    a.ckpt.write_text(cp.signed(moved, a.fed.ids["herts-police"]))
    _refused(a, "auditor.checkpoint_signed_by_another_key", "checkpoint_foreign_key", a.files())
    a.ckpt.write_text(json.dumps(moved.to_json()))
    _refused(a, "auditor.checkpoint_unsigned", "checkpoint_unsigned", a.files())
    _genuine_flow_afterwards(a, "auditor.checkpoint_signed_by_another_key")


# --- Least privilege on a secured cluster. --------------------------------------------------------


@dataclass(frozen=True)
class SecuredBus:
    bootstrap: str
    prefix: str
    base: Path
    certs: dict[str, IssuedCert]

    def sec(self, name: str) -> TransportSecurity:
        return self.certs[name].client_security()


@pytest.fixture(scope="module")
def secured_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBus]:
    """One KRaft node, mutual TLS, the StandardAuthorizer, ACLs from the directory (the shape of
    tests/integration/test_secured_cluster.py, with one node to stay fast)."""
    base = tmp_path_factory.mktemp("auditor-acls")
    ca = CertificateAuthority.create(base / "tls")
    broker = ca.issue_broker()
    certs = {"admin": ca.issue_admin()}
    for agency in ("cst", "herts-police", "inspectorate"):
        certs[agency] = ca.issue_agency(agency)
    tls = BrokerTls(
        keystore_file=broker.key_file.with_name("broker.keystore.pem"),
        truststore_file=ca.ca_file,
        admin=certs["admin"].client_security(),
        principal_mapping_rules=PRINCIPAL_MAPPING_RULES,
    )
    cluster = LocalKafka(base / "kafka", nodes=1, tls=tls)
    try:
        bootstrap = cluster.start(timeout=120)
    except KafkaUnavailableError as e:
        pytest.fail(f"the secured cluster did not start (Kafka tests never skip): {e}")
    try:
        prefix = f"acl-{uuid.uuid4().hex[:6]}"
        admin = certs["admin"].client_security()
        transport.create_topics(bootstrap, bus_topics(prefix=prefix, partitions=2), security=admin)
        body = federation_body(prefix, folder=base / "directory")
        acl_plan.apply(
            bootstrap, acl_plan.desired_acls(body, prefix=prefix, now=NOW), security=admin
        )
        yield SecuredBus(bootstrap, prefix, base, certs)
    finally:
        cluster.stop()


def _bounds(s: SecuredBus, who: str, topic: str) -> dict[int, tuple[int, int]]:
    consumer = transport.make_consumer(s.bootstrap, security=s.sec(who), group_id=None)
    try:
        return transport.partition_bounds(consumer, topic)
    finally:
        consumer.close()


def _make_group_offsets(s: SecuredBus) -> None:
    """A force joins its group and commits: the broker now has __consumer_offsets, holding the
    force's group name, positions and host."""
    topic = topic_name(Family.SIGHTINGS, prefix=s.prefix)
    consumer = transport.make_consumer(
        s.bootstrap, security=s.sec("herts-police"), group_id=f"{s.prefix}.herts-police"
    )
    try:
        transport.subscribe(consumer, [topic], on_assigned=lambda _: {}, on_revoked=lambda: None)
        for _ in range(40):
            transport.poll(consumer, timeout_ms=500, max_records=10)
            if transport.has_assignment(consumer):
                break
        assert transport.commit(consumer, {(topic, 0): 0, (topic, 1): 0})
    finally:
        consumer.close()


def test_the_auditor_cannot_read_consumer_offsets_and_can_still_audit(
    secured_bus: SecuredBus, tmp_path: Path
) -> None:
    """Positive control first: the operator (a super user) reads __consumer_offsets. The auditor's
    certificate is refused it (TopicNotAuthorized), yet runs `intelbus audit replay` on a bus topic
    (directory topic, timestamp-type check, every partition) to the end."""
    s = secured_bus
    _make_group_offsets(s)
    offsets_topic = "__consumer_offsets"
    assert _bounds(s, "admin", offsets_topic)  # it exists, and a super user can see it
    refused = False
    try:
        _bounds(s, "inspectorate", offsets_topic)
    except TopicNotAuthorized:
        refused = True
    attack_result(
        case="auditor.reads_consumer_offsets",
        source="broker",
        expected_reason="topic_authorization_failed",
        outcome="rejected" if refused else "accepted",
        reason="topic_authorization_failed" if refused else "read",
        trusted_state_unchanged=True,
    )
    assert refused
    sightings = topic_name(Family.SIGHTINGS, prefix=s.prefix)
    assert set(_bounds(s, "inspectorate", sightings)) == {0, 1}
    cert = s.certs["inspectorate"]
    env = {
        "INTELBUS_TLS_CA": str(cert.ca_file),
        "INTELBUS_TLS_CERT": str(cert.cert_file),
        "INTELBUS_TLS_KEY": str(cert.key_file),
    }
    report = tmp_path / "acl-audit.json"
    result = runner.invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            sightings,
            "--directory",
            str(s.base / "directory"),
            "--bootstrap-servers",
            s.bootstrap,
            "--report",
            str(report),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["summary"]
    assert summary["complete"] is True
    assert summary["verdict"] == "clean"

"""Transport security on a real secured cluster: 3 KRaft brokers, mutual TLS, directory-derived ACLs.

One cluster for the whole module (started by LocalKafka with ``tls=``, every listener SSL with
``ssl.client.auth=required``, the StandardAuthorizer, super users ``broker`` and ``admin``). Each
refusal is paired with the same operation succeeding for the principal that is entitled to it, so
no negative result can pass because the cluster was simply unreachable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.kafka import acls as acl_plan
from deploy.kafka.launcher import BrokerTls, LocalKafka
from deploy.tls.certs import PRINCIPAL_MAPPING_RULES, CertificateAuthority, IssuedCert
from intelbus.cli.main import app
from intelbus.directory.model import DirectoryBody, Role
from intelbus.errors import KafkaUnavailableError, NotAuthorized
from intelbus.kinds import Family
from intelbus.transport import kafka as transport
from intelbus.transport.security import (
    GroupNotAuthorized,
    TlsFiles,
    TopicNotAuthorized,
    TransportSecurity,
)
from intelbus.transport.topics import TopicSpec, bus_topics, topic_name
from tests.unit.test_acls import NOW, federation_body, with_roles

NODES = 3
# Fail fast where failure is the expected outcome: a refused handshake is not retried for minutes.
SHORT = {"request_timeout_ms": 4_000, "bootstrap_timeout_ms": 4_000}
PRODUCER_LIMITS = {
    "max_block_ms": 10_000,
    "request_timeout_ms": 8_000,
    "delivery_timeout_ms": 10_000,
}


@dataclass(frozen=True)
class Secured:
    bootstrap: str
    prefix: str
    body: DirectoryBody
    certs: dict[str, IssuedCert]
    foreign: IssuedCert  # CN=cst, but issued by another CA
    base: Path  # tls/ (the CA), directory/ (signed versions)
    first_plan: acl_plan.AclPlan

    def sec(self, name: str) -> TransportSecurity:
        return self.certs[name].client_security()

    @property
    def admin(self) -> TransportSecurity:
        return self.sec("admin")

    def topic(self, family: Family) -> str:
        return topic_name(family, prefix=self.prefix)

    @property
    def other_topic(self) -> str:
        return f"{self.prefix}.other-feed"

    def ends(self, topic: str) -> dict[int, int]:
        return transport.end_offsets(self.bootstrap, topic, security=self.admin, group_id=None)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("secured")
    ca = CertificateAuthority.create(base / "tls")
    broker = ca.issue_broker()
    certs = {"admin": ca.issue_admin()}
    for agency in ("cst", "other-charity", "herts-police", "gmp", "inspectorate"):
        certs[agency] = ca.issue_agency(agency)
    foreign = CertificateAuthority.create(base / "foreign-tls").issue_agency("cst")
    tls = BrokerTls(
        keystore_file=broker.key_file.with_name("broker.keystore.pem"),
        truststore_file=ca.ca_file,
        admin=certs["admin"].client_security(),
        principal_mapping_rules=PRINCIPAL_MAPPING_RULES,
    )
    cluster = LocalKafka(base / "kafka", nodes=NODES, tls=tls)
    try:
        bootstrap = cluster.start(timeout=150)
    except KafkaUnavailableError as e:
        pytest.fail(f"the secured cluster did not start (Kafka tests never skip): {e}")
    try:
        prefix = f"sec-{uuid.uuid4().hex[:6]}"
        admin = certs["admin"].client_security()
        transport.create_topics(
            bootstrap,
            [
                *bus_topics(prefix=prefix, replication_factor=NODES, partitions=1),
                TopicSpec(f"{prefix}.other-feed", 1, NODES),
            ],
            security=admin,
        )
        body = federation_body(prefix, folder=base / "directory")
        first = acl_plan.apply(
            bootstrap, acl_plan.desired_acls(body, prefix=prefix, now=NOW), security=admin
        )
        yield Secured(bootstrap, prefix, body, certs, foreign, base, first)
    finally:
        cluster.stop()


def _connects(bootstrap: str, security: TransportSecurity, **kwargs: object) -> set[int]:
    with transport.admin_client(bootstrap, security=security, **{**SHORT, **kwargs}) as admin:
        meta = admin.describe_cluster()
    return {int(b.get("broker_id", b.get("node_id", -1))) for b in meta["brokers"]}


def _send(s: Secured, who: str, topic: str) -> tuple[int, int]:
    producer = transport.make_producer(s.bootstrap, security=s.sec(who), **PRODUCER_LIMITS)
    try:
        return transport.send_and_wait(producer, topic, b"opaque", key=who.encode(), timeout_s=15)
    finally:
        producer.close(timeout=5)


# --- Who may connect. ----------------------------------------------------------------------------


def test_agency_certificate_of_our_ca_connects(secured: Secured) -> None:
    """Positive control: a certificate issued by the bus's CA reaches all three brokers."""
    assert set(range(1, NODES + 1)) == _connects(secured.bootstrap, secured.sec("gmp"))


def test_client_without_certificate_cannot_connect(secured: Secured) -> None:
    """TLS that trusts the right CA but presents no client certificate is refused (client.auth)."""
    ca = str(secured.certs["admin"].ca_file)
    with pytest.raises(KafkaUnavailableError):
        _connects(
            secured.bootstrap,
            TransportSecurity.plaintext(),
            security_protocol="SSL",
            ssl_cafile=ca,
        )


def test_certificate_from_another_ca_cannot_connect(secured: Secured) -> None:
    """A certificate with the very same CN (cst) but another issuer is refused by the brokers."""
    ours = secured.certs["cst"]
    impostor = TransportSecurity(
        tls=TlsFiles(ours.ca_file, secured.foreign.cert_file, secured.foreign.key_file)
    )
    with pytest.raises(KafkaUnavailableError):
        _connects(secured.bootstrap, impostor)


def test_client_trusting_another_ca_refuses_the_brokers(secured: Secured) -> None:
    """The other direction: a client that does not trust our CA will not talk to our brokers."""
    ours = secured.certs["cst"]
    wrong_trust = TransportSecurity(
        tls=TlsFiles(secured.foreign.ca_file, ours.cert_file, ours.key_file)
    )
    with pytest.raises(KafkaUnavailableError):
        _connects(secured.bootstrap, wrong_trust)


def test_plaintext_connection_to_the_ssl_port_fails_with_a_hint(secured: Secured) -> None:
    """Plaintext Kafka protocol against an SSL listener gets no answer, and the error says why:
    the listener speaks TLS and the client has no certificate (not just a timeout)."""
    with pytest.raises(KafkaUnavailableError, match="speaks TLS"):
        _connects(secured.bootstrap, TransportSecurity.plaintext())


# --- What each role may do. -----------------------------------------------------------------------


def test_cst_writes_to_its_own_topic(secured: Secured) -> None:
    """Positive control: the producer's record is acknowledged and the log end moves."""
    topic = secured.topic(Family.SIGHTINGS)
    before = sum(secured.ends(topic).values())
    _, offset = _send(secured, "cst", topic)
    assert offset >= 0
    assert before + 1 == sum(secured.ends(topic).values())


def test_police_certificate_cannot_write_to_sightings(secured: Secured) -> None:
    """A force's send is refused as NotAuthorized (typed, not retried) and nothing is appended."""
    topic = secured.topic(Family.SIGHTINGS)
    before = secured.ends(topic)
    with pytest.raises(NotAuthorized) as refused:
        _send(secured, "herts-police", topic)
    assert isinstance(refused.value, transport.SendFailed)
    assert refused.value.indeterminate is False
    assert before == secured.ends(topic)


def test_auditor_cannot_write_anywhere(secured: Secured) -> None:
    """Every topic of the bus, and another producer's, refuses the auditor's writes."""
    topics = [secured.topic(f) for f in Family] + [secured.other_topic]
    before = {t: secured.ends(t) for t in topics}
    producer = transport.make_producer(
        secured.bootstrap, security=secured.sec("inspectorate"), **PRODUCER_LIMITS
    )
    try:
        results = transport.send_many(producer, [(t, b"opaque", None) for t in topics], key=None)
    finally:
        producer.close(timeout=5)
    assert all(isinstance(r, NotAuthorized) for r in results), results
    assert before == {t: secured.ends(t) for t in topics}


def test_police_reads_with_its_own_group_and_auditor_reads_everything(secured: Secured) -> None:
    """Positive control for reads: the force's group sees CST's record; the auditor reads all."""
    topic = secured.topic(Family.SIGHTINGS)
    _send(secured, "cst", topic)
    consumer = transport.make_consumer(
        secured.bootstrap,
        security=secured.sec("herts-police"),
        group_id=f"{secured.prefix}.herts-police",
    )
    try:
        transport.subscribe(consumer, [topic], on_assigned=lambda _: {}, on_revoked=lambda: None)
        got: list[transport.Message] = []
        for _ in range(40):
            got += transport.poll(consumer, timeout_ms=500, max_records=100)
            if got:
                break
    finally:
        consumer.close()
    assert got
    assert {m.topic for m in got} == {topic}
    auditor = transport.make_consumer(
        secured.bootstrap, security=secured.sec("inspectorate"), group_id=None
    )
    try:
        for t in (topic, secured.other_topic, secured.topic(Family.DIRECTORY)):
            assert transport.partition_bounds(auditor, t) == {0: (0, secured.ends(t)[0])}
    finally:
        auditor.close()


def test_consumers_and_auditors_may_check_the_timestamp_type_their_acls_allow(
    secured: Secured,
) -> None:
    """Consumers and auditors refuse to start on a topic that is not LogAppendTime, so their
    ACLs must let them read that setting (and nothing more): the force for the topics it reads,
    the auditor for any; CST, a producer only, may not."""
    topics = [secured.topic(Family.SIGHTINGS), secured.topic(Family.HEARTBEATS)]
    for who in ("herts-police", "inspectorate"):
        types = transport.timestamp_types(secured.bootstrap, topics, security=secured.sec(who))
        assert types == dict.fromkeys(topics, "LogAppendTime"), who
    with pytest.raises(NotAuthorized):
        transport.timestamp_types(secured.bootstrap, topics, security=secured.sec("cst"))


def _poll_a_while(consumer: object) -> None:
    for _ in range(20):
        transport.poll(consumer, timeout_ms=500, max_records=10)


def test_police_cannot_use_another_agency_group(secured: Secured) -> None:
    """A force may read the topic, but only in its own consumer group."""
    consumer = transport.make_consumer(
        secured.bootstrap, security=secured.sec("herts-police"), group_id=f"{secured.prefix}.gmp"
    )
    try:
        transport.subscribe(
            consumer,
            [secured.topic(Family.SIGHTINGS)],
            on_assigned=lambda _: {},
            on_revoked=lambda: None,
        )
        with pytest.raises(GroupNotAuthorized):
            _poll_a_while(consumer)
    finally:
        consumer.close()


def _cst_reads_other_feed(s: Secured) -> dict[int, tuple[int, int]]:
    consumer = transport.make_consumer(s.bootstrap, security=s.sec("cst"), group_id=None)
    try:
        return transport.partition_bounds(consumer, s.other_topic)
    finally:
        consumer.close()


def test_acl_apply_is_idempotent(secured: Secured) -> None:
    """The fixture's first apply created every binding; a second apply changes nothing."""
    desired = acl_plan.desired_acls(secured.body, prefix=secured.prefix, now=NOW)
    assert secured.first_plan.add == desired
    second = acl_plan.apply(secured.bootstrap, desired, security=secured.admin)
    assert second.empty
    assert desired == transport.list_acls(secured.bootstrap, security=secured.admin)


def test_agency_cannot_manage_acls(secured: Secured) -> None:
    """Only super users may read or change ACLs; an agency is refused as NotAuthorized."""
    with pytest.raises(NotAuthorized):
        transport.list_acls(secured.bootstrap, security=secured.sec("cst"))


def test_cst_cannot_read_another_producers_topic_unless_granted(secured: Secured) -> None:
    """Refused; allowed once the directory grants CST the consumer role; refused again on revoke."""
    with pytest.raises(TopicNotAuthorized):
        _cst_reads_other_feed(secured)
    granted = with_roles(secured.body, "cst", [Role.PRODUCER, Role.CONSUMER])
    admin = secured.admin
    dry = acl_plan.apply(
        secured.bootstrap,
        acl_plan.desired_acls(granted, prefix=secured.prefix, now=NOW),
        security=admin,
        dry_run=True,
    )
    assert dry.add
    assert not dry.remove
    with pytest.raises(TopicNotAuthorized):  # a dry run changed nothing
        _cst_reads_other_feed(secured)
    try:
        acl_plan.apply(
            secured.bootstrap,
            acl_plan.desired_acls(granted, prefix=secured.prefix, now=NOW),
            security=admin,
        )
        assert _cst_reads_other_feed(secured) == {0: (0, secured.ends(secured.other_topic)[0])}
    finally:
        undo = acl_plan.apply(
            secured.bootstrap,
            acl_plan.desired_acls(secured.body, prefix=secured.prefix, now=NOW),
            security=admin,
        )
    assert undo.remove == dry.add
    with pytest.raises(TopicNotAuthorized):
        _cst_reads_other_feed(secured)


def test_cli_shows_the_acl_diff_and_needs_the_admin_certificate(secured: Secured) -> None:
    """`intelbus deploy acls` (dry run) finds nothing to change; with an agency's certificate
    instead of the operator's it is refused (exit 3), since only super users manage ACLs."""
    args = [
        "deploy",
        "acls",
        "--directory",
        str(secured.base / "directory"),
        "--prefix",
        secured.prefix,
        "--bootstrap",
        secured.bootstrap,
    ]
    result = CliRunner().invoke(app, [*args, "--tls-dir", str(secured.base / "tls")])
    assert result.exit_code == 0, result.output
    assert "+0 -0 (already in place)" in result.output
    cst = secured.certs["cst"]
    env = {"INTELBUS_TLS_CA": str(cst.ca_file), "INTELBUS_TLS_CERT": str(cst.cert_file)}
    env["INTELBUS_TLS_KEY"] = str(cst.key_file)
    refused = CliRunner().invoke(app, args, env=env)
    assert refused.exit_code == 3
    assert "not authorized" in refused.output

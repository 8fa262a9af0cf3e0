"""The attack table's representative cases on the REAL broker, through the real AgencyConsumer.

One federation (the demo's, from tests/integration/test_end_to_end.py, plus a second producer
``rogue`` and a producer ``leaky`` whose key is revoked) on the session broker. Genuine records and
hostile ones are appended to the real topics, then Herts's consumer runs until idle. Asserted:

* the consumer run returns (0 crashes from hostile input: an exception from it is recorded and
  fails its own test, it does not vanish in the fixture) and commits past every bad record: the
  store's offsets and the group's Kafka offsets both reach the log end;
* each hostile record has its quarantine row, at the offset the broker gave it, with the exact
  reason code, and its raw bytes (the compression bomb's 32 MiB value aside, checked by size);
* trusted state: exactly the genuine records are stored, nothing amended, CST's chain ends at its
  last genuine record with no gap;
* the auditor, replaying the same topic, flags every hostile record at the same offset with the
  consumer's reason code, and exits 1.

Compression bomb: a gzip batch whose one record inflates to 32 MiB (about 32 KiB on the wire).
The bus's topics store batches uncompressed (``compression.type=uncompressed``), so the broker
inflates it, finds it larger than ``max.message.bytes`` and refuses the send: the bomb never
reaches the log or any consumer. (Under ``compression.type=producer`` the broker would keep it and
kafka-python would inflate the whole batch in a consumer's memory.) Every codec Kafka allows still
decodes in the consumer, for topics made before that setting: see the last test.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumers.agency import Stats
from intelbus import federation
from intelbus.cli import demo_cmd
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import sign
from intelbus.envelope import seal
from intelbus.envelope.verify import record_digest
from intelbus.envelope.wire import encode_body, encode_header, parse
from intelbus.errors import ReasonCode, SendFailed
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family, RecordKind
from intelbus.records import Retraction
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, topic_name
from producers.config import ProducerConfig
from producers.publisher import build_publisher
from tests.attacks.harness import resign, trailer_of
from tests.attacks.report import attack_result, genuine_result
from tests.federation import Federation
from tests.federation import sighting_for as _sighting

pytestmark = pytest.mark.kafka

BOMB_BYTES = 32 * 1024 * 1024
R = ReasonCode


@dataclass
class Scenario:
    fed: Federation
    sightings: str
    incidents: str
    genuine: list[str]
    hostile: dict[str, tuple[str, int, int, bytes | int]] = field(default_factory=dict)
    expected: dict[str, ReasonCode] = field(default_factory=dict)
    # case -> the broker's error for a send it refused (the record never reached the log)
    refused: dict[str, str] = field(default_factory=dict)
    stats: Stats | None = None
    crash: str | None = None  # the exception the consumer run raised, if any


def _signed_by_admins(fed: Federation, doc: SignedDirectory) -> SignedDirectory:
    for admin in federation.ADMINS:
        doc = sign(doc, fed.ids[admin].signing_seed())
    dstore.write_file(dstore.version_path(fed.root / "directory", doc.signed.version), doc)
    return doc


def _add_producers(fed: Federation, sightings: str) -> dict[str, AgencyIdentity]:
    """Add ``rogue`` (a second, honest-looking producer) and ``leaky`` (whose key is revoked)."""
    extra = {a: AgencyIdentity.generate(a) for a in ("rogue", "leaky")}
    history = dstore.load_folder(fed.root / "directory")
    body = history.latest
    for agency, ident in extra.items():
        ident.save(fed.root / "keys" / f"{agency}.key")
        body = _signed_by_admins(
            fed,
            edit.add_agency(
                body,
                agency_id=agency,
                display_name=agency,
                roles=[Role.PRODUCER],
                publish_topics=[sightings],
                identity=ident.public,
                now=datetime.now(UTC),
            ),
        ).signed
    _signed_by_admins(
        fed,
        edit.revoke_key(
            body,
            agency_id="leaky",
            key_id=extra["leaky"].key_id.hex(),
            reason="key leaked",
            now=datetime.now(UTC),
        ),
    )
    agreement = demo_cmd.AGREEMENT.replace('producer = "cst"', 'producer = "rogue"')
    (fed.root / "rogue.agreement.toml").write_text(agreement)
    text = (fed.root / "producer.toml").read_text()
    (fed.root / "rogue.toml").write_text(
        text.replace('agency = "cst"', 'agency = "rogue"')
        .replace("keys/cst.key", "keys/rogue.key")
        .replace("agreement.toml", "rogue.agreement.toml")
        .replace("state/cst.sqlite", "state/rogue.sqlite")
    )
    return extra


def _topic_values(fed: Federation, topic: str) -> list[bytes]:
    consumer = transport.make_consumer(fed.bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        return [m.value for m in transport.read_all(consumer, topic)]
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, bootstrap: str) -> Scenario:
    root: Path = tmp_path_factory.mktemp("broker-attacks")
    fed = Federation(root, bootstrap, "sqlite")
    sightings = topic_name(Family.SIGHTINGS, prefix=fed.prefix)
    incidents = topic_name(Family.INCIDENTS, prefix=fed.prefix)
    extra = _add_producers(fed, sightings)
    a, b = _sighting("HERTFORDSHIRE", "GREEN"), _sighting("HERTFORDSHIRE", "AMBER")
    fed.publish([a, b])
    value_a, value_b = _topic_values(fed, sightings)
    # Herts stores the genuine records first, so the attacks below meet an established store.
    baseline = fed.consume("herts-police")
    assert (baseline.stored, sum(baseline.quarantined.values())) == (2, 0)
    s = Scenario(fed, sightings, incidents, [a.record_id, b.record_id])
    now = datetime.now(UTC)
    publisher = build_publisher(ProducerConfig.load(root / "producer.toml"))
    herts_key = publisher.directory.recipient_key("herts-police", now)
    raw = transport.make_producer(bootstrap)
    bomber = transport.make_producer(
        bootstrap, compression_type="gzip", max_request_size=2 * BOMB_BYTES
    )

    cst_partition = parse(value_a).header.partition
    assert cst_partition is not None

    def send(
        case: str,
        value: bytes,
        reason: ReasonCode,
        topic: str = sightings,
        partition: int | None = None,
    ) -> None:
        # On the partition of the stream it claims to continue (CST's), as an attacker would.
        where = cst_partition if partition is None else partition
        _, offset = transport.send_and_wait(raw, topic, value, key=b"cst", partition=where)
        s.hostile[case] = (topic, where, offset, value)
        s.expected[case] = reason

    try:
        flipped = bytearray(value_a)
        flipped[-80] ^= 0x04  # inside the ciphertext
        send("flip", bytes(flipped), R.BAD_SIGNATURE)
        send("truncation", value_a[:-1], R.MALFORMED)
        pa, pb = parse(value_a), parse(value_b)
        send(
            "splice",
            pa.header_bytes + pb.signed_bytes[len(pb.header_bytes) :] + trailer_of(value_a),
            R.BAD_SIGNATURE,
        )
        send("cross_topic_copy", value_a, R.BINDING_MISMATCH, topic=incidents)
        send("replay_new_offset", value_a, R.CHAIN_REPLAY)
        send("replay_newest", value_b, R.CHAIN_DUPLICATE)
        send(
            "copy_other_partition",
            value_b,
            R.BINDING_MISMATCH,
            partition=(cst_partition + 1) % len(transport.end_offsets(bootstrap, sightings)),
        )
        common = {
            "environment": demo_cmd.ENVIRONMENT,
            "topic": sightings,
            "kind": RecordKind.SIGHTING,
            "sequence": 0,
            "prev_digest": bytes(32),
            "schema_fingerprint": bytes(32),
            "payload": b"forged",
            "recipients": [herts_key],
            "partition": cst_partition,
        }
        send("forged", seal(AgencyIdentity.generate("cst"), **common).data, R.UNKNOWN_KEY)  # type: ignore[arg-type]
        send("revoked_key", seal(extra["leaky"], **common).data, R.KEY_REVOKED)  # type: ignore[arg-type]
        # A hostile Avro payload under CST's genuine key and chain (a compromised producer).
        fp, good = publisher.registry.encode(a.SCHEMA, a.to_avro())
        bomb = publisher._publish_payload(
            sightings,
            kind=RecordKind.SIGHTING,
            fingerprint=fp,
            payload=good[:37] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01" * 8,
            # The inspectorate too, so the auditor can see inside it as Herts does.
            keys=[herts_key, publisher.directory.recipient_key("inspectorate", now)],
            record_id=uuid.uuid4(),
        )
        s.hostile["avro_bomb"] = (sightings, bomb.partition, bomb.offset, b"")
        s.expected["avro_bomb"] = R.SCHEMA_VIOLATION
        # A gzip batch inflating to 32 MiB (about 32 KiB on the wire): refused by the broker.
        try:
            transport.send_and_wait(bomber, sightings, bytes(BOMB_BYTES), key=b"cst")
        except SendFailed as e:
            s.refused["compression_bomb"] = type(e.__cause__).__name__
        else:
            s.refused["compression_bomb"] = ""
    finally:
        publisher.close()
    # The rogue producer retracts CST's record, then forwards CST's record re-signed as its own.
    rogue_pub = build_publisher(ProducerConfig.load(root / "rogue.toml"))
    try:
        retraction = Retraction(
            record_id=str(uuid.uuid4()),
            retracts_record_id=a.record_id,
            retracted_at=datetime.now(UTC),
            reason="not true",
            grading=a.grading,
        )
        done = rogue_pub.publish(retraction, family=Family.SIGHTINGS)
        s.hostile["foreign_retraction"] = (sightings, done.partition, done.offset, b"")
        s.expected["foreign_retraction"] = R.FOREIGN_TARGET
        head = rogue_pub.state.head(sightings)
        rogue = extra["rogue"]
        as_rogue = encode_header(
            replace(
                pa.header,
                producer_id="rogue",
                key_id=rogue.key_id,
                sequence=head.next_sequence,
                prev_digest=head.last_digest,
                partition=head.partition,
            )
        )
        body = encode_body(as_rogue, pa.nonce, pa.ciphertext)
        send(
            "forwarding",
            resign(rogue, body),
            R.DECRYPTION_FAILED,
            partition=head.partition,
        )
        version = pa.header.format_version
        assert record_digest(body, version) != record_digest(pa.signed_bytes, version)
    finally:
        rogue_pub.close()
        raw.close()
        bomber.close()
    last = _sighting("HERTFORDSHIRE", "GREEN")
    fed.publish([last])
    s.genuine.append(last.record_id)
    try:
        s.stats = fed.consume("herts-police")
    except Exception as e:  # noqa: BLE001 - recorded, and asserted by its own test
        s.crash = f"{type(e).__name__}: {e}"
    return s


def _store_view(s: Scenario) -> dict[str, object]:
    store = open_store(s.fed.stores["herts-police"])
    try:
        return {
            "ids": {r.record_id for r in store.iter_records()},
            "retracted": [
                r.record_id for r in store.iter_records() if r.retracted or r.version > 1
            ],
            "summary": store.summary(),
            "rows": {(q.topic, q.partition, q.offset): q for q in store.quarantine_entries(1000)},
            "chain": store.load_chain(),
            "offsets": {
                t: store.load_offsets(f"{s.fed.prefix}.herts-police", t)
                for t in (s.sightings, s.incidents)
            },
        }
    finally:
        store.close()


def _trusted_state_held(s: Scenario, view: dict[str, object]) -> bool:
    chain = view["chain"]
    assert isinstance(chain, dict)
    cst = [c for k, c in chain.items() if (k.producer_id, k.topic) == ("cst", s.sightings)]
    return (
        view["ids"] == set(s.genuine)
        and view["retracted"] == []
        # One CST stream on the sightings topic (one partition, one key), with nothing missing.
        and len(cst) == 1
        and cst[0].gaps == ()
        and s.stats is not None
        and s.stats.gaps == 0
    )


def test_every_hostile_record_is_quarantined_with_its_reason(scenario: Scenario) -> None:
    """One quarantine row per hostile record, at its broker offset, with the exact reason code."""
    s = scenario
    view = _store_view(s)
    rows = view["rows"]
    assert isinstance(rows, dict)
    held = _trusted_state_held(s, view)
    for case, (topic, partition, offset, _value) in sorted(s.hostile.items()):
        row = rows.get((topic, partition, offset))
        attack_result(
            case=case,
            source="broker",
            expected_reason=str(s.expected[case]),
            outcome="rejected" if row is not None else "accepted",
            reason=row.reason if row is not None else "none",
            trusted_state_unchanged=held,
        )
    for case, (topic, partition, offset, value) in sorted(s.hostile.items()):
        row = rows.get((topic, partition, offset))
        assert row is not None, f"{case}: no quarantine row at {topic}/{partition}@{offset}"
        assert row.reason == s.expected[case].value, case
        if isinstance(value, int):
            assert row.raw_size == value
        elif value:
            assert (bytes(row.raw), row.raw_size) == (value[:4096], len(value)), case
    assert s.stats is not None
    assert s.stats.quarantined == {r.value: n for r, n in _count(s.expected).items()}


def test_the_auditor_flags_every_hostile_record_with_the_consumer_s_reason(
    scenario: Scenario,
) -> None:
    """The inspectorate replays the sightings topic with public keys only (and its own key):
    every hostile record is a finding at the same offset with the same reason code as the
    consumer's quarantine row, the genuine records none, and the audit exits 1."""
    s = scenario
    report = s.fed.root / "audit.json"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "replay",
            "--topic",
            s.sightings,
            "--directory",
            str(s.fed.root / "directory"),
            "--bootstrap-servers",
            s.fed.bootstrap,
            "--key-file",
            str(s.fed.root / "keys" / "inspectorate.key"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 1, result.output
    findings = json.loads(report.read_text())["findings"]
    found = {
        (f["topic"], f["partition"], f["offset"]): f["reason"]
        for f in findings
        if f["severity"] == "integrity" or f["reason"] == "chain_duplicate"
    }
    for case, (topic, partition, offset, _) in sorted(s.hostile.items()):
        if topic != s.sightings:
            continue
        assert found.get((topic, partition, offset)) == s.expected[case].value, case
    hostile = {(t, p, o) for t, p, o, _ in s.hostile.values()}
    assert set(found) <= hostile, sorted(set(found) - hostile)


def test_the_compression_bomb_is_refused_by_the_broker(scenario: Scenario) -> None:
    """The topic stores batches uncompressed: the broker inflates the bomb and refuses it."""
    error = scenario.refused["compression_bomb"]
    attack_result(
        case="compression_bomb",
        source="broker",
        expected_reason="MessageSizeTooLargeError",
        outcome="rejected" if error else "accepted",
        reason=error or "none",
        trusted_state_unchanged=_trusted_state_held(scenario, _store_view(scenario)),
    )
    assert error == "MessageSizeTooLargeError"


def _count(expected: dict[str, ReasonCode]) -> dict[ReasonCode, int]:
    out: dict[ReasonCode, int] = {}
    for r in expected.values():
        out[r] = out.get(r, 0) + 1
    return out


def test_trusted_state_holds_exactly_the_genuine_records(scenario: Scenario) -> None:
    """Stored: exactly the three genuine records, none retracted, CST's chain with no gap."""
    s = scenario
    assert s.crash is None, f"the consumer raised {s.crash}"
    view = _store_view(s)
    assert view["ids"] == set(s.genuine)
    assert view["retracted"] == []
    summary = view["summary"]
    assert isinstance(summary, dict)
    assert summary["amendments_applied"] == 0
    assert s.stats is not None
    # The last genuine record, published after every attack: the only one this run could store.
    genuine_result(
        case="broker.after_every_attack", source="broker", published=1, kept=s.stats.stored
    )
    assert (s.stats.stored, s.stats.gaps) == (1, 0)
    assert _trusted_state_held(s, view)


def test_the_consumer_never_crashed_and_committed_past_every_bad_record(
    scenario: Scenario,
) -> None:
    """0 crashes; the store's offsets and the group's Kafka offsets are at the log end."""
    s = scenario
    assert s.crash is None, f"the consumer raised {s.crash}"
    view = _store_view(s)
    offsets = view["offsets"]
    assert isinstance(offsets, dict)
    committed = transport.committed_offsets(s.fed.bootstrap, f"{s.fed.prefix}.herts-police")
    for topic in (s.sightings, s.incidents):
        ends = {p: o for p, o in transport.end_offsets(s.fed.bootstrap, topic).items() if o > 0}
        assert offsets[topic] == ends, topic
        assert {p: committed[(topic, p)] for p in ends} == ends, topic


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_batch_in_any_kafka_codec_is_read_not_a_crash(bootstrap: str, codec: str) -> None:
    """On a topic that keeps the producer's compression, every codec Kafka allows decodes.

    Topics made before compression.type was "uncompressed" (or altered by hand) keep whatever codec
    a client chose; kafka-python without that codec's module fails the whole fetch, and so the
    consumer, at the same offset on every restart (how a zstd batch once stopped a consumer).
    """
    topic = f"codec-{codec}-{uuid.uuid4().hex[:8]}"
    transport.create_topics(bootstrap, [TopicSpec(topic, 1, 1, {"compression.type": "producer"})])
    values = [bytes([i]) * 256 for i in range(20)]  # compressible, so the codec really runs
    producer = transport.make_producer(bootstrap, compression_type=codec)
    try:
        for v in values:
            producer.send(topic, value=v, key=b"k")
        producer.flush()
    finally:
        producer.close()
    consumer = transport.make_consumer(bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        got = [m.value for m in transport.read_all(consumer, topic)]
    finally:
        consumer.close()
    assert got == values

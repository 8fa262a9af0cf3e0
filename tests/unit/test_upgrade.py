"""Upgrading a running federation: format v1 records already on the topics, a producer state file
and a consumer store written by the previous version.

The previous version wrote envelope format 1 (no partition bound, one stream per producer and
topic) and a producer state without partitions or key epochs. After the upgrade, records already
on the topics still verify and are judged by the same rules where they apply, the producer's
state file opens and its stream goes on as a format v2 epoch linked to its last v1 record, and a
consumer that already holds the v1 stream accepts the new records without a gap or a replay.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from intelbus.chain import ANY_PARTITION, LEGACY_EPOCH, ChainState, StreamKey
from intelbus.envelope import seal
from intelbus.envelope.wire import FORMAT_V1, FORMAT_VERSION, parse
from intelbus.errors import ReasonCode
from intelbus.kinds import RecordKind
from intelbus.trust.judge import Judge, keys_for
from intelbus.trust.model import Effect, Snapshot
from producers.state import ProducerState
from tests.attacks.harness import sighting
from tests.simulator import ENV, SIGHTINGS, BusSimulator, SimulatedConsumer

# The previous version's producer state schema (git show HEAD~:producers/state.py).
OLD_STATE = """
CREATE TABLE streams (
    stream TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    last_digest BLOB NOT NULL
);
CREATE TABLE sends (
    stream TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    record_id TEXT NOT NULL UNIQUE,
    sealed BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'acked')),
    partition INTEGER,
    offset INTEGER,
    PRIMARY KEY (stream, sequence)
);
"""


def _v1_records(sim: BusSimulator, n: int) -> list[tuple[bytes, bytes]]:
    """CST's first ``n`` sightings as the previous version sealed them: (bytes, digest)."""
    cst = sim.identities["cst"]
    recipients = [sim.history.recipient_key(a, datetime.now(UTC)) for a in ("herts-police",)]
    registry = sim.publisher().registry
    prev = bytes(32)
    out = []
    for seq in range(n):
        record = sighting(seed=300 + seq)
        fp, payload = registry.encode(record.SCHEMA, record.to_avro())
        sealed = seal(
            cst,
            environment=ENV,
            topic=SIGHTINGS,
            kind=RecordKind.SIGHTING,
            sequence=seq,
            prev_digest=prev,
            schema_fingerprint=fp,
            payload=payload,
            recipients=recipients,
            partition=None,
            record_id=uuid.UUID(record.record_id),
            format_version=FORMAT_V1,
        )
        prev = sealed.digest
        out.append((sealed.data, sealed.digest))
    return out


def _old_state(path: Path, *, last_sequence: int, last_digest: bytes) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_STATE)
    db.execute("INSERT INTO streams VALUES (?, ?, ?)", (SIGHTINGS, last_sequence, last_digest))
    db.execute(
        "INSERT INTO sends VALUES (?, ?, ?, x'', 'acked', 0, ?)",
        (SIGHTINGS, last_sequence, str(uuid.uuid4()), last_sequence),
    )
    db.commit()
    db.close()
    path.chmod(0o600)


def test_v1_records_then_the_upgraded_producer_s_v2_epoch_flow_without_a_gap(
    tmp_path: Path,
) -> None:
    sim = BusSimulator(tmp_path, partitions=1)
    v1 = _v1_records(sim, 3)
    herts = SimulatedConsumer(sim)
    try:
        verdicts = herts.deliver([sim.append(SIGHTINGS, data, partition=0) for data, _ in v1])
        assert [v.effect for v in verdicts] == [Effect.STORED] * 3
        # The producer's state file, as the previous version left it after those three records.
        state_path = tmp_path / "cst-state-from-the-previous-version.sqlite"
        _old_state(state_path, last_sequence=2, last_digest=v1[-1][1])
        state = ProducerState(state_path)
        head = state.head(SIGHTINGS)
        assert (head.last_sequence, head.epoch, head.partition) == (2, LEGACY_EPOCH, -1)
        pub = sim.publisher()
        pub.state.close()
        pub.state = state
        pub.publish(sighting(seed=310))
        pub.publish(sighting(seed=311))
        first, second = sim.log[-2:]
        h1, h2 = parse(first.value).header, parse(second.value).header
        # Format 2 when the upgrade was written; format 3 (batch signatures) since: the same
        # fixed part, so the same epoch rule.
        assert (h1.format_version, h1.sequence, h1.prev_digest, h1.partition) == (
            FORMAT_VERSION,
            0,
            v1[-1][1],  # the new epoch links to the last v1 record
            0,
        )
        assert h2.sequence == 1
        verdicts = herts.deliver([first, second])
        assert [(v.effect, v.gap) for v in verdicts] == [(Effect.STORED, None)] * 2
        # A v1 record replayed after the upgrade is still a replay on the v1 stream.
        (replayed,) = herts.deliver([sim.append(SIGHTINGS, v1[0][0], partition=0)])
        assert replayed.reason is ReasonCode.CHAIN_REPLAY
    finally:
        herts.close()


def test_a_legacy_topic_wide_head_from_a_migrated_store_still_judges_v1_records(
    tmp_path: Path,
) -> None:
    """A store migrated from schema 2 keeps each v1 stream's head topic-wide (partition -1): the
    judge continues it, so a v1 replay is refused and the next v1 record accepted, whatever
    partition they were read from."""
    sim = BusSimulator(tmp_path)
    v1 = _v1_records(sim, 4)
    legacy = StreamKey("cst", SIGHTINGS, ANY_PARTITION, LEGACY_EPOCH)
    snapshot = Snapshot(heads={legacy: ChainState(legacy, 2, v1[2][1])})
    herts = sim.pipeline()
    raws = [
        sim.append(SIGHTINGS, v1[1][0], partition=1),
        sim.append(SIGHTINGS, v1[3][0], partition=2),
    ]
    prepared = herts.prepare(raws)
    judge = Judge(herts.reader, snapshot)
    replay, following = (judge.judge(p) for p in prepared)
    assert replay.reason is ReasonCode.CHAIN_REPLAY
    assert (following.accepted, following.gap, following.stream) == (True, None, legacy)
    batch = judge.batch("g", {})
    assert [(c.stream, c.last_sequence) for c in batch.chain] == [(legacy, 3)]
    assert keys_for(prepared).streams >= {legacy}

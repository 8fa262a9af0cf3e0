"""Intake on worker processes (consumers/prepare_pool.py) decides exactly what the serial path does.

The same log (genuine records of every kind the pipeline handles, and hostile records of every
class the attack suite uses: bit flips, truncations, unknown and misused keys, bad signatures,
copies to other topics, replays, Avro bombs, unknown schemas, oversize, garbage, a record without
broker time, a revoked key) is delivered in the same batches to two consumers on two stores: one
prepares in its own thread, the other on forked workers. A directory version is trusted between
two batches, so the workers must be refreshed to agree. Verdicts, quarantine rows, stored rows,
stream heads and offsets must be identical.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.pipeline import RawRecord
from consumers.prepare_pool import PreparePool
from intelbus import _nacl
from intelbus.directory import edit
from intelbus.envelope import seal
from intelbus.envelope.wire import SIGNATURE_BYTES
from intelbus.errors import InfraError, PrepareFailed, ReasonCode, Shredded
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family, RecordKind
from intelbus.trust.model import Position, Verdict
from tests.attacks.harness import inject, sighting
from tests.attacks.test_simulated import AVRO_BOMBS, _authentic_payload, _retraction_of
from tests.simulator import ENV, INCIDENTS, SIGHTINGS, BusSimulator, SimulatedConsumer


def _verdict_row(v: Verdict) -> tuple[object, ...]:
    refusal = None if v.refusal is None else (v.refusal.reason, str(v.refusal))
    return (
        v.position,
        refusal,
        v.effect,
        v.authentic,
        v.record_id,
        v.producer_id,
        v.sequence,
        v.stream,
        v.chain,
        v.gap,
        v.evicted_gaps,
        v.filled,
    )


def _hostile_and_genuine(sim: BusSimulator) -> list[RawRecord]:
    """Batch one: genuine records and every hostile class, in one log."""
    pub = sim.publisher()
    for i in range(5):
        pub.publish(sighting(seed=80 + i))
    pub.heartbeat(30)
    pub.publish(sighting(area="GREATER_MANCHESTER", tlp="RED"), named=["gmp"])  # not addressed
    genuine = sim.log[0]
    target = sighting(seed=90)
    pub.publish(target)
    pub.publish(_retraction_of(target.record_id))  # an amendment applied
    foreign = _retraction_of(target.record_id)
    sim.publisher("rogue").publish(foreign, family=Family.SIGHTINGS)  # a foreign one refused
    value = genuine.value
    # Bit flips across the whole record, and truncations.
    for at in range(0, len(value), 41):
        flipped = bytearray(value)
        flipped[at] ^= 0x10
        inject(sim, bytes(flipped))
    for cut in (0, 3, 60, len(value) // 2, len(value) - 1):
        inject(sim, value[:cut])
    # Bad signatures, an unknown key, a key outside its role, a copy to another topic, a replay.
    body = value[:-SIGNATURE_BYTES]
    inject(sim, body + bytes(SIGNATURE_BYTES))
    now = datetime.now(UTC)
    herts_key = sim.history.recipient_key("herts-police", now)
    common = {
        "environment": ENV,
        "topic": SIGHTINGS,
        "kind": RecordKind.SIGHTING,
        "sequence": 3,
        "prev_digest": bytes(32),
        "schema_fingerprint": bytes(32),
        "payload": b"forged",
        "recipients": [herts_key],
        "partition": sim.partition_of("cst"),
    }
    inject(sim, seal(AgencyIdentity.generate("cst"), **common).data)  # type: ignore[arg-type]
    inject(sim, seal(sim.identities["gmp"], **common).data)  # type: ignore[arg-type]
    inject(sim, value, topic=INCIDENTS)
    inject(sim, value)  # replayed at a new offset
    # Hostile Avro under CST's genuine key, and an unregistered schema.
    registry = pub.registry
    record = sighting(seed=70)
    fp, good = registry.encode(record.SCHEMA, record.to_avro())
    for bomb in sorted(AVRO_BOMBS):
        _authentic_payload(sim, fp, AVRO_BOMBS[bomb](good))
    _authentic_payload(sim, _nacl.blake2b(b"unregistered", digest_size=32), b"\x02" * 500)
    # Oversize, garbage, and a record a rogue insider signs (revoked before batch two).
    inject(sim, value + bytes(1024 * 1024))
    inject(sim, b"\x00garbage" * 30)
    sim.publisher("rogue").publish(sighting(seed=95))
    raws = list(sim.log)
    # Without a broker time (a topic switched to CreateTime while the consumer runs).
    sim.publisher().publish(sighting(seed=96))
    last = sim.log[-1]
    raws.append(RawRecord(last.topic, last.partition, last.offset, last.value, None))
    return raws


def _batch_two(sim: BusSimulator, since: int) -> list[RawRecord]:
    """After the rogue's key is revoked (leaked since an hour ago): its records, and CST's."""
    sim.unchecked("rogue").publish(sighting(seed=97))
    sim.publisher().publish(sighting(seed=98))
    return list(sim.log[since:])


def _deliver(
    consumer: SimulatedConsumer, raws: list[RawRecord], pool: PreparePool
) -> list[Verdict]:
    prepared = pool.prepare(consumer.pipeline, raws)
    _, verdicts = consumer.pipeline.commit(consumer.store, consumer.group_id, raws, prepared)
    return verdicts


def test_parallel_intake_decides_exactly_as_the_serial_path(
    sim: BusSimulator, tmp_path: Path
) -> None:
    # One broker clock for the whole test: the forked workers hold a copy of it.
    sim.broker_clock = datetime.now(UTC)
    one = _hostile_and_genuine(sim)
    serial = SimulatedConsumer(sim, store_path=tmp_path / "serial.sqlite")
    parallel = SimulatedConsumer(sim, store_path=tmp_path / "parallel.sqlite")
    with PreparePool(0) as inline, PreparePool(2, chunk=7) as workers:
        assert workers.parallel
        assert not inline.parallel
        got = [_deliver(c, one, p) for c, p in ((serial, inline), (parallel, workers))]
        assert [_verdict_row(v) for v in got[0]] == [_verdict_row(v) for v in got[1]]
        reasons = {v.reason for v in got[0] if v.reason is not None}
        # The log really holds every class (a vacuous comparison would prove nothing).
        assert {
            ReasonCode.MALFORMED,
            ReasonCode.BAD_SIGNATURE,
            ReasonCode.UNKNOWN_KEY,
            ReasonCode.KEY_NOT_VALID,
            ReasonCode.BINDING_MISMATCH,
            ReasonCode.CHAIN_REPLAY,
            ReasonCode.SCHEMA_VIOLATION,
            ReasonCode.UNKNOWN_SCHEMA,
            ReasonCode.OVERSIZE,
        } <= reasons
        assert sum(v.accepted for v in got[0]) >= 9

        # A directory version between batches: the rogue's key leaked an hour ago.
        rogue = sim.identities["rogue"].key_id.hex()
        sim.update_directory(
            lambda body: edit.revoke_key(
                body,
                agency_id="rogue",
                key_id=rogue,
                reason="leaked",
                now=sim.broker_clock,
                compromised_since=sim.broker_clock - timedelta(hours=1),
            )
        )
        sim.broker_clock += timedelta(seconds=5)
        two = _batch_two(sim, len(sim.log))
        got = [_deliver(c, two, p) for c, p in ((serial, inline), (parallel, workers))]
        assert [_verdict_row(v) for v in got[0]] == [_verdict_row(v) for v in got[1]]
        assert ReasonCode.KEY_REVOKED in {v.reason for v in got[1]}

    assert serial.trusted_state() == parallel.trusted_state()
    rows = [
        [
            (q.topic, q.partition, q.offset, q.reason, q.raw_size, q.raw_digest)
            for q in c.store.quarantine_entries(limit=10_000)
        ]
        for c in (serial, parallel)
    ]
    assert rows[0] == rows[1]
    assert len(rows[0]) > 20
    serial.close()
    parallel.close()


def test_workers_killed_are_replaced_and_the_batch_prepared_whole(sim: BusSimulator) -> None:
    """Workers killed between batches: fresh ones prepare the next batch, whole and in order."""
    pub = sim.publisher()
    for i in range(4):
        pub.publish(sighting(seed=100 + i))
    raws = list(sim.log)
    consumer = SimulatedConsumer(sim)
    try:
        with PreparePool(2, chunk=1) as pool:
            pool.start(consumer.pipeline)
            executor = pool._executor
            assert executor is not None
            for proc in list(executor._processes.values()):  # type: ignore[union-attr]
                proc.kill()
                proc.join()
            prepared = pool.prepare(consumer.pipeline, raws)
            assert pool._executor is not executor  # replaced
        assert [p.position for p in prepared] == [r.position for r in raws]
        assert all(p.error is None and p.content is not None for p in prepared)
    finally:
        consumer.close()


class _DyingIntake:
    """An intake whose every call kills the worker running it (a crash in native code)."""

    def prepare(self, position: Position, value: bytes) -> object:
        os._exit(3)


@dataclass
class _Pipeline:
    intake: object
    directory: object


def test_workers_dying_on_every_try_raise_prepare_failed(sim: BusSimulator) -> None:
    """A batch that kills its workers twice: PrepareFailed (the consumer rewinds; nothing of the
    batch is judged or committed), never a partial or empty result."""
    sim.publisher().publish(sighting(seed=104))
    raws = list(sim.log)
    pipeline = _Pipeline(_DyingIntake(), sim.history)
    with PreparePool(2) as pool, pytest.raises(PrepareFailed, match="died twice"):
        pool.prepare(pipeline, raws)  # type: ignore[arg-type]


def test_shredded_survives_the_trip_back_from_a_worker() -> None:
    e = Shredded("gone", epoch_id="e1", agency_id="gmp", destroyed_at="2026-01-01T00:00:00Z")
    back = pickle.loads(pickle.dumps(e))  # noqa: S301 - our own bytes
    assert (back.reason, str(back), back.epoch_id, back.agency_id, back.destroyed_at) == (
        e.reason,
        str(e),
        "e1",
        "gmp",
        "2026-01-01T00:00:00Z",
    )


def test_prepare_failed_is_an_infra_error() -> None:
    assert issubclass(PrepareFailed, InfraError)
    with pytest.raises(ValueError, match="workers"):
        PreparePool(-1)
    assert Position("t", 0, 0, None).topic == "t"

"""Erasure records (issue 16) on the simulated bus: the real publisher, pipeline, judge and store.

A producer's signed erasure removes its record's payload and history from every store that holds
it and leaves a tombstone. What is tried here: the erasure arriving before, after and between
corrections; the same erasure twice; an erasure not addressed to the holder; and the attackers of
the guide: an insider erasing another producer's record (``foreign_target``), an erasure aimed at
an amendment (``target_not_content``), a format 1 erasure that hides its target
(``binding_mismatch``), and a leaked key used to erase (refused once the key is known to be
compromised from before, and recoverable from the topic when it was not yet known). Every refusal
goes through :func:`tests.attacks.harness.attack` (reason code, quarantine row, trusted state
unchanged) and is followed by CST's genuine feed still flowing.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from intelbus.envelope import seal
from intelbus.envelope.wire import FORMAT_V1
from intelbus.errors import ReasonCode
from intelbus.kinds import Family, RecordKind
from intelbus.records import Correction, Erasure, Sighting
from intelbus.samples import correction_of, erasure_of
from intelbus.trust.model import Effect
from tests.attacks.harness import attack, genuine_flows, inject, sighting
from tests.simulator import ENV, SIGHTINGS, BusSimulator, SimulatedConsumer

R = ReasonCode
PERSONAL = "Reported by Miriam Cohen, 07700 900123"


def _now() -> datetime:
    return datetime.now(UTC)


def _personal(seed: int) -> Sighting:
    """A sighting Herts stores, carrying a value that must not survive its erasure."""
    base = sighting(seed=seed)
    data = base.model_dump(mode="json")
    data["description"] = f"Man photographing the entrance. {PERSONAL}"
    return Sighting.model_validate(data)


def _rows_mentioning(consumer: SimulatedConsumer, text: str) -> list[str]:
    """Every table of the store file that still holds ``text`` anywhere (a raw scan)."""
    con = sqlite3.connect(consumer.store_url)
    try:
        found = []
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from the schema
                if any(isinstance(v, str) and text in v for v in row):
                    found.append(table)
        return found
    finally:
        con.close()


def _assert_tombstone(consumer: SimulatedConsumer, record_id: str, erasure_id: str) -> None:
    view = consumer.stored(record_id)
    assert view is not None
    assert view.status == "erased"
    assert view.payload is None
    assert all(h.payload is None for h in view.history)
    assert not view.visible
    (tomb,) = [t for t in consumer.store.tombstones() if t.record_id == record_id]
    assert tomb.reason == "erasure"
    assert tomb.erasure_record_id == erasure_id
    assert tomb.legal_basis.startswith("UK GDPR")
    assert tomb.digest == view.digest
    assert record_id not in {v.record_id for v in consumer.store.iter_records()}
    assert record_id not in {v.record_id for v in consumer.store.search("Miriam")}
    assert _rows_mentioning(consumer, "Miriam Cohen") == []


def test_an_erasure_removes_the_payload_and_history_and_leaves_a_tombstone(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    record = _personal(301)
    pub.publish(record)
    pub.publish(
        correction_of(record, description=f"Corrected. {PERSONAL}", reason="typo", at=_now())
    )
    herts.deliver(sim.log[-2:])
    assert herts.stored(record.record_id).payload is not None  # type: ignore[union-attr]
    erasure = erasure_of(record, at=_now())
    pub.publish(erasure)
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.accepted
    assert verdict.effect is Effect.ERASED
    _assert_tombstone(herts, record.record_id, erasure.record_id)
    assert herts.store.summary()["erased"] == 1
    # A correction after the erasure is kept as a version without contents: erasure is final.
    late = correction_of(
        record, description=f"Again. {PERSONAL}", reason="again", at=_now(), seed=9
    )
    pub.publish(late)
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.accepted
    _assert_tombstone(herts, record.record_id, erasure.record_id)
    genuine_flows(herts, sim, case="erasure.applied")
    # Not in the file's freed pages either (secure_delete), once the WAL is checkpointed.
    con = sqlite3.connect(herts.store_url)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    assert b"Miriam Cohen" not in Path(herts.store_url).read_bytes()


def test_an_erasure_that_arrives_first_erases_its_target_on_arrival(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    record = _personal(302)
    pub.publish(record)
    erasure = erasure_of(record, at=_now())
    pub.publish(erasure)
    original, erasing = sim.log[-2], sim.log[-1]
    # Delivered out of order (another partition, or a replay from a later offset first).
    (v1,) = herts.deliver([erasing])
    assert v1.accepted
    assert v1.effect is Effect.ERASED
    (v2,) = herts.deliver([original])
    assert v2.accepted
    _assert_tombstone(herts, record.record_id, erasure.record_id)


def test_the_same_erasure_twice_and_a_second_erasure_change_nothing(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    record = _personal(303)
    pub.publish(record)
    first = erasure_of(record, at=_now())
    pub.publish(first)
    herts.deliver(sim.log[-2:])
    before = herts.trusted_state()
    # The same batch delivered again (a consumer restart before its offsets moved): no change.
    herts.deliver(sim.log[-2:])
    assert herts.trusted_state().without_offsets() == before.without_offsets()
    # A second, distinct erasure of the same record: accepted, the first tombstone stands.
    second = erasure_of(record, at=_now(), reason="asked again", seed=12)
    pub.publish(second)
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.accepted
    _assert_tombstone(herts, record.record_id, first.record_id)


def test_an_erasure_not_addressed_to_a_holder_still_erases_there(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The target is in the signed header: an agency the erasure is not sealed to applies it."""
    pub = sim.publisher()
    record = _personal(304)
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    erasure = erasure_of(record, at=_now())
    fp, payload = pub.registry.encode(erasure.SCHEMA, erasure.to_avro())
    pub._publish_payload(
        SIGHTINGS,
        kind=RecordKind.ERASURE,
        fingerprint=fp,
        payload=payload,
        keys=[sim.history.recipient_key("met-police", _now())],
        record_id=uuid.UUID(erasure.record_id),
        target=uuid.UUID(record.record_id),
    )
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.accepted
    assert verdict.effect is Effect.ERASED
    view = herts.stored(record.record_id)
    assert view is not None
    assert view.status == "erased"
    assert view.payload is None
    assert _rows_mentioning(herts, "Miriam Cohen") == []


def test_an_insider_cannot_erase_another_producer_s_record(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    record = _personal(305)
    sim.publisher().publish(record)
    herts.deliver([sim.log[-1]])
    forged = erasure_of(record, at=_now())
    sim.publisher("rogue").publish(forged, family=Family.SIGHTINGS)
    attack(herts, [sim.log[-1]], R.FOREIGN_TARGET, case="erasure.foreign_target", authentic=True)
    view = herts.stored(record.record_id)
    assert view is not None
    assert view.status == "live"
    assert view.payload is not None
    assert PERSONAL in json.dumps(view.payload)
    assert herts.store.tombstones() == []
    genuine_flows(herts, sim, case="erasure.foreign_target")


def test_an_erasure_aimed_at_an_amendment_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    record = _personal(306)
    pub.publish(record)
    fix = correction_of(record, description="Fixed.", reason="typo", at=_now())
    pub.publish(fix)
    herts.deliver(sim.log[-2:])
    data = erasure_of(record, at=_now()).model_dump(mode="json")
    data["erases_record_id"] = fix.record_id
    pub.publish(Erasure.model_validate(data), family=Family.SIGHTINGS)
    attack(
        herts,
        [sim.log[-1]],
        R.TARGET_NOT_CONTENT,
        case="erasure.target_not_content",
        authentic=True,
    )
    assert herts.stored(record.record_id).status == "live"  # type: ignore[union-attr]
    genuine_flows(herts, sim, case="erasure.target_not_content")


def test_a_format_1_erasure_that_hides_its_target_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    record = _personal(307)
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    erasure = erasure_of(record, at=_now())
    fp, payload = pub.registry.encode(erasure.SCHEMA, erasure.to_avro())
    head = pub._head(SIGHTINGS)
    hidden = seal(
        sim.identities["cst"],
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.ERASURE,
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        schema_fingerprint=fp,
        payload=payload,
        recipients=[sim.history.recipient_key("herts-police", _now())],
        partition=None,
        record_id=uuid.UUID(erasure.record_id),
        format_version=FORMAT_V1,
    ).data
    # Refused before its chain step (as any record out of its family's shape): no stream moves.
    attack(herts, [inject(sim, hidden)], R.BINDING_MISMATCH, case="erasure.format_1")
    assert herts.stored(record.record_id).status == "live"  # type: ignore[union-attr]


def test_a_leaked_key_s_erasure_is_refused_once_known_and_recoverable_before(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A thief with CST's key erases a record. Once the directory says the key was compromised
    since before the erasure, a consumer refuses it (key_revoked); a store that applied it before
    the compromise was known keeps the tombstone (deleted data cannot be folded back), and the
    record is recovered by replaying the topic into a new store (docs/data-protection.md)."""
    t0 = _now()
    record = _personal(308)
    sim.publisher().publish(record)
    herts.deliver([sim.log[-1]])
    sim.broker_clock = t0 + timedelta(minutes=2)
    thief = sim.unchecked("cst")
    thief.publish(erasure_of(record, at=sim.broker_clock), family=Family.SIGHTINGS)
    herts.deliver([sim.log[-1]])
    assert herts.stored(record.record_id).status == "erased"  # type: ignore[union-attr]
    sim.broker_clock = t0 + timedelta(minutes=3)
    sim.revoke_key(
        "cst",
        key_id=sim.identities["cst"].key_id,
        at=sim.broker_clock,
        compromised_since=t0 + timedelta(minutes=1),
    )
    herts.learn_directory()
    assert herts.stored(record.record_id).status == "erased"  # type: ignore[union-attr]
    fresh = SimulatedConsumer(sim, store_path=sim.tmp / "herts-replay.sqlite")
    try:
        verdicts = fresh.deliver(list(sim.log))
        refused = {v.reason for v in verdicts if v.reason is not None}
        assert R.KEY_REVOKED in refused
        assert fresh.store.tombstones() == []
        view = fresh.stored(record.record_id)
        assert view is not None
        assert view.status == "live"
        assert PERSONAL in json.dumps(view.payload)
    finally:
        fresh.close()


def test_records_of_correction_and_erasure_models_round_trip_through_avro(
    sim: BusSimulator,
) -> None:
    pub = sim.publisher()
    record = _personal(309)
    erasure = erasure_of(record, at=_now())
    fp, payload = pub.registry.encode(erasure.SCHEMA, erasure.to_avro())
    decoded = pub.registry.decode_model(fp, payload)
    assert decoded == erasure
    assert isinstance(correction_of(record, description="x", reason="y", at=_now()), Correction)

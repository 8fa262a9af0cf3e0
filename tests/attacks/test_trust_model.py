"""Trust model v2, attacked class by class on the simulated bus (the real pipeline and store).

Each class of issue 14 is tried by the attackers that can reach it: an insider agency with its own
valid key and write access to bus topics (the "rogue" producer here), a leaked key (CST's own key
in a thief's hands, used without the publisher's checks), an operator (topic partitions, the
broker's clock) and, in test_local_user.py, a local user on a consumer host. Every refusal is
asserted through :func:`tests.attacks.harness.attack` (reason code, quarantine row, trusted state
unchanged), and every case ends with CST's genuine feed still flowing
(:func:`tests.attacks.harness.genuine_flows`). Cases that need a real broker (partitions added,
timestamp types, the directory topic) are in test_broker.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.agency import AgencyConsumer
from consumers.pipeline import RawRecord
from intelbus.directory import edit
from intelbus.envelope import seal
from intelbus.errors import ConfigError, DirectoryExpired, PublishRefused, ReasonCode
from intelbus.interop.stix import TLP2_MARKINGS, stix_bundle
from intelbus.kinds import Family, RecordKind
from intelbus.policy.rules import PolicySpec, SharingPolicy
from intelbus.records import Correction, Incident, Retraction, Sighting
from intelbus.samples import feed
from intelbus.trust.model import Effect
from tests.attacks.harness import attack, genuine_flows, inject, sighting
from tests.simulator import (
    ENV,
    HERTS_POLICY,
    INCIDENTS,
    SIGHTINGS,
    BusSimulator,
    SimulatedConsumer,
)

R = ReasonCode
VICTIM = "Rachel Levy of 4 Elm Grove"


def _incident(victim: str = VICTIM, area: str = "HERTFORDSHIRE", seed: int = 12) -> Incident:
    base = next(r for r in feed(seed=seed, sightings=0, incidents=6) if r.victim_details)
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["victim_details"] = victim
    data["place"]["force_area"] = area
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[])
    return Incident.model_validate(data)


def _changed(model: Any, **changes: Any) -> Any:
    """A copy of a record model (same record id) with fields changed; dicts merge one level."""
    data = model.model_dump(mode="json")
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return type(model).model_validate(data)


def _correction(replacement: Sighting | Incident, target: str | None = None) -> Correction:
    return Correction(
        record_id=str(uuid.uuid4()),
        corrects_record_id=target or replacement.record_id,
        corrected_at=datetime.now(UTC),
        reason="corrected by the incident officer",
        replacement=replacement,
        grading=replacement.grading,
    )


def _retraction(target: str, **grading: str) -> Retraction:
    g = sighting().grading.model_dump(mode="json")
    g.update(grading)
    return Retraction.model_validate(
        {
            "record_id": str(uuid.uuid4()),
            "retracts_record_id": target,
            "retracted_at": datetime.now(UTC).isoformat(),
            "reason": "withdrawn",
            "grading": g,
        }
    )


def _new(sim: BusSimulator, start: int) -> list[RawRecord]:
    return sim.log[start:]


def _ids(consumer: SimulatedConsumer) -> set[str]:
    return {v.record_id for v in consumer.store.iter_records()}


# --- 1. amendments under policy (laundering) ------------------------------------------------------


def test_a_correction_is_redacted_exactly_like_a_new_record(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Herts redacts victim_details. CST's correction carries a new victim description: the new
    version is redacted too, the claim of redaction is true, and search finds no name."""
    pub = sim.publisher()
    incident = _incident()
    start = len(sim.log)
    pub.publish(incident)
    pub.publish(
        _correction(_changed(incident, victim_details="Rachel Levi, 4 Elm Grove, Borehamwood"))
    )
    verdicts = herts.deliver(_new(sim, start))
    assert [v.effect for v in verdicts] == [Effect.REDACTED, Effect.AMENDED]
    view = herts.stored(incident.record_id)
    assert view is not None
    assert view.payload is not None
    assert view.version == 2
    assert view.payload["victim_details"] == "[REDACTED]"
    assert "victim_details" in view.redacted_fields
    for text in ("Levi", "Levy", "Borehamwood", "Elm Grove"):
        assert herts.store.search(text) == [], text
    for version in view.history:
        assert version.payload is not None
        assert version.payload["victim_details"] == "[REDACTED]"
    genuine_flows(herts, sim, case="laundering.correction_unredacts")


def test_a_pending_correction_is_judged_under_policy_when_its_target_arrives(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The correction is read before the record it corrects (a consumer that missed it first):
    when the target arrives, the waiting version applies, redacted by the same rule."""
    pub = sim.publisher()
    incident = _incident()
    pub.publish(incident)
    original = sim.log[-1]
    pub.publish(_correction(_changed(incident, victim_details="Miriam Gold, 9 Oak Road")))
    correction = sim.log[-1]
    assert herts.deliver([correction])[0].effect is Effect.AMENDED
    assert herts.stored(incident.record_id) is None
    assert herts.deliver([original])[0].effect is Effect.REDACTED
    view = herts.stored(incident.record_id)
    assert view is not None
    assert view.payload is not None
    assert (view.version, view.payload["victim_details"]) == (2, "[REDACTED]")
    assert herts.store.search("Miriam") == []


def test_labels_follow_the_corrected_version(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """TLP and classification changed by a correction: the stored columns, the list filters and
    the STIX marking all follow the new version."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    upgraded = _changed(record, grading={"tlp": "AMBER", "classification": "OFFICIAL_SENSITIVE"})
    pub.publish(_correction(upgraded))
    herts.deliver(list(sim.log[-2:]))
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.tlp, view.classification, view.version) == ("AMBER", "OFFICIAL_SENSITIVE", 2)
    assert [v.record_id for v in herts.store.list_records(tlp="AMBER")] == [record.record_id]
    assert record.record_id not in {v.record_id for v in herts.store.list_records(tlp="GREEN")}
    bundle = stix_bundle(herts.store.iter_records(), exported_at=datetime.now(UTC))
    found = [
        o
        for o in bundle["objects"]
        if o["type"] == "sighting"
        and o["external_references"]
        == [{"source_name": "intelbus", "external_id": record.record_id}]
    ]
    assert found
    # The TLP 2.0 AMBER marking definition (OASIS), on every sighting of the record.
    assert {m for o in found for m in o["object_marking_refs"]} == {TLP2_MARKINGS["AMBER"][0]}


def test_a_correction_that_policy_would_withhold_takes_the_record_out_of_use(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Re-graded into another force's area (Herts withholds those): the record is no longer live
    (out of lists, search and exports), not left standing with the old content and labels."""
    pub = sim.publisher()
    record = _changed(sighting(), description="Two men photographed the school gate at 08:40.")
    pub.publish(record)
    pub.publish(_correction(_changed(record, place={"force_area": "GREATER_MANCHESTER"})))
    verdicts = herts.deliver(list(sim.log[-2:]))
    assert [v.effect for v in verdicts] == [Effect.STORED, Effect.AMENDED]
    view = herts.stored(record.record_id)
    assert view is not None
    # No content is held; the labels say why (the version was read, and judged, as another area's).
    assert (view.status, view.payload, view.force_area) == ("withheld", None, "GREATER_MANCHESTER")
    assert record.record_id not in _ids(herts)
    assert herts.store.search("school gate at 08:40") == []
    genuine_flows(herts, sim, case="laundering.correction_withheld")


def test_a_correction_graded_false_quarantines_the_record_not_the_old_version_live(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Re-graded E (suspected false: Herts quarantines those): the correction is quarantined as a
    new record would be AND the record is out of use; a later correction back to B restores it."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    pub.publish(_correction(_changed(record, grading={"assessment": "E"})))
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.reason is R.POLICY_QUARANTINE
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.status, view.payload) == ("quarantined", None)
    assert record.record_id not in _ids(herts)
    pub.publish(_correction(_changed(record, description="Confirmed by CCTV review.")))
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.effect is Effect.AMENDED
    view = herts.stored(record.record_id)
    assert view is not None
    assert view.payload is not None
    assert (view.status, view.version, view.payload["description"]) == (
        "live",
        3,
        "Confirmed by CCTV review.",
    )


@pytest.mark.parametrize(
    "grading",
    [
        {"assessment": "E"},
        {"classification": "SECRET"},
        {"source_evaluation": "S3", "assessment": "D"},
    ],
)
def test_a_retraction_always_applies_whatever_its_grading(
    sim: BusSimulator, herts: SimulatedConsumer, grading: dict[str, str]
) -> None:
    """A retraction only removes information: graded E (which Herts' policy quarantines), or
    otherwise, it is never refused by policy, and the record is retracted."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    pub.publish(_retraction(record.record_id, **grading), family=Family.SIGHTINGS)
    (verdict,) = herts.deliver([sim.log[-1]])
    assert (verdict.accepted, verdict.effect) == (True, Effect.AMENDED)
    view = herts.stored(record.record_id)
    assert view is not None
    assert view.retracted


def test_a_retraction_not_addressed_to_a_holder_still_applies(sim: BusSimulator) -> None:
    """A retraction CST addressed (by its grading) to the Met alone still applies at Herts, which
    holds the record: its target is in the signed header, readable without the contents."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver([sim.log[-1]])
        pub.publish(
            _retraction(record.record_id, tlp="RED"), family=Family.SIGHTINGS, named=["met-police"]
        )
        (verdict,) = herts.deliver([sim.log[-1]])
        assert (verdict.accepted, verdict.effect) == (True, Effect.AMENDED)
        view = herts.stored(record.record_id)
        assert view is not None
        assert view.retracted
    finally:
        herts.close()


def test_a_correction_no_longer_addressed_to_a_holder_takes_its_record_out_of_use(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Re-graded RED for the Met only: Herts cannot read the new version, so it keeps none of it
    and the old version stops being current."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    pub.publish(_correction(_changed(record, grading={"tlp": "RED"})), named=["met-police"])
    (verdict,) = herts.deliver([sim.log[-1]])
    assert verdict.effect is Effect.AMENDED
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.status, view.payload) == ("withheld", None)


def test_a_correction_can_make_a_withheld_record_storable(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The other direction: a record in another area (withheld) corrected into Herts' area is
    stored from then on, with the new version's labels."""
    pub = sim.publisher()
    record = sighting(area="GREATER_MANCHESTER")
    pub.publish(record)
    assert herts.deliver([sim.log[-1]])[0].effect is Effect.WITHHELD
    pub.publish(_correction(_changed(record, place={"force_area": "HERTFORDSHIRE"})))
    herts.deliver([sim.log[-1]])
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.status, view.force_area, view.version) == ("live", "HERTFORDSHIRE", 2)


def test_a_correction_may_not_change_the_records_kind(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """An incident put in place of a sighting: on the sightings topic (CST's own key), and on the
    incidents topic (where the publisher routes an incident): KIND_CHANGED both times, and the
    sighting keeps its content."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    herts.deliver([sim.log[-1]])
    as_incident = _changed(_incident(), record_id=record.record_id)
    correction = _correction(as_incident)
    fp, payload = pub.registry.encode(correction.SCHEMA, correction.to_avro())
    now = datetime.now(UTC)
    pub._publish_payload(
        SIGHTINGS,
        kind=RecordKind.CORRECTION,
        fingerprint=fp,
        payload=payload,
        keys=[sim.history.recipient_key("herts-police", now)],
        record_id=uuid.UUID(correction.record_id),
        target=uuid.UUID(record.record_id),
    )
    attack(herts, [sim.log[-1]], R.KIND_CHANGED, case="laundering.kind.same_topic", authentic=True)
    pub.publish(_correction(as_incident))  # routed to the incidents topic by the publisher
    assert sim.log[-1].topic == INCIDENTS
    attack(herts, [sim.log[-1]], R.KIND_CHANGED, case="laundering.kind.other_topic", authentic=True)
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.kind, view.version, view.status) == ("sighting", 1, "live")
    genuine_flows(herts, sim, case="laundering.kind")


def test_a_pending_correction_of_another_kind_is_never_applied(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Read before its target: an incident correction waiting for an id that turns out to be a
    sighting is refused when the sighting arrives."""
    pub = sim.publisher()
    record = sighting()
    pub.publish(record)
    original = sim.log[-1]
    pub.publish(_correction(_changed(_incident(), record_id=record.record_id)))
    herts.deliver([sim.log[-1]])
    herts.deliver([original])
    view = herts.stored(record.record_id)
    assert view is not None
    assert (view.kind, view.version) == ("sighting", 1)
    assert herts.store.summary()["amendments_refused"] == 1


def test_redaction_paths_through_lists_redact_every_element(sim: BusSimulator) -> None:
    """A force that redacts every vehicle's registration and every person's description: none
    is kept, and search cannot find them."""
    policy = {
        "agency": "herts-police",
        "own_force_areas": ["HERTFORDSHIRE"],
        "rules": [
            {
                "id": "sightings",
                "kinds": ["sighting"],
                "action": "redact",
                "redact": ["vehicles.registration", "persons.summary"],
            }
        ],
    }
    record = _changed(
        sighting(),
        vehicles=[
            {"registration": "AB12 CDE", "make": "Ford", "colour": "silver"},
            {"registration": "XY99ZZZ", "make": "Vauxhall", "colour": "black"},
        ],
        persons=[{"summary": "tall man, grey hoodie"}],
    )
    sim.publisher().publish(record)
    herts = SimulatedConsumer(sim, policy=policy)
    try:
        assert herts.deliver(list(sim.log))[0].effect is Effect.REDACTED
        view = herts.stored(record.record_id)
        assert view is not None
        assert view.payload is not None
        vehicles = view.payload["vehicles"]
        assert isinstance(vehicles, list)
        assert [v["registration"] for v in vehicles] == ["[REDACTED]", "[REDACTED]"]
        assert [v["make"] for v in vehicles] == ["Ford", "Vauxhall"]
        for text in ("AB12CDE", "XY99ZZZ", "grey hoodie"):
            assert herts.store.search(text) == [], text
    finally:
        herts.close()


@pytest.mark.parametrize(
    "path", ["replacement.victim_details", "victim_detail", "vehicles.plate", "grading.tlp"]
)
def test_a_policy_path_that_cannot_be_applied_is_refused_at_load(path: str) -> None:
    spec = {**HERTS_POLICY, "rules": [{"id": "r", "action": "redact", "redact": [path]}]}
    with pytest.raises((ConfigError, ValueError)):
        SharingPolicy.from_spec(PolicySpec.model_validate(spec))


# --- 2. a stream's order is its partition's -------------------------------------------------------


def test_copies_on_other_partitions_read_first_cannot_reorder_the_stream(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """An insider copies CST's newest record, and older ones, to every other partition of the
    topic; the consumer happens to read those partitions first. Every copy is BINDING_MISMATCH
    and not one of CST's genuine records is refused afterwards."""
    pub = sim.publisher()
    start = len(sim.log)
    for i in range(5):
        pub.publish(sighting(seed=200 + i))
    genuine = _new(sim, start)
    cst = sim.partition_of("cst")
    others = [p for p in range(sim.partitions) if p != cst]
    copies = [inject(sim, r.value, partition=p) for p in others for r in (genuine[-1], *genuine)]
    attack(
        herts, copies, R.BINDING_MISMATCH, case="reorder.copies_other_partitions", authentic=False
    )
    verdicts = herts.deliver(genuine)
    assert [v.effect for v in verdicts] == [Effect.STORED] * 5
    genuine_flows(herts, sim, case="reorder.copies_other_partitions")


def test_partitions_added_do_not_move_a_stream(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """An operator adds partitions (keys would re-hash): CST's stream stays on the partition it
    was bound to, so nothing of it looks out of order."""
    pub = sim.publisher()
    pub.publish(sighting(seed=210))
    before = sim.log[-1].partition
    sim.partitions = 7
    pub.publish(sighting(seed=211))
    assert sim.log[-1].partition == before
    assert [v.effect for v in herts.deliver(sim.log[-2:])] == [Effect.STORED, Effect.STORED]
    genuine_flows(herts, sim, case="reorder.partitions_added")


def test_an_insider_on_the_same_partition_cannot_move_cst_s_stream(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The rogue writes its own records into CST's partition, claiming CST's next sequence
    numbers: they are the rogue's stream, and CST's next record still follows CST's."""
    rogue = sim.publisher("rogue")
    rogue._choose_partition = lambda topic: sim.partition_of("cst")  # type: ignore[method-assign]
    for i in range(3):
        rogue.publish(sighting(seed=220 + i))
    verdicts = herts.deliver(sim.log[-3:])
    assert all(v.accepted for v in verdicts)
    assert {v.producer_id for v in verdicts} == {"rogue"}
    genuine_flows(herts, sim, case="reorder.insider_same_partition")


def test_legacy_v1_copies_on_other_partitions_lose_nothing_of_cst(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Format v1 records (from before partitions were bound) cannot say where they belong: they
    are chained per partition read. A copy of one on another partition read first opens a gap
    there (what an auditor flags), and CST's genuine v1 records all stay held."""
    cst = sim.identities["cst"]
    herts_key = sim.history.recipient_key("herts-police", datetime.now(UTC))
    registry = sim.publisher().registry
    prev = bytes(32)
    v1: list[bytes] = []
    for seq in range(4):
        record = sighting(seed=230 + seq)
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
            recipients=[herts_key],
            partition=None,
            record_id=uuid.UUID(record.record_id),
            format_version=1,
        )
        prev = sealed.digest
        v1.append(sealed.data)
    elsewhere = (sim.partition_of("cst") + 1) % sim.partitions
    (copy,) = herts.deliver([inject(sim, v1[-1], partition=elsewhere)])
    assert copy.accepted
    assert copy.gap == (0, 2)
    verdicts = herts.deliver([inject(sim, v) for v in v1])
    assert [v.reason for v in verdicts] == [None, None, None, R.CHAIN_REPLAY]
    held = {v.record_id for v in herts.store.iter_records()}
    assert {r.record_id for r in verdicts} <= held


# --- 3. a record is (producer, record id) ------------------------------------------------------------


def test_an_insider_squatting_cst_s_record_id_takes_nothing_from_cst(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The rogue publishes its own fabrication under CST's record id, read first. Both are held,
    each as its producer's; CST's later retraction applies to CST's record only."""
    record = sighting()
    sim.publisher().publish(record)
    genuine = sim.log[-1]
    fabrication = _changed(sighting(seed=240), record_id=record.record_id)
    sim.publisher("rogue").publish(fabrication)
    squat = sim.log[-1]
    assert [v.effect for v in herts.deliver([squat, genuine])] == [Effect.STORED, Effect.STORED]
    held = herts.store.get_all(record.record_id)
    assert sorted(v.producer_id for v in held) == ["cst", "rogue"]
    cst_view = herts.stored(record.record_id, "cst")
    assert cst_view is not None
    assert cst_view.payload is not None
    assert cst_view.payload["description"] == record.description
    sim.publisher().publish(_retraction(record.record_id), family=Family.SIGHTINGS)
    (verdict,) = herts.deliver([sim.log[-1]])
    assert (verdict.accepted, verdict.effect) == (True, Effect.AMENDED)
    assert herts.stored(record.record_id, "cst").retracted  # type: ignore[union-attr]
    assert not herts.stored(record.record_id, "rogue").retracted  # type: ignore[union-attr]
    genuine_flows(herts, sim, case="squatting.record_id")


def test_a_producer_reusing_its_own_record_id_is_quarantined_not_dropped(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's own key signs a different record with an id it used before: RECORD_ID_REUSED, kept as
    evidence, and the first record stands."""
    first = sighting()
    pub = sim.publisher()
    pub.publish(first)
    herts.deliver([sim.log[-1]])
    second = _changed(sighting(seed=241), record_id=first.record_id)
    fp, payload = pub.registry.encode(second.SCHEMA, second.to_avro())
    head = pub._head(SIGHTINGS)
    reused = seal(
        sim.identities["cst"],
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        schema_fingerprint=fp,
        payload=payload,
        recipients=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        partition=head.partition,
        record_id=uuid.UUID(first.record_id),
    ).data
    attack(
        herts, [inject(sim, reused)], R.RECORD_ID_REUSED, case="squatting.own_reuse", authentic=True
    )
    view = herts.stored(first.record_id)
    assert view is not None
    assert view.payload is not None
    assert view.payload["description"] == first.description


def test_an_insider_cannot_amend_cst_s_record_through_a_shared_id(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Once the rogue holds a record with CST's id, its retraction retracts its own record only;
    its correction of an id only CST holds is FOREIGN_TARGET."""
    record = sighting()
    sim.publisher().publish(record)
    sim.publisher("rogue").publish(_changed(sighting(seed=242), record_id=record.record_id))
    herts.deliver(sim.log[-2:])
    sim.publisher("rogue").publish(_retraction(record.record_id), family=Family.SIGHTINGS)
    herts.deliver([sim.log[-1]])
    assert not herts.stored(record.record_id, "cst").retracted  # type: ignore[union-attr]
    assert herts.stored(record.record_id, "rogue").retracted  # type: ignore[union-attr]
    other = sighting(seed=243)
    sim.publisher().publish(other)
    herts.deliver([sim.log[-1]])
    sim.publisher("rogue").publish(_correction(_changed(other, description="fabricated")))
    attack(
        herts, [sim.log[-1]], R.FOREIGN_TARGET, case="extraneous.foreign_correction", authentic=True
    )
    genuine_flows(herts, sim, case="extraneous.shared_id")


# --- 4. the directory at run time --------------------------------------------------------------------


def test_an_expired_directory_stops_publisher_and_consumer(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Past the newest version's expiry (no newer one arrived: a freeze), the publisher refuses
    to publish and the consumer to consume: fail closed, one clear error."""
    later = sim.history.latest.expires + timedelta(seconds=1)
    pub = sim.publisher()
    pub.clock = lambda: later
    n = len(sim.log)
    with pytest.raises(DirectoryExpired, match="refresh"):
        pub.publish(sighting())
    assert len(sim.log) == n
    consumer = AgencyConsumer(
        pipeline=herts.pipeline,
        store=herts.store,
        bootstrap_servers="unused:0",
        group_id="g",
        topics=[SIGHTINGS],
        clock=lambda: later,
    )
    with pytest.raises(DirectoryExpired):
        consumer.follow_directory(force=True)


def test_a_producer_whose_key_the_directory_no_longer_trusts_refuses_to_publish(
    sim: BusSimulator,
) -> None:
    """CST's key revoked: the real publisher refuses (PublishRefused) before sealing anything."""
    pub = sim.publisher()
    sim.revoke_key("cst", key_id=sim.identities["cst"].key_id, at=datetime.now(UTC))
    n = len(sim.log)
    with pytest.raises(PublishRefused, match="key_revoked"):
        pub.publish(sighting())
    assert len(sim.log) == n


class _Follower:
    """A directory follower that learns one new version when asked (the topic, without Kafka)."""

    def __init__(self, learn: Any) -> None:
        self.learn = learn
        self.calls = 0

    def catch_up(self) -> list[object]:
        self.calls += 1
        return [self.learn()] if self.calls == 1 else []

    def close(self) -> None:
        pass


def test_a_key_published_after_the_consumer_started_is_learned_not_refused(
    sim: BusSimulator, herts: SimulatedConsumer, tmp_path: Path
) -> None:
    """CST rotates its key; the consumer's directory is one version behind when the first record
    under the new key arrives. It reads the directory topic and accepts the record, instead of
    quarantining a genuine record as UNKNOWN_KEY."""
    behind = BusSimulator(tmp_path / "behind")
    behind.history = type(sim.history)(sim.history.versions[0])
    for doc in sim.history.versions[1:]:
        behind.history.update(doc)
    sim.rotate_key("cst")
    new_version = sim.history.versions[-1]
    sim.publisher().publish(sighting())
    raw = sim.log[-1]
    lagging = SimulatedConsumer(behind, store_path=tmp_path / "lagging.sqlite")
    # The same keys as the real federation (the behind simulator made its own identities).
    lagging.pipeline = sim.pipeline()
    lagging.pipeline.directory = behind.history
    lagging.pipeline.intake.resolver = behind.history
    follower = _Follower(lambda: behind.history.update(new_version))
    consumer = AgencyConsumer(
        pipeline=lagging.pipeline,
        store=lagging.store,
        bootstrap_servers="unused:0",
        group_id="g",
        topics=[SIGHTINGS],
        follower=follower,  # type: ignore[arg-type]
    )
    try:
        (prepared,) = consumer._prepare([raw])
        assert prepared.error is None
        assert prepared.verified is not None
        assert follower.calls == 1
    finally:
        lagging.close()


# --- 5. back-dating ------------------------------------------------------------------------------


def _backdated(sim: BusSimulator, agency: str, identity: Any, created: datetime) -> bytes:
    """A record signed by ``identity`` for ``agency``'s stream with a back-dated creation time."""
    pub = sim.publisher(agency)
    record = sighting(seed=250)
    fp, payload = pub.registry.encode(record.SCHEMA, record.to_avro())
    head = pub.state.head(SIGHTINGS)
    from intelbus import _nacl  # noqa: PLC0415
    from intelbus.envelope.datakey import new_data_key  # noqa: PLC0415
    from intelbus.envelope.seal import _seal_from_parts  # noqa: PLC0415

    herts_key = sim.history.recipient_key("herts-police", created)
    return _seal_from_parts(
        identity,
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        record_id=uuid.UUID(record.record_id),
        sequence=head.next_sequence if head.epoch == identity.key_id.hex() else 0,
        prev_digest=head.last_digest,
        schema_fingerprint=fp,
        payload=payload,
        recipients=[herts_key],
        data_key=new_data_key([herts_key]),
        nonce=_nacl.random_bytes(24),
        now=created,
        partition=sim.partition_of(agency),
    ).data


def test_a_removed_agency_s_key_back_dated_is_refused_by_broker_time(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The rogue is removed from the federation; its key then signs a record dated before the
    removal. The broker appended it after: KEY_NOT_VALID."""
    rogue = sim.identities["rogue"]
    sim.publisher("rogue").publish(sighting(seed=251))
    herts.deliver([sim.log[-1]])
    removed = datetime.now(UTC)
    sim.update_directory(lambda body: edit.remove_agency(body, agency_id="rogue", now=removed))
    value = _backdated(sim, "rogue", rogue, removed - timedelta(days=2))
    raw = inject(
        sim, value, partition=sim.partition_of("rogue"), appended_at=removed + timedelta(seconds=5)
    )
    attack(herts, [raw], R.KEY_NOT_VALID, case="backdating.removed_agency")
    genuine_flows(herts, sim, case="backdating.removed_agency")


def test_a_rotated_out_key_back_dated_is_refused_and_the_new_key_flows(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST rotates; the old key (kept by a thief) signs a record dated before the rotation, which
    the broker appends after it: KEY_NOT_VALID. CST's new key then publishes a new epoch."""
    old = sim.identities["cst"]
    rotated = datetime.now(UTC)
    sim.rotate_key("cst", at=rotated)
    value = _backdated(sim, "cst", old, rotated - timedelta(hours=3))
    attack(
        herts,
        [inject(sim, value, appended_at=rotated + timedelta(seconds=5))],
        R.KEY_NOT_VALID,
        case="backdating.rotated_out_key",
    )
    genuine_flows(herts, sim, case="backdating.rotated_out_key")


def test_a_record_without_broker_time_is_refused_when_its_time_could_matter(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A topic switched to CreateTime by an operator: records carry no broker witness. One from a
    key with a cutoff (rotated out here, kept by a thief, dated before the rotation) is refused:
    NO_BROKER_TIME. One from a key with no cutoff is judged at its signed time and kept, so the
    operator's mistake costs CST nothing (the running consumer refuses to start on such a topic:
    test_broker_trust.py)."""
    old = sim.identities["cst"]
    rotated = datetime.now(UTC)
    sim.rotate_key("cst", at=rotated)
    value = _backdated(sim, "cst", old, rotated - timedelta(hours=3))
    untimed = inject(sim, value)
    untimed = RawRecord(untimed.topic, untimed.partition, untimed.offset, untimed.value, None)
    sim.log[-1] = untimed
    attack(herts, [untimed], R.NO_BROKER_TIME, case="backdating.no_broker_time")
    sim.publisher().publish(sighting(seed=252))
    good = sim.log[-1]
    good = RawRecord(good.topic, good.partition, good.offset, good.value, None)
    sim.log[-1] = good
    (verdict,) = herts.deliver([good])
    assert (verdict.accepted, verdict.effect) == (True, Effect.STORED)
    genuine_flows(herts, sim, case="backdating.no_broker_time")


# --- 6. recovery from a leaked key ---------------------------------------------------------------------


def test_a_leaked_key_s_forgeries_are_withdrawn_and_the_genuine_stream_resumes(
    sim: BusSimulator, herts: SimulatedConsumer, tmp_path: Path
) -> None:
    """A thief with CST's key fast-forwards the stream by 5,000 and forges a correction of a
    genuine record; both are accepted (they verify). Then the directory marks the key
    compromised since before the forgeries and CST rotates. The consumer withdraws what the key
    signed since then (kept as evidence, out of lists, searches and exports), the genuine
    record's content comes back, and CST's new key starts a new epoch that the forgeries cannot
    block. A fresh consumer replaying everything reaches the same records."""
    pub = sim.publisher()
    genuine = sighting(seed=260)
    pub.publish(genuine)
    herts.deliver([sim.log[-1]])
    leaked_since = datetime.now(UTC)
    thief = sim.unchecked()
    # The thief's own tooling skips 5,000 sequence numbers (a fast-forward within the gap bound).
    thief.state._db.execute(
        "UPDATE streams SET last_sequence = last_sequence + 5000 WHERE stream = ?", (SIGHTINGS,)
    )
    forged = _changed(sighting(seed=261), description="A man filmed the entrance (forged).")
    start = len(sim.log)
    thief.publish(forged)
    thief.publish(_correction(_changed(genuine, description="Nothing happened (forged).")))
    verdicts = herts.deliver(_new(sim, start))
    assert all(v.accepted for v in verdicts)
    assert verdicts[0].gap is not None
    assert verdicts[0].gap[1] - verdicts[0].gap[0] + 1 == 5000
    assert herts.store.search("forged") != []
    # CST learns of the leak: a new key, and the old one compromised since before the forgeries.
    compromised = sim.identities["cst"].key_id
    sim.rotate_key("cst")
    sim.revoke_key("cst", key_id=compromised, at=datetime.now(UTC), compromised_since=leaked_since)
    assert herts.learn_directory() == 1
    assert herts.learn_directory() == 0  # once
    assert herts.store.search("forged") == []
    view = herts.stored(forged.record_id)
    assert view is not None
    assert view.status == "withdrawn"
    assert forged.record_id not in _ids(herts)
    restored = herts.stored(genuine.record_id)
    assert restored is not None
    assert restored.payload is not None
    assert (restored.status, restored.payload["description"]) == ("live", genuine.description)
    assert herts.store.summary()["withdrawn"] == 1
    genuine_flows(herts, sim, case="recovery.leaked_key")
    fresh = SimulatedConsumer(sim, store_path=tmp_path / "fresh.sqlite")
    try:
        fresh.deliver(list(sim.log))
        assert _ids(fresh) == _ids(herts)
    finally:
        fresh.close()


def test_forgeries_under_an_old_key_cannot_block_the_new_key_s_epoch(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Before any compromise is declared, a thief's forgery far ahead on the old key's stream does
    not touch the stream CST's new key starts: each key is its own epoch."""
    thief = sim.unchecked()
    head = thief.state.head(SIGHTINGS)
    far = seal(
        sim.identities["cst"],
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=head.next_sequence + 9_000,
        prev_digest=head.last_digest,
        schema_fingerprint=bytes(32),
        payload=b"x",
        recipients=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        partition=head.partition,
    ).data
    herts.deliver([inject(sim, far)])
    sim.rotate_key("cst")
    genuine_flows(herts, sim, case="recovery.new_epoch", count=5)


# --- 8. bounds ---------------------------------------------------------------------------------------


def test_garbage_of_a_megabyte_keeps_only_a_bounded_prefix(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Records just under the size cap: quarantined with their first 4 KiB, their size and their
    digest; the whole record stays on Kafka. Twenty of them add little to the store."""
    store_file = Path(herts.store_url)
    before = store_file.stat().st_size
    raws = [inject(sim, bytes([i]) * (1024 * 1024 - 1)) for i in range(20)]
    attack(herts, raws, R.MALFORMED, case="bounds.megabyte_garbage")
    for entry in herts.store.quarantine_entries(100):
        assert len(entry.raw_prefix) == 4096
        assert entry.raw_size == 1024 * 1024 - 1
        assert entry.truncated
    wal = store_file.with_name(store_file.name + "-wal")
    grown = store_file.stat().st_size + (wal.stat().st_size if wal.exists() else 0) - before
    assert grown < 2 * 1024 * 1024, grown
    genuine_flows(herts, sim, case="bounds.megabyte_garbage")


@pytest.mark.parametrize(
    ("kind", "target"),
    [(RecordKind.RETRACTION, None), (RecordKind.CORRECTION, None), (RecordKind.SIGHTING, "x")],
)
def test_an_amendment_must_name_its_target_where_auditors_can_read_it(
    sim: BusSimulator, herts: SimulatedConsumer, kind: RecordKind, target: str | None
) -> None:
    """Format 2 signs an amendment's target in the header: an insider's amendment that hides it
    (so auditors cannot see what it amends), or a sighting that claims one, is BINDING_MISMATCH."""
    rogue = sim.publisher("rogue")
    record = sighting(seed=260)
    model: Any = record
    if kind is RecordKind.RETRACTION:
        model = _retraction(record.record_id)
    elif kind is RecordKind.CORRECTION:
        model = _correction(record)
    fp, payload = rogue.registry.encode(model.SCHEMA, model.to_avro())
    rogue._publish_payload(
        SIGHTINGS,
        kind=kind,
        fingerprint=fp,
        payload=payload,
        keys=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        record_id=uuid.UUID(model.record_id),
        target=uuid.UUID(record.record_id) if target else None,
    )
    attack(
        herts,
        [sim.log[-1]],
        R.BINDING_MISMATCH,
        case=f"extraneous.hidden_target.{kind.label}",
        authentic=False,  # refused as a binding, before its stream moves
    )
    genuine_flows(herts, sim, case="extraneous.hidden_target")

"""SECURITY.md's attack table on the simulated source: the real pipeline and the real SQLite store.

One test per attack (python-tuf style). Each asserts, through :func:`tests.attacks.harness.attack`,
the exact reason code, the quarantine row (a prefix of the raw bytes, their size and digest, at
their offset) and that trusted state (stored rows, receipts, amendments, stream heads, offsets)
did not change, and then that CST's genuine feed goes on (``genuine_flows``). The exceptions are
attacks that need CST's own key revoked, rotated or signing at CST's next sequence: the recovery
that follows those is tested in tests/attacks/test_trust_model.py, with the trust model's other
classes (partitions, identity, amendments under policy, the directory at run time). Envelope-level
checks of the same attacks (no store) are in tests/unit/test_envelope.py.

Indefinite freeze (a feed that silently stops) is detected from heartbeat staleness by the
auditor (consumers/audit, ``heartbeat_missing``), not by the consumer pipeline, which has no
clock-driven alarm; the pipeline's part, refusing a replayed heartbeat that would fake liveness,
is tested here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from consumers.pipeline import RawRecord
from intelbus import _nacl
from intelbus.directory import edit
from intelbus.directory.trust import sign
from intelbus.envelope import seal
from intelbus.envelope.datakey import new_data_key
from intelbus.envelope.seal import _seal_from_parts
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    FORMAT_V3,
    SIGNATURE_BYTES,
    encode_body,
    encode_header,
    parse,
)
from intelbus.errors import BadVersion, ReasonCode, ThresholdNotMet
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family, RecordKind
from intelbus.records import Correction, Heartbeat, Retraction
from intelbus.trust.model import Effect
from tests.attacks.harness import (
    attack,
    genuine_flows,
    inject,
    resign,
    sighting,
    trailer_of,
)
from tests.simulator import _ADMIN_SEEDS, ENV, INCIDENTS, SIGHTINGS, BusSimulator, SimulatedConsumer

R = ReasonCode
HEARTBEATS = "sim.heartbeats"


def _fresh(sim: BusSimulator, **kwargs: object) -> RawRecord:
    """Publish a genuine CST sighting and return its raw record (not yet delivered)."""
    sim.publisher().publish(sighting(**kwargs))  # type: ignore[arg-type]
    return sim.log[-1]


def _leaked(sim: BusSimulator, **kwargs: object) -> RawRecord:
    """CST's key signs a sighting without the publisher's directory checks (a thief, or CST not
    knowing yet): its raw record, not yet delivered."""
    sim.unchecked().publish(sighting(**kwargs))  # type: ignore[arg-type]
    return sim.log[-1]


def _deliver_ok(consumer: SimulatedConsumer, raw: RawRecord) -> None:
    (verdict,) = consumer.deliver([raw])
    assert verdict.accepted, verdict
    assert verdict.effect is Effect.STORED, verdict


def _cst(sim: BusSimulator) -> int:
    """CST's partition on every topic here."""
    return sim.partition_of("cst")


# --- arbitrary data ----------------------------------------------------------------------------------


def _regions(value: bytes) -> list[tuple[str, range, set[ReasonCode]]]:
    """Byte ranges of a sealed record and the checks a single-bit flip there may trip.

    Fixed-meaning fields have one reason. Where the flipped value can still be well formed, the
    signature or the key's validity decides (a topic or producer the key is not valid for); the set
    lists exactly those outcomes. The signed creation time decides nothing about the key any more
    (it is judged at the broker's append time), so a flipped time is a bad signature or malformed.
    """
    sealed = parse(value)
    h = sealed.header
    assert h.format_version == FORMAT_V3
    assert sealed.proof is not None
    assert (sealed.proof.tree_size, sealed.proof.path) == (1, ())  # published alone
    out: list[tuple[str, range, set[ReasonCode]]] = [
        ("magic", range(4), {R.MALFORMED}),
        # 3 becomes 2 or 1 (still read, another layout: malformed) or an unknown version.
        ("version", range(4, 5), {R.UNSUPPORTED_VERSION, R.MALFORMED}),
        ("suite", range(5, 6), {R.UNSUPPORTED_VERSION}),
        ("kind", range(6, 7), {R.MALFORMED, R.BAD_SIGNATURE}),
        ("flags", range(7, 8), {R.MALFORMED}),
        ("created_at", range(8, 16), {R.MALFORMED, R.BAD_SIGNATURE}),
        ("sequence", range(16, 24), {R.MALFORMED, R.BAD_SIGNATURE}),
        ("record_id", range(24, 40), {R.BAD_SIGNATURE}),
        ("key_id", range(40, 56), {R.UNKNOWN_KEY}),
        ("prev_digest", range(56, FIXED_BYTES), {R.BAD_SIGNATURE}),
        ("partition", range(FIXED_BYTES, FIXED_BYTES + 4), {R.MALFORMED, R.BAD_SIGNATURE}),
        ("target", range(FIXED_BYTES + 4, FIXED_BYTES_V2), {R.BAD_SIGNATURE}),
    ]
    pos = FIXED_BYTES_V2
    lengths = {R.MALFORMED, R.OVERSIZE}
    for name, size, value_reasons in (
        ("environment", len(h.environment), {R.MALFORMED, R.BAD_SIGNATURE}),
        ("topic", len(h.topic), {R.MALFORMED, R.KEY_NOT_VALID}),
        ("producer_id", len(h.producer_id), {R.MALFORMED, R.KEY_NOT_VALID}),
        ("schema_fingerprint", len(h.schema_fingerprint), {R.BAD_SIGNATURE}),
    ):
        out.append((f"{name}.length", range(pos, pos + 1), lengths))
        out.append((name, range(pos + 1, pos + 1 + size), value_reasons))
        pos += 1 + size
    out.append(("recipients.count", range(pos, pos + 1), lengths))
    pos += 1
    for i, r in enumerate(h.recipients):
        size = len(r.agency_id)
        out.append((f"recipient{i}.length", range(pos, pos + 1), lengths))
        out.append(
            (f"recipient{i}.agency", range(pos + 1, pos + 1 + size), {R.MALFORMED, R.BAD_SIGNATURE})
        )
        pos += 1 + size
        out.append((f"recipient{i}.key_id_and_wrap", range(pos, pos + 96), {R.BAD_SIGNATURE}))
        pos += 96
    out.append(("nonce", range(pos, pos + 24), {R.BAD_SIGNATURE}))
    # A wrong length moves the v3 proof trailer: its own length check refuses it (malformed),
    # unless the bytes now read as the trailer happen to hold a consistent path count, and then
    # a tree size over MAX_BATCH (oversize) or an impossible index or path (malformed).
    out.append(("ciphertext.length", range(pos + 24, pos + 28), {R.MALFORMED, R.OVERSIZE}))
    pos += 28
    leaf_end = len(sealed.signed_bytes)
    out.append(("ciphertext", range(pos, leaf_end), {R.BAD_SIGNATURE}))
    # The proof trailer of a batch of one: any other size, index or path length is impossible
    # (0, a path of the wrong length, or over MAX_BATCH).
    out.append(("tree_size", range(leaf_end, leaf_end + 2), {R.MALFORMED, R.OVERSIZE}))
    out.append(("leaf_index", range(leaf_end + 2, leaf_end + 4), {R.MALFORMED}))
    out.append(("path_count", range(leaf_end + 4, leaf_end + 5), {R.MALFORMED}))
    out.append(("signature", range(leaf_end + 5, len(value)), {R.BAD_SIGNATURE}))
    assert len(value) - leaf_end - 5 == SIGNATURE_BYTES
    covered = sum(len(r) for _, r, _ in out)
    assert covered == len(value), "the region map must cover every byte exactly once"
    return out


def test_every_single_bit_flip_of_a_sealed_record_is_quarantined(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """All 8 x n single-bit flips of a genuine record: each quarantined, by region, nothing kept."""
    value = _fresh(sim).value
    sim.log.pop()  # the genuine record is only the template here
    total = 0
    for name, span, allowed in _regions(value):
        raws = []
        for i in span:
            for bit in range(8):
                flipped = bytearray(value)
                flipped[i] ^= 1 << bit
                raws.append(inject(sim, bytes(flipped)))
        attack(herts, raws, allowed, case=f"bitflip.{name}")
        total += len(raws)
    assert total == 8 * len(value)
    # The genuine record still continues the chain: nothing the flips did moved it.
    _deliver_ok(herts, inject(sim, value))
    genuine_flows(herts, sim, case="bitflip")


def test_every_truncation_of_a_sealed_record_is_malformed(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Every proper prefix (0 .. n-1 bytes), and the record with a byte appended: MALFORMED."""
    value = _fresh(sim).value
    sim.log.pop()
    raws = [inject(sim, value[:n]) for n in range(len(value))]
    raws.append(inject(sim, value + b"\x00"))
    attack(herts, raws, R.MALFORMED, case="truncation.every_prefix")
    _deliver_ok(herts, inject(sim, value))
    genuine_flows(herts, sim, case="truncation")


def test_a_record_signed_by_a_key_outside_the_directory_is_unknown_key(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """An impostor 'cst' key never registered: UNKNOWN_KEY (the key id resolves to nothing)."""
    impostor = AgencyIdentity.generate("cst")
    herts_key = sim.history.recipient_key("herts-police", datetime.now(UTC))
    forged = seal(
        impostor,
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=3,
        prev_digest=bytes(32),
        schema_fingerprint=bytes(32),
        payload=b"forged",
        recipients=[herts_key],
        partition=_cst(sim),
    ).data
    attack(herts, [inject(sim, forged)], R.UNKNOWN_KEY, case="unknown_key")
    genuine_flows(herts, sim, case="unknown_key")


def test_unsigned_and_wrongly_signed_records_are_bad_signature(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A zeroed signature, and one made by another agency's key over CST's claims: BAD_SIGNATURE."""
    value = _fresh(sim).value
    sim.log.pop()
    body = parse(value).signed_bytes
    unsigned = body + trailer_of(value)[:-SIGNATURE_BYTES] + bytes(SIGNATURE_BYTES)
    by_rogue = resign(sim.identities["rogue"], body)
    attack(herts, [inject(sim, unsigned)], R.BAD_SIGNATURE, case="unsigned")
    attack(herts, [inject(sim, by_rogue)], R.BAD_SIGNATURE, case="wrong_signature")
    genuine_flows(herts, sim, case="bad_signature")


# --- wrong target ------------------------------------------------------------------------------------


def test_a_record_copied_to_another_topic_is_binding_mismatch(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A genuine sighting appended to the incidents topic (CST may publish there): BINDING_MISMATCH."""
    value = _fresh(sim).value
    sim.log.pop()
    attack(
        herts, [inject(sim, value, topic=INCIDENTS)], R.BINDING_MISMATCH, case="cross_topic_copy"
    )
    _deliver_ok(herts, inject(sim, value))  # in its own topic it is still the next record
    genuine_flows(herts, sim, case="cross_topic_copy")


def test_a_record_copied_to_another_environment_is_binding_mismatch(sim: BusSimulator) -> None:
    """Same agencies and keys in two environments: a staging record read in production is refused."""
    value = _fresh(sim).value
    prod = SimulatedConsumer(sim, environment="prod", store_path=sim.tmp / "prod.sqlite")
    try:
        attack(prod, [inject(sim, value)], R.BINDING_MISMATCH, case="cross_environment_copy")
    finally:
        prod.close()


def test_a_key_used_outside_its_role_is_key_not_valid(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A consumer's key signing a record, and a producer signing for a topic not its own."""
    now = datetime.now(UTC)
    herts_key = sim.history.recipient_key("herts-police", now)
    common = {
        "environment": ENV,
        "kind": RecordKind.SIGHTING,
        "sequence": 0,
        "prev_digest": bytes(32),
        "schema_fingerprint": bytes(32),
        "payload": b"x",
        "recipients": [herts_key],
        "partition": _cst(sim),
    }
    by_consumer = seal(sim.identities["gmp"], topic=SIGHTINGS, **common).data  # type: ignore[arg-type]
    rogue_beat = seal(sim.identities["rogue"], topic=HEARTBEATS, **common).data  # type: ignore[arg-type]
    attack(
        herts, [inject(sim, by_consumer)], R.KEY_NOT_VALID, case="key_outside_role.consumer_signs"
    )
    attack(
        herts,
        [inject(sim, rogue_beat, topic=HEARTBEATS)],
        R.KEY_NOT_VALID,
        case="key_outside_role.foreign_topic",
    )
    genuine_flows(herts, sim, case="key_outside_role")


def test_a_sighting_passed_off_as_a_retraction_is_schema_violation(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's key, but the signed kind (retraction) contradicts the payload's schema (sighting)."""
    pub = sim.publisher()
    record = sighting(seed=50)
    fp, payload = sim.publisher().registry.encode(record.SCHEMA, record.to_avro())  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    pub._publish_payload(
        SIGHTINGS,
        kind=RecordKind.RETRACTION,
        fingerprint=fp,
        payload=payload,
        keys=[sim.history.recipient_key("herts-police", now)],
        record_id=uuid.UUID(record.record_id),  # type: ignore[attr-defined]
        # A retraction names its target in the header (else it is refused before its contents).
        target=uuid.UUID(herts.trusted_state().records[0][1]),
    )
    attack(herts, [sim.log[-1]], R.SCHEMA_VIOLATION, case="wrong_kind", authentic=True)
    genuine_flows(herts, sim, case="wrong_kind")


# --- key compromise ----------------------------------------------------------------------------------


def _revoke_cst(sim: BusSimulator, at: datetime, compromised_since: datetime | None = None) -> None:
    doc = edit.revoke_key(
        sim.history.latest,
        agency_id="cst",
        key_id=sim.identities["cst"].key_id.hex(),
        reason="laptop stolen",
        now=at,
        compromised_since=compromised_since,
    )
    assert sim.history.update(sim._signed(doc))


def test_a_record_signed_after_revocation_is_key_revoked(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's key revoked; a record it signs afterwards is KEY_REVOKED, and old records still stand."""
    _revoke_cst(sim, datetime.now(UTC) - timedelta(seconds=1))
    raw = _leaked(sim)
    attack(herts, [raw], R.KEY_REVOKED, case="revoked_key")
    assert len(herts.trusted_state().records) == 3


def test_a_back_dated_record_from_a_leaked_key_is_key_revoked_by_broker_time(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A thief back-dates the signed time before the revocation; the broker's append time is later."""
    cst = sim.identities["cst"]
    now = datetime.now(UTC)
    _revoke_cst(sim, now)
    head = sim.publisher().state.head(SIGHTINGS)
    herts_key = sim.history.recipient_key("herts-police", now)
    record = sighting(seed=51)
    fp, payload = sim.publisher().registry.encode(record.SCHEMA, record.to_avro())  # type: ignore[attr-defined]
    backdated = _seal_from_parts(
        cst,
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        record_id=uuid.UUID(record.record_id),  # type: ignore[attr-defined]
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        schema_fingerprint=fp,
        payload=payload,
        recipients=[herts_key],
        data_key=new_data_key([herts_key]),
        nonce=_nacl.random_bytes(24),
        now=now - timedelta(days=1),
        partition=head.partition,
    ).data
    raw = inject(sim, backdated, appended_at=now + timedelta(seconds=1))
    attack(herts, [raw], R.KEY_REVOKED, case="revoked_key.backdated")


def test_a_record_signed_with_an_expired_key_is_key_not_valid(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """After rotation the old key's window has ended: what it signs afterwards is KEY_NOT_VALID."""
    new = AgencyIdentity.generate("cst")
    doc = edit.rotate_key(
        sim.history.latest,
        agency_id="cst",
        identity=new.public,
        now=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert sim.history.update(sim._signed(doc))
    raw = _leaked(sim)  # the old key still signs (the real publisher now refuses to)
    attack(herts, [raw], R.KEY_NOT_VALID, case="expired_key")


def test_one_stolen_admin_key_cannot_change_the_directory(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """With one of two admin keys a thief cannot add a key for CST; what that key signs is unknown."""
    thief = AgencyIdentity.generate("cst")
    versions = sim.history.versions
    doc = edit.rotate_key(
        sim.history.latest, agency_id="cst", identity=thief.public, now=datetime.now(UTC)
    )
    with pytest.raises(ThresholdNotMet):
        sim.history.update(sign(doc, _ADMIN_SEEDS[0]))
    assert sim.history.versions == versions
    head = sim.publisher().state.head(SIGHTINGS)
    forged = seal(
        thief,
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        schema_fingerprint=bytes(32),
        payload=b"forged",
        recipients=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        partition=head.partition,
    ).data
    attack(herts, [inject(sim, forged)], R.UNKNOWN_KEY, case="stolen_admin_key")
    genuine_flows(herts, sim, case="stolen_admin_key")


# --- rollback and replay -----------------------------------------------------------------------------


def test_an_old_record_republished_at_a_new_offset_is_chain_replay(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Byte-identical copies of stored records at later offsets, also after a consumer restart.
    The stream's newest record again is a duplicate (what a publisher's resend after a lost
    acknowledgement also looks like); older ones are replays."""
    originals = [r.value for r in sim.log if r.topic == SIGHTINGS]
    attack(
        herts, [inject(sim, v) for v in originals[:-1]], R.CHAIN_REPLAY, case="replay_new_offset"
    )
    attack(herts, [inject(sim, originals[-1])], R.CHAIN_DUPLICATE, case="replay_new_offset.newest")
    restarted = herts.restart()
    try:
        attack(
            restarted,
            [inject(sim, originals[0])],
            R.CHAIN_REPLAY,
            case="replay_new_offset.after_restart",
        )
        genuine_flows(restarted, sim, case="replay_new_offset")
    finally:
        restarted.close()
        herts.store = (
            restarted.store
        )  # the fixture closes whichever is current (closing twice is fine)


def test_an_old_directory_served_again_changes_nothing(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """After CST's key is revoked, the version before the revocation is refused (BadVersion), and
    the revoked key stays revoked for the records it signs."""
    before_revocation = sim.history.versions[-1]
    _revoke_cst(sim, datetime.now(UTC) - timedelta(seconds=1))
    versions = sim.history.versions
    with pytest.raises(BadVersion, match="rollback"):
        sim.history.update(
            before_revocation.model_copy(
                update={"signed": before_revocation.signed.model_copy(update={"version": 1})}
            )
        )
    # The same old version re-read (e.g. from the directory topic) is a harmless no-op.
    assert sim.history.update(before_revocation) is False
    assert sim.history.versions == versions
    attack(herts, [_leaked(sim)], R.KEY_REVOKED, case="old_directory_served_again")


# --- fast-forward ------------------------------------------------------------------------------------


def test_a_huge_sequence_jump_is_refused_and_genuine_records_still_follow(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's own key signs sequence last+10,002: refused (CHAIN_JUMP), chain unmoved, next record kept."""
    head = sim.publisher().state.head(SIGHTINGS)
    jump = seal(
        sim.identities["cst"],
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=head.next_sequence + 10_001,
        prev_digest=head.last_digest,
        schema_fingerprint=bytes(32),
        payload=b"x",
        recipients=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        partition=head.partition,
    ).data
    max_jump = seal(
        sim.identities["cst"],
        environment=ENV,
        topic=SIGHTINGS,
        kind=RecordKind.SIGHTING,
        sequence=2**63 - 1,
        prev_digest=head.last_digest,
        schema_fingerprint=bytes(32),
        payload=b"x",
        recipients=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        partition=head.partition,
    ).data
    attack(herts, [inject(sim, jump), inject(sim, max_jump)], R.CHAIN_JUMP, case="fast_forward")
    _deliver_ok(herts, _fresh(sim))
    genuine_flows(herts, sim, case="fast_forward")


# --- indefinite freeze -------------------------------------------------------------------------------


def test_a_replayed_heartbeat_cannot_fake_liveness(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """A withholding broker re-serving the newest heartbeat (to hide a freeze): refused as a
    duplicate, and the feed's last heartbeat does not move."""
    beat = next(r for r in sim.log if r.topic == HEARTBEATS)
    feeds = herts.store.feeds()
    assert [(f.producer_id, f.topic) for f in feeds] == [("cst", HEARTBEATS)]
    attack(
        herts,
        [
            inject(
                sim,
                beat.value,
                topic=HEARTBEATS,
                appended_at=datetime.now(UTC) + timedelta(hours=1),
            )
        ],
        R.CHAIN_DUPLICATE,
        case="freeze.replayed_heartbeat",
    )
    assert herts.store.feeds() == feeds  # the feed's last heartbeat did not move
    genuine_flows(herts, sim, case="freeze.replayed_heartbeat")


def test_a_heartbeat_speaking_for_another_producer_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """CST's genuine key signing a heartbeat that names GMP: it must not keep GMP's feed alive."""
    now = datetime.now(UTC)
    fake = Heartbeat(producer_id="gmp", sent_at=now, interval_ms=30_000, streams=())
    fp, payload = sim.publisher().registry.encode(Heartbeat.SCHEMA, fake.to_avro())
    sim.publisher()._publish_payload(
        HEARTBEATS,
        kind=RecordKind.HEARTBEAT,
        fingerprint=fp,
        payload=payload,
        keys=[sim.history.recipient_key("herts-police", now)],
        record_id=uuid.uuid4(),
    )
    feeds = herts.store.feeds()
    attack(
        herts,
        [sim.log[-1]],
        R.SCHEMA_VIOLATION,
        case="freeze.heartbeat_for_another",
        authentic=True,
    )
    assert herts.store.feeds() == feeds
    genuine_flows(herts, sim, case="freeze.heartbeat_for_another")


# --- mix-and-match -----------------------------------------------------------------------------------


def test_splices_between_records_are_refused(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """Header of A with nonce+ciphertext of B; A with B's key wraps: the signature no longer holds."""
    a_value = _fresh(sim, seed=60).value
    a = parse(a_value)
    b = parse(_fresh(sim, seed=61, tlp="AMBER").value)  # another recipient set: other wraps
    del sim.log[-2:]
    a_header, b_header = a.header_bytes, b.header_bytes
    ct_of_b = b.signed_bytes[len(b_header) :]
    header_a_body_b = a_header + ct_of_b + trailer_of(a_value)
    herts_a = next(r for r in a.header.recipients if r.agency_id == "herts-police")
    herts_b = next(r for r in b.header.recipients if r.agency_id == "herts-police")
    assert herts_a.wrapped_key != herts_b.wrapped_key
    a_with_b_wrap = a_value.replace(herts_a.wrapped_key, herts_b.wrapped_key)
    attack(herts, [inject(sim, header_a_body_b)], R.BAD_SIGNATURE, case="splice.header_ciphertext")
    attack(herts, [inject(sim, a_with_b_wrap)], R.BAD_SIGNATURE, case="splice.key_wrap")
    genuine_flows(herts, sim, case="splice")


def test_a_re_signed_splice_does_not_decrypt(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """Even signed by CST's own key (an insider, a signing bug), A's ciphertext under a header with
    B's wraps and the next sequence fails the AEAD, whose associated data is the header."""
    a = parse(_fresh(sim, seed=62).value)
    b = parse(_fresh(sim, seed=63, tlp="AMBER").value)
    del sim.log[-2:]
    head = sim.publisher().state.head(SIGHTINGS)
    header = replace(
        a.header,
        sequence=head.next_sequence,
        prev_digest=head.last_digest,
        recipients=b.header.recipients,
    )
    body = encode_body(encode_header(header), a.nonce, a.ciphertext)
    spliced = resign(sim.identities["cst"], body)
    attack(
        herts, [inject(sim, spliced)], R.DECRYPTION_FAILED, case="splice.resigned", authentic=True
    )


# --- surreptitious forwarding ------------------------------------------------------------------------


def test_surreptitious_forwarding_is_refused(sim: BusSimulator, herts: SimulatedConsumer) -> None:
    """A RED record for the Met only. The Met adds a wrap for Herts (signature breaks); the rogue
    producer re-seals it as its own with a wrap for Herts and signs it (the AEAD's associated data
    binds the original header, so it does not decrypt)."""
    pub = sim.publisher()
    pub.publish(sighting(seed=64, tlp="RED"), named=["met-police"])
    red_value = sim.log.pop().value
    red, red_trailer = parse(red_value), trailer_of(red_value)
    met = sim.identities["met-police"]
    met_entry = red.header.recipients[0]
    data_key = met.open_sealed(met_entry.wrapped_key)
    now = datetime.now(UTC)
    herts_pub = sim.history.recipient_key("herts-police", now)
    herts_entry = replace(
        met_entry,
        agency_id="herts-police",
        key_id=herts_pub.key_id,
        wrapped_key=_nacl.seal(herts_pub.enc_public, data_key),
    )
    added = replace(red.header, recipients=(herts_entry, met_entry))
    forwarded = encode_body(encode_header(added), red.nonce, red.ciphertext) + red_trailer
    attack(herts, [inject(sim, forwarded)], R.BAD_SIGNATURE, case="forwarding.added_wrap")

    as_rogue = replace(
        red.header,
        producer_id="rogue",
        key_id=sim.identities["rogue"].key_id,
        sequence=0,
        prev_digest=bytes(32),
        recipients=(herts_entry,),
    )
    body = encode_body(encode_header(as_rogue), red.nonce, red.ciphertext)
    resealed = resign(sim.identities["rogue"], body)
    attack(
        herts,
        [inject(sim, resealed)],
        R.DECRYPTION_FAILED,
        case="forwarding.resealed_by_other_producer",
        authentic=True,
    )
    genuine_flows(herts, sim, case="forwarding")


# --- endless data ------------------------------------------------------------------------------------


def test_an_oversized_record_is_refused_before_parsing(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Over 1 MiB: OVERSIZE, whatever it contains (a valid prefix included)."""
    value = _fresh(sim).value
    sim.log.pop()
    big = value + bytes(1024 * 1024)
    attack(
        herts, [inject(sim, big), inject(sim, bytes(8 * 1024 * 1024))], R.OVERSIZE, case="oversize"
    )
    genuine_flows(herts, sim, case="oversize")


def _authentic_payload(sim: BusSimulator, fingerprint: bytes, payload: bytes) -> RawRecord:
    """CST's real key and chain (a compromised or buggy producer) around a hostile Avro payload."""
    sim.publisher()._publish_payload(
        SIGHTINGS,
        kind=RecordKind.SIGHTING,
        fingerprint=fingerprint,
        payload=payload,
        keys=[sim.history.recipient_key("herts-police", datetime.now(UTC))],
        record_id=uuid.uuid4(),
    )
    return sim.log[-1]


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


AVRO_BOMBS: dict[str, Callable[[bytes], bytes]] = {
    # A record_id string declared 2^62 bytes long: fastavro must not allocate it.
    "huge_string": lambda good: _zigzag(2**62) + good[:16],
    # The first string right, then every following length and count huge.
    "huge_counts": lambda good: good[:37] + _zigzag(10**12) * 8,
    # A 4,096-deep run of block counts: no recursive schema is registered, so no deep nesting.
    "deep_nesting": lambda good: good[:37] + b"\x02" * 4096,
    # Trailing bytes after a complete, valid payload.
    "trailing": lambda good: good + b"\x00",
    # Over the payload cap (512 KiB), inside the record cap.
    "over_payload_cap": lambda good: good + bytes(600 * 1024),
}


@pytest.mark.parametrize("bomb", sorted(AVRO_BOMBS))
def test_avro_bombs_from_an_authentic_producer_are_schema_violation(
    sim: BusSimulator, herts: SimulatedConsumer, bomb: str
) -> None:
    """Hostile Avro under a genuine signature: decoded only after verification, capped, every
    decoder failure typed (SECURITY.md: fastavro is not safe on hostile bytes)."""
    registry = sim.publisher().registry
    record = sighting(seed=70)
    fp, good = registry.encode(record.SCHEMA, record.to_avro())  # type: ignore[attr-defined]
    raw = _authentic_payload(sim, fp, AVRO_BOMBS[bomb](good))
    attack(herts, [raw], R.SCHEMA_VIOLATION, case=f"avro_bomb.{bomb}", authentic=True)
    genuine_flows(herts, sim, case=f"avro_bomb.{bomb}")


def test_a_payload_under_an_unregistered_schema_is_unknown_schema(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """An attacker cannot bring its own (recursive, bomb-friendly) schema: the fingerprint must be
    one the registry linted."""
    raw = _authentic_payload(
        sim, _nacl.blake2b(b"recursive schema", digest_size=32), b"\x02" * 5000
    )
    attack(herts, [raw], R.UNKNOWN_SCHEMA, case="avro_bomb.unregistered_schema", authentic=True)
    genuine_flows(herts, sim, case="avro_bomb.unregistered_schema")


# --- extraneous --------------------------------------------------------------------------------------


def _retraction_of(target: str) -> Retraction:
    return Retraction(
        record_id=str(uuid.uuid4()),
        retracts_record_id=target,
        retracted_at=datetime.now(UTC),
        reason="not true",
        grading=sighting().grading,  # type: ignore[attr-defined]
    )


def test_a_foreign_retraction_and_correction_are_refused(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The rogue producer retracts, then corrects, CST's stored record: FOREIGN_TARGET, record intact."""
    target = herts.trusted_state().records[0][1]
    rogue = sim.publisher("rogue")
    rogue.publish(_retraction_of(str(target)), family=Family.SIGHTINGS)
    attack(herts, [sim.log[-1]], R.FOREIGN_TARGET, case="foreign_retraction", authentic=True)
    replacement = sighting(seed=71)
    correction = Correction(
        record_id=str(uuid.uuid4()),
        corrects_record_id=str(target),
        corrected_at=datetime.now(UTC),
        reason="detail",
        replacement=replacement.model_copy(update={"record_id": str(target)}),  # type: ignore[attr-defined]
        grading=replacement.grading,  # type: ignore[attr-defined]
    )
    rogue.publish(correction)
    attack(herts, [sim.log[-1]], R.FOREIGN_TARGET, case="foreign_correction", authentic=True)
    genuine_flows(herts, sim, case="foreign_amendments")


def test_a_foreign_retraction_sent_before_its_target_is_never_applied(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """The target is not held yet, so the rogue's retraction waits as pending (for the rogue's own
    record with that id); when CST's record arrives with the id, the waiting amendment is refused
    as foreign, and CST's record is not retracted."""
    original = sighting(seed=72)
    sim.publisher("rogue").publish(_retraction_of(original.record_id), family=Family.SIGHTINGS)  # type: ignore[attr-defined]
    herts.deliver([sim.log[-1]])
    sim.publisher().publish(original)  # type: ignore[arg-type]
    _deliver_ok(herts, sim.log[-1])
    view = herts.store.get(original.record_id, "cst")  # type: ignore[attr-defined]
    assert view is not None
    assert (view.retracted, view.version) == (False, 1)
    summary = herts.store.summary()
    assert (summary["amendments_refused"], summary["amendments_applied"]) == (1, 0)
    # Reported at the retraction's own position, with the reason the consumer would have given
    # had the target come first (what an auditor reading that partition first reports too).
    (late,) = herts.late_refusals
    assert (late.producer_id, late.refusal.reason) == ("rogue", R.FOREIGN_TARGET)
    genuine_flows(herts, sim, case="foreign_retraction_first")


def test_regression_foreign_retraction_before_its_target_in_one_batch_does_not_stop_the_consumer(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    """Found by the broker attack suite: a rogue retraction read just before its target, in the
    same poll (another partition), passed the pipeline (target unknown yet) and made the store
    raise on the batch, on every retry: one hostile record stopped the consumer. Now the store
    refuses it like any pending foreign amendment, and the batch commits."""
    original = sighting(seed=73)
    sim.publisher("rogue").publish(_retraction_of(original.record_id), family=Family.SIGHTINGS)
    sim.publisher().publish(original)
    results = herts.deliver(sim.log[-2:])
    assert results[1].accepted
    assert results[1].effect is Effect.STORED
    view = herts.store.get(original.record_id, "cst")
    assert view is not None
    assert (view.retracted, view.version) == (False, 1)
    assert herts.store.summary()["amendments_refused"] == 1
    genuine_flows(herts, sim, case="foreign_retraction_same_batch")

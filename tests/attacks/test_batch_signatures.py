"""Attacks on format 3's batch signatures (docs/envelope.md, "Batch signatures (v3)").

CST publishes batches through the real publisher (``publish_many``: one signature per batch, an
RFC 9162 inclusion path in every record) onto the simulated bus; Herts runs the real pipeline,
its intake holding a root cache, and the real SQLite store. Each refusal asserts, through
:func:`tests.attacks.harness.attack`, the exact reason code, the quarantine row and that trusted
state did not change, and then that CST's genuine feed still flows. The attackers: anyone with
write access to the topic (forged and moved proofs), an insider producer holding CST's key or a
recipient's data key (re-sealed headers, roots signed for another context), a thief with a
revoked key, and the broker's operator (records of a batch reordered, dropped, duplicated,
copied to another partition).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.pipeline import RawRecord
from intelbus import _nacl
from intelbus.envelope import MAX_BATCH, RootCache, merkle, verify
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    SIGNATURE_BYTES,
    aead_prefix,
    batch_root_message,
    encode_body,
    encode_header,
    parse,
)
from intelbus.errors import BadSignature, KeyRevoked, ReasonCode
from intelbus.transport import kafka as transport
from intelbus.trust.model import Effect
from tests.attacks.harness import attack, genuine_flows, inject, resign, sighting
from tests.simulator import ENV, INCIDENTS, SIGHTINGS, BusSimulator, SimulatedConsumer

R = ReasonCode


@pytest.fixture
def batches(sim: BusSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ``publish_many`` sending to the simulated log (the broker replaced, nothing else):
    records are appended in order and acknowledged at their offsets."""

    def send_many(
        producer: object, items: Sequence[tuple[str, bytes, int | None]], **_: object
    ) -> list[tuple[int, int]]:
        del producer
        out = []
        for topic, value, partition in items:
            raw = sim.append(topic, value, partition=0 if partition is None else partition)
            out.append((raw.partition, raw.offset))
        return out

    monkeypatch.setattr(transport, "make_producer", lambda *a, **k: object())
    monkeypatch.setattr(transport, "send_many", send_many)


def _batch(sim: BusSimulator, n: int, seed: int = 700) -> list[RawRecord]:
    """n genuine CST sightings published as one batch (not yet delivered)."""
    start = len(sim.log)
    sim.publisher().publish_many([sighting(seed=seed + i) for i in range(n)])
    raws = sim.log[start:]
    del sim.log[start:]  # each test appends what it delivers, at fresh offsets
    proofs = [parse(r.value).proof for r in raws]
    assert [(p.tree_size, p.leaf_index) for p in proofs if p] == [(n, i) for i in range(n)]
    assert len({r.value[-SIGNATURE_BYTES:] for r in raws}) == 1  # one signature for all
    return raws


def _split(value: bytes) -> tuple[bytes, int, int, list[bytes], bytes]:
    p = parse(value)
    assert p.proof is not None
    return p.signed_bytes, p.proof.tree_size, p.proof.leaf_index, list(p.proof.path), p.signature


def _trailer(size: int, index: int, path: Sequence[bytes], signature: bytes) -> bytes:
    """A proof trailer from raw values, unchecked (impossible ones included)."""
    return struct.pack(">HHB", size, index, len(path)) + b"".join(path) + signature


def _flip(b: bytes, at: int = 0) -> bytes:
    out = bytearray(b)
    out[at] ^= 0x10
    return bytes(out)


def _cache_of(consumer: SimulatedConsumer) -> RootCache:
    cache = consumer.pipeline.intake._roots
    assert isinstance(cache, RootCache)
    return cache


def _deliver_genuine(consumer: SimulatedConsumer, sim: BusSimulator, raws: list[RawRecord]) -> None:
    verdicts = consumer.deliver([inject(sim, r.value) for r in raws])
    assert [(v.accepted, v.effect) for v in verdicts] == [(True, Effect.STORED)] * len(raws)


# --- the genuine path ----------------------------------------------------------------------------


def test_a_genuine_batch_is_stored_with_one_signature_check(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """16 records, one root: each stored, the root cache gains one entry; each record also
    verifies alone, without any cache (years later, by anyone with the public key)."""
    raws = _batch(sim, 16)
    before = len(_cache_of(herts))
    _deliver_genuine(herts, sim, raws)
    assert len(_cache_of(herts)) == before + 1
    for r in raws:
        v = verify(
            r.value,
            sim.history,
            expected_environment=ENV,
            expected_topic=SIGHTINGS,
            expected_partition=r.partition,
            witnessed_at=datetime.now(UTC),
        )
        assert v.format_version == 3


def test_publish_many_splits_a_stream_at_max_batch(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """MAX_BATCH + 2 records of one stream: two signatures, a full batch and a batch of two,
    one chain across both."""
    n = MAX_BATCH + 2
    start = len(sim.log)
    sim.publisher().publish_many([sighting(seed=2000 + i) for i in range(n)])
    raws = sim.log[start:]
    sizes = [parse(r.value).proof.tree_size for r in raws]  # type: ignore[union-attr]
    assert sizes == [MAX_BATCH] * MAX_BATCH + [2, 2]
    assert len({r.value[-SIGNATURE_BYTES:] for r in raws}) == 2
    verdicts = herts.deliver(raws)
    assert all(v.accepted and v.effect is Effect.STORED and v.gap is None for v in verdicts)


# --- forged and moved proofs (anyone with write access) ------------------------------------------


def test_a_forged_path_is_bad_signature_even_with_the_root_cached(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Record 0 delivered (its root cached); record 1 with a sibling hash flipped leads to another
    root: refused. Then record 1 itself, genuine, is stored."""
    raws = _batch(sim, 4)
    _deliver_genuine(herts, sim, raws[:1])
    leaf, size, index, path, sig = _split(raws[1].value)
    for i in range(len(path)):
        forged = [*path]
        forged[i] = _flip(forged[i])
        bad = leaf + _trailer(size, index, forged, sig)
        attack(herts, [inject(sim, bad)], R.BAD_SIGNATURE, case=f"batch.path_flipped[{i}]")
    _deliver_genuine(herts, sim, raws[1:])
    genuine_flows(herts, sim, case="batch.path_flipped")


def test_a_path_from_another_batch_or_another_leaf_is_bad_signature(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    a = _batch(sim, 4, seed=710)
    b = _batch(sim, 4, seed=720)
    leaf, *_ = _split(a[2].value)
    b_leaf, *_ = _split(b[2].value)
    other_batch = leaf + b[2].value[len(b_leaf) :]  # path and signature of B's leaf 2
    _l1, _s, _i, path1, sig = _split(a[1].value)
    other_leaf = leaf + _trailer(4, 2, path1, sig)  # leaf 1's path, claimed at index 2
    own_path_other_sig = leaf + _trailer(4, 2, _split(a[2].value)[3], _split(b[0].value)[4])
    attack(herts, [inject(sim, other_batch)], R.BAD_SIGNATURE, case="batch.path_other_batch")
    attack(herts, [inject(sim, other_leaf)], R.BAD_SIGNATURE, case="batch.path_other_leaf")
    attack(
        herts, [inject(sim, own_path_other_sig)], R.BAD_SIGNATURE, case="batch.signature_swapped"
    )
    genuine_flows(herts, sim, case="batch.path_other")


def test_leaf_node_confusion_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """A batch of 5: the last leaf's path is [MTH(leaves 0..3)], so read as leaf 1 of a tree of 2
    it leads to the very same root (the inner node taken for a leaf). Only the signed tree size
    refuses it. An inner node's 64 bytes presented as a record is not an envelope at all."""
    raws = _batch(sim, 5)
    leaf, size, index, path, sig = _split(raws[4].value)
    assert (size, index, len(path)) == (5, 4, 1)
    leaves = [_split(r.value)[0] for r in raws]
    root = merkle.root(leaves)
    assert merkle.root_from_proof(merkle.leaf_hash(leaf), 1, 2, path) == root
    as_leaf_of_two = leaf + _trailer(2, 1, path, sig)
    attack(herts, [inject(sim, as_leaf_of_two)], R.BAD_SIGNATURE, case="batch.node_as_leaf")
    node = merkle.leaf_hash(leaves[0]) + merkle.leaf_hash(leaves[1])
    attack(herts, [inject(sim, node)], R.MALFORMED, case="batch.node_bytes_as_record")
    genuine_flows(herts, sim, case="batch.leaf_node")


def test_a_changed_index_or_tree_size_is_refused(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    raws = _batch(sim, 3)
    leaf, size, index, path, sig = _split(raws[0].value)
    leaf1 = _split(raws[1].value)[0]
    assert (size, index, len(path)) == (3, 0, 2)
    cases = {
        "index_changed": (leaf + _trailer(3, 1, path, sig), R.BAD_SIGNATURE),
        # Leaf 0 of 4 follows the same steps as leaf 0 of 3: the same root, another signed size.
        "size_bigger_same_path": (leaf + _trailer(4, 0, path, sig), R.BAD_SIGNATURE),
        "size_smaller_same_path": (leaf + _trailer(2, 0, path, sig), R.MALFORMED),
        "size_smaller_recomputed_path": (
            leaf + _trailer(2, 0, [merkle.leaf_hash(leaf1)], sig),
            R.BAD_SIGNATURE,
        ),
        "size_bigger_recomputed_path": (
            leaf + _trailer(5, 0, [*path, merkle.leaf_hash(leaf)], sig),
            R.BAD_SIGNATURE,
        ),
        "path_too_long": (leaf + _trailer(3, 0, [*path, path[0]], sig), R.MALFORMED),
        "path_too_short": (leaf + _trailer(3, 0, path[:1], sig), R.MALFORMED),
        "tree_size_zero": (leaf + _trailer(0, 0, [], sig), R.MALFORMED),
        "index_past_size": (leaf + _trailer(3, 3, path, sig), R.MALFORMED),
        "index_far_past_size": (leaf + _trailer(3, 65535, path, sig), R.MALFORMED),
        "over_max_batch": (
            leaf
            + _trailer(MAX_BATCH + 1, 0, [path[0]] * merkle.path_length(0, MAX_BATCH + 1), sig),
            R.OVERSIZE,
        ),
        "trailing_byte": (raws[0].value + b"\x00", R.MALFORMED),
    }
    assert root_of(leaf, 4, 0, path) == root_of(leaf, 3, 0, path)
    for name, (value, reason) in cases.items():
        attack(herts, [inject(sim, value)], reason, case=f"batch.{name}")
    _deliver_genuine(herts, sim, raws)  # the genuine batch, untouched, after all that
    genuine_flows(herts, sim, case="batch.index_size")


def root_of(leaf: bytes, size: int, index: int, path: list[bytes]) -> bytes:
    return merkle.root_from_proof(merkle.leaf_hash(leaf), index, size, path)


# --- the cache ------------------------------------------------------------------------------------


def test_a_cached_root_lends_nothing_to_a_forged_record(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Record 0 stored (root cached). Then: record 1's ciphertext changed under its genuine
    trailer (another leaf, so another root: a miss, then a failed check); record 1 with its
    genuine leaf and path but its signature bytes replaced (the cache is keyed by them too: a
    record that fails alone fails with a warm cache). Nothing is cached by a failure."""
    raws = _batch(sim, 4)
    _deliver_genuine(herts, sim, raws[:1])
    cache = _cache_of(herts)
    size_before = len(cache)
    leaf, size, index, path, sig = _split(raws[1].value)
    changed_leaf = _flip(leaf, len(leaf) - 3) + raws[1].value[len(leaf) :]
    other_sig = leaf + _trailer(size, index, path, _flip(sig, 10))
    attack(herts, [inject(sim, changed_leaf)], R.BAD_SIGNATURE, case="batch.cached_root_other_leaf")
    attack(herts, [inject(sim, other_sig)], R.BAD_SIGNATURE, case="batch.cached_root_other_sig")
    assert len(cache) == size_before
    _deliver_genuine(herts, sim, raws[1:])
    assert len(cache) == size_before  # the rest of the batch: hits
    genuine_flows(herts, sim, case="batch.cached_root")


def test_a_key_revoked_after_its_root_was_cached_is_refused_by_broker_time(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Records 0 and 1 of a batch stored (root cached); CST's key revoked; records 2 and 3, the
    same batch, appended after the revocation: KEY_REVOKED (key resolution is never cached).
    A thief's new batch under the revoked key: KEY_REVOKED too."""
    raws = _batch(sim, 4)
    _deliver_genuine(herts, sim, raws[:2])
    now = datetime.now(UTC)
    cst = sim.identities["cst"]
    sim.revoke_key("cst", key_id=cst.key_id, at=now)
    late = [inject(sim, r.value, appended_at=now + timedelta(seconds=1)) for r in raws[2:]]
    attack(herts, late, R.KEY_REVOKED, case="batch.revoked_after_cached_root")
    # The cache still holds the root; a direct verification at a broker time after the
    # revocation refuses before the cache is consulted.
    cache = _cache_of(herts)
    assert len(cache) >= 1
    with pytest.raises(KeyRevoked) as info:
        verify(
            raws[2].value,
            sim.history,
            expected_environment=ENV,
            expected_topic=SIGHTINGS,
            witnessed_at=now + timedelta(seconds=1),
            roots=cache,
        )
    assert info.value.reason is R.KEY_REVOKED
    # CST's records from before the revocation still verify (broker time before it).
    verify(
        raws[2].value,
        sim.history,
        expected_environment=ENV,
        expected_topic=SIGHTINGS,
        witnessed_at=now - timedelta(seconds=1),
        roots=cache,
    )


def test_the_root_cache_keeps_only_successes_and_is_bounded() -> None:
    cst = _nacl_identity()
    cache = RootCache(capacity=2)
    messages = [f"root {i}".encode() for i in range(3)]
    sigs = [cst.sign(m) for m in messages]
    with pytest.raises(BadSignature):
        cache.verify(cst.sign_public, messages[0], sigs[1])
    assert len(cache) == 0
    for m, s in zip(messages, sigs, strict=True):
        cache.verify(cst.sign_public, m, s)
    assert len(cache) == 2  # the oldest evicted
    with pytest.raises(BadSignature):  # a hit needs the same key, message and signature
        cache.verify(cst.sign_public, messages[2], sigs[1])
    other = _nacl_identity()
    with pytest.raises(BadSignature):
        cache.verify(other.sign_public, messages[2], sigs[2])
    with pytest.raises(ValueError, match="at least 1"):
        RootCache(capacity=0)


def _nacl_identity() -> Any:
    from intelbus.identity import AgencyIdentity  # noqa: PLC0415 - one test's helper

    return AgencyIdentity.generate("cst")


# --- an insider producer, a recipient holding the data key ----------------------------------------


def test_a_root_cannot_be_reused_in_another_context(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Herts (a recipient) knows the batch's data keys: it re-seals record 1's header for another
    topic, partition or environment, re-encrypts the payload under it (so it would open) and keeps
    the genuine trailer: another leaf, another root. And CST's own key signing the genuine root
    for another context (a signing service asked for the wrong one) is no use either: the root
    message is built from the record's own header."""
    raws = _batch(sim, 3)
    p = parse(raws[1].value)
    leaf, size, index, path, _sig = _split(raws[1].value)
    herts_id = sim.identities["herts-police"]
    entry = next(e for e in p.header.recipients if e.agency_id == "herts-police")
    data_key = herts_id.open_sealed(entry.wrapped_key)
    payload = _nacl.aead_decrypt(data_key, p.nonce, p.ciphertext, aead_prefix(3) + p.header_bytes)
    cst_partition = raws[1].partition
    contexts = {
        "topic": ({"topic": INCIDENTS}, INCIDENTS, cst_partition),
        "partition": ({"partition": cst_partition + 1}, SIGHTINGS, cst_partition + 1),
        "environment": ({"environment": "prod"}, SIGHTINGS, cst_partition),
    }
    for what, (changes, topic, partition) in contexts.items():
        header = replace(p.header, **changes)
        hb = encode_header(header)
        ct = _nacl.aead_encrypt(data_key, p.nonce, payload, aead_prefix(3) + hb)
        moved = encode_body(hb, p.nonce, ct) + raws[1].value[len(leaf) :]
        raw = inject(sim, moved, topic=topic, partition=partition)
        attack(herts, [raw], R.BAD_SIGNATURE, case=f"batch.resealed_other_{what}")
    root = merkle.root([_split(r.value)[0] for r in raws])
    cst = sim.identities["cst"]
    for what, changes in {
        "topic": {"topic": INCIDENTS},
        "partition": {"partition": cst_partition + 1},
        "environment": {"environment": "prod"},
    }.items():
        wrong = cst.sign(batch_root_message(replace(p.header, **changes), size, root))
        forged = leaf + _trailer(size, index, path, wrong)
        attack(
            herts,
            [inject(sim, forged)],
            R.BAD_SIGNATURE,
            case=f"batch.root_signed_for_other_{what}",
        )
    _deliver_genuine(herts, sim, raws)
    genuine_flows(herts, sim, case="batch.root_reuse")


def test_an_insider_batch_record_copied_to_another_partition_is_binding_mismatch(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """The operator copies a genuine batch record, untouched, to another partition: its proof and
    signature hold, the signed partition does not match where it was read."""
    raws = _batch(sim, 3)
    elsewhere = (raws[0].partition + 1) % sim.partitions
    copy = inject(sim, raws[0].value, partition=elsewhere)
    attack(herts, [copy], R.BINDING_MISMATCH, case="batch.copied_other_partition")
    _deliver_genuine(herts, sim, raws)
    genuine_flows(herts, sim, case="batch.copied_other_partition")


# --- the operator: records of one batch reordered, dropped, duplicated ---------------------------


def test_records_of_a_batch_reordered_dropped_or_duplicated_are_caught_by_the_chain(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Each record still verifies alone, so the chain judges them as it judges any record: a
    duplicate is CHAIN_DUPLICATE, a replay of an older one CHAIN_REPLAY, and a record dropped from
    the middle leaves a gap the chain reports (the next is stored with ``gap``)."""
    raws = _batch(sim, 5)
    _deliver_genuine(herts, sim, raws[:2])
    attack(herts, [inject(sim, raws[1].value)], R.CHAIN_DUPLICATE, case="batch.duplicated")
    attack(herts, [inject(sim, raws[0].value)], R.CHAIN_REPLAY, case="batch.reordered_older")
    # Record 2 dropped by the operator: record 3 arrives; the stream has a hole the chain names.
    (v3,) = herts.deliver([inject(sim, raws[3].value)])
    assert v3.accepted
    assert v3.gap is not None
    # The dropped record delivered late, after its successor: it fills the hole, as any withheld
    # record does (its chain links are checked against both neighbours); a second copy of it,
    # behind the stream's head, is then a replay.
    (late,) = herts.deliver([inject(sim, raws[2].value)])
    assert (late.accepted, late.filled) == (True, True)
    attack(herts, [inject(sim, raws[2].value)], R.CHAIN_REPLAY, case="batch.filled_twice")
    (v4,) = herts.deliver([inject(sim, raws[4].value)])
    assert (v4.accepted, v4.effect, v4.gap) == (True, Effect.STORED, None)


# --- the version boundary -------------------------------------------------------------------------


def test_a_v2_record_relabelled_v3_and_a_v3_record_relabelled_v2_are_refused(
    sim: BusSimulator, herts: SimulatedConsumer, batches: None
) -> None:
    """Byte 4 changed alone: the other layout does not fit (malformed). Re-framed to fit (a
    batch-of-one trailer added around a v2 signature; a v3 trailer cut to its signature): the
    signatures are over other messages (bad signature)."""
    raws = _batch(sim, 2)
    v3 = raws[0].value
    leaf, _size, _index, _path, sig = _split(v3)
    v3_as_v2 = v3[:4] + b"\x02" + v3[5:]
    v3_reframed = v3[:4] + b"\x02" + leaf[5:] + sig
    # A v2 record of CST's, signed alone by CST's key over the v2 prefix (what a v2 producer
    # wrote), at the stream's next place.
    head = sim.publisher().state.head(SIGHTINGS)
    v2_header = replace(
        parse(v3).header,
        format_version=2,
        sequence=head.next_sequence + 5,
        prev_digest=head.last_digest,
    )
    assert FIXED_BYTES < FIXED_BYTES_V2
    p = parse(v3)
    v2 = resign(sim.identities["cst"], encode_body(encode_header(v2_header), p.nonce, p.ciphertext))
    v2_as_v3 = v2[:4] + b"\x03" + v2[5:]
    v2_reframed = v2[:4] + b"\x03" + v2[5:-64] + _trailer(1, 0, [], v2[-64:])
    for name, value, reason in (
        ("v3_as_v2", v3_as_v2, R.MALFORMED),
        ("v3_reframed_as_v2", v3_reframed, R.BAD_SIGNATURE),
        ("v2_as_v3", v2_as_v3, R.MALFORMED),
        ("v2_reframed_as_v3", v2_reframed, R.BAD_SIGNATURE),
    ):
        attack(herts, [inject(sim, value)], reason, case=f"batch.{name}")
    _deliver_genuine(herts, sim, raws)
    genuine_flows(herts, sim, case="batch.relabelled")

"""The committed envelope test vectors (tests/vectors/envelope_v1.json, _v2.json, _v3.json) stay true.

* Regenerating them from the fixed seeds gives the committed files byte for byte: the wire format
  has not drifted, and format v1 (records already on topics) is still written and read as it was.
* Every positive vector verifies with public keys only, gives its digest, and opens for each of
  its recipients; its signature and digest are the documented constructions (literal prefixes;
  in format 3 the Merkle root and root message are rebuilt here from hashlib, independently).
* Every negative vector fails with exactly its reason code, at its stage.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest
from nacl.exceptions import BadSignatureError
from nacl.public import PrivateKey, SealedBox
from nacl.signing import VerifyKey

from intelbus.envelope import RootCache, open_record, parse, verify
from intelbus.errors import EnvelopeError
from intelbus.identity import StaticKeyRing
from tests.vectors.generate_envelope_vectors import OUTS, PARTITION, identities, render

DOCS: dict[int, dict[str, Any]] = {v: json.loads(path.read_text()) for v, path in OUTS.items()}
IDS = identities()
VERSIONS = sorted(DOCS)

# The documented domain prefixes (docs/envelope.md, "What is signed"), spelled out here rather
# than imported, so a drift of the constants in wire.py fails these tests.
SIGN_PREFIXES = {
    1: b"intelbus/envelope/v1/signature\x00",
    2: b"intelbus/envelope/v2/signature\x00",
    3: b"intelbus/envelope/v3/batch-root\x00",  # over the root message, never over a body
}
AEAD_PREFIXES = {
    1: b"intelbus/envelope/v1/payload\x00",
    2: b"intelbus/envelope/v2/payload\x00",
    3: b"intelbus/envelope/v3/payload\x00",
}
DIGEST_PERSONS = {1: b"ibus-record-v1", 2: b"ibus-record-v2", 3: b"ibus-record-v3"}

# envelope_v1.json was written when format 2 did not exist: its ``unsupported_version`` vector
# is r1 with version byte 2. The file must not change (it proves old records still verify), and
# since format v2 that byte is read as v2: the v2 reader takes v1's ids as partition and target
# and fails on the lengths that follow. The record is still refused, with the reason below.
# envelope_v2.json carries the successors: ``unsupported_version`` (byte 3) and
# ``v1_record_with_version_byte_2`` / ``v1_record_reframed_as_v2``. Likewise envelope_v2.json's
# ``unsupported_version`` is r1 with version byte 3, read since format v3 as a v3 record whose
# proof trailer starts in its signature (a path count that does not fit the bytes left);
# envelope_v3.json carries the successors (``unsupported_version`` with byte 4, and
# ``v2_record_with_version_byte_3``).
SUPERSEDED = {(1, "unsupported_version"): "oversize", (2, "unsupported_version"): "malformed"}


def _cases(kind: str) -> list[Any]:
    """(version, vector) for every vector of ``kind`` in every file, named ``v<version>-<name>``."""
    return [
        pytest.param(v, vector, id=f"v{v}-{vector['name']}")
        for v in VERSIONS
        for vector in DOCS[v][kind]
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_vectors_regenerate_identically(version: int) -> None:
    """The generator, run now, reproduces the committed file exactly."""
    assert render(version) == OUTS[version].read_text()


def test_both_format_versions_have_a_file() -> None:
    """A vector file silently lost would make the tests below check nothing."""
    assert VERSIONS == [1, 2, 3]
    for version, doc in DOCS.items():
        assert doc["format"] == f"intelbus-envelope-vectors-v{version}"
        assert doc["positive"]
        assert doc["negative"]


@pytest.mark.parametrize("version", VERSIONS)
def test_identities_match_their_seeds(version: int) -> None:
    """Public keys and key ids in the file are those derived from the listed seeds."""
    assert DOCS[version]["identities"]
    for name, entry in DOCS[version]["identities"].items():
        ident = IDS[name]
        assert entry["sign_public"] == ident.public.sign_public.hex()
        assert entry["enc_public"] == ident.public.enc_public.hex()
        assert entry["key_id"] == ident.key_id.hex()


@pytest.mark.parametrize("version", VERSIONS)
def test_constants_are_the_documented_ones(version: int) -> None:
    """The prefixes and fixed-part size each file states are those of docs/envelope.md."""
    constants = DOCS[version]["constants"]
    assert bytes.fromhex(constants["sign_prefix"]) == SIGN_PREFIXES[version]
    assert bytes.fromhex(constants["aead_prefix"]) == AEAD_PREFIXES[version]
    assert constants["fixed_header_bytes"] == {1: 88, 2: 108, 3: 108}[version]
    if version >= 2:
        assert bytes.fromhex(constants["digest_person"]) == DIGEST_PERSONS[version]
        assert constants["partition"] == PARTITION
    if version == 3:
        assert constants["max_batch"] == 64


@pytest.mark.parametrize(("version", "vector"), _cases("positive"))
def test_positive_vector(version: int, vector: dict[str, Any]) -> None:
    """Verifies with the producer's public key, gives its digest; each recipient opens it."""
    record = bytes.fromhex(vector["expected_record"])
    ring = StaticKeyRing([IDS["cst"].public])
    # A v1 record binds no partition: read from any partition, it verifies.
    read_from = vector["partition"] if version >= 2 else 7
    verified = verify(
        record,
        ring,
        expected_environment=vector["environment"],
        expected_topic=vector["topic"],
        expected_partition=read_from,
        witnessed_at=None,
    )
    assert verified.digest.hex() == vector["expected_digest"]
    assert verified.format_version == version
    assert verified.sequence == vector["sequence"]
    assert int(verified.kind) == vector["kind"]
    assert verified.prev_digest.hex() == vector["prev_digest"]
    assert str(verified.record_id) == vector["record_id"]
    assert verified.created_at.isoformat() == vector["created_at"]
    assert list(verified.recipient_ids) == sorted(vector["recipients"])
    if version == 1:
        assert (verified.partition, verified.target_record_id) == (None, None)
    else:
        assert verified.partition == vector["partition"] == PARTITION
        target = verified.target_record_id
        assert (None if target is None else str(target)) == vector["target_record_id"]
    for name in vector["recipients"]:
        assert open_record(verified, IDS[name]).hex() == vector["payload"]


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _rfc9162_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root of an inclusion path, written out here from RFC 9162 §2.1.3.2 with hashlib (the
    module under test is not used), leaf hash SHA-256(0x00 || leaf), node SHA-256(0x01 || l || r).
    """
    fn, sn, r = index, size - 1, _sha256(b"\x00" + leaf)
    for p in path:
        assert sn != 0
        if fn % 2 == 1 or fn == sn:
            r = _sha256(b"\x01" + p + r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn // 2, sn // 2
        else:
            r = _sha256(b"\x01" + r + p)
        fn, sn = fn // 2, sn // 2
    assert sn == 0
    return r


def _v3_split(record: bytes) -> tuple[bytes, int, int, list[bytes], bytes]:
    """(leaf bytes, tree size, leaf index, path, root signature) of a v3 record, by hand: the
    ciphertext length sits at a known place after the header the parser reports."""
    header_len = len(parse(record).header_bytes)
    ct_len = int.from_bytes(record[header_len + 24 : header_len + 28], "big")
    leaf_end = header_len + 28 + ct_len
    size = int.from_bytes(record[leaf_end : leaf_end + 2], "big")
    index = int.from_bytes(record[leaf_end + 2 : leaf_end + 4], "big")
    count = record[leaf_end + 4]
    path_at = leaf_end + 5
    path = [record[path_at + 32 * i : path_at + 32 * (i + 1)] for i in range(count)]
    assert len(record) == path_at + 32 * count + 64
    return record[:leaf_end], size, index, path, record[-64:]


def _root_message(vector: dict[str, Any], size: int, root: bytes) -> bytes:
    """docs/envelope.md, "Batch signatures (v3)": the signed root message, spelled out."""
    env, topic, producer = (vector[k].encode() for k in ("environment", "topic", "producer"))
    return (
        SIGN_PREFIXES[3]
        + bytes([len(env)])
        + env
        + bytes([len(topic)])
        + topic
        + vector["partition"].to_bytes(4, "big")
        + bytes([len(producer)])
        + producer
        + IDS["cst"].key_id
        + size.to_bytes(2, "big")
        + root
    )


@pytest.mark.parametrize(("version", "vector"), _cases("positive"))
def test_positive_vector_is_the_documented_construction(
    version: int, vector: dict[str, Any]
) -> None:
    """Signature: Ed25519 over the version's literal prefix and the signed bytes (v3: over the
    root message of the Merkle root its leaf and path lead to), and over no other version's
    prefix. Digest: BLAKE2b-256 with the version's personalisation, over the body (v3: the leaf
    bytes, without the proof trailer)."""
    record = bytes.fromhex(vector["expected_record"])
    key = VerifyKey(IDS["cst"].public.sign_public)
    if version == 3:
        body, size, index, path, signature = _v3_split(record)
        assert (size, index) == (vector["tree_size"], vector["leaf_index"])
        key.verify(_root_message(vector, size, _rfc9162_root(body, index, size, path)), signature)
        for prefix in SIGN_PREFIXES.values():
            with pytest.raises(BadSignatureError):
                key.verify(prefix + body, signature)
    else:
        body, signature = record[:-64], record[-64:]
        key.verify(SIGN_PREFIXES[version] + body, signature)
    for other, prefix in SIGN_PREFIXES.items():
        if other != version:
            with pytest.raises(BadSignatureError):
                key.verify(prefix + body, signature)
    digest = hashlib.blake2b(body, digest_size=32, person=DIGEST_PERSONS[version]).hexdigest()
    assert digest == vector["expected_digest"]
    assert record[4] == version


@pytest.mark.parametrize(("version", "vector"), _cases("positive"))
def test_wraps_open_with_libsodium_sealed_box(version: int, vector: dict[str, Any]) -> None:
    """Our deterministic sealed box is libsodium's: ``SealedBox.decrypt`` opens every wrap."""
    entries = parse(bytes.fromhex(vector["expected_record"])).header.recipients
    assert len(entries) == len(vector["recipients"])
    for entry in entries:
        name = next(n for n in vector["recipients"] if IDS[n].agency_id == entry.agency_id)
        secret = bytes.fromhex(DOCS[version]["identities"][name]["enc_secret"])
        assert SealedBox(PrivateKey(secret)).decrypt(entry.wrapped_key).hex() == vector["data_key"]


@pytest.mark.parametrize("version", VERSIONS)
def test_chain_links_in_vectors(version: int) -> None:
    """r1 starts the chain (zero prev_digest); each later record chains to the one before."""
    positives = DOCS[version]["positive"]
    assert [p["name"] for p in positives] == ["r1", "r2", "r3", "r4"][: len(positives)]
    assert positives[0]["prev_digest"] == "00" * 32
    assert [p["sequence"] for p in positives] == list(range(len(positives)))
    for before, after in itertools.pairwise(positives):
        assert after["prev_digest"] == before["expected_digest"]


@pytest.mark.parametrize("version", [2, 3])
def test_retraction_vector_names_r1_as_its_target(version: int) -> None:
    """r4 (a retraction) binds r1's record id; r1..r3 amend nothing."""
    r1, r2, r3, r4 = DOCS[version]["positive"]
    assert r4["kind"] == 4
    assert r4["target_record_id"] == r1["record_id"]
    assert [r["target_record_id"] for r in (r1, r2, r3)] == [None, None, None]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(VERSIONS, 2)))
def test_vector_files_share_no_record_nonce_or_data_key(a: int, b: int) -> None:
    """Each file draws its own random inputs: no (data key, nonce) pair is used twice."""
    for field in ("record_id", "nonce", "data_key", "expected_record"):
        left = {p[field] for p in DOCS[a]["positive"]}
        right = {p[field] for p in DOCS[b]["positive"]}
        assert not left & right, field


def test_v3_vectors_are_one_batch_of_three_and_one_of_one() -> None:
    """r1..r3 carry one root signature (leaves 0, 1, 2 of a tree of 3); r4 is a batch of one,
    its trailer 5 bytes longer than v2's bare signature; each verifies alone, and a reader with a
    root cache verifies r1..r3 with one Ed25519 check (the cache holds one entry after them)."""
    positives = DOCS[3]["positive"]
    records = [bytes.fromhex(p["expected_record"]) for p in positives]
    assert [(p["tree_size"], p["leaf_index"]) for p in positives] == [
        (3, 0),
        (3, 1),
        (3, 2),
        (1, 0),
    ]
    assert len({r[-64:] for r in records[:3]}) == 1
    assert records[3][-64:] != records[0][-64:]
    _body, size, index, path, _sig = _v3_split(records[3])
    assert (size, index, path) == (1, 0, [])
    v2_r4 = bytes.fromhex(DOCS[2]["positive"][3]["expected_record"])
    assert len(records[3]) == len(v2_r4) + 5
    ring = StaticKeyRing([IDS["cst"].public])
    cache = RootCache()
    for p, record in zip(positives, records, strict=True):
        v = verify(
            record,
            ring,
            expected_environment=p["environment"],
            expected_topic=p["topic"],
            expected_partition=p["partition"],
            witnessed_at=None,
            roots=cache,
        )
        assert v.digest.hex() == p["expected_digest"]
    assert len(cache) == 2  # one root for r1..r3, one for r4


@pytest.mark.parametrize(("version", "vector"), _cases("negative"))
def test_negative_vector(version: int, vector: dict[str, Any]) -> None:
    """Each tampering case fails with its reason code, at its stage (verify or open)."""
    record = bytes.fromhex(vector["record"])
    ring = StaticKeyRing([IDS[n].public for n in vector["keyring"]])
    context = {
        "expected_environment": vector["environment"],
        "expected_topic": vector["topic"],
        "expected_partition": vector.get("partition"),
        "witnessed_at": None,
    }
    if vector["stage"] == "verify":
        with pytest.raises(EnvelopeError) as info:
            verify(record, ring, **context)
    else:
        verified = verify(record, ring, **context)
        with pytest.raises(EnvelopeError) as info:
            open_record(verified, IDS[vector["opener"]])
    expected = SUPERSEDED.get((version, vector["name"]), vector["expected_reason"])
    assert info.value.reason.value == expected


def test_superseded_expectations_still_name_committed_vectors() -> None:
    """Every overridden expectation names a vector that exists, with the reason it used to have."""
    for (version, name), _now in SUPERSEDED.items():
        vector = next(v for v in DOCS[version]["negative"] if v["name"] == name)
        assert vector["expected_reason"] == "unsupported_version"
        assert bytes.fromhex(vector["record"])[4] == version + 1


V1_ATTACKS = {
    "signature_bit_flip",
    "sequence_bit_flip",
    "truncated_last_byte",
    "trailing_byte",
    "unsupported_version",
    "wrong_topic_context",
    "unknown_key",
    "splice_header_ciphertext",
    "splice_key_wrap",
    "forward_added_wrap",
    "forward_resigned_known_key",
    "forward_not_listed",
    "auditor_not_a_recipient",
    "resigned_header_other_ciphertext",
}
V2_ATTACKS = {
    "wrong_partition_context",
    "partition_changed",
    "partition_out_of_range",
    "target_id_changed",
    "target_id_removed",
    "target_id_added",
    "v2_body_signed_with_v1_prefix",
    "v1_body_signed_with_v2_prefix",
    "v2_payload_under_v1_aead_prefix",
    "v1_record_with_version_byte_2",
    "v1_record_reframed_as_v2",
    "v2_record_reframed_as_v1",
}


V3_ATTACKS = {
    "path_sibling_flipped",
    "path_top_flipped",
    "path_of_another_leaf",
    "path_from_another_batch",
    "signature_from_another_batch",
    "leaf_index_changed",
    "tree_size_bigger_same_root",
    "index_and_size_shifted_same_root",
    "tree_size_smaller_recomputed_path",
    "tree_size_smaller_same_path",
    "path_too_long",
    "path_too_short",
    "tree_size_zero",
    "leaf_index_past_size",
    "batch_over_max",
    "trailer_truncated",
    "leaf_is_a_node",
    "root_signed_for_another_topic",
    "root_signed_for_another_environment",
    "root_signed_for_another_partition",
    "root_signed_for_another_key_id",
    "root_signed_for_another_tree_size",
    "root_signed_without_prefix",
    "v3_leaf_signed_with_v2_prefix",
    "v3_payload_under_v2_aead_prefix",
    "v2_record_with_version_byte_3",
    "v2_record_reframed_as_v3",
    "v3_record_with_version_byte_2",
    "v3_record_reframed_as_v2",
}
#: The v2 cases of the v1/v2 boundary, which v3's file replaces with its own boundary cases.
V1_V2_BOUNDARY = {
    "v2_body_signed_with_v1_prefix",
    "v1_body_signed_with_v2_prefix",
    "v2_payload_under_v1_aead_prefix",
    "v1_record_with_version_byte_2",
    "v1_record_reframed_as_v2",
    "v2_record_reframed_as_v1",
}


def test_negative_vectors_cover_every_attack() -> None:
    """Each file keeps one vector per named attack (a vector silently dropped would fail here);
    v2 has every v1 case, in format v2, and its own; v3 every v2 case but the v1/v2 boundary,
    in format v3, and its own."""
    v1 = {v["name"] for v in DOCS[1]["negative"]}
    v2 = {v["name"] for v in DOCS[2]["negative"]}
    v3 = {v["name"] for v in DOCS[3]["negative"]}
    assert v1 >= V1_ATTACKS
    assert v1 <= v2
    assert v2 >= V2_ATTACKS
    assert v2 - V1_V2_BOUNDARY <= v3
    assert v3 >= V3_ATTACKS
    for version, cases in ((2, v1), (3, v2 - V1_V2_BOUNDARY)):
        same = [
            v for v in DOCS[version]["negative"] if v["name"] in cases - {"unsupported_version"}
        ]
        assert same
        assert all(bytes.fromhex(v["record"])[4] == version for v in same)  # not older records


@pytest.mark.parametrize("version", [2, 3])
def test_partition_cases_are_read_where_they_claim(version: int) -> None:
    """partition_changed is read from the partition it was changed to: only the signature can
    refuse it (a BindingMismatch there would mean the binding, not the signature, caught it)."""
    (changed,) = (v for v in DOCS[version]["negative"] if v["name"] == "partition_changed")
    record = bytes.fromhex(changed["record"])
    assert int.from_bytes(record[88:92], "big") == changed["partition"] == PARTITION + 1

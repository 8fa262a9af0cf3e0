"""The committed envelope test vectors (tests/vectors/envelope_v1.json) stay true.

* Regenerating them from the fixed seeds gives the committed file byte for byte: the wire format
  has not drifted.
* Every positive vector verifies with public keys only and opens for each of its recipients.
* Every negative vector fails with exactly its reason code, at its stage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from nacl.public import PrivateKey, SealedBox

from intelbus.envelope import open_record, parse, verify
from intelbus.errors import EnvelopeError
from intelbus.identity import StaticKeyRing
from tests.vectors.generate_envelope_vectors import OUT, identities, render

DOC: dict[str, Any] = json.loads(OUT.read_text())
IDS = identities()


def test_vectors_regenerate_identically() -> None:
    """The generator, run now, reproduces the committed file exactly."""
    assert render() == OUT.read_text()


def test_identities_match_their_seeds() -> None:
    """Public keys and key ids in the file are those derived from the listed seeds."""
    for name, entry in DOC["identities"].items():
        ident = IDS[name]
        assert entry["sign_public"] == ident.public.sign_public.hex()
        assert entry["enc_public"] == ident.public.enc_public.hex()
        assert entry["key_id"] == ident.key_id.hex()


@pytest.mark.parametrize("vector", DOC["positive"], ids=lambda v: v["name"])
def test_positive_vector(vector: dict[str, Any]) -> None:
    """Verifies with the producer's public key; each recipient opens the expected payload."""
    record = bytes.fromhex(vector["expected_record"])
    ring = StaticKeyRing([IDS["cst"].public])
    verified = verify(
        record, ring, expected_environment=vector["environment"], expected_topic=vector["topic"]
    )
    assert verified.digest.hex() == vector["expected_digest"]
    assert verified.sequence == vector["sequence"]
    assert verified.prev_digest.hex() == vector["prev_digest"]
    assert str(verified.record_id) == vector["record_id"]
    assert verified.created_at.isoformat() == vector["created_at"]
    assert list(verified.recipient_ids) == sorted(vector["recipients"])
    for name in vector["recipients"]:
        assert open_record(verified, IDS[name]).hex() == vector["payload"]


@pytest.mark.parametrize("vector", DOC["positive"], ids=lambda v: v["name"])
def test_wraps_open_with_libsodium_sealed_box(vector: dict[str, Any]) -> None:
    """Our deterministic sealed box is libsodium's: ``SealedBox.decrypt`` opens every wrap."""
    entries = parse(bytes.fromhex(vector["expected_record"])).header.recipients
    for entry in entries:
        name = next(n for n in vector["recipients"] if IDS[n].agency_id == entry.agency_id)
        secret = bytes.fromhex(DOC["identities"][name]["enc_secret"])
        assert SealedBox(PrivateKey(secret)).decrypt(entry.wrapped_key).hex() == vector["data_key"]


def test_chain_links_in_vectors() -> None:
    """r1 starts the chain (zero prev_digest); r2 and r3 chain to the previous digest."""
    r1, r2, r3 = DOC["positive"]
    assert r1["prev_digest"] == "00" * 32
    assert r2["prev_digest"] == r1["expected_digest"]
    assert r3["prev_digest"] == r2["expected_digest"]


@pytest.mark.parametrize("vector", DOC["negative"], ids=lambda v: v["name"])
def test_negative_vector(vector: dict[str, Any]) -> None:
    """Each tampering case fails with its reason code, at its stage (verify or open)."""
    record = bytes.fromhex(vector["record"])
    ring = StaticKeyRing([IDS[n].public for n in vector["keyring"]])
    context = {"expected_environment": vector["environment"], "expected_topic": vector["topic"]}
    if vector["stage"] == "verify":
        with pytest.raises(EnvelopeError) as info:
            verify(record, ring, **context)
    else:
        verified = verify(record, ring, **context)
        with pytest.raises(EnvelopeError) as info:
            open_record(verified, IDS[vector["opener"]])
    assert info.value.reason.value == vector["expected_reason"]


def test_negative_vectors_cover_every_attack() -> None:
    """The file keeps one vector per named attack (a vector silently dropped would fail here)."""
    names = {v["name"] for v in DOC["negative"]}
    assert {
        "signature_bit_flip",
        "sequence_bit_flip",
        "truncated_last_byte",
        "trailing_byte",
        "wrong_topic_context",
        "unknown_key",
        "splice_header_ciphertext",
        "splice_key_wrap",
        "forward_added_wrap",
        "forward_resigned_known_key",
        "forward_not_listed",
        "auditor_not_a_recipient",
        "resigned_header_other_ciphertext",
    } <= names

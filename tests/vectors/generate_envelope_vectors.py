"""Generate tests/vectors/envelope_v1.json, _v2.json and _v3.json: deterministic envelope test vectors.

Every key comes from a fixed 32-byte seed, and every random input (data key, AEAD nonce, the
ephemeral keys of the sealed boxes) and the time are fixed, so the sealed bytes are reproducible
byte for byte. ``tests/unit/test_envelope_vectors.py`` regenerates both files and compares them
with the committed ones, then checks every negative vector fails with its reason code.

* ``envelope_v1.json``: format v1, as committed when v1 was the only format. It must never change:
  it proves that records already on topics still verify.
* ``envelope_v2.json``: the same positive and negative cases in format v2 (each record bound to
  partition :data:`PARTITION`), a fourth positive record (a retraction naming r1 as its target),
  and the v2-specific negatives: partition and target tampering, a genuine record read from
  another partition, and domain separation between the versions (a body signed or encrypted with
  the other version's prefix, a record re-framed as the other version, a v1 record given version
  byte 2).
* ``envelope_v3.json``: the same cases in format v3 (batch signatures): r1..r3 are one batch of
  three (a tree that is not a power of two) signed once, r4 a batch of one; and the v3-specific
  negatives: inclusion paths forged, moved, taken from another batch, too long or too short;
  the leaf index and tree size changed (one change keeps the very same root: only the signed tree
  size refuses it); impossible trailers; root signatures naming another context; the version
  boundary with v2.

The v2 document draws its record ids, nonces, data keys and ephemeral keys from labels of their
own (``"v2 r1 nonce"``...), and the v3 one from ``"v3 ..."``, so no (data key, nonce) pair is
shared between the files.

Regenerate (only when the format changes on purpose, with a new format version)::

    .venv/bin/python -m tests.vectors.generate_envelope_vectors
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intelbus import _nacl
from intelbus.envelope import merkle
from intelbus.envelope.datakey import DataKey, wrap_data_key
from intelbus.envelope.seal import BatchItem, Sealed, _seal_batch_from_parts, _seal_from_parts
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    FORMAT_V1,
    FORMAT_V2,
    FORMAT_V3,
    MAX_BATCH,
    NO_TARGET,
    BatchProof,
    EnvelopeHeader,
    aead_prefix,
    batch_root_message,
    digest_person,
    encode_body,
    encode_header,
    encode_trailer,
    parse,
    sign_prefix,
)
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.kinds import RecordKind

OUT = Path(__file__).with_name("envelope_v1.json")
OUT_V2 = Path(__file__).with_name("envelope_v2.json")
OUT_V3 = Path(__file__).with_name("envelope_v3.json")
#: Each format version's vector file.
OUTS = {FORMAT_V1: OUT, FORMAT_V2: OUT_V2, FORMAT_V3: OUT_V3}
ENVIRONMENT = "test"
TOPIC = "intelbus.sightings"
FINGERPRINT = bytes.fromhex("a1b2c3d4e5f60718")
CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
#: The partition every v2 vector record is bound to (not 0, so a zeroed field is a change).
PARTITION = 3

# name -> agency id. "met-police-rotated" is the Met's next key (same agency, new keys).
AGENCIES = {
    "cst": "cst",
    "met-police": "met-police",
    "herts-police": "herts-police",
    "gmp": "gmp",
    "auditor": "auditor",
    "met-police-rotated": "met-police",
}

PAYLOADS = {
    "r1": "sighting #1: person photographing the entrance",
    "r2": "sighting #2: vehicle circling the school",
    "r3": "sighting #3: drone overhead",
    "r4": "retraction of sighting #1: the same person, reported twice",
}
DESCRIPTIONS = {
    "r1": "first record of the stream, one recipient, prev_digest zeros",
    "r2": "second record, three recipients, chained to r1",
    "r3": "third record, reusing r2's data key and wraps with a new nonce",
    "r4": "fourth record, a retraction whose signed target is r1's record id",
}


def fixed(label: str, n: int = 32) -> bytes:
    """A fixed pseudo-random byte string named by ``label`` (SHA-256 of the label, truncated)."""
    return hashlib.sha256(f"intelbus envelope vectors: {label}".encode()).digest()[:n]


def identities() -> dict[str, AgencyIdentity]:
    """The vector identities, from fixed seeds (the same in both files)."""
    return {
        name: AgencyIdentity(agency, fixed(f"{name} sign"), fixed(f"{name} enc"))
        for name, agency in AGENCIES.items()
    }


def _tag(version: int) -> str:
    """The label prefix of a version's random inputs (none for v1, whose labels are fixed)."""
    return "" if version == FORMAT_V1 else f"v{version} "


def _data_key(label: str, recipients: list[PublicIdentity]) -> DataKey:
    return wrap_data_key(
        fixed(f"{label} data key"),
        recipients,
        ephemeral_secrets=[fixed(f"{label} ephemeral {i}") for i in range(len(recipients))],
    )


def _seal(
    ids: dict[str, AgencyIdentity],
    *,
    version: int,
    label: str,
    sequence: int,
    prev: bytes,
    payload: bytes,
    data_key: DataKey,
    recipients: list[str],
    kind: RecordKind = RecordKind.SIGHTING,
    target: uuid.UUID | None = None,
) -> Sealed:
    tag = _tag(version)
    return _seal_from_parts(
        ids["cst"],
        environment=ENVIRONMENT,
        topic=TOPIC,
        kind=kind,
        record_id=uuid.UUID(bytes=fixed(f"{tag}{label} record id", 16)),
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=FINGERPRINT,
        payload=payload,
        recipients=[ids[r].public for r in recipients],
        data_key=data_key,
        nonce=fixed(f"{tag}{label} nonce", 24),
        now=CREATED + timedelta(seconds=sequence),
        partition=PARTITION if version != FORMAT_V1 else None,
        target_record_id=target,
        format_version=version,
    )


def _signed(
    signer: AgencyIdentity,
    header: EnvelopeHeader,
    nonce: bytes,
    ct: bytes,
    *,
    prefix_version: int | None = None,
) -> bytes:
    """Assemble and sign a record from parts, as an attacker holding ``signer``'s key would.

    The signature's domain prefix is the header's own format version's, unless
    ``prefix_version`` names another (the cross-version cases). A v3 header makes a batch of one:
    its root signed over the root message, or (another ``prefix_version``) the leaf signed as that
    version would sign a body, behind a batch-of-one trailer."""
    body = encode_body(encode_header(header), nonce, ct)
    version = header.format_version if prefix_version is None else prefix_version
    if header.format_version != FORMAT_V3:
        return body + signer.sign(sign_prefix(version) + body)
    if version == FORMAT_V3:
        signature = signer.sign(batch_root_message(header, 1, merkle.root([body])))
    else:
        signature = signer.sign(sign_prefix(version) + body)
    return body + encode_trailer(BatchProof(1, 0, ()), signature)


def _aead_for_vectors(
    key: bytes,
    nonce: bytes,
    payload: bytes,
    header: EnvelopeHeader,
    *,
    prefix_version: int | None = None,
) -> bytes:
    version = header.format_version if prefix_version is None else prefix_version
    return _nacl.aead_encrypt(key, nonce, payload, aead_prefix(version) + encode_header(header))


def _flip(data: bytes, byte: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


def _fixed_bytes(version: int) -> int:
    return FIXED_BYTES if version == FORMAT_V1 else FIXED_BYTES_V2


def _seal_v3_batch(
    ids: dict[str, AgencyIdentity],
    parts: list[tuple[str, int, bytes, DataKey, list[str]]],
    prev: bytes,
    *,
    topic: str = TOPIC,
) -> list[Sealed]:
    """One v3 batch of sightings by CST: (label, sequence, payload, data key, recipients) each,
    chained from ``prev``, every random input fixed by its label."""
    items = [
        BatchItem(
            kind=RecordKind.SIGHTING,
            sequence=sequence,
            prev_digest=prev if k == 0 else None,
            schema_fingerprint=FINGERPRINT,
            payload=payload,
            recipients=tuple(ids[r].public for r in recipients),
            record_id=uuid.UUID(bytes=fixed(f"v3 {label} record id", 16)),
        )
        for k, (label, sequence, payload, _dk, recipients) in enumerate(parts)
    ]
    return _seal_batch_from_parts(
        ids["cst"],
        items,
        environment=ENVIRONMENT,
        topic=topic,
        partition=PARTITION,
        data_keys=[dk for _l, _s, _p, dk, _r in parts],
        nonces=[fixed(f"v3 {label} nonce", 24) for label, *_ in parts],
        times=[CREATED + timedelta(seconds=sequence) for _l, sequence, *_ in parts],
    )


def _positive(
    label: str,
    sealed: Sealed,
    dk: DataKey,
    recipients: list[str],
    *,
    version: int,
    eph_label: str,
) -> dict[str, Any]:
    tag = _tag(version)
    h = sealed.header
    entry: dict[str, Any] = {
        "name": label,
        "description": DESCRIPTIONS[label],
        "producer": "cst",
        "recipients": recipients,
        "environment": ENVIRONMENT,
        "topic": TOPIC,
        "kind": int(h.kind),
        "record_id": str(sealed.record_id),
        "sequence": h.sequence,
        "prev_digest": h.prev_digest.hex(),
        "created_at": h.created_at.isoformat(),
        "schema_fingerprint": FINGERPRINT.hex(),
        "payload": PAYLOADS[label].encode().hex(),
        "data_key": dk.key.hex(),
        "ephemeral_secrets": [
            fixed(f"{tag}{eph_label} ephemeral {i}").hex() for i in range(len(recipients))
        ],
        "nonce": fixed(f"{tag}{label} nonce", 24).hex(),
        "expected_record": sealed.data.hex(),
        "expected_digest": sealed.digest.hex(),
    }
    if version != FORMAT_V1:  # v1's file predates these fields and must not change
        entry["format_version"] = version
        entry["partition"] = h.partition
        entry["target_record_id"] = None if h.target_record_id is None else str(h.target_record_id)
    proof = parse(sealed.data).proof
    if proof is not None:
        entry["tree_size"] = proof.tree_size
        entry["leaf_index"] = proof.leaf_index
    return entry


def build_vectors(version: int = FORMAT_V1) -> dict[str, Any]:
    """The whole vector document of one format version (what ``OUTS[version]`` must contain)."""
    ids = identities()
    tag = _tag(version)
    three = ["gmp", "herts-police", "met-police"]

    # --- Positive vectors: a chain of three sightings (and, in v2, a retraction of r1). ----------
    dk1 = _data_key(f"{tag}r1", [ids["met-police"].public])
    dk23 = _data_key(f"{tag}r2", [ids[n].public for n in three])
    if version == FORMAT_V3:
        # One batch of three, signed once; r3 reuses r2's data key and wraps.
        r1, r2, r3 = _seal_v3_batch(
            ids,
            [
                ("r1", 0, PAYLOADS["r1"].encode(), dk1, ["met-police"]),
                ("r2", 1, PAYLOADS["r2"].encode(), dk23, three),
                ("r3", 2, PAYLOADS["r3"].encode(), dk23, three),
            ],
            bytes(32),
        )
    else:
        r1, r2, r3 = _chain_of_three(ids, version, dk1, dk23, three)
    chain = [("r1", r1, dk1, ["met-police"], "r1"), ("r2", r2, dk23, three, "r2")]
    chain.append(("r3", r3, dk23, three, "r2"))
    r4: Sealed | None = None
    if version != FORMAT_V1:
        dk4 = _data_key(f"{tag}r4", [ids["met-police"].public])
        r4 = _seal(
            ids,
            version=version,
            label="r4",
            sequence=3,
            prev=r3.digest,
            payload=PAYLOADS["r4"].encode(),
            data_key=dk4,
            recipients=["met-police"],
            kind=RecordKind.RETRACTION,
            target=r1.record_id,
        )
        chain.append(("r4", r4, dk4, ["met-police"], "r4"))
    positives = [
        _positive(label, sealed, dk, recips, version=version, eph_label=eph)
        for label, sealed, dk, recips, eph in chain
    ]

    # --- Negative vectors. ----------------------------------------------------------------------
    p1, p2, p3 = parse(r1.data), parse(r2.data), parse(r3.data)
    sig_at = len(r1.data) - 64
    leaf_end1 = len(p1.signed_bytes)  # = sig_at in v1 and v2; before the proof trailer in v3
    header_len1 = len(p1.header_bytes)
    negatives: list[dict[str, Any]] = []
    _negatives(
        ids,
        negatives,
        version,
        r1=r1,
        r2=r2,
        r3=r3,
        r4=r4,
        dk1=dk1,
        sig_at=sig_at,
        leaf_end1=leaf_end1,
        header_len1=header_len1,
        p1=p1,
        p2=p2,
        p3=p3,
    )
    return _document(ids, version, positives, negatives)


def _chain_of_three(
    ids: dict[str, AgencyIdentity],
    version: int,
    dk1: DataKey,
    dk23: DataKey,
    three: list[str],
) -> tuple[Sealed, Sealed, Sealed]:
    """v1 and v2: r1..r3 sealed one by one, each signed alone."""
    r1 = _seal(
        ids,
        version=version,
        label="r1",
        sequence=0,
        prev=bytes(32),
        payload=PAYLOADS["r1"].encode(),
        data_key=dk1,
        recipients=["met-police"],
    )
    r2 = _seal(
        ids,
        version=version,
        label="r2",
        sequence=1,
        prev=r1.digest,
        payload=PAYLOADS["r2"].encode(),
        data_key=dk23,
        recipients=three,
    )
    # r3 reuses r2's data key and wraps (the reuse window), with a fresh nonce.
    r3 = _seal(
        ids,
        version=version,
        label="r3",
        sequence=2,
        prev=r2.digest,
        payload=PAYLOADS["r3"].encode(),
        data_key=dk23,
        recipients=three,
    )
    return r1, r2, r3


def _negatives(
    ids: dict[str, AgencyIdentity],
    negatives: list[dict[str, Any]],
    version: int,
    *,
    r1: Sealed,
    r2: Sealed,
    r3: Sealed,
    r4: Sealed | None,
    dk1: DataKey,
    sig_at: int,
    leaf_end1: int,
    header_len1: int,
    p1: Any,
    p2: Any,
    p3: Any,
) -> None:
    """Every negative vector of one version, appended to ``negatives`` in the file's order."""
    tag = _tag(version)

    def neg(
        name: str,
        description: str,
        record: bytes,
        reason: str,
        *,
        keyring: tuple[str, ...] = ("cst", "met-police"),
        environment: str = ENVIRONMENT,
        topic: str = TOPIC,
        partition: int = PARTITION,
        opener: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "name": name,
            "description": description,
            "record": record.hex(),
            "keyring": list(keyring),
            "environment": environment,
            "topic": topic,
            "opener": opener,
            "stage": "verify" if opener is None else "open",
            "expected_reason": reason,
        }
        if version != FORMAT_V1:
            entry["partition"] = partition  # the partition the record is read from
        negatives.append(entry)

    neg(
        "signature_bit_flip",
        "one bit of the signature flipped",
        _flip(r1.data, sig_at + 5),
        "bad_signature",
    )
    neg(
        "sequence_bit_flip",
        "one bit of the signed sequence number flipped",
        _flip(r1.data, 23),
        "bad_signature",
    )
    neg(
        "created_at_bit_flip",
        "the signed creation time changed by one microsecond",
        _flip(r1.data, 15),
        "bad_signature",
    )
    neg(
        "ciphertext_bit_flip",
        "one bit of the ciphertext flipped",
        _flip(r1.data, leaf_end1 - 3),
        "bad_signature",
    )
    # The producer id field: after the fixed part, the environment and the topic.
    producer_at = _fixed_bytes(version) + 1 + len(ENVIRONMENT) + 1 + len(TOPIC)
    assert r1.data.index(b"\x03cst") == producer_at  # the replace below hits that field
    neg(
        "producer_id_altered",
        "producer id 'cst' changed to 'csu' (the key is CST's)",
        r1.data.replace(b"\x03cst", b"\x03csu", 1),
        "key_not_valid",
    )
    neg("truncated_last_byte", "the last byte removed", r1.data[:-1], "malformed")
    neg("truncated_in_header", "only the first 50 bytes", r1.data[:50], "malformed")
    neg("trailing_byte", "one byte appended after the signature", r1.data + b"\x00", "malformed")
    neg("bad_magic", "magic IBUS changed to IBUT", b"IBUT" + r1.data[4:], "malformed")
    unknown_version = version + 1
    neg(
        "unsupported_version",
        f"format version {unknown_version}",
        r1.data[:4] + bytes([unknown_version]) + r1.data[5:],
        "unsupported_version",
    )
    neg("unsupported_suite", "suite 9", r1.data[:5] + b"\x09" + r1.data[6:], "unsupported_version")
    neg(
        "reserved_flags_set",
        "the reserved flags byte is 1",
        r1.data[:7] + b"\x01" + r1.data[8:],
        "malformed",
    )
    # r1's recipient section: count u8 | len u8 | "met-police" | key id 16 | wrap 80.
    count_at = header_len1 - (2 + len("met-police") + 16 + 80)
    assert r1.data[count_at] == 1
    neg(
        "too_many_recipients",
        "recipient count byte 65 (cap 64)",
        r1.data[:count_at] + b"\x41" + r1.data[count_at + 1 :],
        "oversize",
    )
    neg(
        "zero_recipients",
        "recipient count byte 0",
        r1.data[:count_at] + b"\x00" + r1.data[count_at + 1 :],
        "malformed",
    )
    neg(
        "wrong_topic_context",
        "a valid record read from another topic (cross-topic copy)",
        r1.data,
        "binding_mismatch",
        topic="intelbus.incidents",
    )
    neg(
        "wrong_environment_context",
        "a valid record read in another environment",
        r1.data,
        "binding_mismatch",
        environment="prod",
    )
    neg(
        "unknown_key",
        "the verifier does not know CST's key",
        r1.data,
        "unknown_key",
        keyring=("met-police",),
    )

    # Mix-and-match: header and signature of r2, payload (nonce, length, ciphertext) of r3.
    spliced = r2.data[: len(p2.header_bytes)] + r3.data[len(p3.header_bytes) : -64] + r2.data[-64:]
    neg(
        "splice_header_ciphertext",
        "header and signature of r2, nonce and ciphertext of r3"
        + (" (and r3's inclusion proof; the batch signature is the same)" if p1.proof else ""),
        spliced,
        "bad_signature",
    )
    # Mix-and-match: r2 with met-police's wrap replaced by its wrap from r1 (another data key).
    w_r1 = p1.header.recipients[0].wrapped_key
    w_r2 = next(r for r in p2.header.recipients if r.agency_id == "met-police").wrapped_key
    neg(
        "splice_key_wrap",
        "r2 with met-police's wrapped key taken from r1",
        r2.data.replace(w_r2, w_r1, 1),
        "bad_signature",
        opener=None,
    )

    # Surreptitious forwarding (Davis 2001): met-police has opened r1 and wants gmp to read it.
    gmp = ids["gmp"].public
    fwd_dk = wrap_data_key(
        dk1.key,
        [ids["met-police"].public, gmp],
        ephemeral_secrets=[fixed(f"{tag}fwd 0"), fixed(f"{tag}fwd 1")],
    )
    fwd_header = replace(p1.header, recipients=fwd_dk.wraps)
    trailer1 = r1.data[leaf_end1:]  # the signature (v1, v2) or the proof trailer (v3)
    added_wrap = encode_body(encode_header(fwd_header), p1.nonce, p1.ciphertext) + trailer1
    neg(
        "forward_added_wrap",
        "met-police adds a wrap for gmp and keeps CST's signature",
        added_wrap,
        "bad_signature",
        keyring=("cst", "met-police", "gmp"),
    )
    met = ids["met-police"]
    fwd_payload = PAYLOADS["r1"].encode()
    fwd_header2 = replace(fwd_header, key_id=met.key_id)
    fwd_ct = _aead_for_vectors(dk1.key, p1.nonce, fwd_payload, fwd_header2)
    resigned = _signed(met, fwd_header2, p1.nonce, fwd_ct)
    neg(
        "forward_resigned_known_key",
        "met-police re-seals to gmp and signs with its own key, producer still 'cst'",
        resigned,
        "key_not_valid",
        keyring=("cst", "met-police", "gmp"),
    )
    neg(
        "forward_resigned_unknown_key",
        "the same, to a verifier that only knows CST",
        resigned,
        "unknown_key",
        keyring=("cst",),
    )
    neg(
        "forward_not_listed",
        "gmp tries to open r1, which lists only met-police",
        r1.data,
        "not_a_recipient",
        opener="gmp",
    )

    # Opening.
    neg(
        "auditor_not_a_recipient",
        "the auditor verifies r2 but is not a recipient",
        r2.data,
        "not_a_recipient",
        opener="auditor",
    )
    neg(
        "stale_recipient_key",
        "met-police's next key cannot open a record sealed to its old key",
        r1.data,
        "not_a_recipient",
        opener="met-police-rotated",
    )
    # CST's own key signs r3's header over r2's ciphertext (same data key): the signature is
    # good, but the AEAD's associated data binds the header, so the payload does not open.
    resigned_mix = _signed(ids["cst"], p3.header, p2.nonce, p2.ciphertext)
    neg(
        "resigned_header_other_ciphertext",
        "a validly signed record pairing r3's header with r2's ciphertext",
        resigned_mix,
        "decryption_failed",
        opener="met-police",
    )
    bad_wrap_header = replace(
        p1.header,
        recipients=(replace(p1.header.recipients[0], wrapped_key=_flip(w_r1, 40)),),
    )
    bad_wrap = _signed(
        ids["cst"],
        bad_wrap_header,
        p1.nonce,
        _aead_for_vectors(dk1.key, p1.nonce, fwd_payload, bad_wrap_header),
    )
    neg(
        "signed_bad_key_wrap",
        "a validly signed record whose wrapped key for met-police is damaged",
        bad_wrap,
        "decryption_failed",
        opener="met-police",
    )

    if version != FORMAT_V1:
        assert r4 is not None
        _binding_negatives(neg, r1=r1, r2=r2, r4=r4)
    if version == FORMAT_V2:
        _v2_version_negatives(ids, neg, r1=r1, dk1=dk1)
    if version == FORMAT_V3:
        assert r4 is not None
        _v3_negatives(ids, neg, r1=r1, r2=r2, r3=r3, r4=r4, dk1=dk1)


def _document(
    ids: dict[str, AgencyIdentity],
    version: int,
    positives: list[dict[str, Any]],
    negatives: list[dict[str, Any]],
) -> dict[str, Any]:
    constants: dict[str, Any] = {
        "sign_prefix": sign_prefix(version).hex(),
        "aead_prefix": aead_prefix(version).hex(),
        "fixed_header_bytes": _fixed_bytes(version),
    }
    if version != FORMAT_V1:
        constants["digest_person"] = digest_person(version).hex()
        constants["partition"] = PARTITION
    if version == FORMAT_V3:
        constants["max_batch"] = MAX_BATCH
    descriptions = {
        FORMAT_V1: "Envelope v1 (docs/envelope.md). Identities from fixed seeds; every random "
        "input fixed.",
        FORMAT_V2: f"Envelope v2 (docs/envelope.md): records bound to partition {PARTITION}, r4 "
        "retracts r1. Identities from fixed seeds (those of v1); every random input fixed.",
        FORMAT_V3: f"Envelope v3 (docs/envelope.md, batch signatures): records bound to "
        f"partition {PARTITION}; r1..r3 one batch of three signed once, r4 (retracting r1) a "
        "batch of one. Identities from fixed seeds (those of v1); every random input fixed.",
    }
    description = descriptions[version]
    return {
        "format": f"intelbus-envelope-vectors-v{version}",
        "description": description,
        "identities": {
            name: {
                "agency_id": ident.agency_id,
                "sign_seed": fixed(f"{name} sign").hex(),
                "enc_secret": fixed(f"{name} enc").hex(),
                "sign_public": ident.public.sign_public.hex(),
                "enc_public": ident.public.enc_public.hex(),
                "key_id": ident.key_id.hex(),
            }
            for name, ident in ids.items()
        },
        "constants": constants,
        "positive": positives,
        "negative": negatives,
    }


def _binding_negatives(neg: Any, *, r1: Sealed, r2: Sealed, r4: Sealed) -> None:
    """The partition and target bindings (formats 2 and 3, same offsets)."""
    partition_at = FIXED_BYTES  # partition u32, then target_record_id 16
    target_at = FIXED_BYTES + 4
    assert r1.data[partition_at:target_at] == struct.pack(">I", PARTITION)
    assert r4.data[target_at : target_at + 16] == r1.record_id.bytes
    assert r1.data[target_at : target_at + 16] == NO_TARGET

    # The partition binding (docs/envelope.md step 6; intelbus/chain.py: a stream is per partition).
    neg(
        "wrong_partition_context",
        f"a valid record bound to partition {PARTITION}, read from partition {PARTITION + 1}",
        r1.data,
        "binding_mismatch",
        partition=PARTITION + 1,
    )
    moved = r1.data[:partition_at] + struct.pack(">I", PARTITION + 1) + r1.data[target_at:]
    neg(
        "partition_changed",
        f"the signed partition changed to {PARTITION + 1}, read from {PARTITION + 1}: the "
        "signature fails before the binding is compared",
        moved,
        "bad_signature",
        partition=PARTITION + 1,
    )
    neg(
        "partition_out_of_range",
        "partition 2^31 (Kafka partitions are signed 32-bit)",
        r1.data[:partition_at] + struct.pack(">I", 2**31) + r1.data[target_at:],
        "malformed",
    )

    # The target binding: what a retraction amends is signed.
    end = target_at + 16
    neg(
        "target_id_changed",
        "r4's signed target (r1) replaced by r2's record id",
        r4.data[:target_at] + r2.record_id.bytes + r4.data[end:],
        "bad_signature",
    )
    neg(
        "target_id_removed",
        "r4's signed target zeroed (a retraction that names nothing)",
        r4.data[:target_at] + NO_TARGET + r4.data[end:],
        "bad_signature",
    )
    neg(
        "target_id_added",
        "r1 (amends nothing) given r2's record id as a target",
        r1.data[:target_at] + r2.record_id.bytes + r1.data[end:],
        "bad_signature",
    )


def _v2_version_negatives(
    ids: dict[str, AgencyIdentity], neg: Any, *, r1: Sealed, dk1: DataKey
) -> None:
    """The version boundary between v1 and v2."""
    cst = ids["cst"]
    p1 = parse(r1.data)

    # Domain separation between format versions: what is signed or encrypted for one version is
    # never valid for the other, even when the producer's own key makes it.
    neg(
        "v2_body_signed_with_v1_prefix",
        "r1's v2 body signed by CST's key with the v1 signature prefix",
        _signed(cst, p1.header, p1.nonce, p1.ciphertext, prefix_version=FORMAT_V1),
        "bad_signature",
    )
    v1 = build_vectors(FORMAT_V1)
    v1_r1 = bytes.fromhex(v1["positive"][0]["expected_record"])
    v1p = parse(v1_r1)
    neg(
        "v1_body_signed_with_v2_prefix",
        "envelope_v1.json's r1 body signed by CST's key with the v2 signature prefix",
        _signed(cst, v1p.header, v1p.nonce, v1p.ciphertext, prefix_version=FORMAT_V2),
        "bad_signature",
    )
    v1_aead = _aead_for_vectors(
        dk1.key, p1.nonce, PAYLOADS["r1"].encode(), p1.header, prefix_version=FORMAT_V1
    )
    neg(
        "v2_payload_under_v1_aead_prefix",
        "r1's v2 header with its payload encrypted under the v1 AEAD prefix, validly signed",
        _signed(cst, p1.header, p1.nonce, v1_aead),
        "decryption_failed",
        opener="met-police",
    )
    # A v1 record presented as v2, and the reverse.
    neg(
        "v1_record_with_version_byte_2",
        "envelope_v1.json's r1 with its version byte set to 2: the v2 reader takes 20 bytes of "
        "its ids as partition and target, then the topic's 'i' (105) as the environment length",
        v1_r1[:4] + b"\x02" + v1_r1[5:],
        "oversize",
    )
    neg(
        "v1_record_reframed_as_v2",
        f"envelope_v1.json's r1 with version byte 2 and a partition ({PARTITION}) and an empty "
        "target inserted: a well-formed v2 layout under a v1 signature",
        v1_r1[:4]
        + b"\x02"
        + v1_r1[5:FIXED_BYTES]
        + struct.pack(">I", PARTITION)
        + NO_TARGET
        + v1_r1[FIXED_BYTES:],
        "bad_signature",
    )
    neg(
        "v2_record_reframed_as_v1",
        "r1 with version byte 1 and its partition and target removed: a well-formed v1 layout "
        "under a v2 signature",
        r1.data[:4] + b"\x01" + r1.data[5:FIXED_BYTES] + r1.data[FIXED_BYTES_V2:],
        "bad_signature",
    )


def _trailer(size: int, index: int, path: list[bytes], signature: bytes) -> bytes:
    """A v3 proof trailer from raw values, unchecked (so impossible ones can be written)."""
    return struct.pack(">HHB", size, index, len(path)) + b"".join(path) + signature


def _v3_negatives(
    ids: dict[str, AgencyIdentity],
    neg: Any,
    *,
    r1: Sealed,
    r2: Sealed,
    r3: Sealed,
    r4: Sealed,
    dk1: DataKey,
) -> None:
    """The cases only format v3 has: the inclusion proof, the root message, the version boundary.

    r1, r2, r3 are leaves 0, 1, 2 of one batch of three (paths of 2, 2 and 1 hashes), r4 a batch
    of one. Every forged record below keeps a genuine leaf (or a genuinely signed root) and
    changes one thing."""
    cst = ids["cst"]
    p1, p3, p4 = parse(r1.data), parse(r3.data), parse(r4.data)
    assert p1.proof is not None
    assert p3.proof is not None
    assert p4.proof is not None
    leaf1, leaf2, leaf3 = (parse(r.data).signed_bytes for r in (r1, r2, r3))
    path1 = list(p1.proof.path)
    sig = p1.signature
    assert (p1.proof.tree_size, p1.proof.leaf_index, len(path1)) == (3, 0, 2)
    assert (p3.proof.leaf_index, len(p3.proof.path)) == (2, 1)
    assert p4.proof.tree_size == 1
    assert p4.proof.path == ()
    root = merkle.root([leaf1, leaf2, leaf3])

    def flipped(h: bytes) -> bytes:
        return _flip(h, 0, 3)

    # The inclusion path (RFC 9162 §2.1.3.2): any change leads to another root.
    neg(
        "path_sibling_flipped",
        "one bit of r1's first sibling hash flipped",
        leaf1 + _trailer(3, 0, [flipped(path1[0]), path1[1]], sig),
        "bad_signature",
    )
    neg(
        "path_top_flipped",
        "one bit of r1's top sibling hash (the subtree of r3) flipped",
        leaf1 + _trailer(3, 0, [path1[0], flipped(path1[1])], sig),
        "bad_signature",
    )
    neg(
        "path_of_another_leaf",
        "r1's leaf with r2's proof trailer (index 1): another record's place in the same batch",
        leaf1 + r2.data[len(leaf2) :],
        "bad_signature",
    )
    other = _seal_v3_batch(
        ids,
        [
            (f"x{i}", i, f"another batch, record {i}".encode(), dk1, ["met-police"])
            for i in range(3)
        ],
        bytes(32),
    )
    other_leaf = parse(other[0].data).signed_bytes
    neg(
        "path_from_another_batch",
        "r1's leaf with the whole proof trailer (path and signature) of leaf 0 of another "
        "batch of three that CST signed",
        leaf1 + other[0].data[len(other_leaf) :],
        "bad_signature",
    )
    neg(
        "signature_from_another_batch",
        "r1 with its own path, and the root signature of another batch CST signed",
        leaf1 + _trailer(3, 0, path1, parse(other[0].data).signature),
        "bad_signature",
    )
    neg(
        "leaf_index_changed",
        "r1 claims leaf index 1 (same path, a path of the same length)",
        leaf1 + _trailer(3, 1, path1, sig),
        "bad_signature",
    )
    # Leaf 0 of 3 and leaf 0 of 4 follow the same steps: the same path leads to the same root.
    assert merkle.root_from_proof(merkle.leaf_hash(leaf1), 0, 4, path1) == root
    neg(
        "tree_size_bigger_same_root",
        "r1 claims a tree of 4: its path still leads to the signed root, but the root message "
        "names the tree size, so the signature does not verify",
        leaf1 + _trailer(4, 0, path1, sig),
        "bad_signature",
    )
    # Leaf 2 of 3 read as leaf 1 of 2: the node (r1, r2) taken for a leaf, the same root again.
    assert merkle.root_from_proof(merkle.leaf_hash(leaf3), 1, 2, list(p3.proof.path)) == root
    neg(
        "index_and_size_shifted_same_root",
        "r3 (leaf 2 of 3) claims to be leaf 1 of 2, as if the node over r1 and r2 were a leaf: "
        "the same root, refused by the signed tree size",
        leaf3 + _trailer(2, 1, list(p3.proof.path), sig),
        "bad_signature",
    )
    neg(
        "tree_size_smaller_recomputed_path",
        "r1 as leaf 0 of a tree of two (r1, r2), with that tree's correct path",
        leaf1 + _trailer(2, 0, [merkle.leaf_hash(leaf2)], sig),
        "bad_signature",
    )
    neg(
        "tree_size_smaller_same_path",
        "r1 claims a tree of 2 but keeps its path of 2 hashes (a tree of 2 gives 1)",
        leaf1 + _trailer(2, 0, path1, sig),
        "malformed",
    )
    # Impossible trailers, refused by the parser before any hashing.
    neg(
        "path_too_long",
        "r1's path with the root appended (3 hashes where leaf 0 of 3 has 2)",
        leaf1 + _trailer(3, 0, [*path1, root], sig),
        "malformed",
    )
    neg(
        "path_too_short",
        "r1's path without its top hash (1 hash where leaf 0 of 3 has 2)",
        leaf1 + _trailer(3, 0, path1[:1], sig),
        "malformed",
    )
    neg("tree_size_zero", "r1 claims a tree of 0", leaf1 + _trailer(0, 0, [], sig), "malformed")
    neg(
        "leaf_index_past_size",
        "r1 claims leaf index 3 of a tree of 3",
        leaf1 + _trailer(3, 3, path1, sig),
        "malformed",
    )
    big = MAX_BATCH + 1
    neg(
        "batch_over_max",
        f"r1 claims a tree of {big} (MAX_BATCH + 1) with a path of the length that gives",
        leaf1 + _trailer(big, 0, [root] * merkle.path_length(0, big), sig),
        "oversize",
    )
    neg(
        "trailer_truncated",
        "r1 cut inside its proof trailer (after the tree size)",
        leaf1 + _trailer(3, 0, path1, sig)[:2],
        "malformed",
    )
    neg(
        "leaf_is_a_node",
        "the 64 bytes of the inner node over r1 and r2 (its two children) presented as a record",
        merkle.leaf_hash(leaf1) + merkle.leaf_hash(leaf2),
        "malformed",
    )

    # The root message: CST's own key signing this very root for another context is no use here.
    h1 = p1.header

    def root_signed_for(**changes: Any) -> bytes:
        size = changes.pop("tree_size", 3)
        return cst.sign(batch_root_message(replace(h1, **changes), size, root))

    contexts = [
        ("topic", {"topic": "intelbus.incidents"}),
        ("environment", {"environment": "prod"}),
        ("partition", {"partition": PARTITION + 1}),
        ("key_id", {"key_id": ids["met-police"].key_id}),
        ("tree_size", {"tree_size": 4}),
    ]
    for what, changes in contexts:
        neg(
            f"root_signed_for_another_{what}",
            f"r1 with a root signature CST made over the same root for another {what} "
            f"({next(iter(changes.values()))!s})",
            leaf1 + _trailer(3, 0, path1, root_signed_for(**dict(changes))),
            "bad_signature",
        )
    neg(
        "root_signed_without_prefix",
        "r1 with CST's signature over the bare 32-byte root",
        leaf1 + _trailer(3, 0, path1, cst.sign(root)),
        "bad_signature",
    )

    # The version boundary with v2: what is signed or encrypted for one is never valid for the
    # other, even when the producer's own key makes it.
    neg(
        "v3_leaf_signed_with_v2_prefix",
        "r4's leaf signed by CST's key as a v2 body (v2 signature prefix), behind a batch-of-one "
        "trailer",
        _signed(cst, p4.header, p4.nonce, p4.ciphertext, prefix_version=FORMAT_V2),
        "bad_signature",
    )
    v3_aead = _aead_for_vectors(
        dk1.key, p1.nonce, PAYLOADS["r1"].encode(), p1.header, prefix_version=FORMAT_V2
    )
    neg(
        "v3_payload_under_v2_aead_prefix",
        "r1's v3 header with its payload encrypted under the v2 AEAD prefix, validly signed",
        _signed(cst, p1.header, p1.nonce, v3_aead),
        "decryption_failed",
        opener="met-police",
    )
    v2 = build_vectors(FORMAT_V2)
    v2_r1 = bytes.fromhex(v2["positive"][0]["expected_record"])
    neg(
        "v2_record_with_version_byte_3",
        "envelope_v2.json's r1 with its version byte set to 3: the v3 reader takes the first "
        "bytes of its signature as the proof trailer, whose path count does not fit the rest",
        v2_r1[:4] + b"\x03" + v2_r1[5:],
        "malformed",
    )
    neg(
        "v2_record_reframed_as_v3",
        "envelope_v2.json's r1 with version byte 3 and a batch-of-one trailer around its v2 "
        "signature: a well-formed v3 layout",
        v2_r1[:4] + b"\x03" + v2_r1[5:-64] + _trailer(1, 0, [], v2_r1[-64:]),
        "bad_signature",
    )
    neg(
        "v3_record_with_version_byte_2",
        "r4 (a batch of one) with its version byte set to 2: the v2 reader finds 5 bytes too many",
        r4.data[:4] + b"\x02" + r4.data[5:],
        "malformed",
    )
    leaf4 = p4.signed_bytes
    neg(
        "v3_record_reframed_as_v2",
        "r4 with version byte 2 and its trailer cut to the bare root signature: a well-formed v2 "
        "layout under a v3 signature",
        r4.data[:4] + b"\x02" + leaf4[5:] + p4.signature,
        "bad_signature",
    )


def render(version: int = FORMAT_V1) -> str:
    """A vector file's exact text."""
    return json.dumps(build_vectors(version), indent=1, sort_keys=True) + "\n"


def main() -> None:
    for version, out in OUTS.items():
        out.write_text(render(version))


if __name__ == "__main__":
    main()

"""Generate tests/vectors/envelope_v1.json and envelope_v2.json: deterministic envelope test vectors.

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

The v2 document draws its record ids, nonces, data keys and ephemeral keys from labels of their
own (``"v2 r1 nonce"``...), so no (data key, nonce) pair is shared between the two files.

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
from intelbus.envelope.datakey import DataKey, wrap_data_key
from intelbus.envelope.seal import Sealed, _seal_from_parts
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    FORMAT_V1,
    FORMAT_V2,
    NO_TARGET,
    EnvelopeHeader,
    aead_prefix,
    digest_person,
    encode_body,
    encode_header,
    parse,
    sign_prefix,
)
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.kinds import RecordKind

OUT = Path(__file__).with_name("envelope_v1.json")
OUT_V2 = Path(__file__).with_name("envelope_v2.json")
#: Each format version's vector file.
OUTS = {FORMAT_V1: OUT, FORMAT_V2: OUT_V2}
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
        partition=PARTITION if version == FORMAT_V2 else None,
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
    ``prefix_version`` names another (the cross-version cases)."""
    body = encode_body(encode_header(header), nonce, ct)
    version = header.format_version if prefix_version is None else prefix_version
    return body + signer.sign(sign_prefix(version) + body)


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
    return entry


def build_vectors(version: int = FORMAT_V1) -> dict[str, Any]:
    """The whole vector document of one format version (what ``OUTS[version]`` must contain)."""
    ids = identities()
    tag = _tag(version)
    three = ["gmp", "herts-police", "met-police"]

    # --- Positive vectors: a chain of three sightings (and, in v2, a retraction of r1). ----------
    dk1 = _data_key(f"{tag}r1", [ids["met-police"].public])
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
    dk23 = _data_key(f"{tag}r2", [ids[n].public for n in three])
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
    chain = [("r1", r1, dk1, ["met-police"], "r1"), ("r2", r2, dk23, three, "r2")]
    chain.append(("r3", r3, dk23, three, "r2"))
    r4: Sealed | None = None
    if version == FORMAT_V2:
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
    header_len1 = len(p1.header_bytes)
    negatives: list[dict[str, Any]] = []

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
        _flip(r1.data, sig_at - 3),
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
        "header and signature of r2, nonce and ciphertext of r3",
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
    added_wrap = encode_body(encode_header(fwd_header), p1.nonce, p1.ciphertext) + p1.signature
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

    if version == FORMAT_V2:
        assert r4 is not None
        _v2_negatives(ids, neg, r1=r1, r2=r2, r4=r4, dk1=dk1)

    constants: dict[str, Any] = {
        "sign_prefix": sign_prefix(version).hex(),
        "aead_prefix": aead_prefix(version).hex(),
        "fixed_header_bytes": _fixed_bytes(version),
    }
    if version != FORMAT_V1:
        constants["digest_person"] = digest_person(version).hex()
        constants["partition"] = PARTITION
    description = (
        "Envelope v1 (docs/envelope.md). Identities from fixed seeds; every random input fixed."
        if version == FORMAT_V1
        else f"Envelope v2 (docs/envelope.md): records bound to partition {PARTITION}, r4 "
        "retracts r1. Identities from fixed seeds (those of v1); every random input fixed."
    )
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


def _v2_negatives(
    ids: dict[str, AgencyIdentity], neg: Any, *, r1: Sealed, r2: Sealed, r4: Sealed, dk1: DataKey
) -> None:
    """The cases only format v2 has: partition and target bindings, and the version boundary."""
    cst = ids["cst"]
    p1 = parse(r1.data)
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


def render(version: int = FORMAT_V1) -> str:
    """A vector file's exact text."""
    return json.dumps(build_vectors(version), indent=1, sort_keys=True) + "\n"


def main() -> None:
    for version, out in OUTS.items():
        out.write_text(render(version))


if __name__ == "__main__":
    main()

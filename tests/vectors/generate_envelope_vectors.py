"""Generate tests/vectors/envelope_v1.json: deterministic envelope test vectors, positive and negative.

Every key comes from a fixed 32-byte seed, and every random input (data key, AEAD nonce, the
ephemeral keys of the sealed boxes) and the time are fixed, so the sealed bytes are reproducible
byte for byte. ``tests/unit/test_envelope_vectors.py`` regenerates the vectors and compares them
with the committed file, then checks every negative vector fails with its reason code.

Regenerate (only when the format changes on purpose, with a new format version)::

    .venv/bin/python -m tests.vectors.generate_envelope_vectors
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intelbus import _nacl
from intelbus.envelope.datakey import DataKey, wrap_data_key
from intelbus.envelope.seal import Sealed, _seal_from_parts
from intelbus.envelope.wire import (
    AEAD_PREFIX,
    FIXED_BYTES,
    SIGN_PREFIX,
    EnvelopeHeader,
    RecordKind,
    encode_body,
    encode_header,
    parse,
)
from intelbus.identity import AgencyIdentity, PublicIdentity

OUT = Path(__file__).with_name("envelope_v1.json")
ENVIRONMENT = "test"
TOPIC = "intelbus.sightings"
FINGERPRINT = bytes.fromhex("a1b2c3d4e5f60718")
CREATED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

# name -> agency id. "met-police-rotated" is the Met's next key (same agency, new keys).
AGENCIES = {
    "cst": "cst",
    "met-police": "met-police",
    "herts-police": "herts-police",
    "gmp": "gmp",
    "auditor": "auditor",
    "met-police-rotated": "met-police",
}


def fixed(label: str, n: int = 32) -> bytes:
    """A fixed pseudo-random byte string named by ``label`` (SHA-256 of the label, truncated)."""
    return hashlib.sha256(f"intelbus envelope vectors: {label}".encode()).digest()[:n]


def identities() -> dict[str, AgencyIdentity]:
    """The vector identities, from fixed seeds."""
    return {
        name: AgencyIdentity(agency, fixed(f"{name} sign"), fixed(f"{name} enc"))
        for name, agency in AGENCIES.items()
    }


def _data_key(label: str, recipients: list[PublicIdentity]) -> DataKey:
    return wrap_data_key(
        fixed(f"{label} data key"),
        recipients,
        ephemeral_secrets=[fixed(f"{label} ephemeral {i}") for i in range(len(recipients))],
    )


def _seal(
    ids: dict[str, AgencyIdentity],
    *,
    label: str,
    sequence: int,
    prev: bytes,
    payload: bytes,
    data_key: DataKey,
    recipients: list[str],
    kind: RecordKind = RecordKind.SIGHTING,
) -> Sealed:
    return _seal_from_parts(
        ids["cst"],
        environment=ENVIRONMENT,
        topic=TOPIC,
        kind=kind,
        record_id=uuid.UUID(bytes=fixed(f"{label} record id", 16)),
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=FINGERPRINT,
        payload=payload,
        recipients=[ids[r].public for r in recipients],
        data_key=data_key,
        nonce=fixed(f"{label} nonce", 24),
        now=CREATED + timedelta(seconds=sequence),
    )


def _signed(signer: AgencyIdentity, header: EnvelopeHeader, nonce: bytes, ct: bytes) -> bytes:
    """Assemble and sign a record from parts, as an attacker holding ``signer``'s key would."""
    body = encode_body(encode_header(header), nonce, ct)
    return body + signer.sign(SIGN_PREFIX + body)


def _flip(data: bytes, byte: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


def build_vectors() -> dict[str, Any]:
    """The whole vector document (what envelope_v1.json must contain)."""
    ids = identities()
    three = ["gmp", "herts-police", "met-police"]

    # --- Positive vectors: a three-record chain. -----------------------------------------------
    dk1 = _data_key("r1", [ids["met-police"].public])
    r1 = _seal(
        ids,
        label="r1",
        sequence=0,
        prev=bytes(32),
        payload=b"sighting #1: person photographing the entrance",
        data_key=dk1,
        recipients=["met-police"],
    )
    dk23 = _data_key("r2", [ids[n].public for n in three])
    r2 = _seal(
        ids,
        label="r2",
        sequence=1,
        prev=r1.digest,
        payload=b"sighting #2: vehicle circling the school",
        data_key=dk23,
        recipients=three,
    )
    # r3 reuses r2's data key and wraps (the reuse window), with a fresh nonce.
    r3 = _seal(
        ids,
        label="r3",
        sequence=2,
        prev=r2.digest,
        payload=b"sighting #3: drone overhead",
        data_key=dk23,
        recipients=three,
    )
    positives = []
    for label, sealed, dk, recips, payload_text in (
        ("r1", r1, dk1, ["met-police"], "sighting #1: person photographing the entrance"),
        ("r2", r2, dk23, three, "sighting #2: vehicle circling the school"),
        ("r3", r3, dk23, three, "sighting #3: drone overhead"),
    ):
        eph_label = "r2" if label == "r3" else label
        positives.append(
            {
                "name": label,
                "description": {
                    "r1": "first record of the stream, one recipient, prev_digest zeros",
                    "r2": "second record, three recipients, chained to r1",
                    "r3": "third record, reusing r2's data key and wraps with a new nonce",
                }[label],
                "producer": "cst",
                "recipients": recips,
                "environment": ENVIRONMENT,
                "topic": TOPIC,
                "kind": int(RecordKind.SIGHTING),
                "record_id": str(sealed.record_id),
                "sequence": sealed.header.sequence,
                "prev_digest": sealed.header.prev_digest.hex(),
                "created_at": sealed.header.created_at.isoformat(),
                "schema_fingerprint": FINGERPRINT.hex(),
                "payload": payload_text.encode().hex(),
                "data_key": dk.key.hex(),
                "ephemeral_secrets": [
                    fixed(f"{eph_label} ephemeral {i}").hex() for i in range(len(recips))
                ],
                "nonce": fixed(f"{label} nonce", 24).hex(),
                "expected_record": sealed.data.hex(),
                "expected_digest": sealed.digest.hex(),
            }
        )

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
        opener: str | None = None,
    ) -> None:
        negatives.append(
            {
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
        )

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
    neg(
        "unsupported_version",
        "format version 2",
        r1.data[:4] + b"\x02" + r1.data[5:],
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
        dk1.key, [ids["met-police"].public, gmp], ephemeral_secrets=[fixed("fwd 0"), fixed("fwd 1")]
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
    fwd_payload = b"sighting #1: person photographing the entrance"
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

    return {
        "format": "intelbus-envelope-vectors-v1",
        "description": "Envelope v1 (docs/envelope.md). Identities from fixed seeds; every random input fixed.",
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
        "constants": {
            "sign_prefix": SIGN_PREFIX.hex(),
            "aead_prefix": AEAD_PREFIX.hex(),
            "fixed_header_bytes": FIXED_BYTES,
        },
        "positive": positives,
        "negative": negatives,
    }


def _aead_for_vectors(key: bytes, nonce: bytes, payload: bytes, header: EnvelopeHeader) -> bytes:
    return _nacl.aead_encrypt(key, nonce, payload, AEAD_PREFIX + encode_header(header))


def render() -> str:
    """The vector file's exact text."""
    return json.dumps(build_vectors(), indent=1, sort_keys=True) + "\n"


def main() -> None:
    OUT.write_text(render())


if __name__ == "__main__":
    main()

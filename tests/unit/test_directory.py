"""The federation directory: threshold signing, the update chain, and key history.

The rotation table is ported from python-tuf's root rotation cases
(tests/test_updater_key_rotations.py): each step lists the admin keys of a version, its threshold,
who signed it, and the expected outcome. A refused update must leave the trusted state unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from intelbus import _nacl
from intelbus.directory import edit
from intelbus.directory.model import AdminKey, DirectoryBody, Role, Signature, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.errors import (
    BadVersion,
    DirectoryExpired,
    InvalidDirectory,
    KeyNotValid,
    KeyRevoked,
    ThresholdNotMet,
    UnknownKey,
)
from intelbus.identity import AgencyIdentity, derive_key_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIGHTINGS = "intelbus.sightings"


def _seed(i: int) -> bytes:
    return hashlib.sha256(f"admin-{i}".encode()).digest()


ADMIN_SEEDS = [_seed(i) for i in range(10)]
ADMIN_KEYS = [
    edit.admin_key(_nacl.sign_public_from_seed(s), f"admin-{i}") for i, s in enumerate(ADMIN_SEEDS)
]


def _signed(doc: SignedDirectory, signers: list[int]) -> SignedDirectory:
    for i in signers:
        doc = sign(doc, ADMIN_SEEDS[i])
    return doc


@dataclass(frozen=True)
class V:
    keys: list[int]
    threshold: int
    sigs: list[int]
    error: type[Exception] | None = None


# fmt: off
ROTATION_CASES: dict[str, list[V]] = {
    "1-of-1 key rotation": [V([1], 1, [1]), V([2], 1, [2, 1]), V([2], 1, [2])],
    "1-of-1 key rotation, unused signatures": [V([1], 1, [3, 1, 4]), V([2], 1, [3, 2, 1, 4]), V([2], 1, [3, 2, 4])],
    "1-of-1 rotation fails: not signed with old key": [V([1], 1, [1]), V([2], 1, [2, 3, 4], ThresholdNotMet)],
    "1-of-1 rotation fails: not signed with new key": [V([1], 1, [1]), V([2], 1, [1, 3, 4], ThresholdNotMet)],
    "3-of-5, different key combinations": [
        V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([0, 1, 2, 3, 4], 3, [0, 4, 1]),
        V([0, 1, 2, 3, 4], 3, [0, 1, 3]), V([0, 1, 2, 3, 4], 3, [0, 1, 3]),
    ],
    "3-of-5, one key rotated": [V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([0, 1, 3, 4, 5], 3, [0, 4, 1])],
    "3-of-5 rotation fails: not signed by 3 new keys": [
        V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([0, 1, 3, 4, 5], 3, [0, 2, 4], ThresholdNotMet),
    ],
    "3-of-5 rotation fails: not signed by 3 old keys": [
        V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([0, 1, 3, 4, 5], 3, [0, 4, 5], ThresholdNotMet),
    ],
    "3-of-5, one key rotated with an intermediate step": [
        V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([0, 1, 3, 4, 5], 3, [0, 2, 4, 5]), V([0, 1, 3, 4, 5], 3, [0, 4, 5]),
    ],
    "3-of-5, all keys rotated with an intermediate step": [
        V([0, 1, 2, 3, 4], 3, [0, 2, 4]), V([5, 6, 7, 8, 9], 3, [0, 2, 4, 5, 6, 7]), V([5, 6, 7, 8, 9], 3, [5, 6, 7]),
    ],
    "1-of-3 threshold raised to 2-of-3": [V([1, 2, 3], 1, [1]), V([1, 2, 3], 2, [1, 2])],
    "1-of-3 raised to 2-of-3 fails: new threshold not met": [
        V([1, 2, 3], 1, [1]), V([1, 2, 3], 2, [2], ThresholdNotMet),
    ],
    "2-of-3 threshold lowered to 1-of-3": [V([1, 2, 3], 2, [1, 2]), V([1, 2, 3], 1, [1, 2]), V([1, 2, 3], 1, [1])],
    "2-of-3 lowered to 1-of-3 fails: old threshold not met": [
        V([1, 2, 3], 2, [1, 2]), V([1, 2, 3], 1, [1], ThresholdNotMet),
    ],
    "1-of-1 grown to 2-of-2": [V([1], 1, [1]), V([1, 2], 2, [1, 2])],
}
# fmt: on


def _chain(steps: list[V]) -> list[SignedDirectory]:
    docs = []
    body: DirectoryBody | None = None
    for n, step in enumerate(steps):
        admins = [ADMIN_KEYS[i] for i in step.keys]
        now = T0 + timedelta(days=n)
        if body is None:
            doc = edit.initial(
                environment="test", admin_keys=admins, threshold=step.threshold, now=now
            )
        else:
            doc = edit.set_admins(body, admin_keys=admins, threshold=step.threshold, now=now)
        doc = _signed(doc, step.sigs)
        docs.append(doc)
        body = doc.signed
    return docs


@pytest.mark.parametrize("steps", list(ROTATION_CASES.values()), ids=list(ROTATION_CASES))
def test_admin_key_rotation(steps: list[V]) -> None:
    """Each update needs a threshold of the old and of the new admin keys (TUF 5.3.4)."""
    docs = _chain(steps)
    history = DirectoryHistory(docs[0])
    expected_error = steps[-1].error
    for doc in docs[1:-1]:
        assert history.update(doc) is True
    if expected_error is None:
        if len(docs) > 1:
            assert history.update(docs[-1]) is True
        assert history.latest == docs[-1].signed
    else:
        before = history.versions
        with pytest.raises(expected_error):
            history.update(docs[-1])
        assert history.versions == before  # trusted state unchanged
        assert history.latest == docs[-2].signed


def test_a_duplicate_signature_counts_once() -> None:
    """The same admin's signature listed twice does not reach a threshold of two."""
    v1 = _signed(
        edit.initial(environment="test", admin_keys=ADMIN_KEYS[:3], threshold=2, now=T0), [0]
    )
    duplicated = SignedDirectory(signed=v1.signed, signatures=(v1.signatures[0], v1.signatures[0]))
    with pytest.raises(ThresholdNotMet):
        DirectoryHistory(duplicated)


def test_an_admin_key_listed_twice_is_refused() -> None:
    """A key listed twice could count twice towards the threshold: the document is invalid."""
    with pytest.raises(InvalidDirectory, match="listed twice"):
        SignedDirectory.from_bytes(
            edit.initial(environment="test", admin_keys=ADMIN_KEYS[:2], threshold=1, now=T0)
            .to_bytes()
            .replace(ADMIN_KEYS[1].public.encode(), ADMIN_KEYS[0].public.encode())
            .replace(ADMIN_KEYS[1].key_id.encode(), ADMIN_KEYS[0].key_id.encode())
        )


def test_a_signature_by_a_key_not_listed_does_not_count() -> None:
    """Signatures by strangers are ignored, however many there are."""
    v1 = _signed(
        edit.initial(environment="test", admin_keys=ADMIN_KEYS[:1], threshold=1, now=T0), [5, 6, 7]
    )
    with pytest.raises(ThresholdNotMet):
        DirectoryHistory(v1)


def _base() -> tuple[DirectoryHistory, list[SignedDirectory]]:
    v1 = _signed(
        edit.initial(environment="test", admin_keys=ADMIN_KEYS[:3], threshold=2, now=T0), [0, 1]
    )
    return DirectoryHistory(v1), [v1]


def test_a_skipped_version_is_refused() -> None:
    """v3 cannot follow v1, even when well signed."""
    history, (v1,) = _base()
    v2 = _signed(edit.renew(v1.signed, now=T0 + timedelta(days=1)), [0, 1])
    v3 = _signed(edit.renew(v2.signed, now=T0 + timedelta(days=2)), [0, 1])
    with pytest.raises(BadVersion, match="skipped v2"):
        history.update(v3)
    assert history.latest.version == 1


def test_a_rolled_back_version_is_refused() -> None:
    """Once v2 is trusted, a different v1 (or v2) is a rollback; the same v2 again is harmless."""
    history, (v1,) = _base()
    v2 = _signed(edit.renew(v1.signed, now=T0 + timedelta(days=1)), [0, 1])
    assert history.update(v2) is True
    assert history.update(v2) is False
    other_v1 = _signed(edit.renew(v1.signed, now=T0 + timedelta(hours=1)), [0, 1])
    other_v1 = SignedDirectory(
        signed=other_v1.signed.model_copy(update={"version": 1}), signatures=other_v1.signatures
    )
    with pytest.raises(BadVersion, match="rollback"):
        history.update(_signed(SignedDirectory(signed=other_v1.signed), [0, 1]))
    forked_v2 = _signed(edit.renew(v1.signed, now=T0 + timedelta(days=1, hours=1)), [0, 1])
    with pytest.raises(BadVersion, match="rollback"):
        history.update(forked_v2)
    assert history.latest == v2.signed


def test_an_expired_directory_is_refused() -> None:
    """Relying on a directory past its expiry fails closed."""
    history, (v1,) = _base()
    history.check_fresh(T0 + timedelta(days=1))
    with pytest.raises(DirectoryExpired):
        history.check_fresh(v1.signed.expires)


def test_another_environment_is_refused() -> None:
    """A production directory cannot be chained onto a test one."""
    history, _ = _base()
    prod = _signed(
        edit.initial(environment="prod", admin_keys=ADMIN_KEYS[:3], threshold=2, now=T0), [0, 1]
    )
    prod = _signed(SignedDirectory(signed=prod.signed.model_copy(update={"version": 2})), [0, 1])
    with pytest.raises(InvalidDirectory, match="environment"):
        history.update(prod)


def test_a_tampered_body_loses_its_signatures() -> None:
    """Editing the signed JSON (here, the threshold) invalidates every signature."""
    v1 = _signed(
        edit.initial(environment="test", admin_keys=ADMIN_KEYS[:3], threshold=2, now=T0), [0, 1]
    )
    tampered = SignedDirectory.from_bytes(v1.to_bytes().replace(b'"threshold":2', b'"threshold":1'))
    with pytest.raises(ThresholdNotMet):
        DirectoryHistory(tampered)


# --- key history -----------------------------------------------------------------------------------

CST = AgencyIdentity.generate("cst")
CST_NEXT = AgencyIdentity.generate("cst")


def _with_cst() -> tuple[DirectoryHistory, SignedDirectory]:
    history, (v1,) = _base()
    v2 = _signed(
        edit.add_agency(
            v1.signed,
            agency_id="cst",
            display_name="Community Security Trust",
            roles=[Role.PRODUCER],
            publish_topics=[SIGHTINGS],
            identity=CST.public,
            now=T0 + timedelta(days=1),
        ),
        [0, 1],
    )
    history.update(v2)
    return history, v2


def test_a_rotated_out_key_still_verifies_inside_its_window() -> None:
    """Records signed before a rotation keep verifying on replay; after it, the old key is refused."""
    history, v2 = _with_cst()
    rotation = T0 + timedelta(days=10)
    history.update(
        _signed(
            edit.rotate_key(v2.signed, agency_id="cst", identity=CST_NEXT.public, now=rotation),
            [0, 1],
        )
    )
    before = rotation - timedelta(hours=1)
    assert history.resolve_signing_key(CST.public.key_id, "cst", SIGHTINGS, before) == CST.public
    with pytest.raises(KeyNotValid, match="validity window"):
        history.resolve_signing_key(
            CST.public.key_id, "cst", SIGHTINGS, rotation + timedelta(hours=1)
        )
    assert (
        history.resolve_signing_key(
            CST_NEXT.public.key_id, "cst", SIGHTINGS, rotation + timedelta(hours=1)
        )
        == CST_NEXT.public
    )
    assert history.recipient_key("cst", rotation + timedelta(hours=1)) == CST_NEXT.public


def test_a_key_is_refused_after_its_revocation_and_flagged_before_its_compromise() -> None:
    """Revoked at R, leaked since C: refused at or after C, accepted but flagged before C."""
    history, v2 = _with_cst()
    leaked = T0 + timedelta(days=5)
    revoked = T0 + timedelta(days=8)
    history.update(
        _signed(
            edit.revoke_key(
                v2.signed,
                agency_id="cst",
                key_id=CST.public.key_id.hex(),
                reason="laptop stolen",
                now=revoked,
                compromised_since=leaked,
            ),
            [0, 1],
        )
    )
    early = history.key_status(CST.public.key_id, "cst", SIGHTINGS, T0 + timedelta(days=2))
    assert early.compromised_since == leaked
    with pytest.raises(KeyRevoked, match="compromised"):
        history.resolve_signing_key(
            CST.public.key_id, "cst", SIGHTINGS, leaked + timedelta(seconds=1)
        )
    with pytest.raises(KeyRevoked):
        history.resolve_signing_key(
            CST.public.key_id, "cst", SIGHTINGS, revoked + timedelta(days=1)
        )
    with pytest.raises(UnknownKey, match="no usable key"):
        history.recipient_key("cst", revoked + timedelta(days=1))


def test_keys_are_judged_by_the_version_in_force_at_the_time() -> None:
    """A key added in v2 is unknown for a record claiming a time before v2 was issued."""
    history, v2 = _with_cst()
    with pytest.raises(UnknownKey):
        history.resolve_signing_key(
            CST.public.key_id, "cst", SIGHTINGS, v2.signed.issued_at - timedelta(seconds=1)
        )
    with pytest.raises(UnknownKey):
        history.resolve_signing_key(CST.public.key_id, "cst", SIGHTINGS, T0 - timedelta(days=1))


def test_role_topic_and_owner_bind_the_key() -> None:
    """A key is only good for its own agency, as a producer, on its own topics."""
    history, _ = _with_cst()
    at = T0 + timedelta(days=2)
    with pytest.raises(KeyNotValid, match="belongs to cst"):
        history.resolve_signing_key(CST.public.key_id, "met-police", SIGHTINGS, at)
    with pytest.raises(KeyNotValid, match="may not publish"):
        history.resolve_signing_key(CST.public.key_id, "cst", "intelbus.incidents", at)
    with pytest.raises(UnknownKey):
        history.resolve_signing_key(CST_NEXT.public.key_id, "cst", SIGHTINGS, at)


def test_a_removed_agency_is_refused_after_removal() -> None:
    """After remove-agency, the agency's key no longer verifies new records; old ones still do."""
    history, v2 = _with_cst()
    gone = T0 + timedelta(days=20)
    history.update(_signed(edit.remove_agency(v2.signed, agency_id="cst", now=gone), [0, 1]))
    assert (
        history.resolve_signing_key(CST.public.key_id, "cst", SIGHTINGS, gone - timedelta(days=1))
        == CST.public
    )
    with pytest.raises(KeyNotValid):
        history.resolve_signing_key(CST.public.key_id, "cst", SIGHTINGS, gone + timedelta(days=1))


def _with_cst_keys(raw: bytes, sign_public: bytes, enc_public: bytes) -> bytes:
    """``raw`` with CST's public keys replaced, and its key id recomputed to match them.

    Only the keys themselves are then wrong: a stale key id would be refused on its own.
    """
    old = CST.public
    for value in (old.sign_public, old.enc_public, old.key_id):
        assert raw.count(value.hex().encode()) == 1
    return (
        raw.replace(old.sign_public.hex().encode(), sign_public.hex().encode())
        .replace(old.enc_public.hex().encode(), enc_public.hex().encode())
        .replace(old.key_id.hex().encode(), derive_key_id(sign_public, enc_public).hex().encode())
    )


def test_invalid_public_keys_are_refused_when_added() -> None:
    """The identity point (a small-order Ed25519 key) cannot be registered."""
    _, v2 = _with_cst()
    raw = v2.to_bytes()
    other = AgencyIdentity.generate("cst").public
    # The same edit with good keys is accepted: the refusals below are about the keys.
    SignedDirectory.from_bytes(_with_cst_keys(raw, other.sign_public, other.enc_public))
    identity_point = b"\x01" + b"\x00" * 31
    with pytest.raises(InvalidDirectory, match=r"invalid Ed25519 public key"):
        SignedDirectory.from_bytes(_with_cst_keys(raw, identity_point, CST.public.enc_public))
    small_order_x25519 = b"\x00" * 32
    with pytest.raises(InvalidDirectory, match=r"invalid X25519 public key \(small order\)"):
        SignedDirectory.from_bytes(_with_cst_keys(raw, CST.public.sign_public, small_order_x25519))


def test_documents_round_trip_byte_for_byte() -> None:
    """Canonical JSON: parse then serialise gives the same bytes (signatures depend on it)."""
    _, v2 = _with_cst()
    assert SignedDirectory.from_bytes(v2.to_bytes()).to_bytes() == v2.to_bytes()


def test_unused_signature_field_types() -> None:
    """Signature fields are strict lower-case hex of the right length."""
    with pytest.raises(ValueError, match="hex"):
        Signature(key_id="AB" * 16, sig="00" * 64)
    assert isinstance(ADMIN_KEYS[0], AdminKey)


def test_a_back_dated_record_is_judged_by_the_broker_clock() -> None:
    """A leaked key signs a creation time before the leak; the broker saw it after: refused."""
    history, v2 = _with_cst()
    leaked = T0 + timedelta(days=5)
    history.update(
        _signed(
            edit.revoke_key(
                v2.signed,
                agency_id="cst",
                key_id=CST.public.key_id.hex(),
                reason="leak",
                now=T0 + timedelta(days=6),
                compromised_since=leaked,
            ),
            [0, 1],
        )
    )
    claimed = T0 + timedelta(days=2)
    assert history.resolve_signing_key(CST.public.key_id, "cst", SIGHTINGS, claimed) == CST.public
    with pytest.raises(KeyRevoked):
        history.resolve_signing_key(
            CST.public.key_id, "cst", SIGHTINGS, claimed, witnessed_at=leaked + timedelta(hours=1)
        )

"""The envelope judged by the federation directory, and the envelope CLI end to end."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus import _nacl
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory.model import DirectoryBody, Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.envelope import VerifiedRecord, open_record, verify
from intelbus.envelope.datakey import new_data_key
from intelbus.envelope.seal import _seal_from_parts
from intelbus.errors import KeyNotValid, KeyRevoked, SchemaViolation, UnknownKey
from intelbus.identity import AgencyIdentity
from intelbus.kinds import RecordKind
from intelbus.samples import feed
from intelbus.serde.registry import SchemaRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "intelbus.sightings"
SEEDS = [hashlib.sha256(f"env-admin-{i}".encode()).digest() for i in range(2)]
ADMINS = [edit.admin_key(_nacl.sign_public_from_seed(s), f"a{i}") for i, s in enumerate(SEEDS)]
CST, CST_NEXT, MET = (
    AgencyIdentity.generate("cst"),
    AgencyIdentity.generate("cst"),
    AgencyIdentity.generate("met-police"),
)


def _both(doc: SignedDirectory) -> SignedDirectory:
    return sign(sign(doc, SEEDS[0]), SEEDS[1])


def _history() -> tuple[DirectoryHistory, datetime, datetime]:
    """v1 at T0 (admins only); v2 adds CST (key CST from T0+1d); v3 rotates CST to CST_NEXT at
    ``rotated`` (CST's key ends there); v4 revokes CST_NEXT at ``revoked``."""
    v1 = _both(edit.initial(environment="test", admin_keys=ADMINS, threshold=2, now=T0))
    history = DirectoryHistory(v1)
    history.update(_add_cst(v1))
    rotated = T0 + timedelta(days=10)
    v3 = _both(
        edit.rotate_key(history.latest, agency_id="cst", identity=CST_NEXT.public, now=rotated)
    )
    history.update(v3)
    revoked = T0 + timedelta(days=20)
    v4 = _both(
        edit.revoke_key(
            v3.signed, agency_id="cst", key_id=CST_NEXT.key_id.hex(), reason="lost", now=revoked
        )
    )
    history.update(v4)
    return history, rotated, revoked


def _add_cst(v1: SignedDirectory) -> SignedDirectory:
    return _both(
        edit.add_agency(
            v1.signed,
            agency_id="cst",
            display_name="CST",
            roles=[Role.PRODUCER],
            publish_topics=[TOPIC],
            identity=CST.public,
            now=T0 + timedelta(days=1),
        )
    )


def _history_then(change: Callable[[DirectoryBody], SignedDirectory]) -> DirectoryHistory:
    """v1 at T0, v2 adds CST at T0+1d, v3 is ``change(v2)`` (signed by both admins)."""
    v1 = _both(edit.initial(environment="test", admin_keys=ADMINS, threshold=2, now=T0))
    history = DirectoryHistory(v1)
    history.update(_add_cst(v1))
    history.update(_both(change(history.latest)))
    return history


def _sealed(
    identity: AgencyIdentity, at: datetime, payload: bytes = b"p", fingerprint: bytes = b"\x01" * 32
) -> bytes:
    """A record ``identity`` signed claiming creation time ``at`` (bound to partition 0)."""
    return _seal_from_parts(
        identity,
        environment="test",
        topic=TOPIC,
        kind=RecordKind.SIGHTING,
        record_id=uuid.uuid4(),
        sequence=0,
        prev_digest=bytes(32),
        schema_fingerprint=fingerprint,
        payload=payload,
        recipients=[MET.public],
        data_key=new_data_key([MET.public]),
        nonce=_nacl.random_bytes(24),
        now=at,
        partition=0,
    ).data


def _verify(
    data: bytes, history: DirectoryHistory, witnessed_at: datetime | None
) -> VerifiedRecord:
    """Verify as a consumer of partition 0 that read the record with broker time ``witnessed_at``."""
    return verify(
        data,
        history,
        expected_environment="test",
        expected_topic=TOPIC,
        expected_partition=0,
        witnessed_at=witnessed_at,
    )


MINUTE = timedelta(minutes=1)


def test_a_rotated_out_key_verifies_on_replay_inside_its_window() -> None:
    """A record the broker appended before the rotation still verifies years later (an auditor
    replaying the topic sees the original append time); one appended after it does not."""
    history, rotated, _ = _history()
    created = rotated - timedelta(days=1)
    record = _verify(_sealed(CST, created), history, created + MINUTE)
    assert record.signer == CST.public
    late = rotated + timedelta(days=1)
    with pytest.raises(KeyNotValid, match="validity window"):
        _verify(_sealed(CST, late), history, late + MINUTE)


def test_back_dating_never_rescues_a_rotated_out_key() -> None:
    """The old key, used after the rotation with a creation time inside its window: refused,
    because the broker appended it after the key's not_after. The same bytes appended in time
    are accepted, so the broker time alone decides."""
    history, rotated, _ = _history()
    data = _sealed(CST, rotated - timedelta(days=1))
    with pytest.raises(KeyNotValid, match="validity window"):
        _verify(data, history, rotated + timedelta(hours=1))
    with pytest.raises(KeyNotValid):
        _verify(data, history, rotated)  # not_after is exclusive
    assert _verify(data, history, rotated - MINUTE).signer == CST.public
    # Offline (no broker time: a file checked by hand) the signed time is all there is.
    assert _verify(data, history, None).signer == CST.public


def test_a_record_signed_after_revocation_is_refused() -> None:
    """The new key works until its revocation; after it, a typed refusal. Before the directory
    listed it, the key is unknown."""
    history, rotated, revoked = _history()
    created = rotated + timedelta(days=1)
    ok = _verify(_sealed(CST_NEXT, created), history, created + MINUTE)
    assert ok.signer == CST_NEXT.public
    late = revoked + timedelta(hours=1)
    with pytest.raises(KeyRevoked):
        _verify(_sealed(CST_NEXT, late), history, late + MINUTE)
    early = T0 + timedelta(days=5)
    with pytest.raises(UnknownKey):
        _verify(_sealed(CST_NEXT, early), history, early + MINUTE)


def test_back_dating_never_rescues_a_revoked_key() -> None:
    """CST_NEXT, revoked, signs a record claiming a time before the revocation: the broker
    appended it after, so it is refused; the same bytes appended before were accepted."""
    history, _, revoked = _history()
    data = _sealed(CST_NEXT, revoked - timedelta(days=1))
    with pytest.raises(KeyRevoked, match="revoked"):
        _verify(data, history, revoked + timedelta(hours=1))
    with pytest.raises(KeyRevoked):
        _verify(data, history, revoked)  # revoked at that instant
    assert _verify(data, history, revoked - MINUTE).signer == CST_NEXT.public


def test_back_dating_never_rescues_a_removed_agency() -> None:
    """CST is removed from the federation; a record it signs afterwards, back-dated to before
    the removal, is refused because of when the broker appended it."""
    removed = T0 + timedelta(days=30)
    history = _history_then(lambda body: edit.remove_agency(body, agency_id="cst", now=removed))
    data = _sealed(CST, removed - timedelta(days=1))
    with pytest.raises(KeyNotValid, match="removed"):
        _verify(data, history, removed + timedelta(hours=1))
    assert _verify(data, history, removed - MINUTE).signer == CST.public


def test_back_dating_never_rescues_a_compromised_key() -> None:
    """A key revoked at R as compromised since C (C < R): a record the broker appended after C
    is refused even before R was published, whatever time it claims; one appended before C is
    accepted, and the directory reports the later compromise."""
    leaked = T0 + timedelta(days=15)
    revoked = T0 + timedelta(days=20)
    history = _history_then(
        lambda body: edit.revoke_key(
            body,
            agency_id="cst",
            key_id=CST.key_id.hex(),
            reason="key stolen",
            now=revoked,
            compromised_since=leaked,
        )
    )
    data = _sealed(CST, leaked - timedelta(days=3))
    with pytest.raises(KeyRevoked, match="compromised"):
        _verify(data, history, leaked + timedelta(hours=1))
    assert _verify(data, history, leaked - MINUTE).signer == CST.public
    status = history.key_status(CST.key_id, "cst", TOPIC, leaked, leaked - MINUTE)
    assert status.compromised_since == leaked


def test_a_record_created_before_its_keys_not_before_but_appended_after_is_accepted() -> None:
    """A producer whose clock is behind signs with its new key just before the key's start; the
    broker appends the record after it: accepted. Offline, judged at the signed time, the key
    was not yet listed."""
    history, rotated, _ = _history()
    data = _sealed(CST_NEXT, rotated - timedelta(hours=1))
    assert _verify(data, history, rotated + timedelta(hours=1)).signer == CST_NEXT.public
    with pytest.raises(UnknownKey):
        _verify(data, history, None)
    with pytest.raises(UnknownKey):  # appended before the version listing the key: unknown then
        _verify(data, history, rotated - MINUTE)


def test_not_after_and_removal_are_judged_at_the_broker_time() -> None:
    """A producer whose clock is ahead: records claiming a time after the key's not_after, or
    after its agency's removal, but appended before, are accepted."""
    history, rotated, _ = _history()
    ahead = _sealed(CST, rotated + timedelta(hours=1))
    assert _verify(ahead, history, rotated - MINUTE).signer == CST.public
    with pytest.raises(KeyNotValid):
        _verify(ahead, history, None)  # offline: judged at the signed time, after not_after
    removed = T0 + timedelta(days=30)
    history = _history_then(lambda body: edit.remove_agency(body, agency_id="cst", now=removed))
    ahead = _sealed(CST, removed + timedelta(hours=1))
    assert _verify(ahead, history, removed - MINUTE).signer == CST.public
    with pytest.raises(KeyNotValid, match="removed"):
        _verify(ahead, history, removed + MINUTE)


def test_a_broker_time_before_every_directory_version_is_unknown() -> None:
    """No version was in force when the broker appended it: the key cannot be judged."""
    history, _, _ = _history()
    data = _sealed(CST, T0 + timedelta(days=2))
    with pytest.raises(UnknownKey, match="no directory version"):
        _verify(data, history, T0 - MINUTE)


def test_hostile_avro_only_reaches_the_decoder_authenticated_and_then_fails_typed() -> None:
    """A signed record whose payload is garbage for its schema decodes to SchemaViolation, no crash."""
    registry = SchemaRegistry.load()
    fingerprint = registry.current("org.intelbus.records.v1.Sighting").fingerprint
    history, _, _ = _history()
    bomb = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00" * 30
    created = T0 + timedelta(days=2)
    record = _verify(_sealed(CST, created, bomb, fingerprint), history, created + MINUTE)
    with pytest.raises(SchemaViolation):
        registry.decode(record.header.schema_fingerprint, open_record(record, MET))


def test_envelope_cli_seal_inspect_verify_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The four commands work on files; open returns the record; a wrong topic is refused."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        res = runner.invoke(app, list(args))
        assert res.exit_code == code, res.output
        return res.output

    run("keys", "new", "--agency", "cst", "--out", "k")
    run("keys", "new", "--agency", "met-police", "--out", "k")
    run("keys", "new", "--agency", "gmp", "--out", "k")
    sighting = feed(seed=5, sightings=1, incidents=0)[0]
    Path("s.json").write_text(sighting.model_dump_json())
    sealed = json.loads(
        run(
            "envelope",
            "seal",
            "--record",
            "s.json",
            "--kind",
            "sighting",
            "--key",
            "k/cst.key",
            "--recipient",
            "k/met-police.pub.json",
            "--topic",
            TOPIC,
            "--out",
            "s.ibus",
            "--json",
        )
    )
    assert sealed["record_id"] == sighting.record_id
    header = json.loads(run("envelope", "inspect", "s.ibus", "--json"))
    assert header["verified"] is False
    assert header["recipients"][0]["agency_id"] == "met-police"
    assert (
        json.loads(run("envelope", "verify", "s.ibus", "--key", "k/cst.pub.json", "--json"))[
            "verified"
        ]
        is True
    )
    opened = json.loads(
        run(
            "envelope",
            "open",
            "s.ibus",
            "--key",
            "k/met-police.key",
            "--signer",
            "k/cst.pub.json",
            "--json",
        )
    )
    assert opened["record"] == json.loads(sighting.model_dump_json())
    assert "not a recipient" in run(
        "envelope", "open", "s.ibus", "--key", "k/gmp.key", "--signer", "k/cst.pub.json", code=1
    )
    assert "bound to topic" in run(
        "envelope", "verify", "s.ibus", "--key", "k/cst.pub.json", "--topic", "other", code=1
    )
    Path("bad.json").write_text(
        json.dumps({**json.loads(sighting.model_dump_json()), "grading": None})
    )
    assert "invalid sighting" in run(
        "envelope",
        "seal",
        "--record",
        "bad.json",
        "--kind",
        "sighting",
        "--key",
        "k/cst.key",
        "--recipient",
        "k/met-police.pub.json",
        "--topic",
        TOPIC,
        "--out",
        "x.ibus",
        code=2,
    )

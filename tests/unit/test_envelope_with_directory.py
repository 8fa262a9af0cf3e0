"""The envelope judged by the federation directory, and the envelope CLI end to end."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus import _nacl
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.envelope import RecordKind, open_record, verify
from intelbus.envelope.datakey import new_data_key
from intelbus.envelope.seal import _seal_from_parts
from intelbus.errors import KeyNotValid, KeyRevoked, SchemaViolation, UnknownKey
from intelbus.identity import AgencyIdentity
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
    v1 = _both(edit.initial(environment="test", admin_keys=ADMINS, threshold=2, now=T0))
    history = DirectoryHistory(v1)
    v2 = _both(
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
    history.update(v2)
    rotated = T0 + timedelta(days=10)
    v3 = _both(edit.rotate_key(v2.signed, agency_id="cst", identity=CST_NEXT.public, now=rotated))
    history.update(v3)
    revoked = T0 + timedelta(days=20)
    v4 = _both(
        edit.revoke_key(
            v3.signed, agency_id="cst", key_id=CST_NEXT.key_id.hex(), reason="lost", now=revoked
        )
    )
    history.update(v4)
    return history, rotated, revoked


def _sealed(
    identity: AgencyIdentity, at: datetime, payload: bytes = b"p", fingerprint: bytes = b"\x01" * 32
) -> bytes:
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
    ).data


def test_a_rotated_out_key_verifies_on_replay_inside_its_window() -> None:
    """An old record signed before the rotation still verifies years later."""
    history, rotated, _ = _history()
    record = verify(
        _sealed(CST, rotated - timedelta(days=1)),
        history,
        expected_environment="test",
        expected_topic=TOPIC,
    )
    assert record.signer == CST.public
    with pytest.raises(KeyNotValid):
        verify(
            _sealed(CST, rotated + timedelta(days=1)),
            history,
            expected_environment="test",
            expected_topic=TOPIC,
        )


def test_a_record_signed_after_revocation_is_refused() -> None:
    """The new key works until its revocation; after it, a typed refusal."""
    history, rotated, revoked = _history()
    ok = verify(
        _sealed(CST_NEXT, rotated + timedelta(days=1)),
        history,
        expected_environment="test",
        expected_topic=TOPIC,
    )
    assert ok.signer == CST_NEXT.public
    with pytest.raises(KeyRevoked):
        verify(
            _sealed(CST_NEXT, revoked + timedelta(hours=1)),
            history,
            expected_environment="test",
            expected_topic=TOPIC,
        )
    with pytest.raises(UnknownKey):
        verify(
            _sealed(CST_NEXT, T0 + timedelta(days=5)),
            history,
            expected_environment="test",
            expected_topic=TOPIC,
        )


def test_hostile_avro_only_reaches_the_decoder_authenticated_and_then_fails_typed() -> None:
    """A signed record whose payload is garbage for its schema decodes to SchemaViolation, no crash."""
    registry = SchemaRegistry.load()
    fingerprint = registry.current("org.intelbus.records.v1.Sighting").fingerprint
    history, _, _ = _history()
    bomb = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00" * 30
    record = verify(
        _sealed(CST, T0 + timedelta(days=2), bomb, fingerprint),
        history,
        expected_environment="test",
        expected_topic=TOPIC,
    )
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

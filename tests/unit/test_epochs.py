"""Encryption epochs and crypto-shredding (issue 16): directory entries, sealing to the current
epoch, the keyring on disk, destroying a past epoch, and what opening a shredded record says."""

from __future__ import annotations

import hashlib
import json
import pickle
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus import _nacl
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory.model import AgencyKey, EncEpoch, Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.envelope import DataKeyCache, open_record, seal, verify
from intelbus.envelope.epochs import DestroyedEpoch, EpochKeys, EpochSecret
from intelbus.errors import (
    EpochKeyMissing,
    InvalidDirectory,
    KeyringError,
    NoCurrentEpoch,
    NotARecipient,
    Shredded,
)
from intelbus.identity import (
    AgencyIdentity,
    EpochRecipient,
    StaticKeyRing,
    derive_epoch_id,
    derive_key_id,
)
from intelbus.keyring import (
    create_epochs,
    destroy_epoch,
    epochs_document,
    keyring_dir,
    list_epochs,
    load_epochs,
    monthly_windows,
)
from intelbus.kinds import RecordKind
from intelbus.policy.rules import PolicySpec, SharingPolicy
from intelbus.trust.judge import Judge, Reader
from intelbus.trust.model import Effect, Position, Prepared, Snapshot

VECTORS = Path(__file__).parents[1] / "vectors" / "directory_pre_epochs.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "intelbus.sightings"


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"epochs-{name}".encode()).digest()


ADMIN = _seed("admin")
CST = AgencyIdentity("cst", _seed("cst-sign"), _seed("cst-enc"))
HERTS = AgencyIdentity("herts-police", _seed("herts-sign"), _seed("herts-enc"))


def _epoch(secret_name: str, begin: datetime, end: datetime) -> tuple[EpochSecret, EncEpoch]:
    secret = EpochSecret(_seed(secret_name), begin, end)
    public = EncEpoch(
        epoch_id=secret.epoch_id.hex(),
        enc_public=secret.enc_public.hex(),
        not_before=begin,
        not_after=end,
    )
    return secret, public


JAN_SECRET, JAN = _epoch("jan", T0, T0 + timedelta(days=31))
FEB_SECRET, FEB = _epoch("feb", T0 + timedelta(days=31), T0 + timedelta(days=59))


def _history(epochs: tuple[EncEpoch, ...] = (JAN, FEB)) -> DirectoryHistory:
    doc = sign(
        edit.initial(
            environment="test",
            admin_keys=[edit.admin_key(_nacl.sign_public_from_seed(ADMIN), "admin")],
            threshold=1,
            now=T0,
        ),
        ADMIN,
    )
    history = DirectoryHistory(doc)
    for agency, ident, roles, topics in (
        ("cst", CST, [Role.PRODUCER], [TOPIC]),
        ("herts-police", HERTS, [Role.CONSUMER], []),
    ):
        doc = sign(
            edit.add_agency(
                doc.signed,
                agency_id=agency,
                display_name=agency,
                roles=roles,
                identity=ident.public,
                publish_topics=topics,
                now=T0,
            ),
            ADMIN,
        )
        history.update(doc)
    if epochs:
        doc = sign(
            edit.add_epochs(
                doc.signed,
                agency_id="herts-police",
                key_id=HERTS.key_id.hex(),
                epochs=epochs,
                now=T0,
            ),
            ADMIN,
        )
        history.update(doc)
    return history


def _seal_to(
    recipient: EpochRecipient | AgencyIdentity, payload: bytes = b"plate AB12CDE"
) -> bytes:
    target = recipient.public if isinstance(recipient, AgencyIdentity) else recipient
    return seal(
        CST,
        environment="test",
        topic=TOPIC,
        kind=RecordKind.SIGHTING,
        sequence=0,
        prev_digest=bytes(32),
        schema_fingerprint=bytes(8),
        payload=payload,
        recipients=[target],
        partition=0,
    ).data


def _verified(data: bytes):
    return verify(
        data,
        StaticKeyRing([CST.public]),
        expected_environment="test",
        expected_topic=TOPIC,
        expected_partition=0,
        witnessed_at=None,
    )


# --- ids and the directory -------------------------------------------------------------------------


def test_epoch_ids_are_derived_with_their_own_personalisation() -> None:
    """An epoch id is BLAKE2b-128 of the X25519 public key under "ibus-enc-epoch": never the key
    id of the same public key, and a listed id that does not match its key is refused."""
    public = JAN_SECRET.enc_public
    assert derive_epoch_id(public) == _nacl.blake2b(
        public, digest_size=16, person=b"ibus-enc-epoch"
    )
    assert derive_epoch_id(public) != derive_key_id(HERTS.sign_public, public)
    assert derive_epoch_id(public) != _nacl.blake2b(public, digest_size=16, person=b"ibus-key-id")
    assert JAN.epoch_id == JAN_SECRET.epoch_id.hex()
    with pytest.raises(ValueError, match="does not match its public key"):
        EncEpoch(
            epoch_id=FEB.epoch_id,
            enc_public=JAN.enc_public,
            not_before=JAN.not_before,
            not_after=JAN.not_after,
        )
    with pytest.raises(ValueError, match=r"small order|invalid|point"):
        EncEpoch(
            epoch_id=derive_epoch_id(bytes(32)).hex(),
            enc_public=bytes(32).hex(),
            not_before=T0,
            not_after=T0 + timedelta(days=1),
        )


def test_directories_signed_before_epochs_still_parse_verify_and_keep_their_bytes() -> None:
    """The vectors were made by the code before epochs existed: each parses, re-serialises to
    the very same bytes (an empty epoch list is left out), and the chain verifies."""
    raw = [v.encode() for v in json.loads(VECTORS.read_text())["versions"]]
    docs = [SignedDirectory.from_bytes(b) for b in raw]
    assert [d.to_bytes() for d in docs] == raw
    assert all(b"enc_epochs" not in d.signed.canonical_bytes() for d in docs)
    history = DirectoryHistory(docs[0])
    history.update(docs[1])
    assert history.latest.agency("herts-police") is not None


def test_a_directory_with_epochs_round_trips_and_verifies() -> None:
    """Epochs are part of the signed body: listed, signed, parsed back equal, and tampering with
    an epoch's window breaks the signature."""
    history = _history()
    latest = history.versions[-1]
    again = SignedDirectory.from_bytes(latest.to_bytes())
    assert again == latest
    found = again.signed.find_epoch(FEB.epoch_id)
    assert found is not None
    assert found[0].agency_id == "herts-police"
    assert found[2] == FEB
    # Other keys keep no epoch field at all.
    cst_key = again.signed.agency("cst").keys[0]  # type: ignore[union-attr]
    assert "enc_epochs" not in cst_key.model_dump(mode="json")
    forged = json.loads(latest.to_bytes())
    forged["signed"]["agencies"][1]["keys"][0]["enc_epochs"][0]["not_after"] = (
        "2026-12-31T00:00:00Z"
    )
    with pytest.raises(Exception, match=r"signature|threshold|overlap"):
        DirectoryHistory(history.versions[0]).update(
            SignedDirectory.from_bytes(json.dumps(forged).encode())
        )


def test_overlapping_epochs_are_refused() -> None:
    """One key's epoch windows never overlap: the producer could not tell which to seal to."""
    _, overlapping = _epoch("overlap", T0 + timedelta(days=30), T0 + timedelta(days=40))
    with pytest.raises(InvalidDirectory, match="overlap"):
        _history((JAN, overlapping))
    history = _history((JAN,))
    with pytest.raises(InvalidDirectory, match="overlap"):
        edit.add_epochs(
            history.latest,
            agency_id="herts-police",
            key_id=HERTS.key_id.hex(),
            epochs=[overlapping],
            now=T0,
        )
    with pytest.raises(ValueError, match="overlap"):
        AgencyKey(
            key_id=HERTS.key_id.hex(),
            sign_public=HERTS.sign_public.hex(),
            enc_public=HERTS.enc_public.hex(),
            not_before=T0,
            enc_epochs=(JAN, overlapping),
        )


# --- sealing ---------------------------------------------------------------------------------------


def test_the_producer_seals_to_the_epoch_covering_the_sealing_time() -> None:
    """The recipient entry names the epoch (not the key); the epoch's key opens it, the
    long-term key alone does not; a key without epochs is sealed to as before."""
    history = _history()
    in_jan = history.sealing_key("herts-police", T0 + timedelta(days=3))
    in_feb = history.sealing_key("herts-police", T0 + timedelta(days=40))
    assert isinstance(in_jan, EpochRecipient)
    assert in_jan.key_id == JAN_SECRET.epoch_id
    assert in_feb.key_id == FEB_SECRET.epoch_id
    assert history.sealing_key("cst", T0 + timedelta(days=3)) == CST.public

    record = _verified(_seal_to(in_jan))
    assert record.header.recipients[0].key_id == JAN_SECRET.epoch_id
    keys = EpochKeys("herts-police", {JAN_SECRET.epoch_id: JAN_SECRET})
    assert open_record(record, HERTS, epochs=keys) == b"plate AB12CDE"
    with pytest.raises(NotARecipient):
        open_record(record, HERTS)
    with pytest.raises(NotARecipient):
        open_record(_verified(_seal_to(in_feb)), HERTS, epochs=keys)


def test_the_data_key_cache_starts_a_new_key_with_a_new_epoch() -> None:
    """The cache keys on the recipient key id, which is the epoch id: no data key wrapped to
    January is reused in February."""
    history = _history()
    cache = DataKeyCache()
    jan = cache.get([history.sealing_key("herts-police", T0 + timedelta(days=3))])
    jan_again = cache.get([history.sealing_key("herts-police", T0 + timedelta(days=4))])
    feb = cache.get([history.sealing_key("herts-police", T0 + timedelta(days=40))])
    assert jan is jan_again
    assert feb.key != jan.key
    assert feb.wraps[0].key_id == FEB_SECRET.epoch_id


def test_no_current_epoch_refuses_to_seal_with_a_clear_error() -> None:
    """A key that lists epochs, none covering now, is never sealed to through its long-term key."""
    history = _history()
    with pytest.raises(NoCurrentEpoch, match="no current encryption epoch for herts-police"):
        history.sealing_key("herts-police", T0 + timedelta(days=90))
    # The key is valid from T0, its only epoch starts a month later.
    with pytest.raises(NoCurrentEpoch):
        _history((FEB,)).sealing_key("herts-police", T0 + timedelta(days=3))


# --- the keyring -------------------------------------------------------------------------------------


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "herts-police.key"
    HERTS.save(path)
    return path


def test_keyring_files_are_private_and_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    """Epoch keys are 0600 in a 0700 folder; repr shows ids only; an epoch key cannot be pickled."""
    key_file = _key_file(tmp_path)
    made = create_epochs(key_file, monthly_windows(T0, 2))
    folder = keyring_dir(key_file)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for epoch in made:
        path = folder / f"{epoch.epoch_id.hex()}.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret_hex = epoch.secret_bytes().hex()
        assert secret_hex in path.read_text()
        assert secret_hex not in repr(epoch)
        assert secret_hex not in str(epoch)
        with pytest.raises(TypeError):
            pickle.dumps(epoch)
    loaded = load_epochs(key_file, "herts-police")
    assert set(loaded.held) == {e.epoch_id for e in made}
    assert all(e.secret_bytes().hex() not in repr(loaded) for e in made)
    with pytest.raises(KeyringError, match="another agency"):
        load_epochs(key_file, "gmp")


def test_monthly_windows_are_consecutive_calendar_months() -> None:
    windows = monthly_windows(datetime(2026, 11, 17, 9, tzinfo=UTC), 3)
    assert windows == [
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
    ]


def test_the_keyring_refuses_overlapping_windows(tmp_path: Path) -> None:
    key_file = _key_file(tmp_path)
    create_epochs(key_file, monthly_windows(T0, 1))
    with pytest.raises(KeyringError, match="overlaps"):
        create_epochs(key_file, [(T0 + timedelta(days=3), T0 + timedelta(days=40))])


def test_destroy_epoch_refuses_a_current_or_future_epoch_and_one_within_retention(
    tmp_path: Path,
) -> None:
    key_file = _key_file(tmp_path)
    jan, feb = create_epochs(key_file, monthly_windows(T0, 2))
    mid_feb = T0 + timedelta(days=45)
    with pytest.raises(KeyringError, match="still sealed"):
        destroy_epoch(key_file, feb.epoch_id.hex(), now=mid_feb)
    with pytest.raises(KeyringError, match="still sealed"):
        destroy_epoch(key_file, feb.epoch_id.hex(), now=mid_feb, force=True)
    with pytest.raises(KeyringError, match="within the retention"):
        destroy_epoch(key_file, jan.epoch_id.hex(), now=mid_feb, retention=timedelta(days=30))
    with pytest.raises(KeyringError, match="no epoch"):
        destroy_epoch(key_file, "00" * 16, now=mid_feb)
    assert [e.state for e in list_epochs(key_file)] == ["held", "held"]


def test_a_destroyed_epoch_shreds_its_records_and_says_so(tmp_path: Path) -> None:
    """After destroy-epoch the key file is gone, a destruction record says when, and opening a
    record sealed to that epoch fails with the crypto-shredded reason; the record still verifies."""
    key_file = _key_file(tmp_path)
    jan, _ = create_epochs(
        key_file, [(JAN.not_before, JAN.not_after), (FEB.not_before, FEB.not_after)]
    )
    recipient = EpochRecipient("herts-police", jan.epoch_id, jan.enc_public)
    record = _verified(_seal_to(recipient))
    assert open_record(record, HERTS, epochs=load_epochs(key_file, "herts-police"))
    when = JAN.not_after + timedelta(days=1)
    gone = destroy_epoch(key_file, jan.epoch_id.hex(), now=when, retention=timedelta(days=1))
    folder = keyring_dir(key_file)
    assert not (folder / f"{jan.epoch_id.hex()}.key").exists()
    assert stat.S_IMODE((folder / f"{jan.epoch_id.hex()}.destroyed").stat().st_mode) == 0o600
    assert gone.destroyed_at == when
    states = {e.epoch_id: e.state for e in list_epochs(key_file)}
    assert states[jan.epoch_id.hex()] == "destroyed"
    keys = load_epochs(key_file, "herts-police")
    assert jan.epoch_id not in keys.held
    assert jan.epoch_id in keys.destroyed
    with pytest.raises(Shredded) as info:
        open_record(_verified(_seal_to(recipient)), HERTS, epochs=keys)
    message = str(info.value)
    assert f"sealed to epoch {jan.epoch_id.hex()} of herts-police" in message
    assert f"destroyed on {when.date().isoformat()} (crypto-shredded)" in message
    # Destroying again is harmless and keeps the first date.
    again = destroy_epoch(key_file, jan.epoch_id.hex(), now=when + timedelta(days=5))
    assert again.destroyed_at == when


def test_an_epoch_key_lost_without_destruction_is_refused_not_shredded(tmp_path: Path) -> None:
    """A key file gone with no destruction record fails closed (epoch_key_missing)."""
    key_file = _key_file(tmp_path)
    (jan,) = create_epochs(key_file, [(JAN.not_before, JAN.not_after)])
    (keyring_dir(key_file) / f"{jan.epoch_id.hex()}.key").unlink()
    assert [e.state for e in list_epochs(key_file)] == ["missing"]
    record = _verified(_seal_to(EpochRecipient("herts-police", jan.epoch_id, jan.enc_public)))
    with pytest.raises(EpochKeyMissing, match="missing from the keyring"):
        open_record(record, HERTS, epochs=load_epochs(key_file, "herts-police"))


def test_a_planted_or_unfinished_destruction_record_is_refused_not_obeyed(tmp_path: Path) -> None:
    """A local user who writes a destruction record for the current epoch (so that a consumer
    would drop its records as shredded) gets a keyring that does not load, with the reason; so
    does a destruction interrupted before the key was gone, until it is finished."""
    key_file = _key_file(tmp_path)
    jan, feb = create_epochs(key_file, monthly_windows(T0, 2))
    folder = keyring_dir(key_file)
    marker = folder / f"{feb.epoch_id.hex()}.destroyed"
    record = {"epoch_id": feb.epoch_id.hex(), "not_after": feb.not_after.isoformat()}
    # Dated inside the epoch (before its end): not one destroy-epoch would write.
    marker.write_text(json.dumps({**record, "destroyed_at": (T0 + timedelta(days=40)).isoformat()}))
    marker.chmod(0o600)
    with pytest.raises(KeyringError, match="before it ended"):
        load_epochs(key_file, "herts-police")
    # Dated after the end, but the key is still there: an unfinished (or planted) destruction.
    after = feb.not_after + timedelta(days=1)
    marker.write_text(json.dumps({**record, "destroyed_at": after.isoformat()}))
    with pytest.raises(KeyringError, match="finish with `intelbus keys destroy-epoch"):
        load_epochs(key_file, "herts-police")
    # Finishing it (destroy-epoch completes an interrupted destruction) makes it load again.
    destroy_epoch(key_file, feb.epoch_id.hex(), now=after + timedelta(days=1))
    keys = load_epochs(key_file, "herts-police")
    assert feb.epoch_id in keys.destroyed
    assert jan.epoch_id in keys.held


# --- the command line ---------------------------------------------------------------------------------


def test_epoch_commands(tmp_path: Path) -> None:
    """keys epoch new, directory add-epochs, keys epochs, and destroy-epoch's refusal (exit 2)."""
    runner = CliRunner()
    key_file = _key_file(tmp_path)
    result = runner.invoke(
        app, ["keys", "epoch", "new", "--key-file", str(key_file), "--months", "2"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "herts-police.key.epochs.json").read_text())
    assert document == epochs_document(key_file)
    assert len(document["epochs"]) == 2

    folder = tmp_path / "directory"
    folder.mkdir()
    history = _history(())
    for doc in history.versions:
        (folder / f"v{doc.signed.version}.json").write_bytes(doc.to_bytes())
    result = runner.invoke(
        app,
        [
            "directory",
            "add-epochs",
            "--folder",
            str(folder),
            "--epochs",
            str(tmp_path / "herts-police.key.epochs.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    draft = SignedDirectory.from_bytes((folder / "draft.json").read_bytes())
    key = draft.signed.agency("herts-police").keys[0]  # type: ignore[union-attr]
    assert [e.epoch_id for e in key.enc_epochs] == [e["epoch_id"] for e in document["epochs"]]

    listed = runner.invoke(app, ["keys", "epochs", "--key-file", str(key_file), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [e["state"] for e in json.loads(listed.output)] == ["held", "held"]

    current = document["epochs"][0]["epoch_id"]
    refused = runner.invoke(
        app, ["keys", "destroy-epoch", "--key-file", str(key_file), "--epoch", current, "--force"]
    )
    assert refused.exit_code == 2
    assert "cannot be destroyed yet" in refused.output
    assert (keyring_dir(key_file) / f"{current}.key").exists()
    help_text = runner.invoke(app, ["keys", "destroy-epoch", "--help"]).output
    assert "IRREVERSIBLY" in help_text


# --- the judge ----------------------------------------------------------------------------------------


def _shredded_prepared(offset: int, sequence: int, prev: bytes) -> tuple[Prepared, bytes]:
    """A record sealed to Herts' January epoch, as intake prepares it once that key is gone."""
    data = seal(
        CST,
        environment="test",
        topic=TOPIC,
        kind=RecordKind.SIGHTING,
        sequence=sequence,
        prev_digest=prev,
        schema_fingerprint=bytes(8),
        payload=b"gone",
        recipients=[EpochRecipient("herts-police", JAN_SECRET.epoch_id, JAN_SECRET.enc_public)],
        partition=0,
    ).data
    verified = _verified(data)
    keys = EpochKeys(
        "herts-police",
        destroyed={
            JAN_SECRET.epoch_id: DestroyedEpoch(JAN_SECRET.epoch_id, T0 + timedelta(days=60))
        },
    )
    with pytest.raises(Shredded) as info:
        open_record(verified, HERTS, epochs=keys)
    position = Position(TOPIC, 0, offset, datetime.now(UTC))
    prepared = Prepared(position, data, verified, addressed=True, shredded=info.value)
    return prepared, verified.digest


def test_the_judge_advances_the_chain_through_shredded_records_and_keeps_nothing() -> None:
    """An agency: effect shredded, no refusal, no record, no quarantine row, the chain moved. An
    auditor (no policy) registers it as a record it did not open: its ledger is unchanged."""
    first, digest = _shredded_prepared(0, 0, bytes(32))
    second, _ = _shredded_prepared(1, 1, digest)
    policy = SharingPolicy.from_spec(PolicySpec(agency="herts-police"))
    judge = Judge(Reader("herts-police", policy, clock=lambda: datetime.now(UTC)), Snapshot())
    verdicts = [judge.judge(first), judge.judge(second)]
    assert [v.effect for v in verdicts] == [Effect.SHREDDED, Effect.SHREDDED]
    assert all(v.accepted for v in verdicts)
    batch = judge.batch("g", {})
    assert batch.records == ()
    assert batch.quarantined == ()
    assert batch.amendments == ()
    assert [c.last_sequence for c in batch.chain] == [1]

    auditor = Judge(Reader(None, None, clock=lambda: datetime.now(UTC)), Snapshot())
    assert auditor.judge(first).effect is Effect.REGISTERED
    assert len(auditor.batch("a", {}).records) == 1

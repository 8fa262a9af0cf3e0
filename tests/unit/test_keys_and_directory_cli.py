"""Key files and the `intelbus keys` / `intelbus directory` commands."""

from __future__ import annotations

import json
import pickle
import stat
from pathlib import Path

import pytest
from nacl.pwhash import argon2id
from typer.testing import CliRunner

from intelbus.cli.main import app
from intelbus.errors import ConfigError
from intelbus.identity import AgencyIdentity, PublicIdentity

FAST = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


def test_key_files_are_0600_and_never_overwritten(tmp_path: Path) -> None:
    """A private key file is created owner-only, and an existing one is never replaced."""
    ident = AgencyIdentity.generate("cst")
    path = tmp_path / "cst.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        AgencyIdentity.generate("cst").save(path)
    assert AgencyIdentity.load(path).public == ident.public


def test_passphrase_protected_key_round_trip(tmp_path: Path) -> None:
    """Argon2id-protected key files open with the passphrase and only with it."""
    ident = AgencyIdentity.generate("cst")
    path = tmp_path / "cst.key"
    ident.save(path, passphrase=b"correct horse", **FAST)
    assert "secret" not in json.loads(path.read_text())
    assert AgencyIdentity.load(path, passphrase=b"correct horse").public == ident.public
    with pytest.raises(ConfigError, match="wrong passphrase"):
        AgencyIdentity.load(path, passphrase=b"wrong")
    with pytest.raises(ConfigError, match="passphrase-protected"):
        AgencyIdentity.load(path)


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path) -> None:
    """repr/str show the agency and key id only; a damaged key file's error quotes no key bytes."""
    ident = AgencyIdentity.generate("cst")
    seed_hex = ident.signing_seed().hex()
    assert seed_hex not in repr(ident)
    assert seed_hex not in str(ident)
    path = tmp_path / "cst.key"
    ident.save(path)
    raw = json.loads(path.read_text())
    raw["secret"] = raw["secret"][:-3] + "zzz"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as info:
        AgencyIdentity.load(path)
    assert raw["secret"][:20] not in str(info.value)
    with pytest.raises(TypeError):
        pickle.dumps(ident)


def test_public_key_file_round_trip_checks_the_key_id() -> None:
    """A public key file whose key id does not match its keys is refused."""
    pub = AgencyIdentity.generate("cst").public
    assert PublicIdentity.from_json(pub.to_json()) == pub
    doc = json.loads(pub.to_json())
    doc["key_id"] = "00" * 16
    with pytest.raises(ValueError, match="key_id"):
        PublicIdentity.from_json(json.dumps(doc))


def test_directory_workflow_needs_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init, sign, publish (refused below threshold), add-agency, rotate, revoke, verify, show."""
    monkeypatch.chdir(tmp_path)
    # A unit test: `directory publish` only accepts the draft here; with a broker configured in the
    # environment it would also append to that broker's directory topic.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    runner = CliRunner()

    def run(*args: str) -> str:
        res = runner.invoke(app, list(args))
        assert res.exit_code == 0, res.output
        return res.output

    for agency in ("admin-a", "admin-b", "cst", "cst-next"):
        run("keys", "new", "--agency", agency, "--out", "keys")
    run(
        "directory",
        "init",
        "--environment",
        "demo",
        "--admin",
        "keys/admin-a.pub.json",
        "--admin",
        "keys/admin-b.pub.json",
        "--threshold",
        "2",
    )
    run("directory", "sign", "--key", "keys/admin-a.key")
    refused = runner.invoke(app, ["directory", "publish"])
    assert refused.exit_code != 0
    assert "threshold 2" in refused.output
    run("directory", "sign", "--key", "keys/admin-b.key")
    assert "accepted v1" in run("directory", "publish")

    for change in (
        [
            "add-agency",
            "--agency",
            "cst",
            "--name",
            "CST",
            "--role",
            "producer",
            "--topic",
            "intelbus.sightings",
            "--public",
            "keys/cst.pub.json",
        ],
        ["rotate-key", "--agency", "cst", "--public", "keys/cst-next.pub.json"],
    ):
        run("directory", *change)
        run("directory", "sign", "--key", "keys/admin-a.key")
        run("directory", "sign", "--key", "keys/admin-b.key")
        run("directory", "publish")
    new_key = json.loads(Path("keys/cst-next.pub.json").read_text())["key_id"]
    run(
        "directory", "revoke-key", "--agency", "cst", "--key-id", new_key, "--reason", "lost laptop"
    )
    run("directory", "sign", "--key", "keys/admin-b.key")
    run("directory", "sign", "--key", "keys/admin-a.key")
    assert "accepted v4" in run("directory", "publish")
    assert "4 version(s) verified" in run("directory", "verify")
    shown = json.loads(run("directory", "show", "--json"))
    keys = shown["agencies"][0]["keys"]
    assert [k["revocation"] is not None for k in keys] == [False, True]
    assert keys[0]["not_after"] is not None

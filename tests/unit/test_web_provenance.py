"""The record page's key provenance: the directory version in force at broker time, and a
revocation learned since (web/provenance.py), over a real threshold-signed directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from intelbus import federation
from intelbus.directory.edit import revoke_key
from intelbus.directory.trust import sign
from intelbus.store import StoredRecordView
from web.provenance import key_provenance, load_history


def _view(key_id: bytes, topic: str, at: datetime) -> StoredRecordView:
    return StoredRecordView(
        record_id="00000000-0000-4000-8000-000000000001",
        topic=topic,
        partition=0,
        offset=3,
        producer_id="cst",
        kind="sighting",
        sequence=3,
        digest=bytes(32),
        created_at=at,
        appended_at=at,
        policy_hash="a" * 64,
        rule_id="own-area",
        action="store",
        redacted_fields=(),
        tlp="GREEN",
        classification="OFFICIAL",
        force_area="METROPOLITAN",
        occurred_at=at,
        payload={"record_id": "00000000-0000-4000-8000-000000000001"},
        version=1,
        status="live",
        key_id=key_id,
    )


def test_version_in_force_then_a_revocation_learned_since(tmp_path: Path) -> None:
    ids = federation.make_keys(tmp_path)
    federation.make_directory(tmp_path, ids, "p")
    history = load_history(tmp_path / "directory")
    assert history is not None
    now = datetime.now(UTC) + timedelta(seconds=1)  # after every version was issued
    cst_key = ids["cst"].public.key_id
    view = _view(cst_key, "p.sightings", now)
    found = key_provenance(history, view)
    assert found.trusted
    assert found.directory_version == history.latest.version
    assert found.key_now == f"valid in directory v{history.latest.version}"

    doc = revoke_key(
        history.latest,
        agency_id="cst",
        key_id=cst_key.hex(),
        reason="laptop stolen",
        now=now + timedelta(minutes=1),
        compromised_since=now - timedelta(hours=1),
    )
    for admin in federation.ADMINS:
        doc = sign(doc, ids[admin].signing_seed())
    assert history.update(doc)
    after = key_provenance(history, view)
    assert not after.trusted
    assert after.directory_version == found.directory_version  # what it was judged under
    assert "presumed compromised" in after.key_now


def test_another_agencys_key_or_no_directory_is_said_not_hidden(tmp_path: Path) -> None:
    ids = federation.make_keys(tmp_path)
    federation.make_directory(tmp_path, ids, "p")
    history = load_history(tmp_path / "directory")
    now = datetime.now(UTC) + timedelta(seconds=1)
    forged = key_provenance(history, _view(ids["gmp"].public.key_id, "p.sightings", now))
    assert not forged.trusted
    assert "belongs to gmp" in forged.key_now
    assert load_history(tmp_path / "nowhere") is None
    unknown = key_provenance(None, _view(ids["cst"].public.key_id, "p.sightings", now))
    assert unknown.directory_version is None
    assert "cannot be read" in unknown.key_now

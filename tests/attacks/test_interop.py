"""Attacks on issue 17's interoperability: the TAXII server, the STIX and MISP exports and the
``publish --format stix|misp`` importers.

Four attackers: an insider agency that may write to a topic (it controls the text of its records,
which ends up in exports), a leaked key or password, an operator who changes settings, and a local
user on the force's host (files the umask allows, processes, loopback). Each case asserts the
refusal with its reason or status, that trusted state is unchanged (the store's records, the
access log), and that the genuine feed still flows afterwards.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.tls.certs import CertificateAuthority
from intelbus import files
from intelbus.cli import publish_cmd
from intelbus.cli.main import app
from intelbus.cli.store_access import restriction
from intelbus.errors import InsecureFileError
from intelbus.interop.misp import misp_event, records_from_misp, write_misp_feed
from intelbus.interop.stix import TLP2_MARKINGS, record_entries, stix_bundle
from intelbus.interop.stix_import import records_from_stix
from intelbus.interop.taxii import (
    COLLECTIONS,
    SHARED_TYPES,
    TAXII_MEDIA_TYPE,
    TaxiiService,
    parse_query,
)
from intelbus.interop.taxii_auth import Authenticator, AuthFailed, Principal, add_user
from intelbus.interop.taxii_config import is_loopback
from intelbus.interop.taxii_server import TaxiiHttpServer, TlsFiles, server_context
from intelbus.policy.redact import REDACTED
from intelbus.records import Sighting
from intelbus.samples import feed
from intelbus.store import Store, open_store
from intelbus.store.access import AccessLog
from intelbus.store.base import Expiry, StoredRecordView
from producers.inputs import TOO_DEEP, read_items, redaction_placeholders
from tests.federation import Federation, sighting_for
from tests.stixcheck import assert_strict
from tests.taxii_store import FAST, KEY, T0, Filled, fill, users_file
from tests.unit.test_misp import _analyst_event
from tests.unit.test_misp import _record as misp_record
from tests.unit.test_stix import _view

SIGHTINGS = COLLECTIONS[0].id
INCIDENTS = COLLECTIONS[1].id
OPENCTI = Principal("opencti", "basic", None)
DPO = Principal("dpo", "basic", "standing: review")


@contextmanager
def _opened(path: Path) -> Iterator[Store]:
    store = open_store(str(path))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def filled(tmp_path: Path) -> Filled:
    return fill(tmp_path / "herts.sqlite", sightings=10, incidents=4)


def _service(path: Path, page_size: int = 1000) -> TaxiiService:
    return TaxiiService(
        lambda: _opened(path), restriction=restriction, title="t", page_size=page_size
    )


def _log(path: Path) -> list[Any]:
    with _opened(path) as store:
        return AccessLog(store).entries(action="taxii")


def _restricted(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """The ids of objects only restricted records export, and those records."""
    with _opened(path) as store:
        views = [v for v in store.iter_records() if v.visible]
    closed = {(v.producer_id, v.record_id) for v in views if restriction(v) is not None}
    open_ids = {e.id for v in views if restriction(v) is None for e in record_entries(v)}
    closed_ids = {
        e.id for v in views if restriction(v) is not None for e in record_entries(v)
    } - open_ids
    return closed_ids, closed


def _objects(cid: str, tail: str = "") -> str:
    return f"/api/collections/{cid}/objects/{tail}"


# --- TAXII: disclosure. ------------------------------------------------------------------------------


def test_taxii_no_endpoint_or_filter_shows_a_restricted_record_to_an_unjustified_user(
    filled: Filled,
) -> None:
    """Every way of naming an object (listing, the object itself, its versions, the manifest,
    match[id], match[type], every match[version], added_after at the dawn of time, a forged
    ``next`` before everything) leaves a restricted record out for a user with no standing
    justification, and the access log never names one for that user."""
    closed_ids, closed = _restricted(filled.path)
    assert closed_ids
    assert closed
    service = _service(filled.path)
    before = len(_log(filled.path))
    forged = base64.urlsafe_b64encode(
        json.dumps(["0001-01-01T00:00:00.000000Z", "a", "0001-01-01T00:00:00.000000Z"]).encode()
    ).decode()
    seen: set[str] = set()
    for cid in (SIGHTINGS, INCIDENTS):
        for params in (
            {},
            {"match[version]": ["all"]},
            {"match[version]": ["first"]},
            {"match[id]": [",".join(sorted(closed_ids))]},
            {"match[type]": ["sighting,incident,location,relationship"]},
            {"added_after": ["0001-01-01T00:00:00Z"], "match[version]": ["all"]},
            {"next": [forged], "match[version]": ["all"]},
        ):
            got = service.get(_objects(cid), params, OPENCTI)
            assert got.status == 200
            seen |= {o["id"] for o in got.body["objects"]}
            manifest = service.get(f"/api/collections/{cid}/manifest/", params, OPENCTI)
            seen |= {o["id"] for o in manifest.body["objects"]}
        for oid in sorted(closed_ids):
            assert service.get(_objects(cid, f"{oid}/"), {}, OPENCTI).status == 404
            got = service.get(_objects(cid, f"{oid}/versions/"), {}, OPENCTI)
            assert got.status == 404
    assert not seen & closed_ids
    after = _log(filled.path)[before:]
    assert after  # the open records that were served are logged...
    assert not {r for e in after for r in e.records} & closed  # ...never a closed one
    # The genuine feed: the justified user gets them, and that read names its justification.
    got = service.get(_objects(SIGHTINGS), {"match[version]": ["all"]}, DPO)
    dpo_ids = {o["id"] for o in got.body["objects"]}
    assert dpo_ids & closed_ids
    last = _log(filled.path)[-1]
    assert (last.user, last.justification) == ("dpo", "standing: review")
    # The justified user's ``next`` tokens, replayed by the other: they name a place in the
    # order, not a permission; what follows is still only what the other may see.
    tokens = []
    params: dict[str, list[str]] = {"limit": ["3"], "match[version]": ["all"]}
    page = service.get(_objects(SIGHTINGS), params, DPO)
    while page.body.get("more"):
        tokens.append(page.body["next"])
        page = service.get(_objects(SIGHTINGS), {**params, "next": [tokens[-1]]}, DPO)
    assert tokens
    for token in tokens:
        got = service.get(_objects(SIGHTINGS), {**params, "next": [token]}, OPENCTI)
        assert got.status == 200
        assert not {o["id"] for o in got.body["objects"]} & closed_ids


def test_taxii_shared_objects_served_unlogged_carry_no_record_content(filled: Filled) -> None:
    """The object types served without an access-log entry (identity, marking and extension
    definitions, attack-patterns) hold nothing a record's producer wrote: no description,
    person, place or reference of any record."""
    with _opened(filled.path) as store:
        views = [v for v in store.iter_records() if v.visible]
    words: set[str] = set()
    for v in views:
        assert v.payload is not None
        for key in ("description", "reporter_ref", "police_crime_reference"):
            if isinstance(v.payload.get(key), str):
                words.add(str(v.payload[key]))
        place = v.payload.get("place")
        if isinstance(place, dict):
            words |= {str(place[k]) for k in ("site_name", "address_or_area") if place.get(k)}
        words.add(v.record_id)
    service = _service(filled.path)
    before = len(_log(filled.path))
    for cid in (SIGHTINGS, INCIDENTS):
        got = service.get(_objects(cid), {"match[type]": [",".join(sorted(SHARED_TYPES))]}, DPO)
        assert got.status == 200
        assert got.body["objects"]
        text = json.dumps(got.body)
        assert not [w for w in words if w in text]
    assert len(_log(filled.path)) == before  # served, unlogged: and nothing of a record in them


def test_taxii_a_record_pruned_while_the_server_runs_is_gone_at_the_next_request(
    filled: Filled,
) -> None:
    service = _service(filled.path)
    with _opened(filled.path) as store:
        views = [v for v in store.iter_records() if v.visible]
    target = next(
        v for v in views if v.kind == "sighting" and restriction(v) is None and not v.retracted
    )
    # Its own objects: those no other record exports (the force area's location is shared).
    others = {e.id for v in views if v is not target for e in record_entries(v)}
    own = {e.id for e in record_entries(target)} - others
    assert any(oid.startswith("sighting--") for oid in own)
    first = service.get(_objects(SIGHTINGS), {"match[version]": ["all"]}, OPENCTI)
    assert own <= {o["id"] for o in first.body["objects"]}
    with _opened(filled.path) as store:
        store.prune([Expiry(target.producer_id, target.record_id, "rule", datetime.now(UTC))])
    again = service.get(_objects(SIGHTINGS), {"match[version]": ["all"]}, OPENCTI)
    assert not own & {o["id"] for o in again.body["objects"]}
    for oid in own:
        assert service.get(_objects(SIGHTINGS, f"{oid}/"), {}, OPENCTI).status == 404
    assert (target.producer_id, target.record_id) not in set(_log(filled.path)[-1].records)
    assert again.body["objects"]  # the rest still flows


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/collections/../collections/{c}/objects/", 404),
        ("/api/collections/{c}/objects/..%2F..%2F/", 404),
        ("/api/collections/{c}%2Fobjects/", 404),
        ("/api/collections/{c}/objects/x/y/z/", 404),
        ("/api/collections/{c}/objects", 404),
        ("/api/collections/{i}/objects/{s}/", 404),  # a sighting asked of the incidents
    ],
)
def test_taxii_path_tricks_serve_nothing_unlogged(filled: Filled, path: str, status: int) -> None:
    with _opened(filled.path) as store:
        sighting = next(
            e.id
            for v in store.iter_records()
            if v.kind == "sighting" and v.visible and restriction(v) is None
            for e in record_entries(v)
            if e.id.startswith("sighting--")
        )
    service = _service(filled.path)
    before = len(_log(filled.path))
    got = service.get(path.format(c=SIGHTINGS, i=INCIDENTS, s=sighting), {}, OPENCTI)
    assert got.status == status
    assert "objects" not in got.body
    assert len(_log(filled.path)) == before
    # Doubled slashes route to the same endpoint: served, and logged like any read.
    ok = service.get(f"//api//collections//{SIGHTINGS}//objects//", {}, OPENCTI)
    assert ok.status == 200
    assert ok.body["objects"]
    assert len(_log(filled.path)) == before + 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": ["9" * 5000]},  # int() refuses more than 4300 digits: was a 500
        {"limit": ["\u00b2"]},  # str.isdigit() says yes, int() says no: was a 500
        {"limit": ["\u0663"]},  # an Arabic-Indic three
        {"added_after": ["0001-01-01T00:00:00+14:00"]},  # before year 1 in UTC: was a 500
        {"added_after": ["9999-12-31T23:59:59-14:00"]},  # after year 9999 in UTC: was a 500
        {"match[version]": ["0001-01-01T00:00:00+14:00"]},
        {"limit": ["1"], "next": ["eyJhIjoxfQ"]},  # a token that is not ours
    ],
)
def test_taxii_hostile_parameters_are_400_not_500(
    filled: Filled, params: dict[str, list[str]]
) -> None:
    service = _service(filled.path)
    before = len(_log(filled.path))
    got = service.get(_objects(SIGHTINGS), params, OPENCTI)
    assert got.status == 400, got.body
    assert got.body["http_status"] == "400"
    json.dumps(got.body)  # whatever it quotes back is JSON-safe
    assert len(_log(filled.path)) == before
    assert parse_query({"limit": ["3"]}, page_size=10).limit == 3
    assert service.get(_objects(SIGHTINGS), {"limit": ["3"]}, OPENCTI).status == 200


# --- TAXII: who may read. ----------------------------------------------------------------------------


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_taxii_a_bus_certificate_does_not_stand_in_for_a_password_user(tmp_path: Path) -> None:
    """The bus CA issues every agency a client certificate for Kafka; one whose CN is the name
    of a TAXII user with a password (or a leaked one) must not log in as that user. Was: it did."""
    path = users_file(
        tmp_path / "users.json", ("cst", "s3cret", "standing: cst"), ("fib", None, None)
    )
    auth = Authenticator(path)
    with pytest.raises(AuthFailed) as e:
        auth.authenticate(None, "cst")
    assert e.value.status == 403
    # The genuine ways in still work: the password, and a certificate-only user's certificate.
    assert auth.authenticate(_basic("cst", "s3cret"), None).method == "basic"
    assert auth.authenticate(None, "fib") == Principal("fib", "certificate", None)
    # A certificate-only user has no password to guess, a stranger's certificate is no user.
    with pytest.raises(AuthFailed) as e:
        auth.authenticate(_basic("fib", ""), "fib")
    assert e.value.status == 401
    with pytest.raises(AuthFailed) as e:
        auth.authenticate(None, "stranger")
    assert e.value.status == 403


def test_taxii_a_leaked_password_or_certificate_stops_working_when_the_user_is_removed(
    tmp_path: Path,
) -> None:
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None), ("fib", None, None))
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "s3cret"), None).user == "opencti"  # cached
    assert auth.authenticate(None, "fib").user == "fib"
    path.write_text(json.dumps({"users": {}}))
    with pytest.raises(AuthFailed):
        auth.authenticate(_basic("opencti", "s3cret"), None)
    with pytest.raises(AuthFailed) as e:
        auth.authenticate(None, "fib")
    assert e.value.status == 403


def test_taxii_a_users_file_changed_without_changing_size_or_mtime_is_read_again(
    tmp_path: Path,
) -> None:
    """A password changed (same size: an Argon2id hash is fixed length) and the old mtime put back
    (`cp -p` of a backup, or two writes within one timestamp tick): the server must not keep the
    old password, cached or not. Was: the file was judged unchanged by (mtime, size)."""
    path = users_file(tmp_path / "users.json", ("opencti", "old-secret", None))
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "old-secret"), None).user == "opencti"
    st = path.stat()
    add_user(path, "opencti", "new-secret", **FAST)
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(AuthFailed) as e:
        auth.authenticate(_basic("opencti", "old-secret"), None)
    assert e.value.status == 401
    assert auth.authenticate(_basic("opencti", "new-secret"), None).user == "opencti"


def test_taxii_a_users_file_others_may_read_or_a_symlink_to_one_fails_closed(
    tmp_path: Path,
) -> None:
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "s3cret"), None).user == "opencti"
    open_copy = tmp_path / "open.json"
    open_copy.write_bytes(path.read_bytes())
    open_copy.chmod(0o644)
    path.unlink()
    path.symlink_to(open_copy)
    with pytest.raises(Exception) as e:  # noqa: PT011 - InsecureFileError, an IntelbusError
        auth.authenticate(_basic("opencti", "s3cret"), None)
    assert "group or others" in str(e.value)
    assert "s3cret" not in str(e.value)
    assert "argon2" not in str(e.value)


# --- Exports: record text an insider controls. -------------------------------------------------------


_HOSTILE = (
    '"}], "object_marking_refs": ["'
    + TLP2_MARKINGS["CLEAR"][0]
    + '"], "x": "tlp:clear", intelbus:status="redacted" [REDACTED] x'
)


def _insider_sighting(tlp: str = "RED", handling: str = "P") -> Sighting:
    data = feed(seed=71, sightings=1, incidents=0)[0].model_dump(mode="json")
    data["description"] = _HOSTILE
    data["place"]["site_name"] = _HOSTILE
    data["place"]["address_or_area"] = 'tlp:clear"><script>'
    data["reporter_ref"] = 'intelbus:handling-code="P"'
    data["persons"] = [{"summary": _HOSTILE, "approx_age": "tlp:white", "clothing": REDACTED + "x"}]
    conditions = [_HOSTILE] if handling == "C" else []
    data["grading"].update(tlp=tlp, handling_code=handling, handling_conditions=conditions)
    return Sighting.model_validate(data)


def test_insider_text_cannot_add_markings_tags_or_change_sharing_in_exports() -> None:
    """An agency's own free text (description, site name, persons, references, conditions) that
    looks like JSON, STIX markings or MISP tags stays text: the STIX objects keep the record's one
    TLP marking and pass the strict validator; the MISP event's tags come from enumerations only
    and its distribution from the grading."""
    model = _insider_sighting(handling="C")
    view = _view(model, 1)
    bundle = stix_bundle([view], exported_at=datetime.now(UTC))
    assert_strict(bundle)
    red = TLP2_MARKINGS["RED"][0]
    for obj in bundle["objects"]:
        if obj["type"] == "sighting" or "latitude" in obj:  # the record's own objects
            assert obj["object_marking_refs"] == [red]
    assert {o["id"] for o in bundle["objects"] if o["type"] == "marking-definition"} == {red}
    event = misp_event(view)["Event"]
    assert int(event["distribution"]) == 0
    tags = sorted(t["name"] for t in event["Tag"])
    assert "tlp:red" in tags
    assert not [t for t in tags if t.startswith("tlp:") and t != "tlp:red"]
    assert not [t for t in tags if "status" in t]
    assert event["info"].startswith("Hostile reconnaissance: ")
    assert _HOSTILE not in event["info"]
    # Read back, the MISP event is the same record, text and all, still RED.
    ((_, data, error),) = records_from_misp(json.dumps({"Event": event}))
    assert error is None, error
    assert data is not None
    back = misp_record(data, "sighting")
    assert back.description == _HOSTILE
    assert back.grading.tlp.value == "RED"


def test_misp_export_of_a_record_whose_handling_code_was_redacted_stays_in_the_organisation() -> (
    None
):
    """A policy that redacts the handling code leaves an export that cannot tell P from C; the
    store's gate treats it as restricted, and MISP must not share it community-wide. Was:
    distribution 1 (this community) for a GREEN record."""
    model = _insider_sighting(tlp="GREEN")
    body = model.model_dump(mode="json")
    body["grading"]["handling_code"] = REDACTED
    view = replace(_view(model, 1), payload=body, redacted_fields=("grading.handling_code",))
    assert restriction(view) is not None
    assert int(misp_event(view)["Event"]["distribution"]) == 0
    genuine = _view(_insider_sighting(tlp="GREEN"), 2)
    assert int(misp_event(genuine)["Event"]["distribution"]) == 1


def test_stix_export_keeps_the_second_lock_on_redacted_fields(filled: Filled) -> None:
    """Should a stored payload (current or an earlier version) ever hold a value at a path the
    store lists as redacted, the STIX export (and so TAXII) leaves it out, as the MISP and
    subject exports do. Was: only a ``[REDACTED]`` placeholder in the payload was left out."""
    model = _insider_sighting(tlp="GREEN")
    person = "Mr A. N. Other of 12 Acacia Avenue"
    body = model.model_dump(mode="json")
    body["description"] = person
    view = replace(_view(model, 1), payload=body, redacted_fields=("description",))
    text = json.dumps([e.obj for e in record_entries(view)])
    assert person not in text
    assert '"redacted_fields": ["description"]' in text
    assert person not in json.dumps(misp_event(view))
    # Genuine: without a listed redaction the description is exported.
    assert person in json.dumps([e.obj for e in record_entries(_view(model, 1, payload=body))])


# --- Importers: publish --format stix. ---------------------------------------------------------------


def _bundle(*models: Sighting) -> dict[str, Any]:
    return stix_bundle([_view(m, i) for i, m in enumerate(models)], exported_at=datetime.now(UTC))


def _two_behaviour_sighting(tlp: str = "GREEN") -> Sighting:
    data = feed(seed=72, sightings=1, incidents=0)[0].model_dump(mode="json")
    data["behaviours"] = ["FILMING", "LOITERING"]
    data["grading"].update(tlp=tlp, handling_code="P", handling_conditions=[])
    data["persons"], data["vehicles"] = [], []
    return Sighting.model_validate(data)


def _stix_results(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    return list(records_from_stix(json.dumps(bundle), "sighting"))


@pytest.mark.parametrize(
    "edit",
    [
        "ext_tlp_red",
        "grading_c",
        "classification_secret",
        "description",
        "marking_red_on_one",
    ],
)
def test_stix_sightings_of_one_record_that_disagree_are_refused(edit: str) -> None:
    """A record is one sighting per behaviour; only the first was read for the grading and text.
    A second saying TLP:RED in the extension, handling code C, SECRET, or another description was
    dropped silently: the record published as the first said. Refused now."""
    bundle = _bundle(_two_behaviour_sighting())
    sightings = [o for o in bundle["objects"] if o["type"] == "sighting"]
    assert len(sightings) == 2
    second = sightings[1]
    ext = next(iter(second["extensions"].values()))
    if edit == "ext_tlp_red":
        ext["tlp"] = "RED"
    elif edit == "grading_c":
        ext["grading"]["handling_code"] = "C"
    elif edit == "classification_secret":
        ext["classification"] = "SECRET"
    elif edit == "description":
        second["description"] = "Something else entirely."
    else:
        second["object_marking_refs"] = [TLP2_MARKINGS["RED"][0]]
    ((_, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    assert "disagree" in error or "different TLP" in error
    # Genuine: the bundle as exported is one record, published whole.
    ((_, data, error),) = _stix_results(_bundle(_two_behaviour_sighting()))
    assert error is None
    assert data is not None
    assert data["behaviours"] == ["FILMING", "LOITERING"]


def test_stix_a_revoked_object_cannot_be_unrevoked_by_a_later_version() -> None:
    bundle = _bundle(_two_behaviour_sighting())
    live = [o for o in bundle["objects"] if o["type"] == "sighting"]
    revoked = [{**copy.deepcopy(o), "revoked": True} for o in live]
    later = [{**copy.deepcopy(o), "modified": "2099-01-01T00:00:00.000Z"} for o in live]
    bundle["objects"] += revoked + later
    ((_, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    assert "revoked" in error


def test_stix_two_producers_records_with_one_record_id_are_not_merged() -> None:
    """A CST store's export holds records of many producers: two with the same record id must
    stay two records (each published or refused on its own), not one with the other's fields."""
    a, b = _two_behaviour_sighting("GREEN"), _two_behaviour_sighting("AMBER")
    va = _view(a, 1)
    vb = replace(_view(b, 2), producer_id="met-police", record_id=va.record_id)
    bundle = stix_bundle([va, vb], exported_at=datetime.now(UTC))
    results = _stix_results(bundle)
    assert len(results) == 2
    assert {r[1]["grading"]["tlp"] for r in results if r[1] is not None} == {"GREEN", "AMBER"}
    # Provenance is never taken from the file: the record has no producer field to claim.
    assert all("producer_id" not in r[1] for r in results if r[1] is not None)


def test_stix_and_misp_copies_holding_the_redaction_placeholder_are_refused() -> None:
    """A store's JSON Lines export keeps ``[REDACTED]`` where its policy withheld a value; a file
    made from it (STIX, MISP, JSON) published again would pass the placeholder off as said.
    ``publish`` refuses such an item, naming the fields."""
    model = _two_behaviour_sighting()
    bundle = _bundle(model)
    for o in bundle["objects"]:
        if o["type"] == "sighting":
            o["description"] = REDACTED
    ((_, data, error),) = _stix_results(bundle)
    assert error is None
    assert data is not None
    assert redaction_placeholders(data) == ["description"]
    jsonl = json.dumps({**model.model_dump(mode="json"), "reporter_ref": REDACTED})
    ((item),) = list(read_items(jsonl, "jsonl"))
    assert item.data is not None
    assert redaction_placeholders(item.data) == ["reporter_ref"]
    nested = {"persons": [{"summary": "x", "clothing": REDACTED}]}
    assert redaction_placeholders(nested) == ["persons.clothing"]
    assert redaction_placeholders(model.model_dump(mode="json")) == []  # genuine: nothing


@pytest.mark.parametrize("fmt", ["stix", "misp", "json", "jsonl"])
def test_deeply_nested_input_is_one_line_not_a_traceback(fmt: str) -> None:
    text = "[" * 200_000 + "]" * 200_000
    (item,) = list(read_items(text, fmt, "sighting"))
    assert item.data is None
    assert item.error is not None
    assert "nested too deeply" in item.error
    assert "\n" not in item.error
    assert TOO_DEEP == "nested too deeply to be a record"


# --- Importers: publish --format misp. ---------------------------------------------------------------


def _misp(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    ((_, data, error),) = records_from_misp(json.dumps({"Event": doc}))
    return data, error


def _genuine_misp_still_flows() -> None:
    data, error = _misp(_analyst_event())
    assert error is None
    assert data is not None
    assert misp_record(data, "sighting").grading.tlp.value == "GREEN"


@pytest.mark.parametrize("extra", ["tlp:ex:chr", "tlp:amber-strict", "tlp:unclear"])
def test_misp_an_unknown_tlp_tag_beside_a_known_one_is_refused(extra: str) -> None:
    doc = _analyst_event()
    doc["Tag"].append({"name": extra})
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "not TLP 2.0" in error
    _genuine_misp_still_flows()


@pytest.mark.parametrize("distribution", [0, 4, "0"])
def test_misp_an_event_kept_in_the_organisation_is_not_published_as_green(
    distribution: int | str,
) -> None:
    doc = _analyst_event()
    doc["distribution"] = distribution
    if distribution == 4:
        doc["sharing_group_id"] = "1"
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "distribution" in error
    _genuine_misp_still_flows()
    # Consistent sharing is fine: GREEN to the community, AMBER kept in the organisation.
    doc = _analyst_event()
    doc["distribution"] = 1
    assert _misp(doc)[1] is None
    doc = _analyst_event()
    doc["distribution"] = 0
    doc["Tag"] = [t for t in doc["Tag"] if t["name"] != "tlp:green"] + [{"name": "tlp:amber"}]
    assert _misp(doc)[1] is None


@pytest.mark.parametrize("where", ["object", "event"])
def test_misp_an_attribute_tagged_red_in_a_green_event_is_refused(where: str) -> None:
    doc = _analyst_event()
    if where == "object":
        note = next(o for o in doc["Object"] if o["name"] == "annotation")
        note["Attribute"][0]["Tag"] = [{"name": "tlp:red"}]
    else:
        doc.setdefault("Attribute", []).append(
            {"type": "text", "category": "Other", "value": "Said in confidence.",
             "Tag": [{"name": "tlp:red"}]}
        )  # fmt: skip
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "tlp:red" in error
    _genuine_misp_still_flows()


def test_misp_an_attribute_kept_in_the_organisation_in_a_green_event_is_refused() -> None:
    doc = _analyst_event()
    note = next(o for o in doc["Object"] if o["name"] == "annotation")
    note["Attribute"][0]["distribution"] = "0"
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "distribution 0" in error
    _genuine_misp_still_flows()


def _exported(view: StoredRecordView) -> dict[str, Any]:
    event: dict[str, Any] = misp_event(view)["Event"]
    return event


def test_misp_a_retracted_or_redacted_export_with_its_status_tag_taken_off_is_refused() -> None:
    model = _two_behaviour_sighting()
    retracted = _exported(_view(model, 1, status="retracted"))
    retracted["Tag"] = [t for t in retracted["Tag"] if "status" not in t["name"]]
    data, error = _misp(retracted)
    assert data is None
    assert error is not None
    assert "retracted" in error

    body = _insider_sighting(tlp="GREEN").model_dump(mode="json")
    body["description"] = REDACTED
    view = replace(_view(model, 2), payload=body, redacted_fields=("description",))
    redacted = _exported(view)
    redacted["Tag"] = [t for t in redacted["Tag"] if "status" not in t["name"]]
    data, error = _misp(redacted)
    assert data is None
    assert error is not None
    assert "redacted" in error

    body = model.model_dump(mode="json")
    body["vehicles"] = [{"registration": REDACTED, "make": None, "model": None, "colour": None}]
    view = replace(_view(model, 3), payload=body, redacted_fields=("vehicles.registration",))
    withheld = _exported(view)
    withheld["Tag"] = [t for t in withheld["Tag"] if "status" not in t["name"]]
    for o in withheld["Object"]:
        if o["name"] == "internal-reference":
            o["comment"] = ""
    data, error = _misp(withheld)
    assert data is None
    assert error is not None
    assert "withheld" in error
    # Genuine: the same record exported whole is published.
    data, error = _misp(_exported(_view(model, 4)))
    assert error is None
    assert data is not None


# --- TAXII over HTTP, in process (loopback, as a local user reaches it). -----------------------------


def test_taxii_http_methods_echoes_and_logs_give_nothing_away(
    tmp_path: Path, filled: Filled, capfd: pytest.CaptureFixture[str]
) -> None:
    """OPTIONS, HEAD and TRACE without credentials, a cert-only user's name with Basic, a
    duplicated ``limit``, and hostile text in the path and query: each a TAXII JSON error, no
    object, no access-log entry; the server's log lines hold neither the password nor the query.
    The genuine client still reads afterwards."""
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret-pw", None), ("fib", None, None))
    server = TaxiiHttpServer(("127.0.0.1", 0), _service(filled.path), Authenticator(path), None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = server.server_address[1]

    def ask(method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, target, headers=headers)
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("Content-Type") or ""
        finally:
            conn.close()

    good = {"Accept": TAXII_MEDIA_TYPE, "Authorization": _basic("opencti", "s3cret-pw")}
    hostile = '"}<script>alert(1)</script>{"x":"'
    try:
        before = len(_log(filled.path))
        for method in ("OPTIONS", "HEAD", "TRACE", "PUT"):
            status, body, kind = ask(method, _objects(SIGHTINGS), {"Accept": TAXII_MEDIA_TYPE})
            assert status in (401, 405, 501), method
            assert b"objects" not in body
            assert kind == TAXII_MEDIA_TYPE
        status, _, _ = ask("GET", _objects(SIGHTINGS), {**good, "Authorization": _basic("fib", "")})
        assert status == 401
        status, body, _ = ask("GET", _objects(SIGHTINGS) + "?limit=1&limit=1000", good)
        assert status == 400
        assert json.loads(body)["http_status"] == "400"
        quoted = urllib.parse.quote(hostile)
        for target in (
            _objects(SIGHTINGS, f"{quoted}/"),
            _objects(SIGHTINGS) + f"?added_after={quoted}",
            _objects(SIGHTINGS) + f"?match[id]={quoted}",
        ):
            status, body, kind = ask("GET", target, good)
            parsed = json.loads(body)  # whatever is quoted back stays inside JSON strings
            assert "objects" not in parsed or parsed["objects"] == []
            assert kind == TAXII_MEDIA_TYPE
            assert b"<script>" not in body or status == 400
        # An escape sequence in the request line (ESC is not whitespace to http.server): it must
        # not reach the operator's terminal through the request log. Was: logged raw.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET /api/\x1b[2J\x1b]0;pwned\x07/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.makefile("rb").readline().startswith(b"HTTP/1.1 401")
        assert len(_log(filled.path)) == before
        status, body, _ = ask("GET", _objects(SIGHTINGS) + "?match[id]=x,y", good)
        assert status == 200
        status, body, _ = ask("GET", _objects(SIGHTINGS) + "?limit=40", good)
        assert status == 200
        assert any(o["type"] == "sighting" for o in json.loads(body)["objects"])
        assert len(_log(filled.path)) == before + 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    out = capfd.readouterr()
    logs = out.out + out.err
    assert "s3cret-pw" not in logs
    assert "Traceback" not in logs
    assert "limit=40" not in logs
    assert "<script>" not in logs
    assert "\x1b" not in logs
    assert "\x07" not in logs


_NOT_LOOPBACK = ("::", "127.1", "0x7f000001", "localhost.", "127.0.0.1 ", "[::]", "10.0.0.1")


@pytest.mark.parametrize("host", [*_NOT_LOOPBACK, "0.0.0.0"])  # noqa: S104 - refused here
def test_taxii_serve_refuses_anything_not_plainly_loopback_without_tls(host: str) -> None:
    """``is_loopback`` fails closed: spellings that some resolvers read as loopback (``127.1``,
    ``localhost.``) are refused too, and the wildcard addresses obviously."""
    assert not is_loopback(host)
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")


# --- A local user and the MISP feed folder. ----------------------------------------------------------


def test_misp_feed_into_a_folder_a_local_user_can_change_is_refused(
    tmp_path: Path, filled: Filled
) -> None:
    """MISP pulls what the feed folder's manifest.json and event files say. A folder others may
    write (a shared /srv/feeds, /tmp), or a symbolic link a local user planted at the path, would
    let them swap in events MISP takes for the force's. Was: written into without a look."""
    with _opened(filled.path) as store:
        views = [v for v in store.iter_records() if v.visible]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InsecureFileError) as e:
        write_misp_feed(views, shared)
    assert "group or others" in str(e.value)
    assert list(shared.iterdir()) == []  # nothing written
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    planted = tmp_path / "feed"
    planted.symlink_to(theirs)
    with pytest.raises(InsecureFileError):
        write_misp_feed(views, planted)
    assert list(theirs.iterdir()) == []
    # Genuine: a private folder gets the feed.
    mine = tmp_path / "mine"
    assert write_misp_feed(views, mine) == len(views)
    assert (mine / "manifest.json").exists()


@pytest.mark.parametrize(
    "refs",
    [
        ["GREEN", "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"],  # TLP 1.0 RED
        ["GREEN", "marking-definition--00000000-0000-4000-8000-000000000001"],  # a statement
        ["GREEN", "granular"],
    ],
)
def test_stix_a_second_marking_beside_tlp_green_is_refused_not_dropped(refs: list[str]) -> None:
    """A TLP 1.0 RED marking, a statement marking, or a granular marking on the description beside
    TLP 2.0 GREEN: only the TLP 2.0 marking was read, so the record went out GREEN. Was: accepted."""
    bundle = _bundle(_two_behaviour_sighting())
    for o in bundle["objects"]:
        if o["type"] != "sighting":
            continue
        o["object_marking_refs"] = [TLP2_MARKINGS["GREEN"][0]] + [
            r for r in refs[1:] if r != "granular"
        ]
        if "granular" in refs:
            o["granular_markings"] = [
                {"marking_ref": TLP2_MARKINGS["RED"][0], "selectors": ["description"]}
            ]
    ((_, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    assert "not one TLP 2.0 marking" in error
    ((_, data, error),) = _stix_results(_bundle(_two_behaviour_sighting()))
    assert error is None


@pytest.mark.parametrize("tag", ['tlp:red="true"', "TLP : red", "tlp: amber+strict"])
def test_misp_a_tlp_tag_in_another_spelling_is_refused_not_ignored(tag: str) -> None:
    """A tlp tag that is not read as TLP was ignored, and the event published with its other,
    weaker tlp tag. Was: accepted as GREEN."""
    doc = _analyst_event()
    doc["Tag"].append({"name": tag})
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "not TLP 2.0" in error
    _genuine_misp_still_flows()


def test_taxii_records_of_a_withdrawn_key_are_gone_while_the_server_runs(filled: Filled) -> None:
    """A producer's key leaked: the force withdraws what it signed since it was compromised. The
    running server must stop serving those records (every version) at the next request."""
    service = _service(filled.path)
    first = service.get(_objects(SIGHTINGS), {"match[version]": ["all"]}, DPO)
    own = {o["id"] for o in first.body["objects"] if o["type"] == "sighting"}
    assert own
    with _opened(filled.path) as store:
        done = store.withdraw(KEY.hex(), T0)
        assert done.records > 0
    for params in ({"match[version]": ["all"]}, {}):
        again = service.get(_objects(SIGHTINGS), params, DPO)
        assert not own & {o["id"] for o in again.body["objects"]}
    for oid in own:
        assert service.get(_objects(SIGHTINGS, f"{oid}/versions/"), {}, DPO).status == 404


def test_taxii_a_users_file_another_local_user_owns_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local user who can write the users file's folder (not the file) puts their own 0600 file
    there, naming themselves a user with a standing justification. A server running as another
    user cannot read it anyway; one running as root could, and did. Refused now. (The server is
    made to run as another uid than the file's owner: chown needs root.)"""
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "s3cret"), None).user == "opencti"
    planted = users_file(tmp_path / "planted.json", ("mallory", "m", "standing: all of it"))
    planted.replace(path)
    owner = path.stat().st_uid
    monkeypatch.setattr(files.os, "geteuid", lambda: owner + 1)
    with pytest.raises(InsecureFileError) as e:
        auth.authenticate(_basic("mallory", "m"), None)
    assert "another user" in str(e.value)
    with pytest.raises(InsecureFileError):
        Authenticator(path)  # nor at start
    monkeypatch.setattr(files.os, "geteuid", lambda: owner)
    assert auth.authenticate(_basic("mallory", "m"), None).user == "mallory"  # its owner's: read


def test_publish_output_cannot_be_forged_by_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    """Where an item came from and why it was refused can quote the file (a STIX object id, a
    MISP tag): a newline, an escape sequence or rich markup there printed a forged line, e.g.
    that a refused record was published. Was: printed as given, markup read."""
    bundle = _bundle(_two_behaviour_sighting())
    forged = "sighting--x\nline 9: published 0000 to intelbus.sightings [0:1] seq 1\x1b[2K"
    for o in bundle["objects"]:
        if o["type"] == "sighting":
            o["id"] = forged + "[/bold][red]"
            o["object_marking_refs"] = []
    ((where, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    publish_cmd._print({"item": where, "status": "not published", "error": error}, False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line per item
    assert "\x1b" not in out
    assert "[/bold][red]" in out  # shown as text, not read as markup
    assert "not published" in out
    publish_cmd._print(
        {"item": "line 2", "status": "published", "record_id": "r", "topic": "t",
         "partition": 0, "offset": 5, "sequence": 3},
        False,
    )  # fmt: skip
    assert capsys.readouterr().out == "line 2: published r to t [0:5] seq 3\n"


def test_taxii_a_chunked_body_is_not_read_as_a_second_request(
    tmp_path: Path, filled: Filled
) -> None:
    """A GET with ``Transfer-Encoding: chunked`` whose body is another request: the server reads
    no body, so on a kept-alive connection the body would be answered as a request of its own
    (request smuggling past a proxy in front). Was: two answers; now the connection closes."""
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    server = TaxiiHttpServer(("127.0.0.1", 0), _service(filled.path), Authenticator(path), None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        inner = (
            f"GET {_objects(SIGHTINGS)} HTTP/1.1\r\nHost: x\r\nAccept: {TAXII_MEDIA_TYPE}\r\n"
            f"Authorization: {_basic('opencti', 's3cret')}\r\n\r\n"
        ).encode()
        chunk = f"{len(inner):x}\r\n".encode() + inner + b"\r\n0\r\n\r\n"
        outer = (
            f"GET /taxii2/ HTTP/1.1\r\nHost: x\r\nAccept: {TAXII_MEDIA_TYPE}\r\n"
            f"Authorization: {_basic('opencti', 's3cret')}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as raw:
            raw.sendall(outer + chunk)
            reply = raw.makefile("rb").read()
        assert reply.count(b"HTTP/1.1 ") == 1
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("edit", ["red_location", "second_point"])
def test_stix_a_location_marked_or_placed_otherwise_than_its_record_is_refused(edit: str) -> None:
    """The coordinates travel in a point location of their own: marked TLP:RED under a GREEN
    sighting, they were published GREEN; two point locations, the first won. Was: accepted."""
    bundle = _bundle(_two_behaviour_sighting())
    point = next(o for o in bundle["objects"] if o["type"] == "location" and "latitude" in o)
    if edit == "red_location":
        point["object_marking_refs"] = [TLP2_MARKINGS["RED"][0]]
    else:
        other = {**copy.deepcopy(point), "id": "location--00000000-0000-4000-8000-00000000000f"}
        other["latitude"] = point["latitude"] + 1
        bundle["objects"].append(other)
        for o in bundle["objects"]:
            if o["type"] == "sighting":
                o["where_sighted_refs"] = [*o["where_sighted_refs"], other["id"]]
    ((_, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    assert "location" in error
    ((_, data, error),) = _stix_results(_bundle(_two_behaviour_sighting()))
    assert error is None
    assert data is not None
    assert "latitude" in data["place"]


def test_misp_two_places_for_one_record_are_refused_not_read_as_the_first() -> None:
    doc = _analyst_event()
    geo = next(o for o in doc["Object"] if o["name"] == "geolocation")
    other = copy.deepcopy(geo)
    other["uuid"] = "00000000-0000-4000-8000-0000000000ee"
    for a in other["Attribute"]:
        a["uuid"] = None
        if a["object_relation"] == "first-seen":
            a["value"] = "2026-10-04T09:00:00+01:00"
    doc["Object"].append(other)
    data, error = _misp(doc)
    assert data is None
    assert error is not None
    assert "geolocation" in error
    _genuine_misp_still_flows()


def test_taxii_a_server_key_others_may_read_is_refused(tmp_path: Path) -> None:
    """The TAXII server's TLS key readable by group or others: a local user copies it and poses
    as the server (to OpenCTI's connector, with the Basic password it sends). The bus refuses its
    own TLS key files so; the TAXII server did not. Was: loaded."""
    ca = CertificateAuthority.create(tmp_path / "tls")
    cert = ca.issue_server("taxii")
    tls = TlsFiles(Path(cert.cert_file), Path(cert.key_file), Path(ca.ca_file))
    Path(cert.key_file).chmod(0o644)
    with pytest.raises(InsecureFileError) as e:
        server_context(tls)
    assert "group or others" in str(e.value)
    Path(cert.key_file).chmod(0o600)
    assert server_context(tls) is not None


# --- publish, end to end on the real broker. ---------------------------------------------------------


@pytest.mark.kafka
def test_publish_refuses_placeholders_and_deep_nesting_and_still_publishes_the_rest(
    tmp_path: Path, bootstrap: str
) -> None:
    """``intelbus publish`` of a file holding a redacted copy (``[REDACTED]`` where a store's
    policy withheld a value), an item nested too deeply for the models (was: a RecursionError
    traceback that stopped the run), and a genuine record: the two are refused with one line each,
    the genuine one is published and stored by the consumer, and nothing else."""
    fed = Federation(tmp_path, bootstrap, "sqlite")
    genuine = sighting_for("METROPOLITAN", "GREEN")
    copy_of = sighting_for("METROPOLITAN", "GREEN").model_dump(mode="json")
    copy_of["description"] = REDACTED
    deep = sighting_for("METROPOLITAN", "GREEN").model_dump(mode="json")
    nested: Any = "x"
    for _ in range(700):  # json reads it; a deep copy of it (normalise) overflows the stack
        nested = [nested]
    deep["description"] = nested
    lines = [json.dumps(copy_of), json.dumps(deep), genuine.model_dump_json()]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner(env={"INTELBUS_USER": "analyst.test"}).invoke(
        app,
        ["publish", "sighting", str(path), "--config", str(tmp_path / "producer.toml"), "--json"],
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["status"] == "not published"
    assert "[REDACTED]" in out[0]["error"]
    assert "description" in out[0]["error"]
    assert out[1]["status"] == "not published"
    assert out[1]["error"] == TOO_DEEP
    assert out[2]["status"] == "published"
    assert out[-1] == {"summary": {"published": 1, "already": 0, "failed": 2}}
    stats = fed.consume("met-police")
    assert stats.stored == 1


def test_stix_an_attack_pattern_marked_red_under_a_green_sighting_is_refused() -> None:
    """The behaviour travels as the sighted attack-pattern: marked TLP:RED (or granularly) under a
    GREEN sighting, it was read into a GREEN record. Was: accepted."""
    bundle = _bundle(_two_behaviour_sighting())
    pattern = next(o for o in bundle["objects"] if o["type"] == "attack-pattern")
    pattern["object_marking_refs"] = [TLP2_MARKINGS["RED"][0]]
    ((_, data, error),) = _stix_results(bundle)
    assert data is None
    assert error is not None
    assert "attack-pattern" in error
    ((_, data, error),) = _stix_results(_bundle(_two_behaviour_sighting()))
    assert error is None

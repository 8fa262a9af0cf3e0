"""``intelbus taxii serve`` as a real process, read with the OASIS ``taxii2-client``.

One server (HTTPS, the bus CA's certificates) over a store filled as a consumer would fill it;
clients come with a password (HTTP Basic) or a client certificate. Checked: discovery, the
collections, paging through more objects than one page, ``added_after``, refusals (no
credentials, a wrong password, a certificate of no user, a certificate of another CA), a
correction committed while the server runs appearing as a new version, restricted records only
for a user with a standing justification, and the access log naming each user.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from deploy.tls.certs import CertificateAuthority, IssuedCert
from intelbus.cli.store_access import restriction
from intelbus.interop.stix import record_entries
from intelbus.interop.taxii import COLLECTIONS, TAXII_MEDIA_TYPE, parse_timestamp
from intelbus.store import open_store
from intelbus.store.access import AccessLog
from tests.taxii_store import T0, Filled, correct, fill, force_config, users_file

PAGE = 5
SIGHTINGS_ID = COLLECTIONS[0].id
INCIDENTS_ID = COLLECTIONS[1].id
JUSTIFICATION = "standing: force intelligence bureau review"
#: The Basic users' secrets (a user name to what it types).
SECRETS = {"opencti": "correct horse", "dpo": "battery staple"}
TIMEOUT = 30


def _as(user: str, secret: str | None = None) -> dict[str, str]:
    """taxii2-client keyword arguments for a Basic user (its own secret unless another is given)."""
    return {"user": user, "password": SECRETS[user] if secret is None else secret}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    url: str
    ca: Path
    filled: Filled
    cst: IssuedCert  # a user's client certificate
    nobody: IssuedCert  # the bus CA's, but of no user
    foreign: IssuedCert  # another CA's
    server_only: IssuedCert  # the bus CA's, for serving TLS only, CN of a certificate user
    process: subprocess.Popen[bytes]

    def server(self, **kw: Any) -> Server:
        return Server(self.url + "taxii2/", verify=str(self.ca), **kw)

    def collection(self, cid: str, **kw: Any) -> Collection:
        return Collection(f"{self.url}api/collections/{cid}/", verify=str(self.ca), **kw)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("taxii")
    filled = fill(folder / "herts.sqlite", sightings=24, incidents=6)
    ca = CertificateAuthority.create(folder / "tls")
    server_cert = ca.issue_server("taxii")
    cst, nobody = ca.issue_agency("cst"), ca.issue_agency("nobody")
    foreign = CertificateAuthority.create(folder / "foreign").issue_agency("cst")
    server_only = ca.issue_server("cst")
    users_file(
        folder / "users.json",
        ("opencti", SECRETS["opencti"], None),
        ("dpo", SECRETS["dpo"], JUSTIFICATION),
        ("cst", None, None),
    )
    port = _free_port()
    config = force_config(
        folder,
        filled.path,
        f"""port = {port}
users_file = "users.json"
cert_file = "{server_cert.cert_file}"
key_file = "{server_cert.key_file}"
ca_file = "{ca.ca_file}"
page_size = 1000""",
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "intelbus.cli", "taxii", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    assert process.stderr is not None
                    raise AssertionError(process.stderr.read().decode()[-2000:]) from None
                time.sleep(0.1)
        yield Deployment(
            f"https://127.0.0.1:{port}/",
            ca.ca_file,
            filled,
            cst,
            nobody,
            foreign,
            server_only,
            process,
        )
    finally:
        process.terminate()
        process.wait(10)
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        # Never a traceback, never a record's content in the server's output.
        assert "Traceback" not in stderr
        for record in filled.records:
            assert record.decision.payload is not None
            assert str(record.decision.payload["description"]) not in stderr


@pytest.fixture(autouse=True)
def _trust_our_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's ``verify`` (the
    client's ``verify=CA``): clear them so the bus CA is what the clients trust."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _expected_ids(filled: Filled, kind: str, *, justified: bool) -> set[str]:
    """The object ids the store's visible records of ``kind`` export to, for a user."""
    store = open_store(str(filled.path))
    try:
        return {
            e.id
            for v in store.iter_records()
            if v.kind == kind and v.visible and (justified or restriction(v) is None)
            for e in record_entries(v)
        }
    finally:
        store.close()


def _all_objects(collection: Collection, per_request: int, **kw: Any) -> list[list[dict[str, Any]]]:
    return [env.get("objects", []) for env in as_pages(collection.get_objects, per_request, **kw)]


def test_discovery_api_root_and_collections(deployment: Deployment) -> None:
    server = deployment.server(**_as("opencti"))
    assert server.title == "intelbus TAXII: herts-police"
    (root,) = server.api_roots
    assert isinstance(root, ApiRoot)
    assert root.url == deployment.url + "api/"
    assert server.default is not None
    assert server.default.url == root.url
    assert root.versions == [TAXII_MEDIA_TYPE]
    by_id = {c.id: c for c in root.collections}
    assert set(by_id) == {SIGHTINGS_ID, INCIDENTS_ID}
    for c in by_id.values():
        assert (c.can_read, c.can_write) == (True, False)
        assert c.media_types == ["application/stix+json;version=2.1"]
    assert by_id[SIGHTINGS_ID].title == "Sightings"


def test_paging_through_more_objects_than_one_page(deployment: Deployment) -> None:
    """Pages of 5 hold every object once, in date_added order; the withheld record and the
    restricted ones (for a user without a justification) are not among them."""
    sightings = deployment.collection(SIGHTINGS_ID, **_as("opencti"))
    pages = _all_objects(sightings, PAGE)
    assert len(pages) >= 3
    assert all(len(p) == PAGE for p in pages[:-1])
    ids = [o["id"] for p in pages for o in p]
    assert len(ids) == len(set(ids))  # match[version]=last: one version per object
    expected = _expected_ids(deployment.filled, "sighting", justified=False)
    assert set(ids) == expected
    assert expected < _expected_ids(deployment.filled, "sighting", justified=True)
    manifest = sightings.get_manifest(limit=1000)
    added = [parse_timestamp(m["date_added"], "date_added") for m in manifest["objects"]]
    assert added == sorted(added)
    assert [m["id"] for m in manifest["objects"]] == ids
    # The user with a standing justification sees the restricted records too.
    dpo = deployment.collection(SIGHTINGS_ID, **_as("dpo"))
    dpo_ids = {o["id"] for p in _all_objects(dpo, PAGE) for o in p}
    assert dpo_ids == _expected_ids(deployment.filled, "sighting", justified=True)


def test_added_after_returns_only_later_objects(deployment: Deployment) -> None:
    incidents = deployment.collection(
        INCIDENTS_ID, cert=(deployment.cst.cert_file, deployment.cst.key_file)
    )
    manifest = incidents.get_manifest()["objects"]
    assert len(manifest) >= 3
    middle = manifest[len(manifest) // 2]["date_added"]
    later = incidents.get_objects(added_after=middle)["objects"]
    want = [m["id"] for m in manifest if m["date_added"] > middle]
    assert [o["id"] for o in later] == want
    assert 0 < len(want) < len(manifest)


def test_clients_without_or_with_wrong_credentials_are_refused(deployment: Deployment) -> None:
    with pytest.raises(requests.HTTPError) as none:
        _ = deployment.server().title
    assert none.value.response.status_code == 401
    assert none.value.response.headers["WWW-Authenticate"].startswith("Basic ")
    assert none.value.response.headers["Content-Type"] == TAXII_MEDIA_TYPE
    assert none.value.response.json()["http_status"] == "401"
    with pytest.raises(requests.HTTPError) as wrong:
        _ = deployment.server(**_as("opencti", SECRETS["dpo"])).title
    assert wrong.value.response.status_code == 401
    with pytest.raises(requests.HTTPError) as unknown:
        _ = deployment.server(user="mallory", password=SECRETS["opencti"]).title
    assert unknown.value.response.status_code == 401
    # A certificate-only user has no password to guess.
    certonly = requests.get(
        timeout=TIMEOUT,
        url=deployment.url + "taxii2/",
        auth=("cst", ""),
        verify=str(deployment.ca),
        headers={"Accept": TAXII_MEDIA_TYPE},
    )
    assert certonly.status_code == 401


def test_mutual_tls_with_the_bus_ca_only(deployment: Deployment) -> None:
    cst = deployment.server(cert=(str(deployment.cst.cert_file), str(deployment.cst.key_file)))
    assert cst.title == "intelbus TAXII: herts-police"
    with pytest.raises(requests.HTTPError) as nobody:
        _ = deployment.server(
            cert=(str(deployment.nobody.cert_file), str(deployment.nobody.key_file))
        ).title
    assert nobody.value.response.status_code == 403
    with pytest.raises(requests.exceptions.SSLError):
        _ = deployment.server(
            cert=(str(deployment.foreign.cert_file), str(deployment.foreign.key_file))
        ).title
    # A server certificate of the bus CA (serverAuth only: `deploy certs --server`) is no client
    # certificate, even with a user's name as its CN: the handshake refuses it.
    only = deployment.server_only
    with pytest.raises(requests.exceptions.SSLError):
        _ = deployment.server(cert=(str(only.cert_file), str(only.key_file))).title


def test_media_types_methods_and_parameters(deployment: Deployment) -> None:
    auth = ("opencti", SECRETS["opencti"])
    objects = f"{deployment.url}api/collections/{SIGHTINGS_ID}/objects/"
    ca = str(deployment.ca)
    wrong = requests.get(
        timeout=TIMEOUT, url=objects, auth=auth, verify=ca, headers={"Accept": "application/json"}
    )
    assert wrong.status_code == 406
    post = requests.post(
        timeout=TIMEOUT,
        url=objects,
        auth=auth,
        verify=ca,
        headers={"Accept": TAXII_MEDIA_TYPE},
        json={"objects": []},
    )
    assert post.status_code == 405
    assert post.headers["Allow"] == "GET"
    headers = {"Accept": TAXII_MEDIA_TYPE}
    for query in ("limit=0", "added_after=yesterday", "next=garbage", "match[version]=newest"):
        bad = requests.get(
            timeout=TIMEOUT, url=f"{objects}?{query}", auth=auth, verify=ca, headers=headers
        )
        assert bad.status_code == 400, query
        assert bad.json()["http_status"] == "400"
    missing = requests.get(
        timeout=TIMEOUT,
        url=f"{deployment.url}api/collections/00000000-0000-4000-8000-000000000000/",
        auth=auth,
        verify=ca,
        headers=headers,
    )
    assert missing.status_code == 404
    page = requests.get(
        timeout=TIMEOUT, url=f"{objects}?limit=3", auth=auth, verify=ca, headers=headers
    )
    assert page.status_code == 200
    assert page.headers["Content-Type"] == TAXII_MEDIA_TYPE
    body = page.json()
    assert body["more"] is True
    first = parse_timestamp(page.headers["X-TAXII-Date-Added-First"], "first")
    last = parse_timestamp(page.headers["X-TAXII-Date-Added-Last"], "last")
    assert first <= last


def test_a_correction_appears_as_a_new_version(deployment: Deployment) -> None:
    """Committed while the server runs: the versions endpoint lists two, the object endpoint
    gives the later one, and added_after the last date seen returns just that version."""
    sightings = deployment.collection(SIGHTINGS_ID, **_as("opencti"))
    open_ids = _expected_ids(deployment.filled, "sighting", justified=False)
    target = next(
        r
        for r in deployment.filled.of_kind("sighting")
        if r.record_id != deployment.filled.retracted_id
        and any(
            e.id in open_ids and e.id.startswith("sighting--")
            for e in _entries_of(deployment.filled, r.record_id)
        )
    )
    oid = next(
        e.id
        for e in _entries_of(deployment.filled, target.record_id)
        if e.id.startswith("sighting--")
    )
    assert sightings.object_versions(oid)["versions"] == [
        sightings.get_object(oid)["objects"][0]["modified"]
    ]
    seen = sightings.get_manifest(limit=1000)["objects"]
    last_added = max(m["date_added"] for m in seen)
    correct(
        deployment.filled.path,
        target,
        description="Corrected: seen at the side gate only.",
        n=950,
        at=T0 + timedelta(days=2),
    )
    versions = sightings.object_versions(oid)["versions"]
    assert len(versions) == 2
    assert versions == sorted(versions)
    (latest,) = sightings.get_object(oid)["objects"]
    assert latest["modified"] == versions[1]
    every = sightings.get_object(oid, version="all")["objects"]
    assert [o["modified"] for o in every] == versions
    # Polling from where the client stopped brings the correction, and only this record's objects.
    news = sightings.get_objects(added_after=last_added)["objects"]
    assert (oid, versions[1]) in [(o["id"], o["modified"]) for o in news]
    assert {o["id"] for o in news} <= {
        e.id for e in _entries_of(deployment.filled, target.record_id)
    }
    assert "Corrected: seen at the side gate only." in json.dumps(news)


def _entries_of(filled: Filled, record_id: str) -> list[Any]:
    store = open_store(str(filled.path))
    try:
        view = store.get(record_id)
        assert view is not None
        return record_entries(view)
    finally:
        store.close()


def test_every_read_is_in_the_access_log(deployment: Deployment) -> None:
    sightings = deployment.collection(SIGHTINGS_ID, **_as("opencti"))
    _all_objects(sightings, PAGE)
    dpo = deployment.collection(SIGHTINGS_ID, **_as("dpo"))
    _all_objects(dpo, PAGE)
    store = open_store(str(deployment.filled.path))
    try:
        log = AccessLog(store)
        assert log.verify().ok
        opencti = log.entries(user="opencti", action="taxii")
        dpo_entries = log.entries(user="dpo", action="taxii")
        views = {(v.producer_id, v.record_id): v for v in store.iter_records()}
    finally:
        store.close()
    assert opencti
    assert dpo_entries
    for e in opencti:
        assert e.recipient == "opencti"
        assert e.query["collection"] in ("sighting", "incident")
        assert e.justification is None
        for ref in e.records:
            assert restriction(views[ref]) is None  # never a restricted record without one
            assert ref[1] != deployment.filled.withheld_id
    justified = [e for e in dpo_entries if e.justification == JUSTIFICATION]
    assert justified  # restricted records were served to dpo, with its standing justification
    assert any(restriction(views[ref]) is not None for e in justified for ref in e.records)

"""The TAXII server's parts: query parsing, paging, version filters, collecting a store's objects,
authentication, the users file, the access log gate, the HTTP layer and the CLI's refusals."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intelbus import _nacl
from intelbus.cli.main import app
from intelbus.cli.store_access import restriction
from intelbus.errors import ConfigError, InsecureFileError
from intelbus.interop import taxii_auth
from intelbus.interop.stix import StixEntry, record_entries
from intelbus.interop.taxii import (
    COLLECTIONS,
    SHARED_TYPES,
    TAXII_MEDIA_TYPE,
    Item,
    Query,
    TaxiiError,
    TaxiiService,
    collect,
    decode_next,
    encode_next,
    paginate,
    parse_query,
    parse_timestamp,
    select,
    taxii_time,
)
from intelbus.interop.taxii_auth import (
    Authenticator,
    AuthFailed,
    Principal,
    add_user,
    load_users,
    parse_basic,
)
from intelbus.interop.taxii_config import TaxiiConfig, is_loopback
from intelbus.interop.taxii_server import TaxiiHttpServer, accepts_taxii, certificate_user
from intelbus.store import Store, open_store
from intelbus.store.access import AccessLog
from tests.taxii_store import FAST, Filled, correct, fill, force_config, users_file

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SIGHTINGS = COLLECTIONS[0].id
OPENCTI = Principal("opencti", "basic", None)
DPO = Principal("dpo", "basic", "standing: review")


def _item(n: int, oid: str | None = None, version: int = 0, added: int | None = None) -> Item:
    at = T + timedelta(minutes=version)
    obj = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": oid or f"sighting--00000000-0000-4000-8000-{n:012d}",
        "created": taxii_time(T),
        "modified": taxii_time(at),
    }
    when = T + timedelta(seconds=n if added is None else added)
    return Item(StixEntry(obj, when), at, frozenset({("cst", str(n))}))


# --- Queries and paging. --------------------------------------------------------------------------


def test_query_defaults_and_limits() -> None:
    q = parse_query({}, page_size=50)
    assert (q.limit, q.versions, q.added_after, q.after) == (50, ("last",), None, None)
    assert parse_query({"limit": ["10"]}, page_size=50).limit == 10
    assert parse_query({"limit": ["500"]}, page_size=50).limit == 50  # capped, not refused
    q = parse_query(
        {"added_after": ["2026-11-01T12:00:00.123456789Z"], "match[version]": ["first,all"]},
        page_size=5,
    )
    assert q.added_after == T + timedelta(microseconds=123456)
    assert q.versions == ("all", "first")
    # A filter this server does not know is ignored (a superset), not an error.
    assert parse_query({"match[relationship_type]": ["uses"]}, page_size=5) == Query(limit=5)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": ["0"]},
        {"limit": ["-3"]},
        {"limit": ["ten"]},
        {"limit": ["1", "2"]},
        {"added_after": ["yesterday"]},
        {"match[version]": ["newest"]},
        {"next": ["not-a-token"]},
    ],
)
def test_malformed_queries_are_400(params: dict[str, list[str]]) -> None:
    with pytest.raises(TaxiiError) as e:
        parse_query(params, page_size=10)
    assert e.value.status == 400
    body = e.value.response().body
    assert body["http_status"] == "400"


def test_next_tokens_round_trip_and_refuse_forgeries() -> None:
    key = _item(3).key
    assert decode_next(encode_next(key)) == key
    forged = base64.urlsafe_b64encode(b'{"a": 1}').decode()
    for token in (forged, "!!!", ""):
        with pytest.raises(TaxiiError):
            decode_next(token)


def test_paging_is_stable_when_objects_arrive_between_pages() -> None:
    """Keyset paging: an object added after page 1 was served, later in the order, appears on a
    later page; nothing repeats and nothing is skipped."""
    items = [_item(n) for n in range(7)]
    q = Query(limit=3)
    first = paginate(items, q)
    assert first.more
    assert [i.entry.id for i in first.items] == [i.entry.id for i in items[:3]]
    token = first.paging()["next"]
    items = sorted([*items, _item(99)], key=lambda i: i.key)  # arrives meanwhile
    seen = [i.entry.id for i in first.items]
    after = decode_next(token)
    while True:
        page = paginate(items, Query(limit=3, after=after))
        seen += [i.entry.id for i in page.items]
        if not page.more:
            assert "next" not in page.paging()
            break
        after = decode_next(page.paging()["next"])
    assert seen == [i.entry.id for i in items]
    headers = dict(first.headers())
    assert headers["X-TAXII-Date-Added-First"] == taxii_time(items[0].entry.date_added)
    assert headers["X-TAXII-Date-Added-Last"] == taxii_time(items[2].entry.date_added)


def test_version_filters() -> None:
    oid = "sighting--00000000-0000-4000-8000-00000000abcd"
    versions = [_item(1, oid, version=v, added=v * 60 + 1) for v in range(3)]
    other = _item(2)
    items = sorted([*versions, other], key=lambda i: i.key)

    def picked(*spec: str) -> list[str]:
        return [
            str(i.entry.obj["modified"])
            for i in select(items, Query(versions=spec, ids=frozenset({oid})))
        ]

    stamps = [str(v.entry.obj["modified"]) for v in versions]
    assert picked("last") == [stamps[2]]
    assert picked("first") == [stamps[0]]
    assert picked("all") == stamps
    assert picked("first", "last") == [stamps[0], stamps[2]]
    assert picked(stamps[1]) == [stamps[1]]
    assert [i.entry.id for i in select(items, Query(types=frozenset({"identity"})))] == []
    later = select(items, Query(versions=("all",), added_after=versions[0].entry.date_added))
    assert [i.entry.obj["modified"] for i in later if i.entry.id == oid] == stamps[1:]


def test_timestamps_need_a_time() -> None:
    assert parse_timestamp("2026-11-01T12:00:00Z", "t") == T
    assert parse_timestamp("2026-11-01T13:00:00+01:00", "t") == T
    with pytest.raises(TaxiiError):
        parse_timestamp("1 Nov", "t")


# --- What a collection holds. ----------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Filled:
    return fill(tmp_path / "herts.sqlite", sightings=10, incidents=4)


@pytest.fixture
def store_path(filled: Filled) -> Path:
    return filled.path


@contextmanager
def _opened(path: Path) -> Iterator[Store]:
    store = open_store(str(path))
    try:
        yield store
    finally:
        store.close()


def test_collect_dedupes_shared_objects_and_leaves_out_what_a_user_may_not_see(
    store_path: Path,
) -> None:
    with _opened(store_path) as store:
        views = list(store.iter_records())
    open_items = collect(
        views, "sighting", restricted=lambda v: restriction(v) is not None, justified=False
    )
    all_items = collect(
        views, "sighting", restricted=lambda v: restriction(v) is not None, justified=True
    )
    keys = [(i.entry.id, i.entry.version) for i in all_items]
    assert len(keys) == len(set(keys))
    shared = [i for i in all_items if i.type in SHARED_TYPES]
    assert any(i.type == "identity" for i in shared)  # at least the producer's
    assert all(i.refs == frozenset() for i in shared)  # they name no record in the access log
    sighting_views = [v for v in views if v.kind == "sighting" and v.visible]
    # Each (id, version) once, with the earliest date_added among the records exporting it...
    earliest: dict[tuple[str, str], datetime] = {}
    for v in sighting_views:
        for e in record_entries(v):
            k = (e.id, e.version)
            earliest[k] = min(earliest.get(k, e.date_added), e.date_added)
    assert {(i.entry.id, i.entry.version): i.entry.date_added for i in all_items} == earliest
    # ...which is the store's own clock (when it stored the record or recorded the version).
    clock = {v.stored_at for v in sighting_views} | {
        h.recorded_at for v in sighting_views for h in v.history
    }
    assert None not in {v.stored_at for v in sighting_views}
    assert all(i.entry.date_added in clock for i in all_items)
    restricted_refs = {
        (v.producer_id, v.record_id) for v in sighting_views if restriction(v) is not None
    }
    assert restricted_refs  # the sample feed has RED and handling-code C records
    assert not any(i.refs & restricted_refs for i in open_items)
    assert {r for i in all_items for r in i.refs} == {
        (v.producer_id, v.record_id) for v in sighting_views
    }
    assert [i.key for i in all_items] == sorted(i.key for i in all_items)
    # The withheld record (no content) is never served.
    assert all(
        v.visible or (v.producer_id, v.record_id) not in {r for i in all_items for r in i.refs}
        for v in views
    )


def test_date_added_is_the_store_clock_so_a_late_correction_is_not_missed(filled: Filled) -> None:
    """A correction signed as made before everything else (backdated, or consumed late) is still
    added after every earlier item: added_after polling cannot skip it."""
    store_path = filled.path
    with _opened(store_path) as store:
        views = list(store.iter_records())
    target = next(
        v for v in views if v.kind == "sighting" and not v.retracted and restriction(v) is None
    )
    before = collect(views, "sighting", restricted=lambda v: False, justified=True)
    last = max(i.entry.date_added for i in before)
    (original,) = [r for r in filled.records if r.record_id == target.record_id]
    correct(store_path, original, description="Corrected late.", n=960, at=T - timedelta(days=60))
    with _opened(store_path) as store:
        after = collect(
            store.iter_records(), "sighting", restricted=lambda v: False, justified=True
        )
        view = store.get(target.record_id)
    assert view is not None
    assert view.history[-1].recorded_at is not None
    assert view.stored_at is not None
    assert view.history[-1].recorded_at > view.stored_at
    new = [i for i in after if i.entry.date_added > last]
    assert new
    assert all(i.refs <= {(target.producer_id, target.record_id)} for i in new)
    assert any("Corrected late." in json.dumps(i.entry.obj) for i in new)


def _service(path: Path, page_size: int = 4) -> TaxiiService:
    return TaxiiService(
        lambda: _opened(path), restriction=restriction, title="t", page_size=page_size
    )


def _objects_path() -> str:
    return f"/api/collections/{SIGHTINGS}/objects/"


def test_reads_write_the_access_log_and_shared_objects_alone_do_not(store_path: Path) -> None:
    service = _service(store_path, page_size=50)
    identity = service.get(_objects_path(), {"match[type]": ["identity"]}, OPENCTI)
    assert identity.body["objects"]
    assert {o["type"] for o in identity.body["objects"]} == {"identity"}
    with _opened(store_path) as store:
        assert AccessLog(store).entries(action="taxii") == []  # no record was disclosed
    got = service.get(_objects_path(), {"limit": ["40"]}, OPENCTI)
    assert got.status == 200
    with _opened(store_path) as store:
        (entry,) = AccessLog(store).entries(action="taxii")
        views = [v for v in store.iter_records() if v.kind == "sighting"]
    assert (entry.user, entry.recipient, entry.justification) == ("opencti", "opencti", None)
    assert entry.query["collection"] == "sighting"
    assert entry.query["endpoint"] == "objects"
    assert entry.query["limit"] == 40
    # The records named are exactly those whose own objects were served.
    owners: dict[str, set[tuple[str, str]]] = {}
    for v in views:
        if v.visible and restriction(v) is None:
            for e in record_entries(v):
                if e.id.partition("--")[0] not in SHARED_TYPES:
                    owners.setdefault(e.id, set()).add((v.producer_id, v.record_id))
    served = {r for o in got.body["objects"] for r in owners.get(o["id"], set())}
    assert served
    assert set(entry.records) == served


def test_no_access_log_no_objects(store_path: Path) -> None:
    """If the entry cannot be written the request fails with a TAXII 500 and serves nothing."""
    with sqlite3.connect(store_path) as db:
        db.execute("DROP TABLE access_log")
    got = _service(store_path, page_size=1000).get(_objects_path(), {}, OPENCTI)
    assert got.status == 500
    assert "objects" not in got.body
    assert got.body["http_status"] == "500"


def test_routes_and_not_found(store_path: Path) -> None:
    service = _service(store_path)
    assert service.get("/taxii2/", {}, OPENCTI).body["api_roots"] == ["/api/"]
    assert service.get("/api/", {}, OPENCTI).body["versions"] == [TAXII_MEDIA_TYPE]
    cols = service.get("/api/collections/", {}, OPENCTI).body["collections"]
    assert [c["id"] for c in cols] == [c.id for c in COLLECTIONS]
    for path in (
        "/nope/",
        "/api/collections/x/",
        f"/api/collections/{SIGHTINGS}/objects/sighting--00000000-0000-4000-8000-000000000000/",
        f"/api/collections/{SIGHTINGS}/objects/sighting--00000000-0000-4000-8000-000000000000/versions/",
        f"/api/collections/{SIGHTINGS}/elsewhere/",
        "/taxii2",
    ):
        assert service.get(path, {}, OPENCTI).status == 404, path
    assert service.get("/taxii2/", {"limit": ["1"]}, OPENCTI).status == 200


# --- Authentication and the users file. ------------------------------------------------------------


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_parse_basic_and_certificate_names() -> None:
    assert parse_basic(_basic("a", "b:c")) == ("a", "b:c")
    assert parse_basic("Bearer x") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None
    peer = {"subject": ((("organizationName", "intelbus"),), (("commonName", "cst"),))}
    assert certificate_user(peer) == "cst"
    assert certificate_user(None) is None


def test_accept_header() -> None:
    assert accepts_taxii(TAXII_MEDIA_TYPE)
    assert accepts_taxii("application/taxii+json")
    assert accepts_taxii("text/html, application/taxii+json; version=2.1")
    assert not accepts_taxii("application/taxii+json;version=2.0")
    assert not accepts_taxii("application/json")
    assert not accepts_taxii(None)


def test_authenticator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = users_file(
        tmp_path / "users.json", ("opencti", "s3cret", None), ("cst", None, "standing: cst")
    )
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "s3cret"), None) == Principal(
        "opencti", "basic", None
    )
    assert auth.authenticate(None, "cst") == Principal("cst", "certificate", "standing: cst")
    cases = [
        ((None, None), 401),
        ((_basic("opencti", "wrong"), None), 401),
        ((_basic("nobody", "s3cret"), None), 401),
        ((_basic("cst", ""), "cst"), 401),  # a certificate-only user has no password
        (("Digest x", None), 401),
        ((None, "stranger"), 403),
    ]
    for (header, cn), status in cases:
        with pytest.raises(AuthFailed) as e:
            auth.authenticate(header, cn)
        assert e.value.status == status
    # A verified password is remembered: the next request does not run Argon2id again.
    calls: list[int] = []
    real = _nacl.password_verify

    def counting(hashed: bytes, password: bytes) -> bool:
        calls.append(1)
        return real(hashed, password)

    monkeypatch.setattr(taxii_auth._nacl, "password_verify", counting)
    auth.authenticate(_basic("opencti", "s3cret"), None)
    assert calls == []
    with pytest.raises(AuthFailed):
        auth.authenticate(_basic("opencti", "s3cret!"), None)
    assert calls == [1]
    # An unknown user costs a verification too (against a decoy): no telling names by timing.
    with pytest.raises(AuthFailed):
        auth.authenticate(_basic("nobody", "s3cret"), None)
    assert calls == [1, 1]
    # A changed users file is read again, and the remembered password forgotten.
    add_user(path, "opencti", "new one", **FAST)
    with pytest.raises(AuthFailed):
        auth.authenticate(_basic("opencti", "s3cret"), None)
    assert auth.authenticate(_basic("opencti", "new one"), None).user == "opencti"


def test_users_file_is_private_and_holds_no_password(tmp_path: Path) -> None:
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "s3cret" not in text
    user = load_users(path)["opencti"]
    assert user.password_hash is not None
    assert user.password_hash.startswith(b"$argon2id$")
    assert "argon2" not in repr(user)
    path.chmod(0o644)
    with pytest.raises(InsecureFileError):
        load_users(path)
    path.chmod(0o600)
    path.write_text(json.dumps({"users": {"x": {"password": "plain"}}}))
    with pytest.raises(ConfigError):
        load_users(path)


def test_production_hashes_use_the_moderate_cost(tmp_path: Path) -> None:
    add_user(tmp_path / "u.json", "opencti", "s3cret")
    hashed = load_users(tmp_path / "u.json")["opencti"].password_hash
    assert hashed is not None
    assert b"m=262144,t=3" in hashed
    assert _nacl.password_verify(hashed, b"s3cret")
    assert not _nacl.password_verify(hashed, b"other")
    assert not _nacl.password_verify(b"$argon2id$garbage", b"s3cret")


# --- The HTTP layer, in process. ---------------------------------------------------------------------


class _Broken:
    def __call__(self) -> Iterator[Store]:
        raise RuntimeError("a defect")


def test_http_layer_status_codes_and_no_traceback(
    tmp_path: Path, store_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    service = TaxiiService(_Broken(), restriction=restriction, title="t", page_size=4)  # type: ignore[arg-type]
    server = TaxiiHttpServer(("127.0.0.1", 0), service, Authenticator(path), None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:

        def ask(
            method: str, target: str, headers: dict[str, str]
        ) -> tuple[int, dict[str, str], dict[str, object]]:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            try:
                conn.request(method, target, headers=headers)
                r = conn.getresponse()
                return r.status, dict(r.getheaders()), json.loads(r.read())
            finally:
                conn.close()

        good = {"Accept": TAXII_MEDIA_TYPE, "Authorization": _basic("opencti", "s3cret")}
        status, headers, body = ask("GET", "/taxii2/", {"Accept": TAXII_MEDIA_TYPE})
        assert (status, body["http_status"]) == (401, "401")
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert ask("GET", "/taxii2/", {**good, "Accept": "text/html"})[0] == 406
        status, headers, _ = ask("DELETE", _objects_path(), good)
        assert (status, headers["Allow"]) == (405, "GET")
        status, headers, body = ask("GET", _objects_path(), good)
        assert status == 500
        assert headers["Content-Type"] == TAXII_MEDIA_TYPE
        assert body == {"title": "the server could not answer", "http_status": "500"}
        assert ask("GET", "/taxii2/", good)[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        try:
            conn.request("HEAD", "/taxii2/", headers=good)
            head = conn.getresponse()
            assert (head.status, head.read()) == (405, b"")
        finally:
            conn.close()
        # http.server's own refusal of a malformed request is a TAXII error too.
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as raw:
            raw.sendall(b"NONSENSE\r\n\r\n")
            reply = raw.makefile("rb").read()
        head_part, _, body_part = reply.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 400")
        assert f"Content-Type: {TAXII_MEDIA_TYPE}".encode() in head_part
        assert json.loads(body_part)["http_status"] == "400"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    out = capfd.readouterr()
    assert "Traceback" not in out.err + out.out
    assert "s3cret" not in out.err + out.out


# --- Configuration and the CLI. ----------------------------------------------------------------------


def test_config_section() -> None:
    assert TaxiiConfig().bind == "127.0.0.1"
    assert is_loopback("localhost")
    assert is_loopback("::1")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0")  # noqa: S104 - what is refused
    assert not is_loopback("taxii.example.org")
    with pytest.raises(ValueError, match="cert_file and key_file"):
        TaxiiConfig(cert_file=Path("c.pem"))
    with pytest.raises(ValueError, match="ca_file"):
        TaxiiConfig(ca_file=Path("ca.pem"))


runner = CliRunner()


def test_serve_refuses_a_network_address_without_tls(tmp_path: Path, store_path: Path) -> None:
    users_file(tmp_path / "users.json", ("opencti", "s3cret", None))
    config = force_config(tmp_path, store_path, 'users_file = "users.json"')
    result = runner.invoke(app, ["taxii", "serve", "--config", str(config), "--bind", "0.0.0.0"])  # noqa: S104
    assert result.exit_code == 2
    assert "without TLS" in result.output
    assert "Traceback" not in result.output
    bare = force_config(tmp_path, store_path, 'bind = "10.0.0.1"')
    result = runner.invoke(app, ["taxii", "serve", "--config", str(bare)])
    assert result.exit_code == 2
    no_users = force_config(tmp_path, store_path, "port = 9")
    result = runner.invoke(app, ["taxii", "serve", "--config", str(no_users)])
    assert result.exit_code == 2
    assert "users_file" in result.output
    missing = force_config(tmp_path, tmp_path / "nowhere.sqlite", 'users_file = "users.json"')
    result = runner.invoke(app, ["taxii", "serve", "--config", str(missing)])
    assert result.exit_code == 2
    assert "no store at" in result.output


def test_add_user_cli_never_echoes_the_password(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    result = runner.invoke(
        app,
        ["taxii", "add-user", "opencti", "--users", str(path), "--password-stdin"],
        input="pa55 word\n",
    )
    assert result.exit_code == 0, result.output
    assert "pa55" not in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    result = runner.invoke(
        app,
        [
            "taxii",
            "add-user",
            "cst",
            "--users",
            str(path),
            "--certificate-only",
            "--justification",
            "standing: x",
        ],
    )
    assert result.exit_code == 0, result.output
    users = load_users(path)
    assert users["cst"].password_hash is None
    assert users["cst"].justification == "standing: x"
    auth = Authenticator(path)
    assert auth.authenticate(_basic("opencti", "pa55 word"), None).user == "opencti"
    empty = runner.invoke(
        app, ["taxii", "add-user", "x", "--users", str(path), "--password-stdin"], input="\n"
    )
    assert empty.exit_code == 2

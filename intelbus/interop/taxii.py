"""A read-only TAXII 2.1 service over one force's store: the endpoints, without the HTTP.

:class:`TaxiiService` answers a GET (a path, its query and the authenticated principal) with a
:class:`Response` (status, JSON body, headers); :mod:`intelbus.interop.taxii_server` puts it on
HTTP(S). Served (OASIS TAXII 2.1, sections 4 and 5):

* ``/taxii2/`` discovery, naming one API root, ``/api/``;
* ``/api/`` the API root, ``/api/collections/``, ``/api/collections/{id}/``: one collection per
  record family (sightings, incidents), read-only;
* ``/api/collections/{id}/objects/`` (``added_after``, ``limit``, ``next``, ``match[id]``,
  ``match[type]``, ``match[version]`` = ``last`` (default) | ``first`` | ``all`` | timestamps,
  ``match[spec_version]``), ``.../objects/{object-id}/``, ``.../objects/{object-id}/versions/``
  and ``.../manifest/``.

What a collection holds: every STIX object version the visible records of its family export to
(:func:`intelbus.interop.stix.record_entries`, live or retracted records; never erased or
pruned ones), each (id, version) once, with the earliest ``date_added`` among the records that
export it. A record that is restricted (``restriction(view)`` is not None) counts only for a user
with a standing justification; an object no record the user may see exports is left out.

Paging is keyset paging: items are ordered by (date_added, id, version), and ``next`` is an opaque
token naming the last item served, so it survives restarts and a record added meanwhile neither
repeats nor skips an item before it.

Every response that returns objects (or their manifest) first appends an access log entry
(action ``taxii``) naming the user, the records the objects came from, the collection and query
(never contents), the justification when restricted records were served, and the user as the
recipient. If that entry cannot be written the request fails (500) and nothing is served.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from intelbus.errors import IntelbusError
from intelbus.interop.stix import StixEntry, record_entries
from intelbus.interop.taxii_auth import Principal
from intelbus.log import get_logger
from intelbus.store import Store, StoredRecordView
from intelbus.store.access import AccessLog, AccessLogError, NewAccess, RecordRef

log = get_logger("intelbus.interop.taxii")

TAXII_MEDIA_TYPE: Final = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE: Final = "application/stix+json;version=2.1"
API_ROOT: Final = "api"
ACTION: Final = "taxii"
MAX_CONTENT_LENGTH: Final = 10 * 1024 * 1024
_NAMESPACE: Final = uuid.UUID("0d7c5b7e-5a52-5b8e-9d0c-6a3c2b1f9e41")
#: Object types that describe rather than disclose (the producer, markings, the extension): their
#: versions name no record in the access log.
SHARED_TYPES: Final = frozenset(
    {"identity", "marking-definition", "extension-definition", "attack-pattern"}
)


@dataclass(frozen=True, slots=True)
class Collection:
    """A record family served as a TAXII collection (its id never changes)."""

    kind: str
    title: str
    description: str

    @property
    def id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"collection|{self.kind}"))

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "can_read": True,
            "can_write": False,
            "media_types": [STIX_MEDIA_TYPE],
        }


COLLECTIONS: Final = (
    Collection("sighting", "Sightings", "Sightings this force's store holds, as STIX 2.1."),
    Collection("incident", "Incidents", "Incidents this force's store holds, as STIX 2.1."),
)


@dataclass(frozen=True, slots=True)
class Response:
    """What to send: a status, a JSON body and extra headers."""

    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class TaxiiError(Exception):
    """A request answered with a TAXII error message (never a traceback)."""

    def __init__(self, status: int, title: str, description: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.description = description

    def response(self, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        body: dict[str, Any] = {"title": self.title, "http_status": str(self.status)}
        if self.description:
            body["description"] = self.description
        return Response(self.status, body, headers)


def taxii_time(value: datetime) -> str:
    """A TAXII timestamp with microseconds (``date_added`` must not lose precision)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str, what: str) -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset; any fraction digits). Raises TaxiiError 400."""
    text = value.strip()
    try:
        head, dot, rest = text.partition(".")
        if dot:  # fromisoformat takes at most 6 fraction digits: keep microseconds
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        # In UTC now: 0001-01-01T00:00:00+14:00 is before year 1 in UTC, and converting it
        # later (to log the query) would be an OverflowError, a 500 for a client's typo.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise TaxiiError(400, f"{what} is not a timestamp", f"got {value[:40]!r}") from None


# --- The items a collection holds. -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One (id, version) of a collection: the object, when first added, and its records."""

    entry: StixEntry
    version_at: datetime
    refs: frozenset[RecordRef] = field(default_factory=frozenset)
    restricted_refs: frozenset[RecordRef] = field(default_factory=frozenset)

    @property
    def key(self) -> tuple[datetime, str, datetime]:
        return (self.entry.date_added, self.entry.id, self.version_at)

    @property
    def type(self) -> str:
        return self.entry.id.partition("--")[0]


def collect(
    views: Iterable[StoredRecordView],
    kind: str,
    *,
    restricted: Callable[[StoredRecordView], bool],
    justified: bool,
    entries: Callable[[StoredRecordView], list[StixEntry]] = record_entries,
) -> list[Item]:
    """The items of ``kind``'s collection a user may see, in paging order (module docstring)."""
    found: dict[tuple[str, str], Item] = {}
    for view in views:
        if view.kind != kind or not view.visible:
            continue
        closed = restricted(view)
        if closed and not justified:
            continue
        ref = (view.producer_id, view.record_id)
        for entry in entries(view):
            key = (entry.id, entry.version)
            held = found.get(key)
            refs = frozenset() if entry.id.partition("--")[0] in SHARED_TYPES else {ref}
            if held is None:
                at = parse_timestamp(entry.version, "an object's version")
                found[key] = Item(
                    entry, at, frozenset(refs), frozenset(refs) if closed else frozenset()
                )
                continue
            first = entry if entry.date_added < held.entry.date_added else held.entry
            found[key] = Item(
                first,
                held.version_at,
                held.refs | refs,
                held.restricted_refs | (refs if closed else frozenset()),
            )
    return sorted(found.values(), key=lambda i: i.key)


# --- Queries. ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """The filters and paging of one request (TAXII 2.1 section 3.4)."""

    added_after: datetime | None = None
    limit: int | None = None
    after: tuple[datetime, str, datetime] | None = None  # from ``next``
    ids: frozenset[str] | None = None
    types: frozenset[str] | None = None
    versions: tuple[str, ...] = ("last",)
    spec_versions: frozenset[str] | None = None

    def logged(self) -> dict[str, Any]:
        """The query as the access log keeps it (filters only: no object content exists here)."""
        out: dict[str, Any] = {"match[version]": ",".join(self.versions)}
        if self.added_after is not None:
            out["added_after"] = taxii_time(self.added_after)
        if self.limit is not None:
            out["limit"] = self.limit
        if self.after is not None:
            out["next"] = True
        if self.ids is not None:
            out["match[id]"] = sorted(self.ids)
        if self.types is not None:
            out["match[type]"] = sorted(self.types)
        return out


_PARAMS: Final = frozenset(
    {
        "added_after",
        "limit",
        "next",
        "match[id]",
        "match[type]",
        "match[version]",
        "match[spec_version]",
    }
)


def _listed(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def encode_next(key: tuple[datetime, str, datetime]) -> str:
    """The opaque ``next`` token naming the last item served."""
    raw = json.dumps([taxii_time(key[0]), key[1], taxii_time(key[2])], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_next(token: str) -> tuple[datetime, str, datetime]:
    """The key a ``next`` token names. Raises TaxiiError 400 if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        added, oid, version = json.loads(raw.decode())
        if not isinstance(oid, str) or not isinstance(added, str) or not isinstance(version, str):
            raise TypeError("not a token")
        return (parse_timestamp(added, "next"), oid, parse_timestamp(version, "next"))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, TaxiiError):
        raise TaxiiError(400, "next is not a token this server gave") from None


def parse_query(params: Mapping[str, Sequence[str]], *, page_size: int) -> Query:
    """A request's query parameters. Raises TaxiiError 400 for a malformed one.

    A parameter this server does not know (a ``match[...]`` field it does not filter on) is
    ignored, as TAXII asks of a server that does not support a filter: the client gets a
    superset of what it asked for, never an error.
    """
    one: dict[str, str] = {}
    for name, values in params.items():
        if name not in _PARAMS:
            continue
        if len(values) != 1:
            raise TaxiiError(400, f"{name} is given more than once")
        one[name] = values[0]
    limit = None
    if "limit" in one:
        text = one["limit"]
        # ASCII digits, and few of them: str.isdigit also takes "²" (int() refuses it) and int()
        # refuses more than 4300 digits; either would be a 500 for a client's typo.
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or int(text) < 1:
            raise TaxiiError(400, "limit is a positive integer")
        limit = int(text)
    versions = tuple(_listed(one.get("match[version]", "last"))) or ("last",)
    for v in versions:
        if v not in ("last", "first", "all"):
            parse_timestamp(v, "match[version]")
    return Query(
        added_after=(
            parse_timestamp(one["added_after"], "added_after") if "added_after" in one else None
        ),
        limit=min(limit or page_size, page_size),
        after=decode_next(one["next"]) if "next" in one else None,
        ids=_listed(one["match[id]"]) if "match[id]" in one else None,
        types=_listed(one["match[type]"]) if "match[type]" in one else None,
        versions=tuple(sorted(set(versions))),
        spec_versions=(
            _listed(one["match[spec_version]"]) if "match[spec_version]" in one else None
        ),
    )


def _version_filter(items: list[Item], versions: Sequence[str]) -> list[Item]:
    if "all" in versions:
        return items
    by_id: dict[str, list[Item]] = {}
    for item in items:
        by_id.setdefault(item.entry.id, []).append(item)
    keep: set[tuple[str, datetime]] = set()
    wanted = {parse_timestamp(v, "match[version]") for v in versions if v not in ("last", "first")}
    for oid, group in by_id.items():
        if "last" in versions:
            keep.add((oid, max(i.version_at for i in group)))
        if "first" in versions:
            keep.add((oid, min(i.version_at for i in group)))
        keep.update((oid, i.version_at) for i in group if i.version_at in wanted)
    return [i for i in items if (i.entry.id, i.version_at) in keep]


def select(items: list[Item], query: Query, *, versions: bool = True) -> list[Item]:
    """``items`` (in paging order) that match the query's filters, before paging."""
    out = [
        i
        for i in items
        if (query.ids is None or i.entry.id in query.ids)
        and (query.types is None or i.type in query.types)
        and (
            query.spec_versions is None
            or str(i.entry.obj.get("spec_version", "2.1")) in query.spec_versions
        )
        and (query.added_after is None or i.entry.date_added > query.added_after)
    ]
    return _version_filter(out, query.versions) if versions else out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of items, and whether more follow."""

    items: list[Item]
    more: bool

    def headers(self) -> tuple[tuple[str, str], ...]:
        if not self.items:
            return ()
        added = [i.entry.date_added for i in self.items]
        return (
            ("X-TAXII-Date-Added-First", taxii_time(min(added))),
            ("X-TAXII-Date-Added-Last", taxii_time(max(added))),
        )

    def paging(self) -> dict[str, Any]:
        out: dict[str, Any] = {"more": self.more}
        if self.more:
            out["next"] = encode_next(self.items[-1].key)
        return out


def paginate(items: list[Item], query: Query) -> Page:
    """The page after ``query.after`` of at most ``query.limit`` items."""
    if query.after is not None:
        items = [i for i in items if i.key > query.after]
    limit = query.limit if query.limit is not None else len(items)
    return Page(items[:limit], len(items) > limit)


# --- The service. ------------------------------------------------------------------------------------


StoreOpener = Callable[[], AbstractContextManager[Store]]


class TaxiiService:
    """The TAXII endpoints over one store (module docstring). Thread-safe: a store per request."""

    def __init__(
        self,
        open_store: StoreOpener,
        *,
        restriction: Callable[[StoredRecordView], str | None],
        title: str,
        page_size: int,
    ) -> None:
        self._open = open_store
        self._restriction = restriction
        self._title = title
        self._page_size = page_size

    def get(self, path: str, params: Mapping[str, Sequence[str]], who: Principal) -> Response:
        """Answer a GET of ``path`` (no query string) for ``who``; errors as TAXII errors."""
        try:
            return self._route(path, params, who)
        except TaxiiError as e:
            return e.response()

    def _route(  # noqa: PLR0911 - one return per endpoint
        self, path: str, params: Mapping[str, Sequence[str]], who: Principal
    ) -> Response:
        parts = [p for p in path.split("/") if p]
        if not path.endswith("/"):
            raise TaxiiError(404, "not found", "TAXII URLs end with a slash")
        if parts == ["taxii2"]:
            return self._bare(params, self._discovery())
        if not parts or parts[0] != API_ROOT:
            raise TaxiiError(404, "not found")
        rest = parts[1:]
        if not rest:
            return self._bare(params, self._api_root())
        if rest == ["collections"]:
            return self._bare(params, {"collections": [c.info() for c in COLLECTIONS]})
        if rest[0] != "collections" or len(rest) < 2:
            raise TaxiiError(404, "not found")
        collection = self._collection(rest[1])
        tail = rest[2:]
        if not tail:
            return self._bare(params, collection.info())
        query = parse_query(params, page_size=self._page_size)
        if tail == ["objects"]:
            return self._objects(collection, query, who, None)
        if tail == ["manifest"]:
            return self._manifest(collection, query, who)
        if tail[0] == "objects" and len(tail) == 2:
            return self._objects(collection, query, who, tail[1])
        if tail[0] == "objects" and tail[2:] == ["versions"]:
            return self._versions(collection, query, who, tail[1])
        raise TaxiiError(404, "not found")

    @staticmethod
    def _bare(params: Mapping[str, Sequence[str]], body: Mapping[str, Any]) -> Response:
        del params  # these endpoints take none; any sent are ignored, as unknown filters are
        return Response(200, body)

    def _discovery(self) -> dict[str, Any]:
        return {
            "title": self._title,
            "description": "Read-only TAXII 2.1 server over an intelbus force's store.",
            "default": f"/{API_ROOT}/",
            "api_roots": [f"/{API_ROOT}/"],
        }

    def _api_root(self) -> dict[str, Any]:
        return {
            "title": self._title,
            "description": "One collection per record family.",
            "versions": [TAXII_MEDIA_TYPE],
            "max_content_length": MAX_CONTENT_LENGTH,
        }

    @staticmethod
    def _collection(cid: str) -> Collection:
        for c in COLLECTIONS:
            if c.id == cid:
                return c
        raise TaxiiError(404, "no such collection")

    def _page(
        self,
        collection: Collection,
        who: Principal,
        query: Query,
        endpoint: str,
        pick: Callable[[list[Item]], Page],
    ) -> Page:
        """Read the collection, pick the page, and log it before anything is returned."""
        justified = who.justification is not None
        try:
            with self._open() as store:
                items = collect(
                    store.iter_records(),
                    collection.kind,
                    restricted=lambda v: self._restriction(v) is not None,
                    justified=justified,
                )
                page = pick(items)
                self._log(
                    store, collection=collection, who=who, query=query, endpoint=endpoint, page=page
                )
        except AccessLogError:
            log.warning("taxii.access_log_failed", user=who.user, endpoint=endpoint)
            raise TaxiiError(
                500, "the access log could not be written; nothing was served"
            ) from None
        except IntelbusError as e:
            log.warning("taxii.store_failed", error=type(e).__name__, endpoint=endpoint)
            raise TaxiiError(500, "the store could not be read") from None
        return page

    @staticmethod
    def _log(
        store: Store,
        *,
        collection: Collection,
        who: Principal,
        query: Query,
        endpoint: str,
        page: Page,
    ) -> None:
        refs: set[RecordRef] = set()
        closed = False
        for item in page.items:
            refs |= item.refs
            closed = closed or bool(item.restricted_refs)
        if not refs:
            return  # nothing of a record is returned: no disclosure to log
        entry = NewAccess(
            user=who.user,
            action=ACTION,
            records=tuple(sorted(refs)),
            query={
                "collection": collection.kind,
                "endpoint": endpoint,
                "auth": who.method,
                **query.logged(),
            },
            justification=who.justification if closed else None,
            recipient=who.user,
        )
        AccessLog(store).append(entry)
        log.info("taxii.served", user=who.user, endpoint=endpoint, records=len(refs))

    def _objects(
        self, collection: Collection, query: Query, who: Principal, oid: str | None
    ) -> Response:
        if oid is not None:
            query = Query(
                added_after=query.added_after,
                limit=query.limit,
                after=query.after,
                ids=frozenset({oid}) if query.ids is None else query.ids & {oid},
                types=query.types,
                versions=query.versions,
                spec_versions=query.spec_versions,
            )
        endpoint = "objects" if oid is None else "object"
        page = self._page(
            collection, who, query, endpoint, lambda items: paginate(select(items, query), query)
        )
        if oid is not None and not page.items and query.after is None:
            raise TaxiiError(404, "no such object")
        body = {**page.paging(), "objects": [dict(i.entry.obj) for i in page.items]}
        return Response(200, body, page.headers())

    def _manifest(self, collection: Collection, query: Query, who: Principal) -> Response:
        page = self._page(
            collection, who, query, "manifest", lambda items: paginate(select(items, query), query)
        )
        objects = [
            {
                "id": i.entry.id,
                "date_added": taxii_time(i.entry.date_added),
                "version": i.entry.version,
                "media_type": STIX_MEDIA_TYPE,
            }
            for i in page.items
        ]
        return Response(200, {**page.paging(), "objects": objects}, page.headers())

    def _versions(self, collection: Collection, query: Query, who: Principal, oid: str) -> Response:
        mine = Query(
            added_after=query.added_after,
            limit=query.limit,
            after=query.after,
            ids=frozenset({oid}),
            versions=("all",),
            spec_versions=query.spec_versions,
        )

        def pick(items: list[Item]) -> Page:
            # Oldest version first; ``next`` names the last version served.
            chosen = sorted(select(items, mine), key=lambda i: (i.version_at, i.key))
            if mine.after is not None:
                after = mine.after[2]
                chosen = [i for i in chosen if i.version_at > after]
            limit = mine.limit if mine.limit is not None else len(chosen)
            return Page(chosen[:limit], len(chosen) > limit)

        page = self._page(collection, who, mine, "versions", pick)
        if not page.items and query.after is None:
            raise TaxiiError(404, "no such object")
        body = {**page.paging(), "versions": [i.entry.version for i in page.items]}
        return Response(200, body, page.headers())

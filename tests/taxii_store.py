"""A force's store as a consumer would have filled it, for the TAXII server's tests.

The deterministic sample feed is committed as stored records (a policy that stores everything),
one record retracted, one withheld (never served); :func:`correct` adds a correction later, as
the consumer would while the server runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from intelbus import _nacl, samples
from intelbus.interop.taxii_auth import add_user
from intelbus.kinds import KIND_BY_LABEL, RecordKind
from intelbus.records import Sighting
from intelbus.store import open_store
from intelbus.trust.model import (
    AmendmentStatus,
    Batch,
    Change,
    Labels,
    NewAmendment,
    NewRecord,
    NewVersion,
    Outcome,
    VersionDecision,
    VersionSource,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SIGHTINGS = "intelbus.sightings"
INCIDENTS = "intelbus.incidents"
POLICY = "b" * 64
KEY = bytes(range(16))
PRODUCER = "cst"
WITHHELD_ID = "00000000-0000-4000-8000-0000000000aa"
RETRACTION_ID = "00000000-0000-4000-8000-0000000000ab"
BATCH = 4
#: Cheapest Argon2id: tests only (production hashes use the moderate cost).
FAST = {"opslimit": _nacl.PWHASH_MIN_OPSLIMIT, "memlimit": _nacl.PWHASH_MIN_MEMLIMIT}


@dataclass(frozen=True)
class Filled:
    """The store and what went into it."""

    path: Path
    records: list[NewRecord]
    retracted_id: str
    withheld_id: str

    def of_kind(self, kind: str) -> list[NewRecord]:
        return [r for r in self.records if r.kind.label == kind]


def _source(n: int, record_id: str, topic: str, **kw: Any) -> VersionSource:
    return VersionSource(
        record_id=record_id,
        key_id=KEY,
        sequence=n,
        digest=hashlib.sha256(record_id.encode()).digest(),
        topic=topic,
        partition=0,
        offset=n,
        created_at=T0 + timedelta(minutes=n),
        appended_at=T0 + timedelta(minutes=n, seconds=1),
        **kw,
    )


def _labels(model: samples.Sighting | samples.Incident) -> Labels:
    facts = model.facts()
    return Labels(facts.tlp.value, facts.classification.value, facts.force_area, facts.occurred_at)


def _stored(n: int, model: samples.Sighting | samples.Incident) -> NewRecord:
    body = json.loads(model.model_dump_json())
    decision = VersionDecision(Outcome.STORE, "all", POLICY, body, (), _labels(model))
    topic = SIGHTINGS if isinstance(model, Sighting) else INCIDENTS
    rid = str(model.record_id)
    return NewRecord(PRODUCER, rid, KIND_BY_LABEL[model.KIND], _source(n, rid, topic), decision)


def fill(path: Path, *, sightings: int = 14, incidents: int = 6, seed: int = 5) -> Filled:
    """A store at ``path`` with the sample feed, a withheld record and one retraction."""
    feed = samples.feed(seed=seed, sightings=sightings, incidents=incidents)
    records = [_stored(i, m) for i, m in enumerate(feed)]
    first = next(r for r in records if r.kind is RecordKind.SIGHTING)
    withheld = NewRecord(
        PRODUCER,
        WITHHELD_ID,
        RecordKind.SIGHTING,
        _source(900, WITHHELD_ID, SIGHTINGS),
        VersionDecision(Outcome.WITHHOLD, "red-withheld", POLICY),
    )
    retraction = _source(
        901, RETRACTION_ID, SIGHTINGS, reason="entered in error", amended_at=T0 + timedelta(hours=5)
    )
    store = open_store(str(path))
    try:
        # Several batches, as a consumer commits them: each batch's records share the time the
        # store stored them (TAXII's date_added), and the batches follow each other.
        for start in range(0, len(records), BATCH):
            store.commit(Batch(group_id="herts", records=records[start : start + BATCH]))
        store.commit(
            Batch(
                group_id="herts",
                records=[withheld],
                amendments=[
                    NewAmendment(
                        PRODUCER,
                        RETRACTION_ID,
                        RecordKind.RETRACTION,
                        first.record_id,
                        AmendmentStatus.APPLIED,
                        retraction,
                    )
                ],
                versions=[
                    NewVersion(
                        PRODUCER,
                        first.record_id,
                        Change.RETRACTION,
                        retraction,
                        VersionDecision(Outcome.RETRACT, "retraction", POLICY),
                    )
                ],
            )
        )
    finally:
        store.close()
    return Filled(path, records, first.record_id, WITHHELD_ID)


def correct(path: Path, record: NewRecord, *, description: str, n: int, at: datetime) -> None:
    """Commit a correction of ``record`` (a new version with ``description``)."""
    assert record.decision.payload is not None
    assert record.decision.labels is not None
    rid = f"00000000-0000-4000-8000-{n:012d}"
    topic = record.source.topic
    source = _source(n, rid, topic, reason="detail", amended_at=at)
    payload = {**record.decision.payload, "description": description}
    store = open_store(str(path))
    try:
        store.commit(
            Batch(
                group_id="herts",
                amendments=[
                    NewAmendment(
                        PRODUCER,
                        rid,
                        RecordKind.CORRECTION,
                        record.record_id,
                        AmendmentStatus.APPLIED,
                        source,
                    )
                ],
                versions=[
                    NewVersion(
                        PRODUCER,
                        record.record_id,
                        Change.CORRECTION,
                        source,
                        VersionDecision(
                            Outcome.STORE, "all", POLICY, payload, (), record.decision.labels
                        ),
                    )
                ],
            )
        )
    finally:
        store.close()


def users_file(path: Path, *users: tuple[str, str | None, str | None]) -> Path:
    """A users file with (name, password or None, justification or None) entries, cheap hashes."""
    for name, password, why in users:
        add_user(path, name, password, justification=why, **FAST)
    return path


def force_config(folder: Path, store: Path, taxii: str) -> Path:
    """A consumer config naming ``store``, with ``taxii`` as its ``[taxii]`` section's body."""
    config = folder / "herts.toml"
    config.write_text(
        f"""agency = "herts-police"
key_file = "keys/herts.key"
directory = "directory"
policy = "policy.toml"
store = "{store}"
environment = "test"

[taxii]
{taxii}
"""
    )
    return config

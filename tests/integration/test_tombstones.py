"""Tombstones in the store (issue 16), on SQLite and PostgreSQL: retention pruning, erasure, and the
upgrade of a schema 3 store.

No Kafka here: the simulated bus (tests/simulator.py) publishes through the real publisher and the
real pipeline judges and commits into the store under test (``store_url``: each test runs on both
backends). Delivery and propagation are tested on the real broker in test_data_protection.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from intelbus.samples import correction_of, erasure_of
from intelbus.store import open_store
from intelbus.store.access import GENESIS, AccessLog
from intelbus.store.base import SCHEMA_VERSION, Expiry
from tests.attacks.harness import sighting
from tests.simulator import BusSimulator, SimulatedConsumer

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
PERSONAL = "Seen with Daniel Green, VRM AB12 CDE"


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


@pytest.fixture
def herts(sim: BusSimulator, store_url: str) -> Iterator[SimulatedConsumer]:
    consumer = SimulatedConsumer(sim, store_path=store_url)
    yield consumer
    consumer.close()


def _personal(seed: int) -> object:
    record = sighting(seed=seed)
    data = record.model_dump(mode="json")
    data["description"] = f"Loitering by the gate. {PERSONAL}"
    return type(record).model_validate(data)


def _expiry(record_id: str) -> Expiry:
    return Expiry("cst", record_id, "sightings", datetime.now(UTC))


def test_prune_keeps_a_tombstone_and_nothing_of_the_contents(
    sim: BusSimulator, herts: SimulatedConsumer
) -> None:
    pub = sim.publisher()
    old, kept = _personal(601), _personal(602)
    pub.publish(old)
    pub.publish(kept)
    pub.publish(
        correction_of(
            old, description=f"Corrected. {PERSONAL}", reason="typo", at=datetime.now(UTC)
        )
    )  # type: ignore[arg-type]
    herts.deliver(list(sim.log))
    store = herts.store
    assert store.prune([_expiry(old.record_id)]) == 1  # type: ignore[attr-defined]
    assert store.prune([_expiry(old.record_id)]) == 0  # type: ignore[attr-defined]
    view = store.get(old.record_id, "cst")  # type: ignore[attr-defined]
    assert view is not None
    assert (view.status, view.payload, view.visible) == ("pruned", None, False)
    assert all(h.payload is None and h.reason == "" for h in view.history)
    (tomb,) = store.tombstones()
    assert (tomb.record_id, tomb.reason, tomb.rule_id) == (old.record_id, "retention", "sightings")  # type: ignore[attr-defined]
    assert tomb.digest == view.digest
    assert [v.record_id for v in store.iter_records()] == [kept.record_id]  # type: ignore[attr-defined]
    assert store.search("Daniel Green") != []  # the kept record still holds it
    assert {v.record_id for v in store.search("Daniel Green")} == {kept.record_id}  # type: ignore[attr-defined]
    assert store.summary()["pruned"] == 1
    assert old.record_id not in {c.record_id for c in store.retention_candidates()}  # type: ignore[attr-defined]
    # A correction that arrives after the prune brings nothing back.
    start = len(sim.log)
    pub.publish(
        correction_of(
            old, description=f"Again. {PERSONAL}", reason="again", at=datetime.now(UTC), seed=21
        )
    )  # type: ignore[arg-type]
    (verdict,) = herts.deliver(sim.log[start:])
    assert verdict.accepted
    view = store.get(old.record_id, "cst")  # type: ignore[attr-defined]
    assert view is not None
    assert (view.status, view.payload) == ("pruned", None)
    # An erasure of a pruned record turns its tombstone into an erasure's (it says more).
    erasure = erasure_of(old, at=datetime.now(UTC))  # type: ignore[arg-type]
    pub.publish(erasure)
    herts.deliver([sim.log[-1]])
    (tomb,) = store.tombstones()
    assert (tomb.reason, tomb.erasure_record_id) == ("erasure", erasure.record_id)
    assert store.tombstones(reason="retention") == []
    view = store.get(old.record_id, "cst")  # type: ignore[attr-defined]
    assert view is not None
    assert view.status == "erased"


def test_an_erasure_on_each_backend_leaves_no_copy_in_any_table(
    sim: BusSimulator, herts: SimulatedConsumer, store_url: str
) -> None:
    pub = sim.publisher()
    record = _personal(603)
    pub.publish(record)
    pub.publish(
        correction_of(
            record,
            description=f"Fixed. {PERSONAL}",
            reason=f"named {PERSONAL}",
            at=datetime.now(UTC),
        )
    )  # type: ignore[arg-type]
    herts.deliver(list(sim.log))
    pub.publish(erasure_of(record, at=datetime.now(UTC)))  # type: ignore[arg-type]
    herts.deliver([sim.log[-1]])
    assert _tables_holding(store_url, "Daniel Green") == []


def _tables_holding(store_url: str, text: str) -> list[str]:
    if store_url.startswith("sqlite"):
        con = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return [
                t
                for t in tables
                for row in con.execute(f"SELECT * FROM {t}")  # noqa: S608 - schema names
                if any(isinstance(v, str) and text in v for v in row)
            ]
        finally:
            con.close()
    with psycopg.connect(store_url) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        found = []
        for t in tables:
            for row in con.execute(f"SELECT * FROM {t}"):  # noqa: S608 - schema names
                if any(text in json.dumps(v, default=str) for v in row if v is not None):
                    found.append(t)
        return found


# --- upgrading a schema 3 store -------------------------------------------------------------------

# What a schema 3 store made by the previous intelbus held (tests/vectors/store_v3.sqlite.sql):
# three sightings, one corrected, one retracted, one withheld (another force's area).
V3_SUMMARY = {"stored": 1, "withheld": 1, "retracted": 1, "amendments_applied": 2}

# PostgreSQL: a schema 4 store taken back to schema 3's definitions (its checks, no legal basis,
# no tombstones), as the previous intelbus made them.
_PG_BACK_TO_V3 = """
DROP TABLE tombstones;
DROP TABLE access_log;
ALTER TABLE records DROP CONSTRAINT records_status_check, DROP CONSTRAINT records_check,
    DROP CONSTRAINT records_tombstone_check,
    ADD CONSTRAINT records_status_check
        CHECK (status IN ('live', 'retracted', 'withheld', 'quarantined', 'withdrawn')),
    ADD CONSTRAINT records_check CHECK ((payload IS NULL) = (action IN ('withhold', 'quarantine')));
ALTER TABLE record_versions DROP COLUMN legal_basis,
    DROP CONSTRAINT record_versions_change_check, DROP CONSTRAINT record_versions_outcome_check,
    ADD CONSTRAINT record_versions_change_check
        CHECK (change IN ('original', 'correction', 'retraction')),
    ADD CONSTRAINT record_versions_outcome_check
        CHECK (outcome IN ('store', 'redact', 'withhold', 'quarantine', 'retract'));
ALTER TABLE amendments DROP COLUMN legal_basis, DROP CONSTRAINT amendments_kind_check,
    ADD CONSTRAINT amendments_kind_check CHECK (kind IN ('correction', 'retraction'));
UPDATE schema_version SET version = 3;
UPDATE meta SET value = '3' WHERE key = 'schema_version';
"""


def _v3_store(store_url: str, sim: BusSimulator) -> None:
    """A schema 3 store at ``store_url`` holding V3_SUMMARY."""
    if store_url.startswith("sqlite"):
        path = Path(store_url.removeprefix("sqlite:///"))
        con = sqlite3.connect(path)
        try:
            con.executescript((VECTORS / "store_v3.sqlite.sql").read_text())
        finally:
            con.close()
        path.chmod(0o600)
        return
    pub = sim.publisher()
    a, b, c = sighting(seed=501), sighting(seed=502), sighting(seed=503, area="GREATER_MANCHESTER")
    for r in (a, b, c):
        pub.publish(r)
    now = datetime.now(UTC)
    pub.publish(correction_of(a, description="Corrected description", reason="typo", at=now))
    from intelbus.kinds import Family  # noqa: PLC0415 - only this branch needs it
    from intelbus.samples import retraction_of  # noqa: PLC0415

    pub.publish(retraction_of(b, reason="duplicate", at=now, seed=8), family=Family.SIGHTINGS)
    consumer = SimulatedConsumer(sim, store_path=store_url)
    consumer.deliver(list(sim.log))
    consumer.close()
    with psycopg.connect(store_url) as con:
        con.execute(_PG_BACK_TO_V3)


def test_a_schema_3_store_upgrades_in_place_and_then_prunes(
    store_url: str, sim: BusSimulator
) -> None:
    _v3_store(store_url, sim)
    with closing(open_store(store_url)) as store:
        assert store.meta("schema_version") == str(SCHEMA_VERSION) == "4"
        summary = store.summary()
        assert {k: summary[k] for k in V3_SUMMARY} == V3_SUMMARY
        assert (summary["erased"], summary["pruned"]) == (0, 0)
        (live,) = [v for v in store.iter_records() if v.status == "live"]
        assert live.payload is not None
        assert [h.change for h in live.history] == ["original", "correction"]
        assert store.prune([Expiry(live.producer_id, live.record_id, "r", datetime.now(UTC))]) == 1
        assert store.get(live.record_id, live.producer_id).status == "pruned"  # type: ignore[union-attr]
    with closing(open_store(store_url)) as store:  # reopening is a no-op
        assert store.summary()["pruned"] == 1
        assert AccessLog(store).head() == (0, GENESIS)  # the access log came with schema 4
        assert len(store.tombstones()) == 1

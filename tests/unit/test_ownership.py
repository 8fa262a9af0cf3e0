"""Whose is this (issue 20, class 5; the SQLite half of class 3), without a broker.

* A store is bound to its agency when it is created (in the schema's transaction); an older store
  is bound by its first consumer (logged); another agency's consumer is refused, nothing written.
* A SQLite store has one writer: a second one is refused at start; readers take no lock; a lock
  file a local user tampers with makes the consumer refuse, never corrupts the store.
* A consumer's key must be the directory's current key for its agency.
* A sharing policy changed while the consumer runs is reloaded, or stops the consumer.

The same cases run on the real broker, on SQLite and PostgreSQL, in tests/attacks/test_ownership.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
import structlog

from consumers.agency import AgencyConsumer
from consumers.policy_watch import PolicyWatch
from intelbus.cli import demo_cmd
from intelbus.errors import (
    ConfigError,
    InsecureFileError,
    KeyNotCurrent,
    OwnershipError,
    PolicyReloadFailed,
    StoreError,
    StoreLocked,
    StoreOwnerMismatch,
)
from intelbus.identity import AgencyIdentity
from intelbus.store import base as store_base
from intelbus.store import open_store
from intelbus.store.base import OWNER_META_KEY
from intelbus.store.lock import lock_path
from intelbus.trust.model import Batch
from tests.simulator import BusSimulator

HERTS = "herts-police"
MET = "met-police"


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, read with plain sqlite3 (no lock, no binding)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        # Table names come from sqlite_master itself.
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}  # noqa: S608
    finally:
        conn.close()


# --- the store's owner ----------------------------------------------------------------------------


def test_a_new_store_is_bound_to_its_agency_when_created(tmp_path: Path) -> None:
    path = tmp_path / "herts.sqlite"
    store = open_store(str(path), owner=HERTS)
    try:
        assert store.meta(OWNER_META_KEY) == HERTS
    finally:
        store.close()
    store = open_store(str(path), owner=HERTS)  # its own consumer again: fine
    store.close()


def test_another_agencys_consumer_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "met.sqlite"
    open_store(str(path), owner=MET).close()
    before = _rows(path)
    with pytest.raises(StoreOwnerMismatch, match="belongs to met-police, not herts-police") as e:
        open_store(str(path), owner=HERTS)
    assert e.value.code == "store_owner_mismatch"
    assert isinstance(e.value, OwnershipError)
    assert _rows(path) == before
    # The refusal left no lock behind: the Met's own consumer still starts.
    open_store(str(path), owner=MET).close()


def test_readers_bind_nothing_and_take_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    reader = open_store(str(path))
    try:
        assert reader.meta(OWNER_META_KEY) is None
        writer = open_store(str(path), owner=HERTS)  # a reader does not keep the writer out
        try:
            again = open_store(str(path))  # nor does a writer keep readers out
            assert again.meta(OWNER_META_KEY) == HERTS
            again.close()
        finally:
            writer.close()
    finally:
        reader.close()


def test_a_store_made_before_owners_is_bound_by_its_first_consumer_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite"
    open_store(str(path)).close()  # as an older intelbus left it: no owner
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(store_base, "log", structlog.wrap_logger(None, processors=[capture]))
    store = open_store(str(path), owner=HERTS)
    store.close()
    bound = [e for e in capture.entries if e["event"] == "store.owner_bound"]
    assert [e["owner"] for e in bound] == [HERTS]
    with pytest.raises(StoreOwnerMismatch):
        open_store(str(path), owner=MET)


def test_a_batch_cannot_change_the_owner(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite"), owner=HERTS)
    try:
        with pytest.raises(StoreError, match="owner"):
            store.commit(Batch(group_id="g", meta={OWNER_META_KEY: MET}))
        assert store.meta(OWNER_META_KEY) == HERTS
    finally:
        store.close()


# --- one writer per SQLite store -----------------------------------------------------------------


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "herts.sqlite"
    first = open_store(str(path), owner=HERTS)
    try:
        with pytest.raises(StoreLocked, match="already being written") as e:
            open_store(str(path), owner=HERTS)
        assert e.value.code == "store_locked"
        assert f"pid {os.getpid()}" in str(e.value)
        assert stat.S_IMODE(lock_path(path).stat().st_mode) == 0o600
    finally:
        first.close()
    open_store(str(path), owner=HERTS).close()  # after it stopped, another may start


def test_a_lock_file_a_local_user_planted_is_refused_and_the_store_is_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "herts.sqlite"
    open_store(str(path), owner=HERTS).close()
    before = _rows(path)
    lock = lock_path(path)
    victim = tmp_path / "precious"
    victim.write_bytes(b"keep me")
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(InsecureFileError, match="symbolic link"):
        open_store(str(path), owner=HERTS)
    assert victim.read_bytes() == b"keep me"
    lock.unlink()
    os.mkfifo(lock, 0o600)
    with pytest.raises(InsecureFileError, match="not a regular file"):
        open_store(str(path), owner=HERTS)
    lock.unlink()
    lock.write_bytes(b"")
    lock.chmod(0o644)  # others could open it, and hold the lock to keep the consumer out
    with pytest.raises(InsecureFileError, match="chmod 600"):
        open_store(str(path), owner=HERTS)
    assert _rows(path) == before
    lock.chmod(0o600)
    open_store(str(path), owner=HERTS).close()


def test_a_lock_file_removed_or_replaced_while_running_stops_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "herts.sqlite"
    store = open_store(str(path), owner=HERTS)
    try:
        store.check_writer()
        lock_path(path).unlink()
        second = open_store(str(path), owner=HERTS)  # locks a new file at the path...
        try:
            with pytest.raises(StoreLocked, match="removed or replaced"):
                store.check_writer()  # ...so the first one stops at its next poll loop
        finally:
            second.close()
    finally:
        store.close()


# --- the consumer's key ----------------------------------------------------------------------------


def relabelled(identity: AgencyIdentity, agency: str, path: Path) -> AgencyIdentity:
    """``identity``'s key file with its agency id changed to ``agency`` (an operator's copy of
    another agency's key, renamed): the keys are the other agency's."""
    identity.save(path)
    doc = json.loads(path.read_text())
    doc["agency_id"] = agency
    path.write_text(json.dumps(doc))
    return AgencyIdentity.load(path)


def _consumer(sim: BusSimulator, identity: AgencyIdentity | None = None) -> AgencyConsumer:
    pipeline = sim.pipeline(HERTS)
    if identity is not None:
        pipeline.identity = identity
    return AgencyConsumer(
        pipeline=pipeline,
        store=open_store(str(sim.tmp / f"{HERTS}-{time.monotonic_ns()}.sqlite"), owner=HERTS),
        bootstrap_servers="127.0.0.1:1",
        group_id="g",
        topics=[],
    )


@pytest.mark.parametrize("which", ["current", "rotated", "another_agency", "never_listed"])
def test_the_consumer_key_must_be_the_directorys_current_one(tmp_path: Path, which: str) -> None:
    sim = BusSimulator(tmp_path)
    old = sim.identities[HERTS]
    if which == "rotated":
        sim.rotate_key(HERTS)
    key: AgencyIdentity | None = None
    if which == "rotated":
        key = old  # the key file left in place after the admins rotated Herts' key
    elif which == "another_agency":
        key = relabelled(sim.identities[MET], HERTS, tmp_path / "met-as-herts.key")
    elif which == "never_listed":
        key = AgencyIdentity.generate(HERTS)
    consumer = _consumer(sim, key)
    try:
        if which == "current":
            consumer.check_key()
            return
        with pytest.raises(KeyNotCurrent, match="current key") as e:
            consumer.check_key()
        assert e.value.code == "key_not_current"
    finally:
        consumer.store.close()


# --- the sharing policy ------------------------------------------------------------------------------

STRICTER = demo_cmd.POLICIES[HERTS].replace('id = "own-sightings"', 'id = "own-sightings-v2"')


def _replace(path: Path, text: str) -> None:
    """Write beside, then rename: how an operator (or config management) replaces a file."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def test_a_policy_is_reloaded_only_when_its_rules_change(tmp_path: Path) -> None:
    path = tmp_path / "herts.policy.toml"
    path.write_text(demo_cmd.POLICIES[HERTS])
    watch = PolicyWatch(path, HERTS)
    first = watch.policy.policy_hash
    assert watch.changed() is None
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: same bytes
    assert watch.changed() is None
    _replace(path, demo_cmd.POLICIES[HERTS] + "\n# a comment\n")  # same rules
    assert watch.changed() is None
    _replace(path, STRICTER)
    new = watch.changed()
    assert new is not None
    assert new.policy_hash != first
    assert watch.policy is new
    assert watch.changed() is None


@pytest.mark.parametrize(
    "text",
    ["not = [toml", 'agency = "herts-police"\nrules = "none"\n', demo_cmd.POLICIES[MET], None],
    ids=["not_toml", "invalid", "another_agency", "removed"],
)
def test_a_policy_that_no_longer_loads_stops_the_consumer(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "herts.policy.toml"
    path.write_text(demo_cmd.POLICIES[HERTS])
    watch = PolicyWatch(path, HERTS)
    kept = watch.policy
    if text is None:
        path.unlink()
    else:
        _replace(path, text)
    with pytest.raises(PolicyReloadFailed, match="stopped before judging another batch") as e:
        watch.changed()
    assert e.value.code == "policy_reload_failed"
    assert watch.policy is kept


def test_a_policy_of_another_agency_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(demo_cmd.POLICIES[MET])
    with pytest.raises(ConfigError, match="met-police's, not herts-police's"):
        PolicyWatch(path, HERTS)


def test_the_consumer_judges_later_batches_under_the_reloaded_policy(tmp_path: Path) -> None:
    sim = BusSimulator(tmp_path)
    path = tmp_path / "herts.policy.toml"
    path.write_text(demo_cmd.POLICIES[HERTS])
    consumer = _consumer(sim)
    try:
        consumer.policy_watch = PolicyWatch(path, HERTS)
        consumer.pipeline.swap_policy(consumer.policy_watch.policy)
        consumer.reload_policy()
        before = consumer.pipeline.reader
        _replace(path, STRICTER)
        consumer.reload_policy()
        assert consumer.pipeline.reader is not before
        assert consumer.pipeline.reader.policy is consumer.policy_watch.policy
        assert consumer.pipeline.policy.policy_hash != before.policy.policy_hash  # type: ignore[union-attr]
        _replace(path, "broken [")
        with pytest.raises(PolicyReloadFailed):
            consumer.reload_policy()
        assert consumer.pipeline.reader.policy is consumer.policy_watch.policy
    finally:
        consumer.store.close()

"""Whose is this (issue 20, class 5; the SQLite half of class 3), on the REAL broker.

A careless operator (or an insider) points a consumer at what is not its own:

* **another force's store**: Herts' config naming the Met's store (SQLite and PostgreSQL);
* **a store another consumer writes**: a second consumer on one SQLite store while the first runs
  (PostgreSQL stores allow several group members by design);
* **a key that is not the agency's current one**: an old rotated key, another agency's key, a key
  the directory never listed;
* **a policy replaced while the consumer runs**: a valid stricter one is followed (its hash on
  every later decision), an invalid one stops the consumer (exit 3).

Each case asserts the refusal with its error code, exit status and message; that trusted state did
not change (store rows, the store's offsets and the group's offsets committed to Kafka); and that
CST's genuine records published afterwards are all stored by the right consumer on its own store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumers.agency import build_consumer
from consumers.config import ConsumerConfig
from intelbus import federation
from intelbus.cli import demo_cmd
from intelbus.cli.main import app
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.trust import sign
from intelbus.errors import KeyNotCurrent, StoreLocked, StoreOwnerMismatch
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.store import open_store
from intelbus.store.base import OWNER_META_KEY
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from tests.attacks.report import attack_result, genuine_result
from tests.federation import Federation
from tests.federation import sighting_for as _sighting
from tests.pgfixtures import fresh_postgres_database

pytestmark = pytest.mark.kafka
HERTS = "herts-police"
MET = "met-police"

# "stricter": Herts' own sightings are withheld from now on (a rule ahead of all the others).
# A whole policy, so the repository's policy scan (tests/unit/test_policy.py) can load it.
STRICTER = """agency = "herts-police"
own_force_areas = ["HERTFORDSHIRE"]
accepted_conditions = ["no-onward-disclosure"]
[[rules]]
id = "lockdown"
kinds = ["sighting"]
action = "withhold"
[[rules]]
id = "suspected-false"
assessment = ["E"]
action = "quarantine"
[[rules]]
id = "incidents-redacted"
kinds = ["incident"]
action = "redact"
redact = ["victim_details", "reporter_ref"]
[[rules]]
id = "elsewhere"
force_area = "other"
action = "withhold"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def fed(request: pytest.FixtureRequest, tmp_path: Path, bootstrap: str) -> Iterator[Federation]:
    """The demo federation, each force on a store of its own (a database each on PostgreSQL)."""
    if request.param == "sqlite":
        yield Federation(tmp_path, bootstrap, "sqlite")
        return
    admin: str = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(admin) as herts, fresh_postgres_database(admin) as met:
        federation = Federation(tmp_path, bootstrap, herts)
        for force, url in ((HERTS, herts), (MET, met)):
            config = tmp_path / f"{force}.toml"
            config.write_text(
                config.read_text().replace(
                    f'store = "{federation.stores[force]}"', f'store = "{url}"'
                )
            )
            federation.stores[force] = url
        yield federation


def _group(fed: Federation, force: str) -> str:
    return f"{fed.prefix}.{force}"


def _state(fed: Federation, store_url: str, force: str) -> dict[str, Any]:
    """What must not change when a consumer is refused: the store's rows that matter (summary,
    records, quarantine, stream heads, owner, the store's offsets) and the group's Kafka offsets."""
    store = open_store(store_url)
    try:
        topics = [topic_name(f, prefix=fed.prefix) for f in Family if f is not Family.DIRECTORY]
        return {
            "summary": store.summary(),
            "records": sorted(
                (v.producer_id, v.record_id, v.status, v.policy_hash)
                for v in store.list_records(limit=10_000)
            ),
            "quarantine": len(store.quarantine_entries(10_000)),
            "chain": sorted(
                (k.producer_id, k.topic, k.partition, k.epoch, c.last_sequence)
                for k, c in store.load_chain().items()
            ),
            "owner": store.meta(OWNER_META_KEY),
            "offsets": {t: store.load_offsets(_group(fed, force), t) for t in topics},
            "kafka": transport.committed_offsets(fed.bootstrap, _group(fed, force)),
        }
    finally:
        store.close()


def _cli(fed: Federation, force: str, config: Path | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "consume",
            "--agency",
            force,
            "--config",
            str(config or fed.root / f"{force}.toml"),
            "--until-idle",
        ],
    )
    return result.exit_code, " ".join(result.output.split())  # rich wraps at 80 columns


def _genuine_flows(fed: Federation, case: str, count: int = 3) -> None:
    """CST's next genuine records: Herts' consumer, on its own store, stores every one, live."""
    records = [_sighting("HERTFORDSHIRE", "GREEN") for _ in range(count)]
    fed.publish(records)
    fed.consume(HERTS)
    store = open_store(fed.stores[HERTS])
    try:
        kept = sum(
            1
            for r in records
            if (v := store.get(r.record_id, "cst")) is not None and v.status == "live"
        )
        assert store.meta(OWNER_META_KEY) == HERTS
    finally:
        store.close()
    genuine_result(case=case, source="broker", published=count, kept=kept)
    assert kept == count, f"{case}: {count - kept} genuine record(s) lost"


def _report(case: str, code: str, refused: bool, unchanged: bool) -> None:
    attack_result(
        case=case,
        source="broker",
        expected_reason=code,
        outcome="rejected" if refused else "accepted",
        reason=code if refused else "none",
        trusted_state_unchanged=unchanged,
    )


def _run_once(config: Path) -> None:
    consumer = build_consumer(ConsumerConfig.load(config))
    try:
        consumer.run(until_idle=True, idle_polls=2)
    finally:
        consumer.store.close()


def _refused_at_start(
    fed: Federation,
    case: str,
    code: str,
    message: str,
    *,
    error: type[Exception],
    store_url: str,
    config: Path | None = None,
) -> None:
    """The consumer of ``config`` refuses (the typed error from Python, exit 3 and one line from
    the CLI), and neither the store at ``store_url`` nor Herts' group offsets changed."""
    config = config or fed.root / f"{HERTS}.toml"
    before = _state(fed, store_url, HERTS)
    with pytest.raises(error, match=message) as raised:
        _run_once(config)
    assert getattr(raised.value, "code", None) == code
    exit_code, output = _cli(fed, HERTS, config)
    refused = exit_code == 3 and f"[{code}]" in output
    unchanged = _state(fed, store_url, HERTS) == before
    _report(case, code, refused, unchanged)
    assert exit_code == 3, output
    assert f"[{code}]" in output
    assert "Traceback" not in output
    assert unchanged


# --- another force's store ------------------------------------------------------------------------


def test_herts_pointed_at_the_mets_store_is_refused_and_writes_nothing(fed: Federation) -> None:
    """An operator copies Herts' config and leaves the Met's store in it. Herts' consumer refuses
    at start (StoreOwnerMismatch, exit 3), the Met's store and both groups' offsets are untouched,
    and Herts on its own store goes on storing CST's feed."""
    fed.publish([_sighting("METROPOLITAN", "GREEN"), _sighting("HERTFORDSHIRE", "GREEN")])
    assert fed.consume(MET).received == 2
    met_before = _state(fed, fed.stores[MET], MET)
    assert met_before["owner"] == MET
    wrong = fed.root / "herts-on-met.toml"
    wrong.write_text(
        (fed.root / f"{HERTS}.toml")
        .read_text()
        .replace(f'store = "{fed.stores[HERTS]}"', f'store = "{fed.stores[MET]}"')
    )
    assert fed.stores[MET] in wrong.read_text()
    _refused_at_start(
        fed,
        "ownership.store_of_another_agency",
        "store_owner_mismatch",
        "belongs to met-police, not herts-police",
        error=StoreOwnerMismatch,
        store_url=fed.stores[MET],
        config=wrong,
    )
    assert _state(fed, fed.stores[MET], MET) == met_before
    _genuine_flows(fed, "ownership.store_of_another_agency")
    # And the other way round: the Met's consumer is refused on Herts' store now that it is bound.
    code, output = _cli(
        fed,
        MET,
        _rewritten(fed, MET, fed.stores[MET], fed.stores[HERTS], "met-on-herts.toml"),
    )
    assert code == 3, output
    assert "belongs to herts-police, not met-police" in output


def _rewritten(fed: Federation, force: str, old: str, new: str, name: str) -> Path:
    path = fed.root / name
    path.write_text((fed.root / f"{force}.toml").read_text().replace(old, new))
    return path


# --- a second writer on one SQLite store ----------------------------------------------------------


def _start(fed: Federation, force: str) -> subprocess.Popen[str]:
    env = {**os.environ, "INTELBUS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "intelbus.cli",
            "consume",
            "--agency",
            force,
            "--config",
            str(fed.root / f"{force}.toml"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stored(fed: Federation, record_ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        store = open_store(fed.stores[HERTS])
        try:
            return all(store.get(r, "cst") is not None for r in record_ids)
        finally:
            store.close()

    return check


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, " ".join(err.split())  # rich wraps lines


def test_a_second_consumer_on_one_sqlite_store_is_refused_while_the_first_runs(
    tmp_path: Path, bootstrap: str
) -> None:
    """Herts' consumer runs; an operator starts a second one with the same config. It refuses at
    start (StoreLocked, exit 3): the store and the offsets are untouched, the first one goes on
    storing CST's feed, and once the first has stopped the second may start."""
    fed = Federation(tmp_path, bootstrap, "sqlite")
    first_lot = fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(3)])
    first = _start(fed, HERTS)
    try:
        _wait("the first consumer to store CST's records", _stored(fed, first_lot))
        _refused_at_start(
            fed,
            "ownership.second_sqlite_writer",
            "store_locked",
            "already being written by another consumer",
            error=StoreLocked,
            store_url=fed.stores[HERTS],
        )
        assert first.poll() is None, "the first consumer must go on running"
        second_lot = fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(2)])
        _wait("the first consumer to store the next records", _stored(fed, second_lot))
    finally:
        code, err = _stop(first)
    assert code == 0, err[-2000:]
    _genuine_flows(fed, "ownership.second_sqlite_writer")  # the second, now the only writer


# --- a key that is not the directory's current one --------------------------------------------------


def _install_key(fed: Federation, identity: AgencyIdentity) -> None:
    path = fed.root / "keys" / f"{HERTS}.key"
    path.unlink()
    identity.save(path)


def _relabelled(identity: AgencyIdentity, agency: str, path: Path) -> AgencyIdentity:
    """``identity``'s keys in a key file that says ``agency`` (another agency's key, renamed)."""
    identity.save(path)
    doc = json.loads(path.read_text())
    doc["agency_id"] = agency
    path.write_text(json.dumps(doc))
    return AgencyIdentity.load(path)


def test_a_consumer_whose_key_is_not_the_current_one_is_refused_before_polling(
    fed: Federation,
) -> None:
    """Herts' key file is a key the directory never listed, the Met's key relabelled, or (after
    the admins rotate Herts' key) the old one. Each time the consumer refuses before joining its
    group (KeyNotCurrent, exit 3): nothing is quarantined, no offset moves, and with the current
    key it stores every record, including those published while it was refused."""
    fed.publish([_sighting("HERTFORDSHIRE", "GREEN")])
    fed.consume(HERTS)
    waiting = fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(2)])
    genuine = fed.ids[HERTS]
    wrong = {
        "ownership.key_never_listed": AgencyIdentity.generate(HERTS),
        "ownership.key_of_another_agency": _relabelled(
            fed.ids[MET], HERTS, fed.root / "met-relabelled.key"
        ),
    }
    for case, identity in wrong.items():
        _install_key(fed, identity)
        _refused_at_start(
            fed,
            case,
            "key_not_current",
            "current key",
            error=KeyNotCurrent,
            store_url=fed.stores[HERTS],
        )
    _install_key(fed, genuine)
    assert fed.consume(HERTS).stored == 2
    assert _stored(fed, waiting)()
    # The admins rotate Herts' key; the operator has not yet installed the new key file.
    new = AgencyIdentity.generate(HERTS)
    folder = fed.root / "directory"
    doc = edit.rotate_key(
        dstore.load_folder(folder).latest,
        agency_id=HERTS,
        identity=new.public,
        now=datetime.now(UTC),
    )
    for admin in federation.ADMINS:
        doc = sign(doc, fed.ids[admin].signing_seed())
    dstore.write_file(dstore.version_path(folder, doc.signed.version), doc)
    sealed_to_new = fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(2)])
    _refused_at_start(
        fed,
        "ownership.key_rotated_out",
        "key_not_current",
        f"current key in directory v{doc.signed.version}",
        error=KeyNotCurrent,
        store_url=fed.stores[HERTS],
    )
    _install_key(fed, new)
    stats = fed.consume(HERTS)
    assert (stats.stored, dict(stats.quarantined)) == (2, {})
    assert _stored(fed, sealed_to_new)()
    _genuine_flows(fed, "ownership.key_rotated_out")


# --- the policy replaced while the consumer runs -------------------------------------------------------


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def _views(fed: Federation, record_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    store = open_store(fed.stores[HERTS])
    try:
        return {
            r: (v.status, v.rule_id, v.policy_hash)
            for r in record_ids
            if (v := store.get(r, "cst")) is not None
        }
    finally:
        store.close()


def test_a_policy_replaced_while_the_consumer_runs_is_followed_or_stops_it(
    fed: Federation,
) -> None:
    """While Herts' consumer runs, its policy file is replaced by a valid stricter one: records
    judged afterwards carry the new hash and follow it (Herts' sightings withheld). Then by one
    that does not load: the consumer stops (exit 3, one line), nothing past the last committed
    batch is judged, and with a valid policy again the feed flows."""
    policy_file = fed.root / f"{HERTS}.policy.toml"
    before = _sighting("HERTFORDSHIRE", "GREEN")
    fed.publish([before])
    proc = _start(fed, HERTS)
    try:
        _wait("the first record", _stored(fed, [before.record_id]))
        old_hash = _views(fed, [before.record_id])[before.record_id][2]
        _replace(policy_file, STRICTER)
        time.sleep(2)  # a few poll loops: the change is seen between batches
        after = fed.publish([_sighting("HERTFORDSHIRE", "GREEN") for _ in range(2)])
        _wait("the records judged under the new policy", _stored(fed, after))
        views = _views(fed, [before.record_id, *after])
        assert views[before.record_id] == ("live", "own-sightings", old_hash)
        new_hashes = {views[r][2] for r in after}
        assert len(new_hashes) == 1
        assert new_hashes != {old_hash}
        assert {views[r][:2] for r in after} == {("withheld", "lockdown")}
        _report("ownership.policy_replaced_valid", "policy_reloaded", True, True)
        state = _state(fed, fed.stores[HERTS], HERTS)
        _replace(policy_file, "agency = [broken")
        proc.wait(timeout=60)
    finally:
        code, err = _stop(proc)
    refused = code == 3 and "[policy_reload_failed]" in err
    late = fed.publish([_sighting("HERTFORDSHIRE", "GREEN")])
    unchanged = _state(fed, fed.stores[HERTS], HERTS) == state
    _report("ownership.policy_replaced_invalid", "policy_reload_failed", refused, unchanged)
    assert code == 3, err[-2000:]
    assert "[policy_reload_failed]" in err
    assert "stopped before judging another batch" in err
    assert "Traceback" not in err
    assert unchanged
    assert _views(fed, late) == {}
    _replace(policy_file, demo_cmd.POLICIES[HERTS])
    _genuine_flows(fed, "ownership.policy_replaced")
    assert _views(fed, late)[late[0]][:2] == ("live", "own-sightings")

"""Scale out: several consumer instances of one agency, one consumer group, one PostgreSQL store.

Members join and leave while records flow (each join or leave is a rebalance that moves partitions
between processes). At the end the store must hold every published record exactly once, with no
quarantine row: a record delivered twice would be refused by the chain check as a replay and show
up there, so an empty quarantine is the proof that no member processed another's records again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intelbus.kinds import Family
from intelbus.records import Incident
from intelbus.samples import feed
from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from tests.federation import Federation
from tests.federation import sighting_for as _sighting
from tests.integration.conftest import fresh_postgres_database

FORCE = "herts-police"


@pytest.fixture
def pg_fed(tmp_path: Path, bootstrap: str, postgres_url: str) -> Iterator[Federation]:
    with fresh_postgres_database(postgres_url) as url:
        yield Federation(tmp_path, bootstrap, url)


def _incident() -> Incident:
    base = next(r for r in feed(seed=23, sightings=0, incidents=4) if isinstance(r, Incident))
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = "HERTFORDSHIRE"
    data["grading"].update(tlp="GREEN", handling_code="P", handling_conditions=[], assessment="B")
    return Incident.model_validate(data)


class Member:
    """One consumer instance: a separate ``intelbus consume`` process, running until SIGTERM."""

    def __init__(self, name: str, config: Path, log_dir: Path) -> None:
        self.name = name
        self.stdout = (log_dir / f"{name}.out").open("w+")
        self.stderr = (log_dir / f"{name}.err").open("w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "intelbus.cli",
                "consume",
                "--agency",
                FORCE,
                "--config",
                str(config),
            ],
            env={**os.environ, "INTELBUS_LOG_LEVEL": "INFO"},
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        self.stderr.flush()
        self.stderr.seek(0)
        out = []
        for line in self.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
        return out

    def received(self) -> int:
        """The 'received' figure of the final summary table the command prints."""
        self.stdout.seek(0)
        rows = [ln for ln in self.stdout.read().splitlines() if re.search(r"│\s*\d+\s*│", ln)]
        assert rows, f"{self.name} printed no summary"
        return int(rows[-1].split("│")[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _stored(url: str) -> int:
    store = open_store(url)
    try:
        s = store.summary()
    finally:
        store.close()
    return s.get("stored", 0) + s.get("redacted", 0)


def _wait_for(url: str, at_least: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    n = _stored(url)
    while n < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        n = _stored(url)
    return n


def _wait_assigned(member: Member, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("count", 0) > 0 for e in member.events("partitions.assigned")):
            return True
        time.sleep(0.2)
    return False


def test_members_joining_and_leaving_lose_and_duplicate_nothing(
    pg_fed: Federation, tmp_path: Path
) -> None:
    url = pg_fed.stores[FORCE]
    config = tmp_path / f"{FORCE}.toml"
    # Small batches: many commits, so rebalances land between and during them.
    config.write_text(config.read_text() + "batch_size = 10\n")
    first = [_sighting("HERTFORDSHIRE", "GREEN") if i % 2 else _incident() for i in range(500)]
    pg_fed.publish(first)

    members: list[Member] = []
    try:
        members.append(Member("a", config, tmp_path))
        assert _wait_for(url, 60) >= 60, "member a stored nothing"
        members.append(Member("b", config, tmp_path))  # joins while a has records in flight
        assert _wait_for(url, 200) >= 200
        members.append(Member("c", config, tmp_path))
        # c's join is a rebalance of its own: let it complete before a leaves, or b alone could
        # take every partition and store the second lot before c is ever assigned (seen in CI).
        assert _wait_assigned(members[2]), "member c was not assigned a partition within 90 s"
        # A graceful leave (SIGTERM finishes the current batch, then closes): another rebalance.
        members[0].proc.send_signal(signal.SIGTERM)
        assert members[0].wait(60) == 0, "member a did not stop cleanly"
        # Records published after a left can only be consumed by b or c.
        second = [_sighting("HERTFORDSHIRE", "GREEN") if i % 2 else _incident() for i in range(300)]
        pg_fed.publish(second)
        total = len(first) + len(second)
        assert _wait_for(url, total, timeout=180) == total
        for m in members[1:]:
            m.proc.send_signal(signal.SIGTERM)
        for m in members[1:]:
            assert m.wait(60) == 0, f"member {m.name} did not stop cleanly"
    finally:
        for m in members:
            m.kill()
            # Shown by pytest only when the test fails.
            m.stderr.seek(0)
            print(f"--- member {m.name} (exit {m.proc.returncode}) ---\n{m.stderr.read()[-3000:]}")  # noqa: T201 - diagnostics on failure

    published = {r.record_id for r in first + second}
    store = open_store(url)
    try:
        summary = store.summary()
        quarantined = {k: v for k, v in summary.items() if k.startswith("quarantined")}
        assert quarantined == {}, f"records processed twice or refused: {quarantined}"
        ids = {v.record_id for v in store.iter_records()}
        assert ids == published
        assert summary["stored"] + summary["redacted"] == len(published)
        # The store's offsets for the group reach the end of every partition that holds records.
        for family in (Family.SIGHTINGS, Family.INCIDENTS):
            topic = topic_name(family, prefix=pg_fed.prefix)
            stored_offsets = store.load_offsets(f"{pg_fed.prefix}.{FORCE}", topic)
            ends = transport.end_offsets(pg_fed.bootstrap, topic)
            for partition, end in ends.items():
                if end > 0:
                    assert stored_offsets.get(partition) == end, (topic, partition)
    finally:
        store.close()

    # Every member was assigned partitions. One producer's stream on a topic lives in one
    # partition (records are keyed by producer, to keep its order), so not every member need
    # receive records; but a received records first, and only b or c could receive the second
    # lot, so a partition holding records moved between processes.
    for m in members:
        assigned = [e for e in m.events("partitions.assigned") if e.get("count", 0) > 0]
        assert assigned, f"member {m.name} was never assigned a partition"
    received = [m.received() for m in members]
    assert received[0] > 0, received
    assert received[1] + received[2] >= len(second), received
    # Together they received each record once (a second delivery would be quarantined above).
    assert sum(received) == len(published), received

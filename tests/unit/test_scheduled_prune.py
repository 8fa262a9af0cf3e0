"""The running consumer prunes its store on a schedule (issue 16): past the policy's retention,
payloads go and tombstones stay; not more often than ``prune_every_s``; never with 0."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from consumers.agency import AgencyConsumer
from intelbus.cli.main import app
from intelbus.store import open_store
from tests.attacks.harness import sighting
from tests.simulator import BusSimulator, SimulatedConsumer


def _consumer(
    sim: BusSimulator, herts: SimulatedConsumer, every: float, at: datetime
) -> AgencyConsumer:
    return AgencyConsumer(
        pipeline=herts.pipeline,
        store=herts.store,
        bootstrap_servers="unused:0",
        group_id=herts.group_id,
        topics=[],
        prune_every_s=every,
        clock=lambda: at,
    )


def test_the_consumer_prunes_on_its_schedule(tmp_path: Path) -> None:
    sim = BusSimulator(tmp_path)
    sim.publisher().publish(sighting(seed=71))
    herts = SimulatedConsumer(sim)
    try:
        herts.deliver(list(sim.log))
        now = datetime.now(UTC)
        assert _consumer(sim, herts, 3600, now).maybe_prune() == 0  # within retention
        later = now + timedelta(days=800)
        never = _consumer(sim, herts, 0, later)
        assert never.maybe_prune() == 0
        assert herts.store.summary()["pruned"] == 0
        scheduled = _consumer(sim, herts, 3600, later)
        assert scheduled.maybe_prune() == 1
        assert herts.store.summary()["pruned"] == 1
        (tomb,) = herts.store.tombstones()
        assert tomb.reason == "retention"
        # The next run waits for the schedule, whatever it would find.
        sim.publisher().publish(sighting(seed=72))
        herts.deliver([sim.log[-1]])
        assert scheduled.maybe_prune() == 0
        assert herts.store.summary()["pruned"] == 1
    finally:
        herts.close()


def test_store_prune_is_refused_in_one_line_while_the_consumer_holds_the_store(
    tmp_path: Path,
) -> None:
    """`intelbus store prune` writes, as the store's one writer: while the agency's consumer
    holds the SQLite store, it is refused with one line and an exit code, nothing pruned; once
    the consumer is gone, it prunes."""
    sim = BusSimulator(tmp_path)
    sim.publisher().publish(sighting(seed=73))
    herts = SimulatedConsumer(sim)
    herts.deliver(list(sim.log))
    herts.close()
    (tmp_path / "herts.policy.toml").write_text(
        'agency = "herts-police"\nown_force_areas = ["HERTFORDSHIRE"]\n'
        '[[rules]]\nid = "all"\naction = "store"\n'
    )
    config = tmp_path / "herts.toml"
    config.write_text(
        'agency = "herts-police"\nkey_file = "herts.key"\ndirectory = "directory"\n'
        f'policy = "herts.policy.toml"\nstore = "{herts.store_url}"\nenvironment = "sim"\n'
    )
    later = (datetime.now(UTC) + timedelta(days=800)).isoformat()
    args = ["store", "prune", "--config", str(config), "--as-of", later, "--json"]
    running = open_store(herts.store_url, owner="herts-police")  # the consumer's hold
    try:
        refused = CliRunner().invoke(app, args)
    finally:
        running.close()
    assert refused.exit_code == 3, refused.output
    assert "Traceback" not in refused.output
    assert len([x for x in refused.output.splitlines() if x.startswith("error:")]) == 1
    with open_store(herts.store_url) as store:
        assert store.summary()["pruned"] == 0
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["pruned"] == 1

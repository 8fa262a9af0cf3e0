"""One fault case's federation: keys, a threshold-signed directory, CST's producer config and
Herts' consumer configs, on fresh RF-3 topics (min ISR 2) of the fault cluster.

Built from the demo's own helpers (intelbus/cli/demo_cmd.py), so the fault suite runs the same
producer and consumer wiring as the demo and the end-to-end tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from intelbus.cli import demo_cmd
from intelbus.federation import make_directory, make_keys
from intelbus.kinds import Family
from intelbus.records import Sighting
from intelbus.samples import feed
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics, topic_name

FORCE = "herts-police"
_NAMESPACE = uuid.UUID("5a1e6f2c-3d4b-4c8e-9f00-000000000f17")


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    bootstrap: str
    prefix: str
    #: consumer name -> the store it was given instead of its own SQLite file (a PostgreSQL URL)
    stores: dict[str, str] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return topic_name(Family.SIGHTINGS, prefix=self.prefix)

    @property
    def producer_config(self) -> Path:
        return self.root / "producer.toml"

    def consumer(
        self, name: str = "main", *, batch_size: int = 500, store: str | None = None
    ) -> tuple[Path, Path | str, str]:
        """A consumer config of its own (store and group): (config, store, group id).

        The store is a SQLite file of its own unless ``store`` (a PostgreSQL URL) is given; a name
        keeps the store it was first given, so later calls find the same one.
        """
        group = f"{self.prefix}.{FORCE}.{name}"
        if store is not None:
            self.stores[name] = store
        where: Path | str = self.stores.get(name) or self.root / "stores" / f"{name}.sqlite"
        if isinstance(where, Path):
            where.parent.mkdir(parents=True, exist_ok=True)
        config = self.root / f"{FORCE}.{name}.toml"
        config.write_text(
            f'agency = "{FORCE}"\nkey_file = "keys/{FORCE}.key"\ndirectory = "directory"\n'
            f'policy = "{FORCE}.policy.toml"\nstore = "{where}"\n'
            f'environment = "{demo_cmd.ENVIRONMENT}"\nbootstrap_servers = "{self.bootstrap}"\n'
            f'topic_prefix = "{self.prefix}"\ngroup_id = "{group}"\nfamilies = ["sightings"]\n'
            f"batch_size = {batch_size}\n"
        )
        return config, where, group


def build(root: Path, bootstrap: str) -> Workspace:
    """Create the topics (RF 3, min ISR 2), keys, directory, agreement, policy and producer config.

    Raises:
        AssertionError: the topics did not get three replicas (the case would prove nothing).
    """
    root.mkdir(parents=True, exist_ok=True)
    prefix = f"fault-{uuid.uuid4().hex[:8]}"
    transport.create_topics(bootstrap, bus_topics(prefix=prefix, replication_factor=3))
    replicas = transport.topic_partitions(bootstrap, topic_name(Family.SIGHTINGS, prefix=prefix))
    if not replicas or any(len(r) != 3 for r in replicas.values()):
        raise AssertionError(f"fault topics need 3 replicas per partition, got {replicas}")
    ids = make_keys(root)
    make_directory(root, ids, prefix)
    (root / "agreement.toml").write_text(demo_cmd.AGREEMENT)
    (root / f"{FORCE}.policy.toml").write_text(demo_cmd.POLICIES[FORCE])
    (root / "producer.toml").write_text(
        f'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
        f'agreement = "agreement.toml"\nstate_file = "state/cst.sqlite"\n'
        f'environment = "{demo_cmd.ENVIRONMENT}"\nbootstrap_servers = "{bootstrap}"\n'
        f'topic_prefix = "{prefix}"\n'
    )
    return Workspace(root, bootstrap, prefix)


def records(seed: int, count: int) -> list[Sighting]:
    """``count`` deterministic GREEN Hertfordshire sightings (Herts stores every one of them).

    Record ids derive from the seed and the index, so a restarted producer regenerates the same
    records and can skip the ones its state already holds.
    """
    base = feed(seed, sightings=min(count, 64), incidents=0)
    out: list[Sighting] = []
    for i in range(count):
        data = base[i % len(base)].model_dump(mode="json")
        data["record_id"] = str(uuid.uuid5(_NAMESPACE, f"{seed}/{i}"))
        data["place"]["force_area"] = "HERTFORDSHIRE"
        data["grading"].update(
            tlp="GREEN", handling_code="P", handling_conditions=[], assessment="B"
        )
        out.append(Sighting.model_validate(data))
    return out

"""A federation sized for benchmarks: CST, ten forces (f01..f10) and an auditor, in a folder.

Like the demo's (same directory, keys and config formats), but with enough forces to seal to 1, 3
or 10 recipients: a TLP:RED sighting goes only to the forces it names, so ``named=forces[:k]``
gives exactly k recipients. Force f01's policy stores everything, so a consume benchmark measures
the pipeline, not a policy that throws records away.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

from intelbus import federation
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import sign
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.records import Sighting
from intelbus.samples import sighting
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics, topic_name

FORCES = tuple(f"f{i:02d}" for i in range(1, 11))
ENVIRONMENT = "bench"

POLICY = """agency = "f01"
own_force_areas = ["HERTFORDSHIRE"]
[[rules]]
id = "all"
action = "store"
"""


class BenchFederation:
    """Keys, a threshold-signed directory, an agreement, and producer/consumer configs."""

    def __init__(
        self, root: Path, bootstrap: str, *, slots: int = 24, create_topics: bool = True
    ) -> None:
        self.root = root
        self.bootstrap = bootstrap
        # False only for bench/publish_profile.py, which profiles with no broker at all.
        self.create_topics = create_topics
        # The directory binds CST to the exact topics it may publish to, so every set of topics a
        # run will use is registered up front; prefix_topics_fresh() moves to the next set.
        run = uuid.uuid4().hex[:8]
        self.prefixes = [f"bench-{run}-{i:02d}" for i in range(slots)]
        self.slot = 0
        root.mkdir(parents=True, exist_ok=True)
        self.ids = self._keys()
        self._directory()
        (root / "agreement.toml").write_text(
            f'producer = "cst"\nmember_forces = {list(FORCES)!r}\n'.replace("'", '"')
            + 'auditors = ["auditor"]\nauditor_tlp = ["CLEAR", "GREEN", "AMBER"]\n'
        )
        (root / "f01.policy.toml").write_text(POLICY)
        self._use(0)

    @property
    def prefix(self) -> str:
        return self.prefixes[self.slot]

    def prefix_topics_fresh(self) -> None:
        """Move to a fresh set of topics and a fresh producer state (a new stream from 0)."""
        self._use(self.slot + 1)

    def _use(self, slot: int) -> None:
        if slot >= len(self.prefixes):
            raise RuntimeError("out of pre-registered topic sets: raise `slots`")
        self.slot = slot
        if self.create_topics:
            transport.create_topics(self.bootstrap, bus_topics(prefix=self.prefix))
        (self.root / "producer.toml").write_text(
            'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
            f'agreement = "agreement.toml"\nstate_file = "state/cst-{slot}.sqlite"\n'
            f'environment = "{ENVIRONMENT}"\nbootstrap_servers = "{self.bootstrap}"\n'
            f'topic_prefix = "{self.prefix}"\n'
        )

    @property
    def sightings_topic(self) -> str:
        return topic_name(Family.SIGHTINGS, prefix=self.prefix)

    def consumer_config(self, name: str, store: str, *, batch_size: int = 500) -> Path:
        """A config for force f01 reading into ``store`` with its own consumer group."""
        path = self.root / f"{name}.toml"
        path.write_text(
            'agency = "f01"\nkey_file = "keys/f01.key"\ndirectory = "directory"\n'
            f'policy = "f01.policy.toml"\nstore = "{store}"\nenvironment = "{ENVIRONMENT}"\n'
            f'bootstrap_servers = "{self.bootstrap}"\ntopic_prefix = "{self.prefix}"\n'
            f'group_id = "{self.prefix}.{name}"\nfamilies = ["sightings"]\n'
            f"batch_size = {batch_size}\n"
        )
        return path

    def _keys(self) -> dict[str, AgencyIdentity]:
        (self.root / "keys").mkdir()
        ids: dict[str, AgencyIdentity] = {}
        for agency in (*federation.ADMINS, "cst", *FORCES, "auditor"):
            ident = AgencyIdentity.generate(agency)
            ident.save(self.root / "keys" / f"{agency}.key")
            ids[agency] = ident
        return ids

    def _directory(self) -> None:
        folder = self.root / "directory"
        folder.mkdir()
        seeds = [self.ids[a].signing_seed() for a in federation.ADMINS]

        def signed(doc: SignedDirectory) -> SignedDirectory:
            for s in seeds:
                doc = sign(doc, s)
            dstore.write_file(dstore.version_path(folder, doc.signed.version), doc)
            return doc

        admins = [edit.admin_key(self.ids[a].public.sign_public, a) for a in federation.ADMINS]
        doc = signed(
            edit.initial(
                environment=ENVIRONMENT, admin_keys=admins, threshold=2, now=datetime.now(UTC)
            )
        )
        topics = [
            topic_name(f, prefix=prefix)
            for prefix in self.prefixes
            for f in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)
        ]
        members: list[tuple[str, list[Role], list[str], list[str]]] = [
            ("cst", [Role.PRODUCER], topics, [])
        ]
        members += [(f, [Role.CONSUMER], [], ["HERTFORDSHIRE"]) for f in FORCES]
        members += [("auditor", [Role.AUDITOR], [], [])]
        for agency, roles, publish, areas in members:
            doc = signed(
                edit.add_agency(
                    doc.signed,
                    agency_id=agency,
                    display_name=agency,
                    roles=roles,
                    publish_topics=publish,
                    force_areas=areas,
                    identity=self.ids[agency].public,
                    now=datetime.now(UTC),
                )
            )


def red_sightings(count: int, seed: int = 5) -> list[Sighting]:
    """``count`` realistic sightings graded TLP:RED (so only the forces named receive them)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    out = []
    for n in range(count):
        data = sighting(rng, n % 1000).model_dump(mode="json")
        data["place"]["force_area"] = "HERTFORDSHIRE"
        data["grading"].update(tlp="RED", handling_code="P", handling_conditions=[], assessment="B")
        out.append(Sighting.model_validate(data))
    return out

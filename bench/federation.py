"""A federation sized for benchmarks: CST, N forces (f01..), more producers, padding agencies.

Like the demo's (same directory, keys and config formats), but sized by parameters so the scale
curves can grow one thing at a time:

* ``forces`` (default 10, up to the envelope's 64 recipients): a TLP:RED sighting goes only to the
  forces it names, so ``named=fed.forces[:k]`` gives exactly k recipients;
* ``producers`` (default 1): ``cst`` plus ``p002``.. each with its own key, directory entry
  (allowed to publish to every topic set) and sharing agreement, to write one topic from many
  streams;
* ``agencies`` (default 0: no padding): pad the directory with consumer agencies that receive
  nothing until it lists this many agencies in all, to measure the directory's size alone.

Force f01's policy stores everything, so a consume benchmark measures the pipeline, not a policy
that throws records away. The directory is two versions (the admins, then every agency at once):
a thousand one-agency versions would make building it the slowest part of a run.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from intelbus import federation
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Agency, DirectoryBody, Role, SignedDirectory
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


def _toml_list(names: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


class BenchFederation:
    """Keys, a threshold-signed directory, agreements, and producer/consumer configs."""

    def __init__(
        self,
        root: Path,
        bootstrap: str,
        *,
        slots: int = 24,
        forces: int = 10,
        producers: int = 1,
        agencies: int = 0,
        client: tuple[str, str] | None = None,
        create_topics: bool = True,
    ) -> None:
        self.root = root
        self.bootstrap = bootstrap
        # False only for bench/publish_profile.py, which profiles with no broker at all.
        self.create_topics = create_topics
        #: The producer config's Kafka client setting and value written into producer configs,
        #: e.g. ("kafka_client", "confluent-kafka"); None: the config's default.
        self.client = client
        self.forces = tuple(f"f{i:02d}" for i in range(1, forces + 1))
        self.producers = ("cst", *(f"p{i:03d}" for i in range(2, producers + 1)))
        base = len(self.producers) + len(self.forces) + 1
        self.padding = tuple(f"x{i:04d}" for i in range(max(0, agencies - base)))
        # The directory binds each producer to the exact topics it may publish to, so every set of
        # topics a run will use is registered up front; prefix_topics_fresh() moves to the next.
        run = uuid.uuid4().hex[:8]
        self.prefixes = [f"bench-{run}-{i:02d}" for i in range(slots)]
        self.slot = 0
        root.mkdir(parents=True, exist_ok=True)
        self.ids = self._keys()
        self._directory()
        for producer in self.producers:
            (root / f"agreement-{producer}.toml").write_text(
                f'producer = "{producer}"\nmember_forces = {_toml_list(self.forces)}\n'
                'auditors = ["auditor"]\nauditor_tlp = ["CLEAR", "GREEN", "AMBER"]\n'
            )
        (root / "f01.policy.toml").write_text(POLICY)
        self._use(0)

    @property
    def agency_count(self) -> int:
        """How many agencies the directory lists."""
        return len(self.producers) + len(self.forces) + 1 + len(self.padding)

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
        self.producer_config("cst", self.root / "producer.toml")

    def producer_config(self, producer: str, path: Path | None = None) -> Path:
        """A config for ``producer`` writing the current topic set from a fresh stream."""
        path = path or self.root / f"producer-{producer}.toml"
        client = "" if self.client is None else f'{self.client[0]} = "{self.client[1]}"\n'
        path.write_text(
            f'agency = "{producer}"\nkey_file = "keys/{producer}.key"\ndirectory = "directory"\n'
            f'agreement = "agreement-{producer}.toml"\n'
            f'state_file = "state/{producer}-{self.slot}.sqlite"\n'
            f'environment = "{ENVIRONMENT}"\nbootstrap_servers = "{self.bootstrap}"\n'
            f'topic_prefix = "{self.prefix}"\n{client}'
        )
        return path

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
        named = (*self.producers, *self.forces, "auditor", *self.padding)
        for agency in (*federation.ADMINS, *named):
            ident = AgencyIdentity.generate(agency)
            if agency not in self.padding:  # padding agencies never run: no key file needed
                ident.save(self.root / "keys" / f"{agency}.key")
            ids[agency] = ident
        return ids

    def _directory(self) -> None:
        folder = self.root / "directory"
        folder.mkdir()
        seeds = [self.ids[a].signing_seed() for a in federation.ADMINS]
        now = datetime.now(UTC)

        def signed(doc: SignedDirectory) -> SignedDirectory:
            for s in seeds:
                doc = sign(doc, s)
            dstore.write_file(dstore.version_path(folder, doc.signed.version), doc)
            return doc

        admins = [edit.admin_key(self.ids[a].public.sign_public, a) for a in federation.ADMINS]
        first = signed(
            edit.initial(environment=ENVIRONMENT, admin_keys=admins, threshold=2, now=now)
        )
        topics = tuple(
            topic_name(f, prefix=prefix)
            for prefix in self.prefixes
            for f in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)
        )
        # Padding first: a lookup that scans the agencies in order then pays for every one of
        # them, as it would for the agencies added last to a real, grown directory.
        members: list[tuple[str, tuple[Role, ...], tuple[str, ...], tuple[str, ...]]] = [
            (x, (Role.CONSUMER,), (), ()) for x in self.padding
        ]
        members += [(p, (Role.PRODUCER,), topics, ()) for p in self.producers]
        members += [(f, (Role.CONSUMER,), (), ("HERTFORDSHIRE",)) for f in self.forces]
        members += [("auditor", (Role.AUDITOR,), (), ())]
        agencies = [
            Agency(
                agency_id=agency,
                display_name=agency,
                roles=roles,
                publish_topics=publish,
                force_areas=areas,
                keys=(edit.agency_key(self.ids[agency].public, now),),
            )
            for agency, roles, publish, areas in members
        ]
        body = first.signed.model_dump()
        body.update(version=2, issued_at=now, agencies=[a.model_dump() for a in agencies])
        signed(SignedDirectory(signed=DirectoryBody.model_validate(body)))


def red_sightings(count: int, seed: int = 5) -> list[Sighting]:
    """``count`` realistic sightings graded TLP:RED (so only the forces named receive them)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    # Seen in the last day: the samples' fixed epoch drifts into what a consumer quarantines as
    # from the future or too old as the calendar moves on.
    base = datetime.now(UTC) - timedelta(hours=1)
    out = []
    for n in range(count):
        data = sighting(rng, n % 1000).model_dump(mode="json")
        data["observed_at"] = (base - timedelta(minutes=n % 1000)).isoformat()
        data["place"]["force_area"] = "HERTFORDSHIRE"
        data["grading"].update(tlp="RED", handling_code="P", handling_conditions=[], assessment="B")
        out.append(Sighting.model_validate(data))
    return out


WORDS = [
    "white",
    "van",
    "parked",
    "near",
    "the",
    "perimeter",
    "fence",
    "for",
    "forty",
    "minutes",
    "engine",
    "running",
    "two",
    "occupants",
    "photographing",
    "the",
    "north",
    "gate",
    "and",
    "the",
    "cctv",
    "masts",
    "then",
    "drove",
    "off",
    "towards",
    "the",
    "ring",
    "road",
]


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)[:length].strip()


def sized_sightings(count: int, free_text: int, seed: int = 7) -> list[Sighting]:
    """RED sightings carrying about ``free_text`` characters of free text: the description (up to
    4,000 characters), then people seen, each with a 200-character summary and clothing (the
    schema's caps: 50 people, so about 24,000 characters at most)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    out = []
    for record in red_sightings(count, seed=seed):
        data = record.model_dump(mode="json")
        data["description"] = _text(rng, min(4000, max(20, free_text)))
        left = free_text - 4000
        persons: list[dict[str, str]] = []
        while left > 0 and len(persons) < 50:
            persons.append(
                {"summary": _text(rng, 200), "approx_age": "30-40", "clothing": _text(rng, 200)}
            )
            left -= 400
        if persons:
            data["persons"] = persons
        out.append(Sighting.model_validate(data))
    return out

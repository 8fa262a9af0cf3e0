"""A BusSimulator (after python-tuf's RepositorySimulator): a federation and an in-memory topic log.

It builds a real directory (threshold-signed), real identities, real sharing agreement and
policies, and publishes through the real :class:`producers.publisher.Publisher`, whose broker send
is replaced by an append to an in-memory log. Tests then tamper with the logged bytes and feed them
to the real consumer pipeline. Delivery itself is tested on the real broker, never here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.pipeline import Pipeline, RawRecord
from intelbus import _nacl
from intelbus.chain import ChainState
from intelbus.directory import edit
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.identity import AgencyIdentity
from intelbus.policy.agreement import SharingAgreement
from intelbus.policy.rules import PolicySpec, SharingPolicy
from intelbus.serde.registry import SchemaRegistry
from producers.publisher import Publisher
from producers.state import ProducerState

ENV = "sim"
PREFIX = "sim"
SIGHTINGS = f"{PREFIX}.sightings"
INCIDENTS = f"{PREFIX}.incidents"
REGISTRY = SchemaRegistry.load()
_ADMIN_SEEDS = [hashlib.sha256(f"sim-admin-{i}".encode()).digest() for i in range(2)]

AGREEMENT = {
    "producer": "cst",
    "member_forces": ["met-police", "herts-police", "gmp"],
    "auditors": ["inspectorate"],
    "auditor_tlp": ["CLEAR", "GREEN", "AMBER"],
    "force_areas": {
        "met-police": ["METROPOLITAN", "CITY_OF_LONDON"],
        "herts-police": ["HERTFORDSHIRE"],
        "gmp": ["GREATER_MANCHESTER"],
    },
    "accepts_conditions": {
        "met-police": ["*"],
        "herts-police": ["no-onward-disclosure"],
        "gmp": ["*"],
    },
}

HERTS_POLICY = {
    "agency": "herts-police",
    "own_force_areas": ["HERTFORDSHIRE"],
    "accepted_conditions": ["no-onward-disclosure"],
    "rules": [
        {"id": "false-reports", "assessment": ["E"], "action": "quarantine"},
        {
            "id": "own-sightings",
            "kinds": ["sighting", "correction", "retraction"],
            "force_area": "own",
            "action": "store",
        },
        {
            "id": "incidents-redacted",
            "kinds": ["incident"],
            "action": "redact",
            "redact": ["victim_details", "reporter_ref"],
        },
        {"id": "elsewhere", "force_area": "other", "action": "withhold"},
    ],
}


class _LoggingPublisher(Publisher):
    """The real publisher, with the broker send replaced by an append to the simulator's log."""

    log: list[RawRecord]

    def _send(self, topic: str, data: bytes) -> tuple[int, int]:
        offset = sum(1 for r in self.log if r.topic == topic)
        self.log.append(RawRecord(topic, 0, offset, data, datetime.now(UTC)))
        return 0, offset


@dataclass
class BusSimulator:
    """A small federation: CST publishes, three forces and an inspectorate consume."""

    tmp: Path
    identities: dict[str, AgencyIdentity] = field(default_factory=dict)
    log: list[RawRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        for agency in ("cst", "met-police", "herts-police", "gmp", "inspectorate", "rogue"):
            self.identities[agency] = AgencyIdentity.generate(agency)
        admins = [
            edit.admin_key(_nacl.sign_public_from_seed(s), f"admin-{i}")
            for i, s in enumerate(_ADMIN_SEEDS)
        ]
        t0 = datetime.now(UTC) - timedelta(days=30)
        doc = self._signed(edit.initial(environment=ENV, admin_keys=admins, threshold=2, now=t0))
        self.history = DirectoryHistory(doc)
        members = [
            (
                "cst",
                "Community Security Trust",
                [Role.PRODUCER],
                [SIGHTINGS, INCIDENTS, f"{PREFIX}.heartbeats"],
            ),
            ("rogue", "Another producer", [Role.PRODUCER], [SIGHTINGS, INCIDENTS]),
            ("met-police", "Metropolitan Police", [Role.CONSUMER], []),
            ("herts-police", "Hertfordshire Constabulary", [Role.CONSUMER], []),
            ("gmp", "Greater Manchester Police", [Role.CONSUMER], []),
            ("inspectorate", "Inspectorate", [Role.AUDITOR], []),
        ]
        for i, (agency, name, roles, topics) in enumerate(members):
            body = self.history.latest
            doc = self._signed(
                edit.add_agency(
                    body,
                    agency_id=agency,
                    display_name=name,
                    roles=roles,
                    publish_topics=topics,
                    identity=self.identities[agency].public,
                    now=t0 + timedelta(hours=i + 1),
                )
            )
            self.history.update(doc)
        self.publishers: dict[str, _LoggingPublisher] = {}

    def _signed(self, doc: SignedDirectory) -> SignedDirectory:
        for seed in _ADMIN_SEEDS:
            doc = sign(doc, seed)
        return doc

    def publisher(self, agency: str = "cst") -> _LoggingPublisher:
        if agency not in self.publishers:
            agreement = SharingAgreement.model_validate({**AGREEMENT, "producer": agency})
            pub = _LoggingPublisher(
                identity=self.identities[agency],
                directory=self.history,
                agreement=agreement,
                registry=REGISTRY,
                state=ProducerState(self.tmp / f"{agency}-state.sqlite"),
                bootstrap_servers="unused:0",
                environment=ENV,
                topic_prefix=PREFIX,
            )
            pub.log = self.log
            self.publishers[agency] = pub
        return self.publishers[agency]

    def pipeline(
        self,
        agency: str = "herts-police",
        policy: dict[str, object] | None = None,
        chain: dict[tuple[str, str], ChainState] | None = None,
        producer_of: dict[str, str] | None = None,
    ) -> Pipeline:
        spec = PolicySpec.model_validate(policy or {**HERTS_POLICY, "agency": agency})
        owners = producer_of or {}
        return Pipeline(
            identity=self.identities[agency],
            directory=self.history,
            registry=REGISTRY,
            policy=SharingPolicy.from_spec(spec),
            environment=ENV,
            chain=chain or {},
            producer_of=owners.get,
        )


# --- A simulated consumer tier: the real pipeline and the real SQLite store (tests/attacks). ---------


@dataclass(frozen=True)
class TrustedState:
    """What an attack must not change: stored rows, receipts and amendments, chains, offsets."""

    records: tuple[tuple[object, ...], ...]
    summary: tuple[tuple[str, int], ...]  # every count except the quarantine ones
    chain: tuple[tuple[str, str, int, bytes], ...]
    offsets: tuple[tuple[str, int, int], ...]
    quarantined: int

    def without_offsets(self) -> tuple[object, ...]:
        return (self.records, self.summary, self.chain)


class SimulatedConsumer:
    """An agency's consumer without Kafka: pipeline -> one store batch -> the real SQLite store.

    The same path as :class:`consumers.agency.AgencyConsumer` after its poll (``to_batch`` and
    ``Store.commit``), so a quarantine row here is the row the real consumer would write.
    """

    def __init__(
        self,
        sim: BusSimulator,
        agency: str = "herts-police",
        *,
        environment: str = ENV,
        store_path: Path | None = None,
    ) -> None:
        from consumers.agency import chain_from_store  # noqa: PLC0415 - keeps the import local
        from intelbus.store.sqlite import SqliteStore  # noqa: PLC0415

        self.sim = sim
        self.agency = agency
        self.group_id = f"{PREFIX}.{agency}"
        self.store = SqliteStore(store_path or sim.tmp / f"{agency}.sqlite")
        self.pipeline = sim.pipeline(agency, chain=chain_from_store(self.store))
        self.pipeline.producer_of = self.store.producer_of
        self.pipeline.environment = environment

    def deliver(self, raws: list[RawRecord]) -> list[object]:
        """Process ``raws`` as one polled batch and commit it; returns each record's result."""
        from consumers.agency import Stats, to_batch  # noqa: PLC0415

        outcomes = [self.pipeline.process(r) for r in raws]
        self.store.commit(to_batch(self.group_id, outcomes, Stats()))
        self.pipeline.batch_committed()
        return [o.result for o in outcomes]

    def restart(self) -> SimulatedConsumer:
        """A new consumer on the same store file (a process restart); this one is closed."""
        self.store.close()
        return SimulatedConsumer(
            self.sim, self.agency, environment=self.pipeline.environment, store_path=self.store.path
        )

    def trusted_state(self) -> TrustedState:
        records = tuple(
            (
                v.record_id,
                v.topic,
                v.offset,
                v.version,
                v.retracted,
                v.superseded,
                v.digest,
                repr(sorted(v.payload.items())),
            )
            for v in self.store.iter_records()
        )
        summary = self.store.summary()
        topics = {r.topic for r in self.sim.log} | {SIGHTINGS, INCIDENTS}
        offsets = tuple(
            sorted(
                (topic, partition, offset)
                for topic in topics
                for partition, offset in self.store.load_offsets(self.group_id, topic).items()
            )
        )
        return TrustedState(
            records=records,
            summary=tuple(sorted((k, n) for k, n in summary.items() if ":" not in k)),
            chain=tuple(
                sorted(
                    (c.producer_id, c.stream, c.last_sequence, bytes(c.last_digest))
                    for c in self.store.load_chain().values()
                )
            ),
            offsets=offsets,
            quarantined=sum(n for k, n in summary.items() if k.startswith("quarantined:")),
        )

    def close(self) -> None:
        self.store.close()

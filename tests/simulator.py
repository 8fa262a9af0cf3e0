"""A BusSimulator (after python-tuf's RepositorySimulator): a federation and an in-memory topic log.

It builds a real directory (threshold-signed), real identities, real sharing agreement and
policies, and publishes through the real :class:`producers.publisher.Publisher`, whose broker send
is replaced by an append to an in-memory log (each topic has ``partitions`` partitions, with
their own offsets; the broker's append time is the simulator's clock). Tests then tamper with the
logged bytes and feed them to the real consumer pipeline and store. Delivery itself is tested on
the real broker, never here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.agency import apply_withdrawals
from consumers.pipeline import AgencyPipeline, RawRecord
from intelbus import _nacl
from intelbus.directory import edit
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.identity import AgencyIdentity
from intelbus.policy.agreement import SharingAgreement
from intelbus.policy.rules import PolicySpec, SharingPolicy
from intelbus.serde.registry import SchemaRegistry
from intelbus.store.base import StoredRecordView
from intelbus.trust.judge import LateRefusal
from intelbus.trust.model import Verdict
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
    """The real publisher, with the broker replaced by the simulator's log."""

    sim: BusSimulator

    def _send(self, topic: str, data: bytes, partition: int | None) -> tuple[int, int]:
        raw = self.sim.append(topic, data, partition=0 if partition is None else partition)
        return raw.partition, raw.offset

    def _choose_partition(self, topic: str) -> int:
        return self.sim.partition_of(self.identity.agency_id)


class _UncheckedPublisher(_LoggingPublisher):
    """The real publisher without its directory checks: what a thief holding a leaked key, or a
    producer that has not yet learned of a revocation, can still sign and send."""

    def check_directory(self, topic: str, *, force: bool = False) -> None:
        del topic, force


@dataclass
class BusSimulator:
    """A small federation: CST publishes, three forces and an inspectorate consume."""

    tmp: Path
    identities: dict[str, AgencyIdentity] = field(default_factory=dict)
    log: list[RawRecord] = field(default_factory=list)
    partitions: int = 3
    #: The broker's clock (its append time); None: the real time.
    broker_clock: datetime | None = None

    def append(
        self, topic: str, value: bytes, *, partition: int = 0, appended_at: datetime | None = None
    ) -> RawRecord:
        """Append bytes to a topic's partition, as the broker does (anyone with write access)."""
        offset = sum(1 for r in self.log if (r.topic, r.partition) == (topic, partition))
        at = appended_at or self.broker_clock or datetime.now(UTC)
        raw = RawRecord(topic, partition, offset, value, at)
        self.log.append(raw)
        return raw

    def partition_of(self, agency: str) -> int:
        """The partition a producer's streams are bound to here (a stable choice)."""
        return sorted(self.identities).index(agency) % self.partitions

    def update_directory(self, change: object) -> SignedDirectory:
        """Sign and accept the next directory version: ``change(body)`` returns the new draft."""
        doc = self._signed(change(self.history.latest))  # type: ignore[operator]
        self.history.update(doc)
        return doc

    def rotate_key(self, agency: str = "cst", *, at: datetime | None = None) -> AgencyIdentity:
        """The agency's next key, in force from ``at`` (the old one retired then); its publisher
        now signs with it, on the same producer state (so its streams start a new epoch)."""
        new = AgencyIdentity.generate(agency)
        when = at or datetime.now(UTC)
        self.update_directory(
            lambda body: edit.rotate_key(body, agency_id=agency, identity=new.public, now=when)
        )
        self.identities[agency] = new
        old = self.publishers.pop(agency, None)
        if old is not None:
            old.state.close()
        return new

    def revoke_key(
        self,
        agency: str = "cst",
        *,
        key_id: bytes,
        at: datetime,
        compromised_since: datetime | None = None,
    ) -> None:
        """A directory version revoking one of the agency's keys (leaked since a time, if given)."""
        self.update_directory(
            lambda body: edit.revoke_key(
                body,
                agency_id=agency,
                key_id=key_id.hex(),
                reason="key leaked",
                now=at,
                compromised_since=compromised_since,
            )
        )

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

    def unchecked(self, agency: str = "cst") -> _LoggingPublisher:
        """A publisher for ``agency`` that skips the directory checks (a leaked key), sharing the
        agency's producer state (so its records continue the agency's stream)."""
        real = self.publisher(agency)
        pub = _UncheckedPublisher(
            identity=real.identity,
            directory=self.history,
            agreement=real.agreement,
            registry=REGISTRY,
            state=real.state,
            bootstrap_servers="unused:0",
            environment=ENV,
            topic_prefix=PREFIX,
            clock=real.clock,
        )
        pub.sim = self
        return pub

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
                clock=lambda: self.broker_clock or datetime.now(UTC),
            )
            pub.sim = self
            self.publishers[agency] = pub
        return self.publishers[agency]

    def pipeline(
        self,
        agency: str = "herts-police",
        policy: dict[str, object] | None = None,
        *,
        environment: str = ENV,
    ) -> AgencyPipeline:
        spec = PolicySpec.model_validate(policy or {**HERTS_POLICY, "agency": agency})
        return AgencyPipeline(
            identity=self.identities[agency],
            directory=self.history,
            registry=REGISTRY,
            policy=SharingPolicy.from_spec(spec),
            environment=environment,
            clock=lambda: self.broker_clock or datetime.now(UTC),
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
    """An agency's consumer without Kafka: the real pipeline and the real store (SQLite by
    default, or any store URL), exactly as :class:`consumers.agency.AgencyConsumer` runs them
    after its poll, so a quarantine row here is the row the real consumer would write."""

    def __init__(
        self,
        sim: BusSimulator,
        agency: str = "herts-police",
        *,
        environment: str = ENV,
        store_path: Path | str | None = None,
        policy: dict[str, object] | None = None,
    ) -> None:
        from intelbus.store import open_store  # noqa: PLC0415 - keeps the import local

        self.sim = sim
        self.agency = agency
        self.group_id = f"{PREFIX}.{agency}"
        self.store_url = str(store_path or sim.tmp / f"{agency}.sqlite")
        self.store = open_store(self.store_url)
        self.policy = policy
        self.pipeline = sim.pipeline(agency, policy, environment=environment)
        self.environment = environment
        #: Waiting amendments refused when their target arrived, over every delivery.
        self.late_refusals: list[LateRefusal] = []

    def deliver(self, raws: list[RawRecord]) -> list[Verdict]:
        """Process ``raws`` as one polled batch and commit it; returns each record's verdict."""
        _, verdicts = self.pipeline.commit(self.store, self.group_id, raws)
        self.late_refusals += self.pipeline.late_refusals
        return verdicts

    def learn_directory(self) -> int:
        """What the running consumer does when it reads a new directory version."""
        return apply_withdrawals(
            self.store, self.sim.history, self.sim.broker_clock or datetime.now(UTC)
        )

    def restart(self) -> SimulatedConsumer:
        """A new consumer on the same store (a process restart); this one is closed."""
        self.store.close()
        return SimulatedConsumer(
            self.sim,
            self.agency,
            environment=self.environment,
            store_path=self.store_url,
            policy=self.policy,
        )

    def trusted_state(self) -> TrustedState:
        records = tuple(
            (
                v.producer_id,
                v.record_id,
                v.topic,
                v.offset,
                v.version,
                v.status,
                v.digest,
                repr(sorted((v.payload or {}).items())),
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
                    (
                        k.producer_id,
                        f"{k.topic}/{k.partition}/{k.epoch}",
                        c.last_sequence,
                        c.last_digest,
                    )
                    for k, c in self.store.load_chain().items()
                )
            ),
            offsets=offsets,
            quarantined=sum(n for k, n in summary.items() if k.startswith("quarantined:")),
        )

    def stored(self, record_id: str, producer: str = "cst") -> StoredRecordView | None:
        """The record as an analyst would see it (any status), or None."""
        return self.store.get(record_id, producer)

    def close(self) -> None:
        self.store.close()

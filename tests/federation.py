"""A Kafka-backed federation for tests, beside the simulator (tests/simulator.py): the demo's
members (intelbus.federation), their configs, and fresh topics of a prefix of its own on the
session's real broker; CST publishes through the real publisher and forces consume through the
real consumer, as the command line does, without reaching into the command line's privates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.agency import AgencyConsumer, Stats
from consumers.config import ConsumerConfig
from intelbus import federation
from intelbus.cli import demo_cmd
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Role
from intelbus.directory.trust import sign
from intelbus.federation import FORCES, make_directory, make_keys
from intelbus.identity import AgencyIdentity
from intelbus.records import Sighting
from intelbus.samples import feed
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics
from producers.config import ProducerConfig
from producers.publisher import Publisher


class Federation:
    """A demo-shaped federation in a temp folder, on the session broker, with fresh topics."""

    def __init__(
        self,
        root: Path,
        bootstrap: str,
        store_url: str,
        *,
        force_epochs: Sequence[tuple[datetime, datetime]] = (),
        epoch_agencies: Sequence[str] = tuple(FORCES),
    ) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.store_url = store_url
        self.prefix = f"e2e-{uuid.uuid4().hex[:8]}"
        transport.create_topics(bootstrap, bus_topics(prefix=self.prefix))
        self.ids = make_keys(root)
        # force_epochs: every force's key gets encryption epochs (crypto-shredding tests).
        make_directory(
            root, self.ids, self.prefix, force_epochs=force_epochs, epoch_agencies=epoch_agencies
        )
        (root / "agreement.toml").write_text(demo_cmd.AGREEMENT)
        (root / "producer.toml").write_text(
            f'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\nagreement = "agreement.toml"\n'
            f'state_file = "state/cst.sqlite"\nenvironment = "{demo_cmd.ENVIRONMENT}"\n'
            f'bootstrap_servers = "{bootstrap}"\ntopic_prefix = "{self.prefix}"\n'
        )
        self.stores: dict[str, str] = {}
        for force in demo_cmd.FORCES:
            (root / f"{force}.policy.toml").write_text(demo_cmd.POLICIES[force])
            url = self._store_for(force)
            self.stores[force] = url
            (root / f"{force}.toml").write_text(
                f'agency = "{force}"\nkey_file = "keys/{force}.key"\ndirectory = "directory"\n'
                f'policy = "{force}.policy.toml"\nstore = "{url}"\nenvironment = "{demo_cmd.ENVIRONMENT}"\n'
                f'bootstrap_servers = "{bootstrap}"\ntopic_prefix = "{self.prefix}"\ngroup_id = "{self.prefix}.{force}"\n'
            )

    def _store_for(self, force: str) -> str:
        if self.store_url.startswith("postgresql"):
            return (
                self.store_url
            )  # one database per test; forces share it only in tests with one force
        return str(self.root / f"{force}.sqlite")

    def publish(self, records: list[Any], **kwargs: Any) -> list[str]:
        publisher = Publisher.from_config(ProducerConfig.load(self.root / "producer.toml"))
        try:
            return [publisher.publish(r, **kwargs).record_id for r in records]
        finally:
            publisher.close()

    def add_producer(self, agency: str) -> AgencyIdentity:
        """A second producer on the bus (an insider with its own valid key): a new directory
        version signed by both admins, its key file, agreement and producer config
        (``<agency>.toml``)."""
        ident = AgencyIdentity.generate(agency)
        ident.save(self.root / "keys" / f"{agency}.key")
        body = dstore.load_folder(self.root / "directory").latest
        doc = edit.add_agency(
            body,
            agency_id=agency,
            display_name=agency,
            roles=[Role.PRODUCER],
            publish_topics=[f"{self.prefix}.sightings", f"{self.prefix}.incidents"],
            identity=ident.public,
            now=datetime.now(UTC),
        )
        for admin in federation.ADMINS:
            doc = sign(doc, self.ids[admin].signing_seed())
        dstore.write_file(dstore.version_path(self.root / "directory", doc.signed.version), doc)
        agreement = demo_cmd.AGREEMENT.replace('producer = "cst"', f'producer = "{agency}"')
        (self.root / f"{agency}.agreement.toml").write_text(agreement)
        text = (self.root / "producer.toml").read_text()
        (self.root / f"{agency}.toml").write_text(
            text.replace('agency = "cst"', f'agency = "{agency}"')
            .replace("keys/cst.key", f"keys/{agency}.key")
            .replace("agreement.toml", f"{agency}.agreement.toml")
            .replace("state/cst.sqlite", f"state/{agency}.sqlite")
        )
        return ident

    def publish_as(self, agency: str, records: list[Any], **kwargs: Any) -> list[str]:
        """Publish through ``agency``'s own config (see :meth:`add_producer`)."""
        publisher = Publisher.from_config(ProducerConfig.load(self.root / f"{agency}.toml"))
        try:
            return [publisher.publish(r, **kwargs).record_id for r in records]
        finally:
            publisher.close()

    def consume(self, force: str) -> Stats:
        consumer = AgencyConsumer.from_config(ConsumerConfig.load(self.root / f"{force}.toml"))
        try:
            return consumer.run(until_idle=True, idle_polls=4)
        finally:
            consumer.store.close()


def sighting_for(area: str, tlp: str, **grading: Any) -> Sighting:
    base = feed(seed=21, sightings=1, incidents=0)[0]
    data = base.model_dump(mode="json")
    data["record_id"] = str(uuid.uuid4())
    data["place"]["force_area"] = area
    data["grading"].update(
        **{
            "tlp": tlp,
            "handling_code": "P",
            "handling_conditions": [],
            "assessment": "B",
            **grading,
        }
    )
    return Sighting.model_validate(data)

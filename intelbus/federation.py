"""The demo's federation: two founding admins, CST, three police forces and an inspectorate,
with their keys and the threshold-signed directory (2 of 2 admins) that lists them.

Used by ``intelbus demo``, by the tests' Kafka-backed federation (tests/federation.py) and by the
benchmarks, so that all three build the same bus the same way, through the public directory API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import DirectoryHistory, sign
from intelbus.identity import AgencyIdentity
from intelbus.keyring import create_epochs, epochs_document
from intelbus.kinds import Family
from intelbus.transport.topics import topic_name

ENVIRONMENT = "demo"
ADMINS = ("cst-admin", "met-admin")
FORCES = {
    "met-police": ("Metropolitan Police", ["METROPOLITAN", "CITY_OF_LONDON"]),
    "herts-police": ("Hertfordshire Constabulary", ["HERTFORDSHIRE"]),
    "gmp": ("Greater Manchester Police", ["GREATER_MANCHESTER"]),
}


def make_keys(ws: Path) -> dict[str, AgencyIdentity]:
    """A key pair for every member, private keys 0600 under ``ws/keys`` (public ones beside)."""
    ids: dict[str, AgencyIdentity] = {}
    (ws / "keys").mkdir(parents=True)
    for agency in (*ADMINS, "cst", *FORCES, "inspectorate"):
        ident = AgencyIdentity.generate(agency)
        ident.save(ws / "keys" / f"{agency}.key")
        (ws / "keys" / f"{agency}.pub.json").write_text(ident.public.to_json())
        ids[agency] = ident
    return ids


def make_directory(
    ws: Path,
    ids: dict[str, AgencyIdentity],
    prefix: str,
    *,
    force_epochs: Sequence[tuple[datetime, datetime]] = (),
    epoch_agencies: Sequence[str] = tuple(FORCES),
) -> DirectoryHistory:
    """Every version of the directory, each signed by both admins, in ``ws/directory``.

    ``force_epochs`` gives every police force (or every agency of ``epoch_agencies``) encryption
    epochs with these windows (for example :func:`intelbus.keyring.monthly_windows`): their keys
    go to each one's keyring beside its key file under ``ws/keys``, their public parts into one
    more directory version per agency.
    """
    folder = ws / "directory"
    folder.mkdir()
    seeds = [ids[a].signing_seed() for a in ADMINS]

    def signed(doc: SignedDirectory) -> SignedDirectory:
        for s in seeds:
            doc = sign(doc, s)
        dstore.write_file(dstore.version_path(folder, doc.signed.version), doc)
        return doc

    now = datetime.now(UTC)
    admins = [edit.admin_key(ids[a].public.sign_public, a) for a in ADMINS]
    doc = signed(edit.initial(environment=ENVIRONMENT, admin_keys=admins, threshold=2, now=now))
    topics = [
        topic_name(f, prefix=prefix)
        for f in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)
    ]
    members: list[tuple[str, str, list[Role], list[str], list[str]]] = [
        ("cst", "Community Security Trust", [Role.PRODUCER], topics, [])
    ]
    members += [(f, name, [Role.CONSUMER], [], areas) for f, (name, areas) in FORCES.items()]
    members += [("inspectorate", "Inspectorate of Constabulary", [Role.AUDITOR], [], [])]
    for agency, name, roles, publish, areas in members:
        doc = signed(
            edit.add_agency(
                doc.signed,
                agency_id=agency,
                display_name=name,
                roles=roles,
                publish_topics=publish,
                force_areas=areas,
                identity=ids[agency].public,
                now=datetime.now(UTC),
            )
        )
    if force_epochs:
        for force in epoch_agencies:
            key_file = ws / "keys" / f"{force}.key"
            create_epochs(key_file, force_epochs)
            document = epochs_document(key_file)
            (ws / "keys" / f"{force}.epochs.json").write_text(json.dumps(document, indent=2))
            agency_id, key_id, epochs = edit.parse_epochs(document)
            doc = signed(
                edit.add_epochs(
                    doc.signed,
                    agency_id=agency_id,
                    key_id=key_id,
                    epochs=epochs,
                    now=datetime.now(UTC),
                )
            )
    return dstore.load_folder(folder)

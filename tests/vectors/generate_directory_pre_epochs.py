"""Writes directory_pre_epochs.json: a signed directory chain made by the code *before*
encryption epochs existed (commit 4b72ed8), kept so tests prove old documents still parse, verify
and re-serialise byte for byte. Run once with that commit's intelbus on PYTHONPATH; never
regenerate it with newer code (that would prove nothing).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from intelbus import _nacl
from intelbus.directory import edit
from intelbus.directory.model import Role
from intelbus.directory.trust import sign
from intelbus.identity import AgencyIdentity

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"pre-epochs-{name}".encode()).digest()


def main() -> None:
    admin = _seed("admin")
    doc = edit.initial(
        environment="vectors",
        admin_keys=[edit.admin_key(_nacl.sign_public_from_seed(admin), "admin")],
        threshold=1,
        now=T0,
    )
    doc = sign(doc, admin)
    versions = [doc]
    force = AgencyIdentity("herts-police", _seed("herts-sign"), _seed("herts-enc"))
    doc = sign(
        edit.add_agency(
            doc.signed,
            agency_id="herts-police",
            display_name="Hertfordshire Constabulary",
            roles=[Role.CONSUMER],
            identity=force.public,
            force_areas=["HERTFORDSHIRE"],
            now=T0,
        ),
        admin,
    )
    versions.append(doc)
    out = Path(__file__).with_name("directory_pre_epochs.json")
    out.write_text(
        json.dumps({"versions": [d.to_bytes().decode() for d in versions]}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

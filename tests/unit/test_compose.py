"""The Docker Compose file (deploy/compose), which this machine cannot run: what each container
may see, and that its topics job creates the topics with the settings the bus needs.

Read as text (no YAML parser among the dependencies): each service's block is the lines after
``  name:`` up to the next service at the same indentation.
"""

from __future__ import annotations

import re
from pathlib import Path

from intelbus.transport.topics import audit_topic_config

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "docker-compose.yml"
TEXT = COMPOSE.read_text(encoding="utf-8")


def _service(name: str) -> str:
    found = re.search(
        rf"^  {re.escape(name)}:\n(.*?)(?=^  [a-z0-9-]+:\n|^\S|\Z)", TEXT, re.M | re.S
    )
    assert found is not None, f"no service {name}"
    return found.group(1)


def _mounts(block: str) -> list[str]:
    return re.findall(r"^\s+- (\./tls\S*?):", block, re.M)


def test_brokers_see_the_ca_certificate_and_their_keystore_only() -> None:
    for n in (1, 2, 3):
        mounts = _mounts(_service(f"kafka-{n}"))
        assert sorted(mounts) == ["./tls/brokers/broker.keystore.pem", "./tls/ca.pem"], mounts
    assert not re.search(r"^\s+- \./tls:", TEXT, re.M), "the whole tls folder is mounted"


def test_no_private_key_is_made_world_readable() -> None:
    assert "chmod 644" not in TEXT
    assert not re.search(r"chmod [0-7]?[0-7][0-7][4-7]", TEXT)


def test_the_topics_job_creates_every_bus_topic_with_the_settings_auditors_rely_on() -> None:
    block = _service("topics")
    assert set(_mounts(block)) == {
        "./tls/ca.pem",
        "./tls/clients/admin.pem",
        "./tls/clients/admin.key",
    }
    configs = dict(re.findall(r"--config ([a-z.]+)=(\S+)", block))
    assert configs == dict(audit_topic_config(min_insync_replicas=2))
    assert "for family in sightings incidents heartbeats directory" in block

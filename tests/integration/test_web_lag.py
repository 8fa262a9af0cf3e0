"""The lag page against the real broker: records produced to a fresh topic and not consumed show
as lag, partition by partition, next to the offsets the store committed."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from intelbus.store import open_store
from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec
from intelbus.trust.model import Batch
from tests.taxii_store import users_file
from tests.webconsole import RunningConsole, web_section

USER, PASSWORD = "dave", "correct horse battery staple"


def test_the_lag_page_shows_real_lag_from_the_broker(bootstrap: str, tmp_path: Path) -> None:
    prefix = f"itlag-{uuid.uuid4().hex[:10]}"
    topic = f"{prefix}.sightings"
    transport.create_topics(bootstrap, [TopicSpec(topic, 2, 1)])
    producer = transport.make_producer(bootstrap)
    try:
        for i in range(3):
            transport.send_and_wait(producer, topic, b"p0-%d" % i, key=None, partition=0)
        for i in range(2):
            transport.send_and_wait(producer, topic, b"p1-%d" % i, key=None, partition=1)
    finally:
        transport.close_producer(producer)
    store_path = tmp_path / "herts.sqlite"
    store = open_store(str(store_path))
    try:
        # The consumer read one record of partition 1 and none of partition 0.
        store.commit(Batch(f"{prefix}.herts-police", offsets={(topic, 1): 1}))
    finally:
        store.close()
    users = users_file(tmp_path / "users.toml", (USER, PASSWORD, None))
    config = tmp_path / "herts.toml"
    config.write_text(
        f"""agency = "herts-police"
key_file = "keys/herts.key"
directory = "directory"
policy = "policy.toml"
store = "{store_path}"
environment = "test"
bootstrap_servers = "{bootstrap}"
topic_prefix = "{prefix}"
families = ["sightings"]

{web_section(users)}"""
    )
    running = RunningConsole(config)
    try:
        client = running.client()
        assert client.sign_in(USER, PASSWORD).status == 303
        reply = client.get("/lag")
    finally:
        running.stop()
    assert reply.status == 200
    assert "cannot be reached" not in reply.body
    rows = re.findall(
        r"<tr>\s*<td>([\w.-]+)</td>\s*<td>(\d+)</td>\s*<td>(\w+)</td>\s*<td>(\w+)</td>\s*"
        r"<td>(?:<span[^>]*>)?(\w+)",
        reply.body,
    )
    assert rows == [(topic, "0", "none", "3", "3"), (topic, "1", "1", "2", "1")]
    assert '<dd class="ops-total">4</dd>' in reply.body

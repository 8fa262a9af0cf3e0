"""Directory distribution on the real broker: a fresh consumer reaches the newest version."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from intelbus import _nacl
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Role, SignedDirectory
from intelbus.directory.trust import sign
from intelbus.identity import AgencyIdentity
from intelbus.transport import kafka as transport
from intelbus.transport.topics import TopicSpec, audit_topic_config

SEEDS = [hashlib.sha256(f"it-admin-{i}".encode()).digest() for i in range(3)]
ADMINS = [edit.admin_key(_nacl.sign_public_from_seed(s), f"admin-{i}") for i, s in enumerate(SEEDS)]


def _signed(doc: SignedDirectory, who: list[int]) -> SignedDirectory:
    for i in who:
        doc = sign(doc, SEEDS[i])
    return doc


def test_fresh_consumer_with_only_the_pinned_version_reaches_the_newest(bootstrap: str) -> None:
    """v1 pinned; v2..v4 on the topic (plus a forged v3 and a replayed v2): the chain ends at v4."""
    topic = f"it-directory-{uuid.uuid4().hex[:8]}"
    transport.create_topics(
        bootstrap, [TopicSpec(topic, 1, 1, audit_topic_config(min_insync_replicas=1))]
    )
    t0 = datetime.now(UTC) - timedelta(days=3)
    cst = AgencyIdentity.generate("cst")
    met = AgencyIdentity.generate("met-police")
    v1 = _signed(edit.initial(environment="it", admin_keys=ADMINS, threshold=2, now=t0), [0, 1])
    v2 = _signed(
        edit.add_agency(
            v1.signed,
            agency_id="cst",
            display_name="CST",
            roles=[Role.PRODUCER],
            publish_topics=["intelbus.sightings"],
            identity=cst.public,
            now=t0 + timedelta(hours=1),
        ),
        [0, 2],
    )
    v3 = _signed(
        edit.add_agency(
            v2.signed,
            agency_id="met-police",
            display_name="Metropolitan Police",
            roles=[Role.CONSUMER],
            identity=met.public,
            now=t0 + timedelta(hours=2),
        ),
        [1, 2],
    )
    forged_v3 = _signed(edit.renew(v2.signed, now=t0 + timedelta(hours=2)), [0])  # one admin only
    v4 = _signed(edit.renew(v3.signed, now=t0 + timedelta(hours=3)), [0, 1])
    dstore.publish_to_topic(bootstrap, topic, [v1, v2, forged_v3, v3, v2, v4])

    history, problems = dstore.fetch_from_topic(bootstrap, topic, v1)

    assert history.latest == v4.signed
    assert [d.signed.version for d in history.versions] == [1, 2, 3, 4]
    assert history.versions[2] == v3
    assert len(problems) == 1
    assert "ThresholdNotMet" in problems[0]
    # Only documents that are exactly the trusted versions count as published: the forged v3
    # does not, so a publisher would still publish the genuine one if it were missing.
    assert dstore.published_versions(bootstrap, topic, history) == {1, 2, 3, 4}
    missing_v3 = f"it-directory-{uuid.uuid4().hex[:8]}"
    transport.create_topics(
        bootstrap, [TopicSpec(missing_v3, 1, 1, audit_topic_config(min_insync_replicas=1))]
    )
    dstore.publish_to_topic(bootstrap, missing_v3, [v1, v2, forged_v3, v4])
    assert dstore.published_versions(bootstrap, missing_v3, history) == {1, 2, 4}

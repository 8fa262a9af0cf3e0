"""ACLs derived from the directory: who gets what, and a plan that reaches exactly the desired set."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.kafka.acls import ALL_TOPICS, desired_acls, plan
from intelbus.directory import edit
from intelbus.directory import store as dstore
from intelbus.directory.model import Agency, DirectoryBody, Role, SignedDirectory
from intelbus.directory.trust import sign
from intelbus.errors import AclDerivationError
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.transport.security import AclBinding, AclOperation, AclPattern, AclResource
from intelbus.transport.topics import topic_name

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def federation_body(
    prefix: str,
    *,
    extra: Sequence[tuple[str, list[Role], list[str]]] = (),
    folder: Path | None = None,
) -> DirectoryBody:
    """A directory body: CST and another producer, two forces, an auditor, an admin agency.

    With ``folder``, every version is also signed (1 of 1 admins) and written there, as the CLI
    reads it.
    """
    admin = AgencyIdentity.generate("founder")
    start = NOW - timedelta(days=1)  # valid now too: the CLI checks expiry against the real clock

    def keep(doc: SignedDirectory) -> DirectoryBody:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            signed = sign(doc, admin.signing_seed())
            dstore.write_file(dstore.version_path(folder, doc.signed.version), signed)
        return doc.signed

    body = keep(
        edit.initial(
            environment="test",
            admin_keys=[edit.admin_key(admin.public.sign_public, "founder")],
            threshold=1,
            now=start,
            validity=timedelta(days=3650),
        )
    )
    cst_topics = [topic_name(f, prefix=prefix) for f in (Family.SIGHTINGS, Family.HEARTBEATS)]
    members: list[tuple[str, list[Role], list[str]]] = [
        ("cst", [Role.PRODUCER], cst_topics),
        ("other-charity", [Role.PRODUCER], [f"{prefix}.other-feed"]),
        ("herts-police", [Role.CONSUMER], []),
        ("gmp", [Role.CONSUMER], []),
        ("inspectorate", [Role.AUDITOR], []),
        ("registrar", [Role.ADMIN], []),
        *extra,
    ]
    for agency_id, roles, topics in members:
        body = keep(
            edit.add_agency(
                body,
                agency_id=agency_id,
                display_name=agency_id,
                roles=roles,
                publish_topics=topics,
                identity=AgencyIdentity.generate(agency_id).public,
                now=start,
                validity=timedelta(days=3650),
            )
        )
    return body


def with_roles(body: DirectoryBody, agency_id: str, roles: Sequence[Role]) -> DirectoryBody:
    """The same body with one agency's roles replaced (a granted or withdrawn role)."""
    agencies = [
        Agency.model_validate({**a.model_dump(), "roles": tuple(roles)})
        if a.agency_id == agency_id
        else a
        for a in body.agencies
    ]
    return DirectoryBody.model_validate({**body.model_dump(), "agencies": agencies})


def of(acls: frozenset[AclBinding], agency_id: str) -> set[tuple[str, str, str]]:
    return {
        (b.operation.value, b.resource.value, b.name)
        for b in acls
        if b.principal == f"User:{agency_id}"
    }


P = "bus"
SIGHTINGS = topic_name(Family.SIGHTINGS, prefix=P)
HEARTBEATS = topic_name(Family.HEARTBEATS, prefix=P)
DIRECTORY = topic_name(Family.DIRECTORY, prefix=P)
OTHER = f"{P}.other-feed"


def test_producer_writes_and_describes_only_its_own_topics() -> None:
    """CST may WRITE+DESCRIBE its topics and read the directory; nothing of other-charity's."""
    acls = desired_acls(federation_body(P), prefix=P, now=NOW)
    expected = {
        ("write", "topic", SIGHTINGS),
        ("describe", "topic", SIGHTINGS),
        ("write", "topic", HEARTBEATS),
        ("describe", "topic", HEARTBEATS),
        ("read", "topic", DIRECTORY),
    }
    assert expected == of(acls, "cst")
    assert ("write", "topic", OTHER) in of(acls, "other-charity")


def test_consumer_reads_every_published_topic_and_only_its_own_group() -> None:
    """A force reads all producers' topics (and may check their timestamp type) plus the
    directory, with one LITERAL group of its own."""
    acls = desired_acls(federation_body(P), prefix=P, now=NOW)
    expected = {
        ("read", "topic", SIGHTINGS),
        ("read", "topic", HEARTBEATS),
        ("read", "topic", OTHER),
        ("describe_configs", "topic", SIGHTINGS),
        ("describe_configs", "topic", HEARTBEATS),
        ("describe_configs", "topic", OTHER),
        ("read", "topic", DIRECTORY),
        ("read", "group", f"{P}.herts-police"),
    }
    assert expected == of(acls, "herts-police")
    groups = [b for b in acls if b.resource is AclResource.GROUP]
    assert all(b.pattern is AclPattern.LITERAL for b in groups)


def test_auditor_reads_exactly_the_bus_topics_and_writes_nothing() -> None:
    """The auditor gets READ and DESCRIBE_CONFIGS (to check the timestamp type) on each bus topic
    by name: the family topics of the prefix and every published topic; nothing else at all."""
    acls = desired_acls(federation_body(P), prefix=P, now=NOW)
    bus = [topic_name(f, prefix=P) for f in Family] + [OTHER]
    assert of(acls, "inspectorate") == {
        (op, "topic", t) for t in bus for op in ("read", "describe_configs")
    }
    mine = [b for b in acls if b.principal == "User:inspectorate"]
    assert all(b.pattern is AclPattern.LITERAL for b in mine)


def _covers(binding: AclBinding, topic: str) -> bool:
    """Whether ``binding`` applies to ``topic`` (as Kafka matches LITERAL and PREFIXED names)."""
    if binding.resource is not AclResource.TOPIC:
        return False
    if binding.pattern is AclPattern.PREFIXED:
        return topic.startswith(binding.name)
    return binding.name in (topic, ALL_TOPICS)


@pytest.mark.parametrize("prefix", [P, "intelbus", "__consumer"])
def test_no_grant_covers_consumer_offsets_or_uses_the_wildcard(prefix: str) -> None:
    """``__consumer_offsets`` holds every force's group names, positions and hosts: no role of any
    agency may read or describe it, and no grant names the topic wildcard."""
    body = federation_body(prefix, extra=[("auditor-2", [Role.AUDITOR, Role.CONSUMER], [])])
    acls = desired_acls(body, prefix=prefix, now=NOW)
    assert not [b for b in acls if _covers(b, "__consumer_offsets")]
    assert not [b for b in acls if _covers(b, "__transaction_state")]
    assert all(b.name != ALL_TOPICS for b in acls)


def test_an_auditor_also_reads_a_newly_published_topic_by_name() -> None:
    """A producer that gains a topic: consumers and auditors get READ on it, by name."""
    body = federation_body(P, extra=[("new-charity", [Role.PRODUCER], [f"{P}.new-feed"])])
    acls = desired_acls(body, prefix=P, now=NOW)
    assert ("read", "topic", f"{P}.new-feed") in of(acls, "inspectorate")
    assert ("describe_configs", "topic", f"{P}.new-feed") in of(acls, "inspectorate")


def test_nobody_but_producers_and_admins_may_write() -> None:
    """WRITE is granted to producers on their topics and to admin agencies on the directory only."""
    acls = desired_acls(federation_body(P), prefix=P, now=NOW)
    writers = {(b.principal, b.name) for b in acls if b.operation is AclOperation.WRITE}
    assert writers == {
        ("User:cst", SIGHTINGS),
        ("User:cst", HEARTBEATS),
        ("User:other-charity", OTHER),
        ("User:registrar", DIRECTORY),
    }


def test_removed_agency_gets_nothing() -> None:
    """An agency removed from the directory loses every binding (and its topics stop being read)."""
    body = edit.remove_agency(
        federation_body(P), agency_id="other-charity", now=NOW + timedelta(days=1)
    ).signed
    acls = desired_acls(body, prefix=P, now=NOW + timedelta(days=2))
    assert of(acls, "other-charity") == set()
    assert ("read", "topic", OTHER) not in of(acls, "herts-police")


@pytest.mark.parametrize("reserved", ["admin", "broker"])
def test_agency_named_like_a_super_user_is_refused(reserved: str) -> None:
    """Its certificate would map to a super-user principal, so no ACLs are derived at all."""
    body = federation_body(P, extra=[(reserved, [Role.CONSUMER], [])])
    with pytest.raises(AclDerivationError, match=reserved):
        desired_acls(body, prefix=P, now=NOW)


def test_plan_reaches_desired_exactly_and_is_idempotent() -> None:
    """Stale bindings are removed, missing ones added; planning from the result changes nothing."""
    desired = desired_acls(federation_body(P), prefix=P, now=NOW)
    stale = AclBinding("User:mallory", AclResource.TOPIC, SIGHTINGS, AclOperation.WRITE)
    kept = next(iter(desired))
    change = plan({stale, kept}, desired)
    assert change.remove == {stale}
    assert change.add == desired - {kept}
    after = ({stale, kept} - change.remove) | change.add
    assert after == desired
    assert plan(after, desired).empty
    assert change.lines()[0].startswith("- ALLOW User:mallory WRITE topic:")


def test_granting_a_role_adds_only_its_bindings() -> None:
    """Giving CST the consumer role adds READ grants and a group; its producer grants stay."""
    body = federation_body(P)
    before = desired_acls(body, prefix=P, now=NOW)
    after = desired_acls(with_roles(body, "cst", [Role.PRODUCER, Role.CONSUMER]), prefix=P, now=NOW)
    change = plan(before, after)
    assert change.remove == frozenset()
    assert of(change.add, "cst") == {
        ("read", "topic", SIGHTINGS),
        ("read", "topic", HEARTBEATS),
        ("read", "topic", OTHER),
        ("describe_configs", "topic", SIGHTINGS),
        ("describe_configs", "topic", HEARTBEATS),
        ("describe_configs", "topic", OTHER),
        ("read", "group", f"{P}.cst"),
    }

"""Kafka ACLs derived from the federation directory: the directory is their only source.

Who may do what, per role of an agency that has not been removed (principal ``User:<agency id>``,
the name its client certificate maps to; see deploy/tls):

* producer: WRITE and DESCRIBE on each of its own ``publish_topics`` (LITERAL names). WRITE on a
  topic also lets its idempotent producer obtain a producer id (Kafka 3.0+, KIP-679), so no
  cluster-wide IDEMPOTENT_WRITE is granted.
* consumer: READ on every topic some producer publishes to, and READ on its own consumer group,
  ``<prefix>.<agency id>`` (LITERAL: a prefixed grant on ``intelbus.herts`` would also cover a
  different agency called ``herts-evil``).
* auditor: READ and DESCRIBE_CONFIGS on each bus topic (LITERAL names): the family topics of the
  prefix (``<prefix>.sightings``, ``.incidents``, ``.heartbeats``, ``.directory``) and every topic
  some producer publishes to. DESCRIBE_CONFIGS because ``audit replay`` refuses a topic that is not
  LogAppendTime. Nothing else: it replays without a group and writes nowhere. Never the topic
  wildcard ``*``, which would also let it read ``__consumer_offsets`` (every force's group names,
  committed positions and client hosts) and any other topic on the cluster.
* admin: WRITE and DESCRIBE on the directory topic (it publishes directory versions).
* every member: READ on the directory topic (signed, public to members: key changes reach all).

Anything else on the cluster is removed when the plan is applied: "no one else anything". The
brokers and the operator are super users (``super.users``) and need no ACLs. An agency named like
a super user is refused, since its certificate would carry super-user rights.

:func:`desired_acls` and :func:`plan` are pure; :func:`apply` reads the cluster's ACLs, plans, and
(unless ``dry_run``) deletes and creates exactly the difference, so a second apply changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from deploy.tls.certs import RESERVED_NAMES
from intelbus.directory.model import Agency, DirectoryBody, Role
from intelbus.errors import AclDerivationError
from intelbus.kinds import Family
from intelbus.log import get_logger
from intelbus.transport import kafka as transport
from intelbus.transport.security import (
    AclBinding,
    AclOperation,
    AclResource,
    TransportSecurity,
)
from intelbus.transport.topics import DEFAULT_PREFIX, topic_name

log = get_logger("deploy.acls")

#: The topic wildcard. No derived grant uses it (see the auditor above); kept so tests can say so.
ALL_TOPICS = "*"


@dataclass(frozen=True, slots=True)
class AclPlan:
    """What applying would change: bindings to create and bindings to delete."""

    add: frozenset[AclBinding]
    remove: frozenset[AclBinding]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove

    def lines(self) -> list[str]:
        """A readable diff, removals first (the order they are applied in)."""
        return [f"- {b}" for b in sorted(self.remove)] + [f"+ {b}" for b in sorted(self.add)]


def principal(agency_id: str) -> str:
    """The Kafka principal of an agency's certificate."""
    return f"User:{agency_id}"


def _active(agency: Agency, now: datetime) -> bool:
    return agency.removed_at is None or agency.removed_at > now


def desired_acls(
    body: DirectoryBody, *, prefix: str = DEFAULT_PREFIX, now: datetime | None = None
) -> frozenset[AclBinding]:
    """Every ACL binding the directory calls for (see the module docstring for the rules).

    Raises:
        AclDerivationError: an agency id is reserved for a super user.
    """
    when = datetime.now(UTC) if now is None else now
    members = [a for a in body.agencies if _active(a, when)]
    for agency in members:
        if agency.agency_id in RESERVED_NAMES:
            raise AclDerivationError(
                f"agency {agency.agency_id!r} is named like a super user; rename it"
            )
    directory_topic = topic_name(Family.DIRECTORY, prefix=prefix)
    published = sorted({t for a in members if Role.PRODUCER in a.roles for t in a.publish_topics})
    audited = sorted({*(topic_name(f, prefix=prefix) for f in Family), *published})
    out: set[AclBinding] = set()
    for agency in members:
        who = principal(agency.agency_id)

        def grant(resource: AclResource, name: str, *ops: AclOperation, who: str = who) -> None:
            out.update(AclBinding(who, resource, name, op) for op in ops)

        grant(AclResource.TOPIC, directory_topic, AclOperation.READ)
        if Role.PRODUCER in agency.roles:
            for topic in agency.publish_topics:
                grant(AclResource.TOPIC, topic, AclOperation.WRITE, AclOperation.DESCRIBE)
        if Role.CONSUMER in agency.roles:
            for topic in published:
                # DESCRIBE_CONFIGS: a consumer checks at start that each topic it reads is
                # LogAppendTime (the broker's clock witnesses arrivals) and refuses otherwise.
                grant(AclResource.TOPIC, topic, AclOperation.READ, AclOperation.DESCRIBE_CONFIGS)
            grant(AclResource.GROUP, f"{prefix}.{agency.agency_id}", AclOperation.READ)
        if Role.AUDITOR in agency.roles:
            # Bus topics only, by name: a wildcard would expose __consumer_offsets.
            for topic in audited:
                grant(AclResource.TOPIC, topic, AclOperation.READ, AclOperation.DESCRIBE_CONFIGS)
        if Role.ADMIN in agency.roles:
            grant(AclResource.TOPIC, directory_topic, AclOperation.WRITE, AclOperation.DESCRIBE)
    return frozenset(out)


def plan(current: Iterable[AclBinding], desired: Iterable[AclBinding]) -> AclPlan:
    """The change that turns ``current`` into ``desired`` exactly."""
    have = frozenset(current)
    want = frozenset(desired)
    return AclPlan(add=want - have, remove=have - want)


def apply(
    bootstrap_servers: str,
    desired: Iterable[AclBinding],
    *,
    security: TransportSecurity | None = None,
    dry_run: bool = False,
) -> AclPlan:
    """Bring the cluster's ACLs to ``desired``; return the plan (applied unless ``dry_run``).

    Raises:
        NotAuthorized: the client is not a super user (only super users may manage ACLs).
        KafkaUnavailableError: the cluster has no authorizer or cannot be reached.
    """
    current = transport.list_acls(bootstrap_servers, security=security)
    change = plan(current, desired)
    if not dry_run and not change.empty:
        transport.change_acls(
            bootstrap_servers, add=change.add, remove=change.remove, security=security
        )
    log.info(
        "acls.planned" if dry_run else "acls.applied",
        added=len(change.add),
        removed=len(change.remove),
        kept=len(frozenset(current) - change.remove),
    )
    return change

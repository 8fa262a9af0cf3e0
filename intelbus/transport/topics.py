"""Topic names and the settings every bus topic is created with.

One topic per record family. Topics that auditors replay keep everything (``retention.ms=-1``) and
let the broker's clock witness arrival (``message.timestamp.type=LogAppendTime``): a record
back-dated by a compromised key still shows when it really reached the bus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from intelbus.kinds import Family

DEFAULT_PREFIX = "intelbus"


def topic_name(family: Family, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Default topic name of a family, e.g. ``intelbus.sightings``."""
    return f"{prefix}.{family.value}"


def topic_beside(topic: str, family: Family) -> str:
    """The topic of ``family`` on the same bus as ``topic`` (``x.sightings`` -> ``x.directory``)."""
    return topic_name(family, prefix=topic.rpartition(".")[0] or DEFAULT_PREFIX)


def audit_topic_config(*, min_insync_replicas: int) -> Mapping[str, str]:
    """Settings for a topic auditors replay: keep forever, broker append time, no unclean election."""
    return MappingProxyType(
        {
            "retention.ms": "-1",
            "retention.bytes": "-1",
            "cleanup.policy": "delete",
            "message.timestamp.type": "LogAppendTime",
            "min.insync.replicas": str(min_insync_replicas),
            "unclean.leader.election.enable": "false",
            # Ciphertext does not compress, so nothing is lost by storing every batch uncompressed,
            # and a lot is gained: the broker inflates any compressed batch a client sends and
            # refuses it if the result exceeds max.message.bytes, so a compression bomb never
            # reaches the log, and no consumer ever meets a codec it lacks (a zstd batch under
            # "producer" crashed every restart of a consumer without the zstandard module).
            "compression.type": "uncompressed",
        }
    )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: name, partitions, replication factor and configs."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError("partitions and replication factor must be >= 1")


def bus_topics(
    *, prefix: str = DEFAULT_PREFIX, replication_factor: int = 1, partitions: int = 3
) -> list[TopicSpec]:
    """The topics of one bus, with durable settings scaled to the cluster's replication factor.

    With RF 3, ``min.insync.replicas`` is 2 (acks=all then survives one broker loss); with RF 1 it
    can only be 1. The directory topic has one partition, so its versions stay totally ordered.
    """
    min_isr = 2 if replication_factor >= 3 else 1
    cfg = audit_topic_config(min_insync_replicas=min_isr)
    return [
        TopicSpec(
            topic_name(f, prefix=prefix),
            1 if f is Family.DIRECTORY else partitions,
            replication_factor,
            cfg,
        )
        for f in Family
    ]


#: Settings a bus topic must keep for the trust model to hold (``topics check``): a changed one is
#: drift. ``min.insync.replicas`` is checked against the spec (it scales with replication).
CHECKED_SETTINGS = (
    "message.timestamp.type",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "compression.type",
    "min.insync.replicas",
    "unclean.leader.election.enable",
)


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as the cluster reports it: partition -> replicas, and its config values."""

    name: str
    replicas: Mapping[int, tuple[int, ...]]
    configs: Mapping[str, str]


def drift(spec: TopicSpec, found: TopicState | None) -> list[str]:
    """What differs between a bus topic and what the bus needs of it, one sentence each.

    More partitions than the spec is not drift (streams stay on the partition they are bound to);
    fewer, or fewer replicas, or a changed trust setting is.
    """
    if found is None:
        return [f"{spec.name} does not exist"]
    out: list[str] = []
    if len(found.replicas) < spec.partitions:
        out.append(f"{spec.name} has {len(found.replicas)} partition(s), needs {spec.partitions}")
    low = sorted(p for p, r in found.replicas.items() if len(r) < spec.replication_factor)
    if low:
        out.append(
            f"{spec.name} partition(s) {', '.join(map(str, low))} have fewer than "
            f"{spec.replication_factor} replica(s)"
        )
    for key in CHECKED_SETTINGS:
        want = spec.configs.get(key)
        have = found.configs.get(key)
        if want is not None and have != want:
            out.append(f"{spec.name} {key} is {have!r}, needs {want!r}")
    return out

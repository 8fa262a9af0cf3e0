"""The only module that imports kafka-python, and the one adapter every caller speaks to Kafka with.

Producers and consumers are kafka-python's unless ``client=KafkaClient.CONFLUENT_KAFKA`` builds
librdkafka ones (:mod:`intelbus.transport.rdkafka`, an optional extra); the data-path functions
below (send, poll, commit, read...) take either and behave the same. Admin operations are
kafka-python's whichever client carries the records.

It turns kafka-python's exceptions into :class:`~intelbus.errors.KafkaUnavailableError` at this
boundary, and builds producers and consumers with the settings the bus relies on (idempotent,
``acks=all``, no compression, manual offset commits).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    NewPartitions,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import (
    AuthorizationError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)
from kafka.protocol.metadata import MetadataRequest

from intelbus.errors import KafkaUnavailableError, NotAuthorized, SendFailed, TopicMissing
from intelbus.log import get_logger
from intelbus.transport.client import ConsumerClient, KafkaClient, ProducerClient
from intelbus.transport.security import (
    AclBinding,
    AclOperation,
    AclPattern,
    AclPermission,
    AclResource,
    ClusterNotAuthorized,
    GroupNotAuthorized,
    TopicNotAuthorized,
    TransactionalIdNotAuthorized,
    TransportSecurity,
)
from intelbus.transport.topics import TopicSpec, TopicState

log = get_logger("intelbus.transport")

# Bounded so a dead bootstrap address fails in seconds, not minutes.
_ADMIN_TIMEOUTS: Mapping[str, int] = {
    "request_timeout_ms": 10_000,
    "bootstrap_timeout_ms": 10_000,
    "reconnect_backoff_max_ms": 1_000,
}

# Producer settings the bus depends on (SECURITY.md "Durability settings").
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 5,
    "compression_type": None,  # ciphertext does not compress
    "linger_ms": 5,
    "retries": 2_147_483_647,
    "delivery_timeout_ms": 120_000,
}


# --- Transport security: every factory takes TLS settings; none given means the environment's. --------

_AUTHORIZATION_ERRORS: Mapping[type[AuthorizationError], type[NotAuthorized]] = {
    TopicAuthorizationFailedError: TopicNotAuthorized,
    GroupAuthorizationFailedError: GroupNotAuthorized,
    ClusterAuthorizationFailedError: ClusterNotAuthorized,
    TransactionalIdAuthorizationFailedError: TransactionalIdNotAuthorized,
}


def _security_kwargs(security: TransportSecurity | None) -> dict[str, Any]:
    # None means "whatever INTELBUS_SECURITY / INTELBUS_TLS_* say": every client in the project
    # gets TLS from the environment without each call site having to pass it.
    chosen = TransportSecurity.from_env() if security is None else security
    return chosen.client_kwargs()


def _unreachable(
    bootstrap_servers: str, settings: Mapping[str, Any], error: BaseException
) -> KafkaUnavailableError:
    """The error for a cluster that did not answer, with a hint when a plaintext client met a
    listener that speaks TLS (it would otherwise just time out, with no hint why). ``settings``
    are the client's (its security protocol)."""
    message = f"cannot reach Kafka at {bootstrap_servers}: {type(error).__name__}"
    if settings.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        message += speaks_tls_hint(bootstrap_servers)
    return KafkaUnavailableError(message)


def speaks_tls_hint(bootstrap_servers: str) -> str:
    """The hint a plaintext client that could not connect adds to its error when the listener
    speaks TLS (empty when it does not)."""
    if not _speaks_tls(bootstrap_servers):
        return ""
    return (
        "; the broker speaks TLS and this client has no certificate: set INTELBUS_TLS_CA, "
        "INTELBUS_TLS_CERT and INTELBUS_TLS_KEY, or [tls] in the config (docs/operations.md)"
    )


def _speaks_tls(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether the first bootstrap address completes a TLS handshake (certificates unchecked:
    this only tells which language the listener speaks)."""
    host, _, port = bootstrap_servers.split(",", maxsplit=1)[0].strip().rpartition(":")
    if not host or not port.isdigit():
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def not_authorized(error: BaseException, what: str) -> NotAuthorized | None:
    """The typed error for a kafka-python authorization failure (None for any other error).

    kafka-python raises ``TopicAuthorizationFailedError`` (no READ/WRITE/DESCRIBE on a topic),
    ``GroupAuthorizationFailedError`` (no READ on the group) and ``ClusterAuthorizationFailedError``
    (e.g. an idempotent producer that may write nowhere), all ``AuthorizationError``. Messages
    name the operation and the error class, nothing from the records.
    """
    for kafka_cls, ours in _AUTHORIZATION_ERRORS.items():
        # kafka-python 3.0 wraps InitProducerId's ClusterAuthorizationFailedError in a plain
        # KafkaError whose message names the class (transaction_manager.py): match the name too.
        if isinstance(error, kafka_cls) or kafka_cls.__name__ in str(error):
            return ours(f"{what}: not authorized ({kafka_cls.__name__})")
    if isinstance(error, AuthorizationError):
        return NotAuthorized(f"{what}: not authorized ({type(error).__name__})")
    return None


# The settings a consumer connected with, reused to ask one question with an admin client.
_CONNECTION_KEYS = (
    "bootstrap_servers",
    "security_protocol",
    "ssl_context",
    "ssl_check_hostname",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_crlfile",
)


def _missing_topic(consumer: Any, topic: str) -> KafkaUnavailableError:
    """Why a consumer sees no partitions for ``topic``: absent, or hidden by the authorizer.

    A consumer's metadata just leaves out topics it may not DESCRIBE. Asking for the topic by name
    tells them apart, as far as Kafka will: to a principal without DESCRIBE it answers
    TOPIC_AUTHORIZATION_FAILED whether or not the topic exists, so as not to leak its existence.
    """
    settings = {k: consumer.config[k] for k in _CONNECTION_KEYS if k in consumer.config}
    try:
        client = KafkaAdminClient(**{**_ADMIN_TIMEOUTS, **settings})
        try:
            described = client.describe_topics([topic])
        finally:
            client.close()
    except KafkaError:
        return TopicMissing(f"topic {topic} does not exist")
    if any(d.get("error_code") == TopicAuthorizationFailedError.errno for d in described):
        return TopicNotAuthorized(f"topic {topic}: not authorized (or it does not exist)")
    return TopicMissing(f"topic {topic} does not exist")


def _raise_typed(error: KafkaError, what: str) -> NoReturn:
    denied = not_authorized(error, what)
    if denied is not None:
        raise denied from error
    raise KafkaUnavailableError(f"{what}: {type(error).__name__}") from error


@contextlib.contextmanager
def admin_client(
    bootstrap_servers: str, *, security: TransportSecurity | None = None, **overrides: Any
) -> Iterator[Any]:
    """A ``KafkaAdminClient`` closed on exit.

    Raises:
        KafkaUnavailableError: the cluster cannot be reached.
        ConfigError: the TLS settings are unusable (or required and missing).
    """
    try:
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            **{**_ADMIN_TIMEOUTS, **_security_kwargs(security), **overrides},
        )
    except KafkaError as e:
        raise _unreachable(bootstrap_servers, {**_security_kwargs(security), **overrides}, e) from e
    try:
        yield client
    finally:
        client.close()


_ACL_RESOURCE = {
    AclResource.TOPIC: ResourceType.TOPIC,
    AclResource.GROUP: ResourceType.GROUP,
    AclResource.CLUSTER: ResourceType.CLUSTER,
    AclResource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID,
}
_ACL_PATTERN = {
    AclPattern.LITERAL: ACLResourcePatternType.LITERAL,
    AclPattern.PREFIXED: ACLResourcePatternType.PREFIXED,
}
_ACL_PERMISSION = {
    AclPermission.ALLOW: ACLPermissionType.ALLOW,
    AclPermission.DENY: ACLPermissionType.DENY,
}


def _to_kafka_acl(binding: AclBinding) -> Any:
    return ACL(
        principal=binding.principal,
        host=binding.host,
        operation=ACLOperation[binding.operation.name],
        permission_type=_ACL_PERMISSION[binding.permission],
        resource_pattern=ResourcePattern(
            _ACL_RESOURCE[binding.resource], binding.name, _ACL_PATTERN[binding.pattern]
        ),
    )


def _from_kafka_acl(acl: Any) -> AclBinding:
    pattern = acl.resource_pattern
    return AclBinding(
        principal=str(acl.principal),
        resource=AclResource(pattern.resource_type.name.lower()),
        name=str(pattern.resource_name),
        operation=AclOperation(acl.operation.name.lower()),
        pattern=AclPattern(pattern.pattern_type.name.lower()),
        permission=AclPermission(acl.permission_type.name.lower()),
        host=str(acl.host),
    )


def list_acls(
    bootstrap_servers: str, *, security: TransportSecurity | None = None
) -> frozenset[AclBinding]:
    """Every ACL binding the cluster holds.

    Raises:
        NotAuthorized: this principal may not describe ACLs (only super users may).
        KafkaUnavailableError: no authorizer is configured, or the cluster cannot be reached.
    """
    match_all = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            acls, _ = admin.describe_acls(match_all)
        except KafkaError as e:
            _raise_typed(e, "describing ACLs")
    return frozenset(_from_kafka_acl(a) for a in acls)


def change_acls(
    bootstrap_servers: str,
    *,
    add: Iterable[AclBinding] = (),
    remove: Iterable[AclBinding] = (),
    security: TransportSecurity | None = None,
) -> None:
    """Delete the bindings in ``remove`` (each exactly, nothing wider), then create those in ``add``.

    Removing first means a binding moved between principals is never held by both at once.

    Raises:
        NotAuthorized: this principal may not alter ACLs (only super users may).
        KafkaUnavailableError: the cluster refused a change or could not be reached.
    """
    to_remove = sorted(remove)
    to_add = sorted(add)
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            if to_remove:
                for _, _, error in admin.delete_acls([_to_kafka_acl(b) for b in to_remove]):
                    if error is not None and getattr(error, "errno", 0) != 0:
                        raise error("deleting an ACL failed")
            if to_add:
                result = admin.create_acls([_to_kafka_acl(b) for b in to_add])
                if result["failed"]:
                    raise result["failed"][0]("creating an ACL failed")
        except KafkaError as e:
            _raise_typed(e, "changing ACLs")


def broker_ids(
    bootstrap_servers: str, *, timeout_s: float = 10.0, security: TransportSecurity | None = None
) -> set[int]:
    """Ids of the brokers the cluster reports in a metadata request.

    Raises:
        KafkaUnavailableError: no answer.
    """
    ms = int(timeout_s * 1000)
    try:
        with admin_client(
            bootstrap_servers, security=security, request_timeout_ms=ms, bootstrap_timeout_ms=ms
        ) as admin:
            meta = admin.describe_cluster()
    except KafkaError as e:
        raise KafkaUnavailableError(f"metadata request failed: {type(e).__name__}") from e
    # DescribeCluster lists fenced brokers too; only unfenced ones serve requests.
    return {
        int(b.get("broker_id", b.get("node_id", -1)))
        for b in meta.get("brokers", [])
        if not b.get("is_fenced", False)
    }


def create_topics(
    bootstrap_servers: str,
    specs: Iterable[TopicSpec],
    *,
    security: TransportSecurity | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Existing ones are left.

    Raises:
        KafkaUnavailableError: the cluster refused or could not be reached.
    """
    created: list[str] = []
    with admin_client(bootstrap_servers, security=security) as admin:
        existing = set(admin.list_topics())
        todo = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": s.replication_factor,
                "configs": dict(s.configs),
            }
            for s in specs
            if s.name not in existing
        }
        if not todo:
            return created
        try:
            admin.create_topics(todo, timeout_ms=30_000, wait_for_metadata=True)
        except TopicAlreadyExistsError:
            pass  # created concurrently by another process; the settings are checked separately
        except AuthorizationError as e:
            _raise_typed(e, "creating topics")
        except KafkaError as e:
            raise KafkaUnavailableError(f"creating topics failed: {type(e).__name__}: {e}") from e
        created.extend(todo)
        _await_partitions(admin, list(todo))
    return created


def _await_partitions(admin: Any, expected: Iterable[str], timeout_s: float = 30.0) -> None:
    """Wait until every broker's metadata shows every new topic with its partitions.

    The controller acknowledges a creation before every broker has the metadata, and kafka-python's
    ``wait_for_metadata`` asks one broker only: a describe sent to another broker a moment later
    can answer with no partitions at all (seen in CI on a three-node cluster). A caller that
    creates and then inspects, publishes or consumes must not race that, so each broker is asked.
    """
    names = list(expected)
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=n) for n in names],
        allow_auto_topic_creation=False,
    )
    manager = admin._manager  # kafka-python 3.0: no public call sends to a chosen broker

    async def ask(node_id: int) -> Any:
        return await manager.send(request, node_id=node_id)

    deadline = time.monotonic() + timeout_s
    waiting = [int(b.node_id) for b in manager.cluster.brokers()]
    while waiting:
        node = waiting[0]
        try:
            topics = manager.run(ask, node).to_dict()["topics"]
            seen = {str(t["name"]): len(t["partitions"]) for t in topics}
        except KafkaError:
            seen = {}
        # Presence, not the count: a topic created concurrently by someone else may differ, and
        # its settings are checked separately.
        if all(seen.get(name, 0) > 0 for name in names):
            waiting.pop(0)
            continue
        if time.monotonic() >= deadline:
            raise KafkaUnavailableError(
                f"created topics did not reach broker {node}'s metadata within {timeout_s:.0f} s"
            )
        time.sleep(0.2)


def topic_configs(
    bootstrap_servers: str, topic: str, *, security: TransportSecurity | None = None
) -> dict[str, str]:
    """Every config value of ``topic`` as the broker reports it (defaults included)."""
    with admin_client(bootstrap_servers, security=security) as admin:
        result = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    entries = _find_topic_entries(result, topic)
    if not entries:
        # The broker answers an unauthorised DescribeConfigs with an error and no entries (a
        # topic always has its full config, defaults included, for one who may read it).
        raise TopicNotAuthorized(
            f"reading {topic}'s configs: not authorized (no DESCRIBE_CONFIGS ACL)"
        )
    return {k: ("" if v.get("value") is None else str(v["value"])) for k, v in entries.items()}


def _find_topic_entries(result: Any, topic: str) -> dict[str, Any]:
    # kafka-python 3.0 returns {resource_type: {resource_name: {config_key: {..}}}}; the resource
    # type key's exact spelling varies (enum or name), so search by topic name.
    if isinstance(result, dict):
        for by_name in result.values():
            if isinstance(by_name, dict) and topic in by_name:
                entries: dict[str, Any] = by_name[topic]
                return entries
    raise KafkaUnavailableError(f"no config entries returned for topic {topic}")


def partition_ids(
    bootstrap_servers: str, topic: str, *, security: TransportSecurity | None = None
) -> list[int]:
    """The partitions ``topic`` has now.

    Raises:
        KafkaUnavailableError: the topic does not exist or the cluster cannot be reached.
    """
    consumer = make_consumer(bootstrap_servers, group_id=None, security=security)
    try:
        return sorted(partition_bounds(consumer, topic))
    finally:
        consumer.close()


def missing_topics(
    bootstrap_servers: str, topics: Sequence[str], *, security: TransportSecurity | None = None
) -> list[str]:
    """The topics of ``topics`` the cluster does not have (in the order given).

    Raises:
        KafkaUnavailableError: the cluster cannot be reached.
    """
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            existing = set(admin.list_topics())
        except AuthorizationError as e:
            _raise_typed(e, "listing topics")
        except KafkaError as e:
            raise KafkaUnavailableError(f"listing topics: {type(e).__name__}") from e
    return [t for t in topics if t not in existing]


def broker_count(bootstrap_servers: str, *, security: TransportSecurity | None = None) -> int:
    """How many brokers the cluster has (for a default replication factor).

    Raises:
        KafkaUnavailableError: the cluster cannot be reached.
    """
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            return max(1, len(admin.describe_cluster().get("brokers") or []))
        except KafkaError as e:
            raise KafkaUnavailableError(f"describing the cluster: {type(e).__name__}") from e


def topic_states(
    bootstrap_servers: str, topics: Sequence[str], *, security: TransportSecurity | None = None
) -> dict[str, TopicState | None]:
    """Each topic's partitions, replicas and config values as the cluster reports them (None for
    a topic that does not exist), for ``intelbus topics show|check``.

    Raises:
        KafkaUnavailableError: the cluster cannot be reached; NotAuthorized: no right to describe.
    """
    out: dict[str, TopicState | None] = dict.fromkeys(topics)
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            existing = set(admin.list_topics())
            present = [t for t in topics if t in existing]
            if not present:
                return out
            described = admin.describe_topics(present)
            configs = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in present],
                config_filter="all",
            )
        except AuthorizationError as e:
            _raise_typed(e, "describing topics")
        except KafkaError as e:
            raise KafkaUnavailableError(f"describing topics: {type(e).__name__}") from e
    for t in described:
        name = str(t.get("topic") or t.get("name"))
        if name not in out:
            continue
        replicas = {
            int(p["partition_index"]): tuple(int(r) for r in p["replica_nodes"])
            for p in t["partitions"]
        }
        entries = _find_topic_entries(configs, name)
        values = {
            k: ("" if v.get("value") is None else str(v["value"])) for k, v in entries.items()
        }
        out[name] = TopicState(name, replicas, values)
    return out


def topic_partitions(
    bootstrap_servers: str, topic: str, *, security: TransportSecurity | None = None
) -> dict[int, list[int]]:
    """partition -> replica broker ids, from a metadata request."""
    return {
        int(p["partition_index"]): [int(r) for r in p["replica_nodes"]]
        for p in _described_partitions(bootstrap_servers, topic, security)
    }


def partition_leaders(
    bootstrap_servers: str, topic: str, *, security: TransportSecurity | None = None
) -> dict[int, tuple[int, list[int]]]:
    """partition -> (leader broker id, in-sync replica ids), from a fresh metadata request.

    The leader is -1 while a partition has none (no live in-sync replica, or no controller).
    """
    return {
        int(p["partition_index"]): (int(p["leader_id"]), [int(r) for r in p.get("isr_nodes") or []])
        for p in _described_partitions(bootstrap_servers, topic, security)
    }


def _described_partitions(
    bootstrap_servers: str, topic: str, security: TransportSecurity | None
) -> list[dict[str, Any]]:
    """The partition entries of one topic's metadata, as kafka-python's admin describes them."""
    with admin_client(bootstrap_servers, security=security) as admin:
        described = admin.describe_topics([topic])
    return [p for t in described for p in t["partitions"]]


def committed_offsets(
    bootstrap_servers: str, group_id: str, *, security: TransportSecurity | None = None
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the next offset a consumer group committed to Kafka."""
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            found = admin.list_group_offsets(group_id).get(group_id, {})
        except KafkaError as e:
            _raise_typed(e, f"offsets of group {group_id}")
    return {
        (tp.topic, int(tp.partition)): int(meta.offset)
        for tp, meta in found.items()
        if meta is not None and meta.offset >= 0
    }


def end_offsets(bootstrap_servers: str, topic: str, **overrides: Any) -> dict[int, int]:
    """partition -> the offset the next record will get (the log end), read without a group.

    Raises:
        KafkaUnavailableError: the topic does not exist or the cluster cannot be reached.
    """
    consumer = make_consumer(bootstrap_servers, **overrides)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise _missing_topic(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        try:
            ends = consumer.end_offsets(tps)
        except KafkaError as e:
            raise KafkaUnavailableError(f"end offsets of {topic}: {type(e).__name__}") from e
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        consumer.close()


def log_end_offsets(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    security: TransportSecurity | None = None,
    timeout_s: float = 4.0,
) -> dict[str, dict[int, int] | None]:
    """topic -> (partition -> log end offset), None for a topic the cluster does not have; read
    without a group, every broker wait bounded by ``timeout_s`` (an operator's page must not hang
    on a dead broker).

    Raises:
        KafkaUnavailableError: the cluster cannot be reached, or did not answer in time.
        ConfigError: the TLS settings are unusable.
    """
    ms = max(int(timeout_s * 1000), 1000)
    consumer = make_consumer(
        bootstrap_servers,
        security=security,
        bootstrap_timeout_ms=ms,
        request_timeout_ms=ms,
        reconnect_backoff_max_ms=1000,
    )
    try:
        found: dict[str, dict[int, int] | None] = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                found[topic] = None
                continue
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            try:
                ends = consumer.end_offsets(tps, timeout_ms=ms)
            except KafkaError as e:
                raise KafkaUnavailableError(f"end offsets of {topic}: {type(e).__name__}") from e
            found[topic] = {tp.partition: int(offset) for tp, offset in ends.items()}
        return found
    finally:
        consumer.close()


def close_producer(producer: Any, timeout_s: float = 5.0) -> None:
    """Close a producer, abandoning whatever it still has unacknowledged after ``timeout_s``.

    kafka-python's ``close`` flushes first and raises ``KafkaTimeoutError`` when the flush does not
    finish, leaving the producer open and its sender thread running. The bus closes a producer
    exactly when sends are failing (to get a fresh one, whose idempotence state is clean), so a
    timed-out flush is expected there: the records still buffered were already reported as not
    acknowledged and are resent with the same bytes by their caller. Never raises.
    """
    if isinstance(producer, ProducerClient):
        producer.close(timeout_s)
        return
    try:
        producer.close(timeout=timeout_s)
    except KafkaError:
        log.info("producer.close_timed_out", timeout_s=timeout_s)
    else:
        return
    # No public API aborts the buffered batches: stop the sender thread, which aborts them.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    with contextlib.suppress(KafkaError):
        producer.close(timeout=0)


def make_producer(
    bootstrap_servers: str,
    *,
    security: TransportSecurity | None = None,
    client: KafkaClient = KafkaClient.KAFKA_PYTHON,
    **overrides: Any,
) -> Any:
    """A ``KafkaProducer`` with the bus's durable settings (with ``client`` confluent-kafka, a
    librdkafka producer with the same settings). ``overrides`` use kafka-python's names.

    Raises:
        KafkaUnavailableError: the cluster cannot be reached at construction time.
        ConfigError: the TLS settings are unusable (or required and missing), or the client is
            not installed.
    """
    if client is KafkaClient.CONFLUENT_KAFKA:
        return _rdkafka().make_producer(bootstrap_servers, security, overrides)
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            **{**PRODUCER_DEFAULTS, **_security_kwargs(security), **overrides},
        )
    except KafkaError as e:
        raise _unreachable(bootstrap_servers, {**_security_kwargs(security), **overrides}, e) from e


def _rdkafka() -> Any:
    """:mod:`intelbus.transport.rdkafka`, imported on first use: confluent-kafka is optional.

    Raises:
        ConfigError: confluent-kafka is not installed.
    """
    KafkaClient.CONFLUENT_KAFKA.require_installed()
    from intelbus.transport import rdkafka  # noqa: PLC0415 - optional dependency

    return rdkafka


def make_consumer(bootstrap_servers: str, *topics: str, **overrides: Any) -> Any:
    """A ``KafkaConsumer`` that never auto-commits: offsets are committed after the store commits.

    ``client=KafkaClient.CONFLUENT_KAFKA`` among the overrides builds a librdkafka consumer with
    the same settings instead; the other overrides use kafka-python's names either way.

    ``security=`` (a :class:`TransportSecurity`) may be among the overrides; without it the
    ``INTELBUS_*`` environment decides. (It is taken from ``overrides`` rather than named, so
    callers that forward a ``dict[str, object]`` of settings keep type-checking.)

    Raises:
        KafkaUnavailableError: the cluster cannot be reached at construction time.
        ConfigError: the TLS settings are unusable (or required and missing).
    """
    security: TransportSecurity | None = overrides.pop("security", None)
    client: KafkaClient = overrides.pop("client", None) or KafkaClient.KAFKA_PYTHON
    if client is KafkaClient.CONFLUENT_KAFKA:
        return _rdkafka().make_consumer(bootstrap_servers, topics, security, overrides)
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        **_security_kwargs(security),
    }
    settings.update(overrides)
    try:
        return KafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, **settings)
    except KafkaError as e:
        raise _unreachable(bootstrap_servers, settings, e) from e


def read_all(consumer: Any, topic: str, *, timeout_s: float = 60.0) -> Iterator[Any]:
    """Every record of ``topic`` from offset 0 up to the end offsets seen at the start, all partitions.

    The consumer is assigned the partitions directly (no group, nothing committed), so reading
    never disturbs other consumers.

    Raises:
        KafkaUnavailableError: the topic does not exist, or the end was not reached in time.
    """
    if isinstance(consumer, ConsumerClient):
        yield from consumer.read_all(topic, timeout_s=timeout_s)
        return
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise _missing_topic(consumer, topic)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    remaining = {tp for tp in tps if end[tp] > 0}
    deadline = time.monotonic() + timeout_s
    while remaining:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"could not read {topic} to its end within {timeout_s:.0f}s"
            )
        batch = consumer.poll(timeout_ms=500)
        for tp, records in batch.items():
            yield from records
            if consumer.position(tp) >= end[tp]:
                remaining.discard(tp)


class SendNotAuthorized(SendFailed, NotAuthorized):
    """The broker's authorizer refused the send: nothing was written, and a retry would not help.

    Both a :class:`SendFailed` (callers that handle failed sends keep working) and a
    :class:`~intelbus.transport.security.NotAuthorized`; :attr:`resource_type` says what was denied.
    """

    def __init__(
        self, message: str, *, denied: BaseException, resource_type: str | None = None
    ) -> None:
        super().__init__(message, indeterminate=False)
        if resource_type is None:
            typed = not_authorized(denied, "send")
            resource_type = typed.resource_type if typed is not None else "unknown"
        self.resource_type = resource_type


def send_and_wait(
    producer: Any,
    topic: str,
    value: bytes,
    *,
    key: bytes | None,
    partition: int | None = None,
    timeout_s: float = 60.0,
) -> tuple[int, int]:
    """Send one record and wait for the broker's acknowledgement (acks=all); return (partition, offset).

    ``partition`` sends to that partition (a producer's stream is bound to one); None lets the
    partitioner choose from ``key``.

    Raises:
        SendFailed: not acknowledged. ``indeterminate`` is True for timeouts and lost connections,
            where the record may have been written anyway: resend the *same* bytes, never reseal.
    """
    if isinstance(producer, ProducerClient):
        return producer.send_and_wait(
            topic, value, key=key, partition=partition, timeout_s=timeout_s
        )
    try:
        meta = producer.send(topic, value=value, key=key, partition=partition).get(
            timeout=timeout_s
        )
    except KafkaError as e:
        if not_authorized(e, "send") is not None:
            raise SendNotAuthorized(f"send to {topic}: not authorized", denied=e) from e
        retriable = bool(getattr(e, "retriable", False)) or isinstance(e, KafkaTimeoutError)
        raise SendFailed(
            f"send to {topic} failed: {type(e).__name__}", indeterminate=retriable
        ) from e
    return int(meta.partition), int(meta.offset)


def _delivery_timeout_s(producer: Any) -> float:
    config = getattr(producer, "config", None) or {}
    return float(config.get("delivery_timeout_ms", PRODUCER_DEFAULTS["delivery_timeout_ms"])) / 1000


def send_many(
    producer: Any,
    items: Sequence[tuple[str, bytes, int | None]],
    *,
    key: bytes | None,
    timeout_s: float | None = None,
) -> list[tuple[int, int] | SendFailed]:
    """Send records without waiting between them, then wait for every acknowledgement.

    Each item is ``(topic, value, partition)``; a partition of None lets the partitioner choose.

    Returns, in order, ``(partition, offset)`` for each acknowledged record or the
    :class:`SendFailed` that says why it was not (``indeterminate`` as in :func:`send_and_wait`).
    The idempotent producer keeps the records of one partition in order across its retries.

    The wait is bounded by ``timeout_s``, by default the producer's delivery timeout plus a few
    seconds: kafka-python 3.0.12 did not fail an in-flight request on a connection that went
    silent (a blackholed broker, tests/faults) at its request timeout, so its own delivery
    timeout alone did not end the wait.
    """
    if isinstance(producer, ProducerClient):
        return producer.send_many(items, key=key, timeout_s=timeout_s)
    if timeout_s is None:
        timeout_s = _delivery_timeout_s(producer) + 5.0
    futures: list[Any] = []
    for topic, value, partition in items:
        try:
            futures.append(producer.send(topic, value=value, key=key, partition=partition))
        except KafkaError as e:
            futures.append(e)
    deadline = time.monotonic() + timeout_s
    results: list[tuple[int, int] | SendFailed] = []
    for (topic, _, _), future in zip(items, futures, strict=True):
        try:
            if isinstance(future, KafkaError):
                raise future
            meta = future.get(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaError as e:
            if not_authorized(e, "send") is not None:
                refused = SendNotAuthorized(f"send to {topic}: not authorized", denied=e)
                refused.__cause__ = e
                results.append(refused)
                continue
            retriable = bool(getattr(e, "retriable", False)) or isinstance(e, KafkaTimeoutError)
            failed = SendFailed(
                f"send to {topic} failed: {type(e).__name__}", indeterminate=retriable
            )
            failed.__cause__ = e
            results.append(failed)
            continue
        results.append((int(meta.partition), int(meta.offset)))
    return results


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed record, in our own terms (no kafka-python types leak out of this module)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    appended_at: datetime | None  # the broker's LogAppendTime, when the topic uses it


def subscribe(
    consumer: Any,
    topics: Iterable[str],
    *,
    on_assigned: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]],
    on_revoked: Callable[[], None],
) -> None:
    """Subscribe in a consumer group; on every assignment seek to the offsets ``on_assigned`` gives.

    Partitions it gives no offset for are read from the beginning: the store, not Kafka's
    committed offsets, says what has been processed (offsets are stored with the records).
    """
    if isinstance(consumer, ConsumerClient):
        consumer.subscribe(list(topics), on_assigned=on_assigned, on_revoked=on_revoked)
        return

    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            on_revoked()

        def on_partitions_assigned(self, assigned: Any) -> None:
            tps = list(assigned)
            positions = on_assigned([(tp.topic, tp.partition) for tp in tps])
            for tp in tps:
                offset = positions.get((tp.topic, tp.partition))
                if offset is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)

    consumer.subscribe(topics=list(topics), listener=_Listener())


def poll(consumer: Any, *, timeout_ms: int, max_records: int) -> list[Message]:
    """One poll, flattened in partition order.

    Raises:
        KafkaUnavailableError: the poll failed.
    """
    if isinstance(consumer, ConsumerClient):
        return consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    try:
        batch = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    except KafkaError as e:
        _raise_typed(e, "poll failed")
    out: list[Message] = []
    for records in batch.values():
        for r in records:
            appended = (
                datetime.fromtimestamp(r.timestamp / 1000, UTC) if r.timestamp_type == 1 else None
            )
            out.append(Message(r.topic, r.partition, r.offset, r.value or b"", appended))
    return out


def commit(consumer: Any, offsets: Mapping[tuple[str, int], int]) -> bool:
    """Commit next-offsets to Kafka (for lag monitoring only; the store holds the truth).

    Returns False instead of raising: a failed Kafka commit loses nothing, since the store's
    offsets win on the next assignment.
    """
    if not offsets:
        return True
    if isinstance(consumer, ConsumerClient):
        return consumer.commit(offsets)
    try:
        consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        )
    except KafkaError:
        return False
    return True


def rewind(
    consumer: Any, positions: Callable[[list[tuple[str, int]]], Mapping[tuple[str, int], int]]
) -> None:
    """Seek every currently assigned partition back to the offsets ``positions`` gives (else the start)."""
    if isinstance(consumer, ConsumerClient):
        consumer.rewind(positions)
        return
    tps = list(consumer.assignment())
    wanted = positions([(tp.topic, tp.partition) for tp in tps])
    for tp in tps:
        offset = wanted.get((tp.topic, tp.partition))
        if offset is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


def has_assignment(consumer: Any) -> bool:
    """True once the group has assigned this member at least one partition."""
    if isinstance(consumer, ConsumerClient):
        return consumer.has_assignment()
    return bool(consumer.assignment())


# --- Reading one partition without a group (auditor replay, consumers/audit). ------------------------


def partition_bounds(consumer: Any, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (log start offset, log end offset) of ``topic``, read without a group.

    Raises:
        KafkaUnavailableError: the topic does not exist or the cluster cannot be reached.
    """
    if isinstance(consumer, ConsumerClient):
        return consumer.partition_bounds(topic)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise _missing_topic(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
    except KafkaError as e:
        _raise_typed(e, f"offsets of {topic}")
    return {tp.partition: (int(begin[tp]), int(end[tp])) for tp in tps}


def offsets_at(
    consumer: Any, topic: str, partitions: Iterable[int], at: datetime
) -> dict[int, int]:
    """partition -> the first offset whose timestamp is at or after ``at`` (absent: none is).

    Raises:
        KafkaUnavailableError: the lookup failed.
    """
    if isinstance(consumer, ConsumerClient):
        return consumer.offsets_at(topic, list(partitions), at)
    ms = int(at.timestamp() * 1000)
    try:
        found = consumer.offsets_for_times({TopicPartition(topic, p): ms for p in partitions})
    except KafkaError as e:
        raise KafkaUnavailableError(f"offsets for time in {topic}: {type(e).__name__}") from e
    return {tp.partition: int(o.offset) for tp, o in found.items() if o is not None}


def assign_at(consumer: Any, topic: str, partition: int, offset: int) -> None:
    """Manually assign exactly one partition (no group, nothing committed) and seek to ``offset``."""
    if isinstance(consumer, ConsumerClient):
        consumer.assign_at(topic, partition, offset)
        return
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)


def position(consumer: Any, topic: str, partition: int) -> int:
    """The offset of the next record the consumer will fetch from one assigned partition."""
    if isinstance(consumer, ConsumerClient):
        return consumer.position(topic, partition)
    return int(consumer.position(TopicPartition(topic, partition)))


def read_partition(
    consumer: Any,
    topic: str,
    partition: int,
    start: int,
    *,
    timeout_s: float = 30.0,
) -> tuple[list[Message], int]:
    """The records of one partition from ``start`` up to its end offset as seen now, without a
    group; returns them and the next offset to read (``start`` when there was nothing new).

    Raises:
        KafkaUnavailableError: the topic or partition does not exist, or the end was not reached
            in time.
    """
    bounds = partition_bounds(consumer, topic)
    if partition not in bounds:
        raise KafkaUnavailableError(f"{topic} has no partition {partition}")
    begin, end = bounds[partition]
    start = max(start, begin)
    if start >= end:
        return [], start
    assign_at(consumer, topic, partition, start)
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while position(consumer, topic, partition) < end:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"could not read {topic}[{partition}] to offset {end} within {timeout_s:.0f}s"
            )
        out.extend(m for m in poll(consumer, timeout_ms=200, max_records=500) if m.offset < end)
    return out, end


def timestamp_types(
    bootstrap_servers: str, topics: Iterable[str], *, security: TransportSecurity | None = None
) -> dict[str, str]:
    """topic -> its ``message.timestamp.type`` (``LogAppendTime`` or ``CreateTime``).

    Raises:
        KafkaUnavailableError: a topic does not exist or the cluster cannot be reached.
    """
    return {
        t: topic_configs(bootstrap_servers, t, security=security).get("message.timestamp.type", "")
        for t in topics
    }


def partition_count(producer: Any, topic: str) -> int:
    """How many partitions ``topic`` has now, as the producer's metadata says.

    Raises:
        KafkaUnavailableError: the topic does not exist or its metadata did not arrive.
    """
    if isinstance(producer, ProducerClient):
        return producer.partition_count(topic)
    try:
        partitions = producer.partitions_for(topic)
    except KafkaError as e:
        raise KafkaUnavailableError(f"no metadata for {topic}: {type(e).__name__}") from e
    if not partitions:
        raise TopicMissing(f"topic {topic} does not exist (create it first)")
    return len(partitions)


def alter_topic_configs(
    bootstrap_servers: str,
    topic: str,
    changes: Mapping[str, str],
    *,
    security: TransportSecurity | None = None,
) -> None:
    """Set some of a topic's configs, leaving the others as they are (incremental alter).

    Raises:
        KafkaUnavailableError: refused or unreachable.
    """
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(changes))],
                incremental=True,
            )
        except KafkaError as e:
            _raise_typed(e, f"altering {topic}'s configs")


def add_partitions(
    bootstrap_servers: str,
    topic: str,
    total: int,
    *,
    security: TransportSecurity | None = None,
) -> None:
    """Grow ``topic`` to ``total`` partitions (Kafka never removes partitions).

    Raises:
        KafkaUnavailableError: refused or unreachable.
    """
    with admin_client(bootstrap_servers, security=security) as admin:
        try:
            admin.create_partitions({topic: NewPartitions(total_count=total)})
        except KafkaError as e:
            _raise_typed(e, f"adding partitions to {topic}")

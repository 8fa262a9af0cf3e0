"""Validate, encode, seal and publish records; own each stream's sequence and delivery.

For each record (``Publisher.publish``):

1. The directory must be fresh (its newest version not expired, the directory topic read for
   newer ones) and must list this producer's key as valid for the topic now: fail closed
   otherwise (:class:`~intelbus.errors.DirectoryExpired`, :class:`~intelbus.errors.PublishRefused`).
2. Decide the recipients with the sharing agreement; none, or one the directory cannot seal to,
   means the record is not published (:class:`~intelbus.errors.NoRecipients`).
3. Encode it with its current Avro writer schema.
4. Seal it as its stream's next record (sequence, previous digest), bound to the stream's
   partition and naming the record it amends, to the recipients' current keys (or, for a key
   that lists encryption epochs, to the epoch covering now: none covering now refuses the record,
   :class:`~intelbus.errors.NoCurrentEpoch`). A stream is one
   topic's records under one key: its partition is chosen once (a stable hash of the producer id
   over the topic's partitions then) and kept when partitions are added; a new key starts a new
   epoch at sequence 0, linked to the last record of the previous one.
5. Reserve it durably in the producer state *before* sending (no sequence reuse, no fork after a
   crash), then send to its partition with ``acks=all`` on the idempotent producer.
6. It counts as published only once the broker acknowledged it. On an indeterminate failure the
   Kafka producer is recreated and the *same sealed bytes* are resent; if it still fails, the record
   stays pending and :meth:`Publisher.resend_pending` sends it first on the next start.

A background thread (``start_heartbeats``) publishes a signed heartbeat at a fixed interval with
the last sequence number of each stream, so a quiet feed can be told from a frozen one.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intelbus.directory import store as dstore
from intelbus.directory.follow import DirectoryFollower, require_fresh
from intelbus.directory.model import Role
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope import MAX_BATCH, BatchItem, DataKeyCache, Sealed, seal, seal_batch
from intelbus.errors import (
    ConfigError,
    NoRecipients,
    PublishError,
    PublishPending,
    PublishRefused,
    RecordError,
    SendFailed,
    TopicMissing,
)
from intelbus.identity import AgencyIdentity, SealingKey
from intelbus.kinds import Family, RecordKind, family_of_topic
from intelbus.log import get_logger
from intelbus.policy.agreement import SharingAgreement
from intelbus.records import (
    Correction,
    DomainRecord,
    Erasure,
    Heartbeat,
    Incident,
    Retraction,
    Sighting,
    StreamHead,
)
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport import kafka as transport
from intelbus.transport.client import KafkaClient
from intelbus.transport.security import TransportSecurity
from intelbus.transport.topics import topic_name
from producers import sync
from producers.config import ProducerConfig
from producers.state import UNBOUND, ProducerState, Reservation
from producers.state import StreamHead as StateHead

log = get_logger("producers.publisher")

_KINDS: dict[type, RecordKind] = {
    Sighting: RecordKind.SIGHTING,
    Incident: RecordKind.INCIDENT,
    Correction: RecordKind.CORRECTION,
    Retraction: RecordKind.RETRACTION,
    Erasure: RecordKind.ERASURE,
}
SEND_ATTEMPTS = 3
#: How often a long-running publisher reads the directory topic for new versions.
DIRECTORY_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class Published:
    """What the broker acknowledged for one record."""

    record_id: str
    topic: str
    partition: int
    offset: int
    sequence: int
    recipients: tuple[str, ...]
    #: True when this record id was published before with the same contents (a retried file):
    #: nothing was sent this time, and the fields describe the earlier acknowledgement.
    already: bool = False


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A record ready to seal: where it goes, to whom, and its encoded payload."""

    topic: str
    kind: RecordKind
    fingerprint: bytes
    payload: bytes
    keys: tuple[SealingKey, ...]
    record_id: uuid.UUID
    target: uuid.UUID | None  # the record a correction or retraction amends
    recipients: tuple[str, ...]  # the keys' agency ids, in order


class _Lookups:
    """What one call decides once for all its records: the directory's readers, the agreement's
    recipients per distinct deciding facts, and each recipient's sealing key, all at one instant
    (``now``). Each record still gets exactly the answer it would get alone, and the same errors.
    """

    __slots__ = (
        "_agreement",
        "_directory",
        "_key_sets",
        "_keys",
        "_known",
        "_names",
        "_recipients",
        "now",
    )

    def __init__(
        self, directory: DirectoryHistory, agreement: SharingAgreement, now: datetime
    ) -> None:
        self._directory = directory
        self._agreement = agreement
        self.now = now
        self._known: dict[str, object] | None = None
        self._recipients: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._keys: dict[str, SealingKey] = {}
        self._key_sets: dict[tuple[str, ...], tuple[SealingKey, ...]] = {}
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}

    def recipients(self, record: DomainRecord, named: Sequence[str]) -> tuple[str, ...]:
        """The agreement's recipients for ``record`` (see :meth:`Publisher.recipients_for`).

        Raises:
            NoRecipients: none, or one the directory does not list as a consumer or auditor.
        """
        facts = record.replacement.facts() if isinstance(record, Correction) else record.facts()
        decided = (self._agreement.deciding(facts), tuple(named))
        found = self._recipients.get(decided)
        if found is None:
            if self._known is None:
                self._known = {
                    a.agency_id: a
                    for a in self._directory.latest.agencies
                    if (Role.CONSUMER in a.roles or Role.AUDITOR in a.roles)
                    and a.removed_at is None
                }
            found = self._agreement.recipients(facts, named=named, known=self._known)
            self._recipients[decided] = found  # only answers are kept: a refusal raises each time
        return found

    def keys(self, recipients: Sequence[str]) -> tuple[SealingKey, ...]:
        """Each recipient's sealing key now.

        Raises:
            UnknownKey: a recipient has no usable key.
            NoCurrentEpoch: its key lists encryption epochs, none covering now.
        """
        recipients = tuple(recipients)
        found = self._key_sets.get(recipients)
        if found is None:
            out = []
            for agency in recipients:
                key = self._keys.get(agency)
                if key is None:
                    key = self._directory.sealing_key(agency, self.now)
                    self._keys[agency] = key
                out.append(key)
            # One tuple per recipient set: sealing checks a set once per run of records that
            # share it (by identity), instead of sorting it again for every record.
            found = self._key_sets[recipients] = tuple(out)
            self._names[recipients] = tuple(k.agency_id for k in found)
        return found

    def names(self, recipients: Sequence[str]) -> tuple[str, ...]:
        """The agency ids of :meth:`keys` of ``recipients`` (called after it), in its order."""
        return self._names[tuple(recipients)]


class Publisher:
    """One producer identity publishing to one bus environment."""

    def __init__(
        self,
        *,
        identity: AgencyIdentity,
        directory: DirectoryHistory,
        agreement: SharingAgreement,
        registry: SchemaRegistry,
        state: ProducerState,
        bootstrap_servers: str,
        environment: str,
        topic_prefix: str,
        datakeys: DataKeyCache | None = None,
        security: TransportSecurity | None = None,
        client: KafkaClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        follower: DirectoryFollower | None = None,
        delivery_timeout_s: float = 60.0 * SEND_ATTEMPTS,
    ) -> None:
        if agreement.producer != identity.agency_id:
            raise NoRecipients(
                f"the agreement is {agreement.producer}'s, not {identity.agency_id}'s"
            )
        self.identity = identity
        self.directory = directory
        self.agreement = agreement
        self.registry = registry
        self.state = state
        self.bootstrap = bootstrap_servers
        self.environment = environment
        self.prefix = topic_prefix
        self.datakeys = datakeys if datakeys is not None else DataKeyCache()
        self.security = security  # None: the environment's settings (INTELBUS_SECURITY, ...)
        # None: INTELBUS_KAFKA_CLIENT, else kafka-python (intelbus/transport/client.py).
        self.client = KafkaClient.resolve(client)
        self.clock = clock
        self._producer: Any = None
        self.follower = follower
        self.delivery_timeout_s = delivery_timeout_s
        self._next_directory = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: ProducerConfig, passphrase: bytes | None = None) -> Publisher:
        """A publisher wired from a producer config (see :func:`build_publisher`)."""
        return build_publisher(config, passphrase)

    # -- topics -------------------------------------------------------------------------------------

    def topic_for(self, record: DomainRecord, family: Family | None = None) -> str:
        """Sightings and incidents have their own topics; an amendment goes where its target went."""
        if isinstance(record, Sighting):
            return topic_name(Family.SIGHTINGS, prefix=self.prefix)
        if isinstance(record, Incident):
            return topic_name(Family.INCIDENTS, prefix=self.prefix)
        if isinstance(record, Correction):
            fam = Family.SIGHTINGS if isinstance(record.replacement, Sighting) else Family.INCIDENTS
            return topic_name(fam, prefix=self.prefix)
        if family is None:
            raise NoRecipients(
                f"a {record.KIND} needs the family (sightings or incidents) of the record it "
                "amends (--family)"
            )
        return topic_name(family, prefix=self.prefix)

    # -- trust before sealing ---------------------------------------------------------------------

    def check_directory(self, topic: str, *, force: bool = False) -> None:
        """Refuse to publish on an expired directory, or with a key it does not trust now.

        Reads the directory topic first (at most every :data:`DIRECTORY_EVERY_S` unless
        ``force``), so a new version (a rotation, a revocation) is known before sealing.

        Raises:
            DirectoryExpired: the newest trusted version has expired.
            PublishRefused: this producer's key may not publish to ``topic`` now.
            KafkaUnavailableError: the directory topic cannot be read.
        """
        now_mono = time.monotonic()
        if self.follower is not None and (force or now_mono >= self._next_directory):
            self._next_directory = now_mono + DIRECTORY_EVERY_S
            self.follower.catch_up()
        now = self.clock()
        require_fresh(self.directory, now)
        try:
            self.directory.key_status(
                self.identity.key_id, self.identity.agency_id, topic, now, now
            )
        except RecordError as e:
            raise PublishRefused(
                f"{self.identity.agency_id}'s key {self.identity.key_id.hex()} may not publish "
                f"to {topic} now: {e.reason.value}: {str(e).split('] ', 1)[-1]}"
            ) from None

    def _head(self, topic: str, heads: dict[str, StateHead] | None = None) -> StateHead:
        """The head the next record on ``topic`` continues: the stored one, or (a new key, or a
        stream never bound to a partition) a new epoch at sequence 0 linked to the last record."""
        head = (heads or {}).get(topic) or self.state.head(topic)
        epoch = self.identity.key_id.hex()
        if head.epoch == epoch and head.partition != UNBOUND:
            return head
        partition = head.partition if head.partition != UNBOUND else self._choose_partition(topic)
        return StateHead(topic, -1, head.last_digest, partition, epoch)

    def _choose_partition(self, topic: str) -> int:
        """A stable partition for this producer's stream on ``topic``: a hash of the producer id
        over the partitions the topic has now. Chosen once; the state keeps it."""
        if self._producer is None:
            self._producer = transport.make_producer(
                self.bootstrap, security=self.security, client=self.client
            )
        count = transport.partition_count(self._producer, topic)
        digest = hashlib.blake2b(self.identity.agency_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % count

    # -- publishing ---------------------------------------------------------------------------------

    def recipients_for(self, record: DomainRecord, named: Sequence[str] = ()) -> tuple[str, ...]:
        """The agreement's recipients for a record (fail closed).

        Raises:
            NoRecipients: none, or one the directory does not list as a consumer or auditor.
        """
        return self._lookups().recipients(record, named)

    def publish(
        self, record: DomainRecord, *, named: Sequence[str] = (), family: Family | None = None
    ) -> Published:
        """Publish one validated record; returns only once the broker acknowledged it.

        Raises:
            NoRecipients: not published (fail closed).
            UnknownKey: a recipient has no usable key.
            PublishError: not acknowledged; it stays pending and is resent first next time.
        """
        if family is None and isinstance(record, (Retraction, Erasure)):
            family = self._family_of_own(
                record.retracts_record_id
                if isinstance(record, Retraction)
                else record.erases_record_id
            )
        p = self._prepare(record, named, family)
        earlier = self._earlier(p)
        if earlier is not None:
            return earlier
        published = self._publish_payload(
            p.topic,
            kind=p.kind,
            fingerprint=p.fingerprint,
            payload=p.payload,
            keys=p.keys,
            record_id=p.record_id,
            target=p.target,
        )
        if isinstance(record, Erasure):
            was = self.state.forget(record.erases_record_id)
            log.info("record.erasure_published", target=record.erases_record_id, local=was)
        return published

    def _family_of_own(self, record_id: str) -> Family | None:
        """The family of a record this producer's state published (None if it never did)."""
        prior = self.state.prior(record_id)
        return None if prior is None else family_of_topic(prior.stream)

    def _earlier(self, p: _Prepared) -> Published | None:
        """A record id this state already holds: the same record published before (returned as
        ``already``), or refused (pending, abandoned, or other contents under the same id).

        Raises:
            PublishRefused: the id is spent on other contents, or was abandoned.
            PublishPending: it is pending from an earlier run (``intelbus publish retry``).
        """
        rid = str(p.record_id)
        prior = self.state.prior(rid)
        if prior is None:
            return None
        if prior.status == "abandoned":
            raise PublishRefused(
                f"record {rid} was abandoned earlier; its id is spent (give the record a new id)"
            )
        if prior.content is not None and prior.content != _content_digest(p.payload):
            raise PublishRefused(
                f"record {rid} was already published with other contents; to change a "
                "published record, publish a correction of it"
            )
        if prior.status == "pending":
            raise PublishPending(
                f"record {rid} is pending from an earlier run "
                f"({prior.last_error or 'not acknowledged'}): `intelbus publish retry` sends it"
            )
        return Published(
            rid,
            prior.stream,
            -1 if prior.partition is None else prior.partition,
            -1 if prior.offset is None else prior.offset,
            prior.sequence,
            tuple(k.agency_id for k in p.keys),
            already=True,
        )

    def publish_many(
        self,
        records: Sequence[DomainRecord],
        *,
        named: Sequence[str] = (),
        family: Family | None = None,
    ) -> list[Published]:
        """Publish several records: one durable reservation for all, sends pipelined, then acks.

        The records of one stream are sealed as batches of up to ``MAX_BATCH`` (envelope format
        3): one signature for each batch, every record still verifiable alone.

        Every record is prepared (recipients, keys, encoding) before any is sealed, so a record
        that cannot be published (fail closed) stops the whole call before anything is reserved.
        Returns only once every record was acknowledged, in order.

        One caveat of pipelining, which :meth:`publish` does not have: if the broker refuses one
        record for a reason of its own (not a lost connection) while later ones of the same
        stream are accepted, the refused one is resent after them, and consumers quarantine it
        as out of order (the evidence is kept, never dropped silently).

        Raises:
            NoRecipients: nothing was published (fail closed).
            UnknownKey: a recipient has no usable key; nothing was published.
            PublishError: some records were not acknowledged; they stay pending.
        """
        lookups = self._lookups()
        prepared = [self._prepare(r, named, family, lookups) for r in records]
        for topic in sorted({p.topic for p in prepared}):
            self.check_directory(topic)
        with self._lock:
            sealed = self._seal_batches(prepared)
            reservations = [
                Reservation(head, str(p.record_id), s.digest, s.data, _content_digest(p.payload))
                for p, (head, s) in zip(prepared, sealed, strict=True)
            ]
            self.state.reserve_many(reservations)
            if self._producer is None:
                self._producer = transport.make_producer(
                    self.bootstrap, security=self.security, client=self.client
                )
            results = transport.send_many(
                self._producer,
                [(r.head.stream, r.sealed, r.head.partition) for r in reservations],
                key=self.identity.agency_id.encode(),
            )
            acks: list[tuple[str, int, int]] = []
            failed = 0
            try:
                for r, result in zip(reservations, results, strict=True):
                    if isinstance(result, SendFailed):
                        failed += 1
                        if failed == 1:
                            log.warning(
                                "record.send_failed",
                                topic=r.head.stream,
                                indeterminate=result.indeterminate,
                            )
                            # Once: the failed producer's idempotence state is unknown. Each
                            # resend below makes (and on failure replaces) its own.
                            self._close_producer()
                        # Same bytes, same partition, with retries.
                        acked = self._send(r.head.stream, r.sealed, r.head.partition)
                    else:
                        acked = result
                    acks.append((r.record_id, *acked))
            finally:
                self.state.acknowledge_many(acks)
                if failed:
                    log.info("records.resent_one_by_one", failed=failed, acknowledged=len(acks))
        out = [
            Published(
                r.record_id,
                r.head.stream,
                partition,
                offset,
                r.head.next_sequence,
                p.recipients,
            )
            for r, p, (_, partition, offset) in zip(reservations, prepared, acks, strict=True)
        ]
        log.info("records.published", count=len(out))
        return out

    def _seal_batches(self, prepared: Sequence[_Prepared]) -> list[tuple[StateHead, Sealed]]:
        """Each record sealed as its stream's next, with the head before it, in ``prepared``'s
        order. A stream's records (one topic: one partition under this key) are signed in
        batches of up to ``MAX_BATCH``, each record chained to the one before it."""
        by_topic: dict[str, list[int]] = {}
        for i, p in enumerate(prepared):
            by_topic.setdefault(p.topic, []).append(i)
        out: dict[int, tuple[StateHead, Sealed]] = {}
        for topic, indices in by_topic.items():
            head = self._head(topic)
            for start in range(0, len(indices), MAX_BATCH):
                chunk = indices[start : start + MAX_BATCH]
                items = [
                    BatchItem(
                        kind=prepared[i].kind,
                        sequence=head.next_sequence + k,
                        # The first continues the stream's head; the others chain inside.
                        prev_digest=head.last_digest if k == 0 else None,
                        schema_fingerprint=prepared[i].fingerprint,
                        payload=prepared[i].payload,
                        recipients=prepared[i].keys,
                        target_record_id=prepared[i].target,
                        record_id=prepared[i].record_id,
                    )
                    for k, i in enumerate(chunk)
                ]
                batch = seal_batch(
                    self.identity,
                    items,
                    environment=self.environment,
                    topic=topic,
                    partition=head.partition,
                    datakeys=self.datakeys,
                )
                for i, s in zip(chunk, batch, strict=True):
                    out[i] = (head, s)
                    head = StateHead(
                        topic, head.next_sequence, s.digest, head.partition, head.epoch
                    )
        return [out[i] for i in range(len(prepared))]

    def _prepare(
        self,
        record: DomainRecord,
        named: Sequence[str],
        family: Family | None,
        lookups: _Lookups | None = None,
    ) -> _Prepared:
        topic = self.topic_for(record, family)
        if lookups is None:
            lookups = self._lookups()
        recipients = lookups.recipients(record, named)
        keys = lookups.keys(recipients)
        fingerprint, payload = self.registry.encode_model(record)
        target: str | None = None
        if isinstance(record, Correction):
            target = record.corrects_record_id
        elif isinstance(record, Retraction):
            target = record.retracts_record_id
        elif isinstance(record, Erasure):
            target = record.erases_record_id
        return _Prepared(
            topic,
            _KINDS[type(record)],
            fingerprint,
            payload,
            keys,
            uuid.UUID(record.record_id),
            None if target is None else uuid.UUID(target),
            lookups.names(recipients),
        )

    def _lookups(self) -> _Lookups:
        """The directory and agreement decisions for one call, taken at one instant."""
        return _Lookups(self.directory, self.agreement, self.clock())

    def _publish_payload(
        self,
        topic: str,
        *,
        kind: RecordKind,
        fingerprint: bytes,
        payload: bytes,
        keys: Sequence[SealingKey],
        record_id: uuid.UUID,
        target: uuid.UUID | None = None,
    ) -> Published:
        self.check_directory(topic)
        with self._lock:
            head = self._head(topic)
            sealed = seal(
                self.identity,
                environment=self.environment,
                topic=topic,
                kind=kind,
                sequence=head.next_sequence,
                prev_digest=head.last_digest,
                schema_fingerprint=fingerprint,
                payload=payload,
                recipients=keys,
                partition=head.partition,
                target_record_id=target,
                record_id=record_id,
                datakeys=self.datakeys,
            )
            self.state.reserve(
                head,
                record_id=str(record_id),
                digest=sealed.digest,
                sealed=sealed.data,
                content=_content_digest(payload),
            )
            try:
                partition, offset = self._send(topic, sealed.data, head.partition)
            except PublishError as e:
                self.state.note_failure(str(record_id), str(e))
                raise
            self.state.acknowledge(str(record_id), partition, offset)
        log.info(
            "record.published",
            record_id=str(record_id),
            topic=topic,
            partition=partition,
            offset=offset,
            sequence=head.next_sequence,
            recipients=len(keys),
        )
        return Published(
            str(record_id),
            topic,
            partition,
            offset,
            head.next_sequence,
            tuple(k.agency_id for k in keys),
        )

    def resend_pending(self) -> int:
        """Send, byte for byte, every record reserved but never acknowledged (after a crash)."""
        sent = 0
        with self._lock:
            for pending in self.state.pending():
                partition, offset = self._send(pending.stream, pending.sealed, pending.partition)
                self.state.acknowledge(pending.record_id, partition, offset)
                log.info(
                    "record.resent",
                    record_id=pending.record_id,
                    topic=pending.stream,
                    offset=offset,
                )
                sent += 1
        return sent

    def preflight(self, families: Sequence[Family] = (Family.SIGHTINGS, Family.INCIDENTS)) -> None:
        """Check, before anything is sealed, that the broker answers and the topics exist: a
        missing topic would otherwise make every send wait for metadata until it times out.

        Raises:
            TopicMissing: a topic does not exist (create the bus topics first).
            KafkaUnavailableError: the broker cannot be reached.
        """
        names = [topic_name(f, prefix=self.prefix) for f in families]
        missing = transport.missing_topics(self.bootstrap, names, security=self.security)
        if missing:
            raise TopicMissing(
                f"topic {missing[0]} does not exist on {self.bootstrap}: create the bus topics "
                'with `intelbus topics create` (docs/operations.md, "Topics")'
            )
        sync.check(
            self.state,
            agency=self.identity.agency_id,
            topics=[*names, topic_name(Family.HEARTBEATS, prefix=self.prefix)],
            bootstrap=self.bootstrap,
            security=self.security,
            client=self.client,
        )

    def resync(self) -> list[StateHead]:
        """Set this state's streams to where the topics say they stand (producers/sync.py).

        Raises:
            StateBehind: pending sends must be settled first.
        """
        return sync.resync(
            self.state,
            agency=self.identity.agency_id,
            topics=[
                topic_name(f, prefix=self.prefix)
                for f in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)
            ],
            bootstrap=self.bootstrap,
            security=self.security,
            client=self.client,
            directory=self.directory,
            environment=self.environment,
        )

    def _send(self, topic: str, data: bytes, partition: int | None) -> tuple[int, int]:
        last: SendFailed | None = None
        deadline = time.monotonic() + self.delivery_timeout_s
        for attempt in range(1, SEND_ATTEMPTS + 1):
            if self._producer is None:
                self._producer = transport.make_producer(
                    self.bootstrap, security=self.security, client=self.client
                )
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return transport.send_and_wait(
                    self._producer,
                    topic,
                    data,
                    key=self.identity.agency_id.encode(),
                    partition=None if partition == UNBOUND else partition,
                    timeout_s=left,
                )
            except SendFailed as e:
                last = e
                log.warning(
                    "record.send_failed",
                    topic=topic,
                    attempt=attempt,
                    indeterminate=e.indeterminate,
                )
                # A fresh producer after an indeterminate error: the old one's sequence state is
                # unknown. The same sealed bytes are resent (same record id), never resealed.
                self._close_producer()
                if not e.indeterminate:
                    break
        why = last if last is not None else f"no answer within {self.delivery_timeout_s:g}s"
        raise PublishError(
            f"not acknowledged by {self.bootstrap} within {self.delivery_timeout_s:g}s: {why}"
        )

    def _close_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            transport.close_producer(producer, timeout_s=5)

    # -- heartbeats ---------------------------------------------------------------------------------

    def heartbeat(self, interval_s: float) -> Published:
        """Publish one signed heartbeat with every stream's last sequence number."""
        topic = topic_name(Family.HEARTBEATS, prefix=self.prefix)
        now = self.clock()
        beat = Heartbeat(
            producer_id=self.identity.agency_id,
            sent_at=now,
            interval_ms=int(interval_s * 1000),
            streams=tuple(
                StreamHead(
                    stream=h.stream,
                    last_sequence=h.last_sequence,
                    # A bound stream is named as the chain names it, so every reader can hold
                    # the records it vouches for to completeness (issue 20).
                    partition=h.partition if h.epoch != "v1" else -1,
                    epoch=h.epoch if h.epoch != "v1" else "",
                )
                for h in self.state.heads()
                if h.stream != topic
            ),
        )
        readers = [
            a.agency_id
            for a in self.directory.latest.agencies
            if (Role.CONSUMER in a.roles or Role.AUDITOR in a.roles) and a.removed_at is None
        ]
        if not readers:
            raise NoRecipients("no consumer or auditor in the directory to address heartbeats to")
        keys = [self.directory.sealing_key(a, now) for a in readers]
        fingerprint, payload = self.registry.encode(Heartbeat.SCHEMA, beat.to_avro())
        return self._publish_payload(
            topic,
            kind=RecordKind.HEARTBEAT,
            fingerprint=fingerprint,
            payload=payload,
            keys=keys,
            record_id=uuid.uuid4(),
        )

    def start_heartbeats(self, interval_s: float) -> None:
        """Publish heartbeats every ``interval_s`` seconds in a daemon thread until :meth:`close`."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.heartbeat(interval_s)
                except Exception as e:  # noqa: BLE001 - a failed beat must not kill the producer; it is logged
                    log.warning("heartbeat.failed", error=type(e).__name__)

        self._heartbeat_thread = threading.Thread(target=loop, name="heartbeats", daemon=True)
        self._heartbeat_thread.start()

    def close(self) -> None:
        """Stop heartbeats and close the Kafka producer (flushing what was sent)."""
        self._stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=10)
        with self._lock:
            self._close_producer()
        if self.follower is not None:
            self.follower.close()


def build_publisher(config: ProducerConfig, passphrase: bytes | None = None) -> Publisher:
    """A publisher wired from a producer config: key, directory (and its topic), agreement, state.

    Raises:
        IntelbusError: any part of the configuration is unusable.
    """
    identity = AgencyIdentity.load(config.key_file, passphrase=passphrase)
    if identity.agency_id != config.agency:
        raise ConfigError(
            f"the key file is {identity.agency_id}'s, the config is for {config.agency}"
        )
    history = dstore.load_folder(config.directory)
    bootstrap = config.bootstrap()
    security = config.transport_security()
    client = config.transport_client()
    follower = DirectoryFollower(
        history,
        bootstrap_servers=bootstrap,
        topic=topic_name(Family.DIRECTORY, prefix=config.topic_prefix),
        folder=config.directory,
        security=security,
        client=client,
    )
    return Publisher(
        identity=identity,
        directory=history,
        agreement=SharingAgreement.load(config.agreement),
        registry=SchemaRegistry.load(),
        state=ProducerState(config.state_file),
        bootstrap_servers=bootstrap,
        security=security,
        client=client,
        environment=config.environment,
        topic_prefix=config.topic_prefix,
        follower=follower,
        delivery_timeout_s=config.delivery_timeout_s,
    )


def _content_digest(payload: bytes) -> bytes:
    """What identifies a record's contents across runs: its encoded payload's digest (the Avro
    encoding of one validated record is deterministic)."""
    return hashlib.blake2b(payload, digest_size=16).digest()

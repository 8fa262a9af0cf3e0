"""Validate, encode, seal and publish records; own each stream's sequence and delivery.

For each record (``Publisher.publish``):

1. Decide the recipients with the sharing agreement; none, or one the directory cannot seal to,
   means the record is not published (:class:`~intelbus.policy.agreement.NoRecipients`).
2. Encode it with its current Avro writer schema.
3. Seal it as the stream's next record (sequence, previous digest) to the recipients' current keys.
4. Reserve it durably in the producer state *before* sending (no sequence reuse, no fork after a
   crash), then send with ``acks=all`` on the idempotent producer.
5. It counts as published only once the broker acknowledged it. On an indeterminate failure the
   Kafka producer is recreated and the *same sealed bytes* are resent; if it still fails, the record
   stays pending and :meth:`Publisher.resend_pending` sends it first on the next start.

A background thread (``start_heartbeats``) publishes a signed heartbeat at a fixed interval with
the last sequence number of each stream, so a quiet feed can be told from a frozen one.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intelbus.directory.model import Role
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope import DataKeyCache, RecordKind, seal
from intelbus.identity import AgencyIdentity, PublicIdentity
from intelbus.log import get_logger
from intelbus.policy.agreement import NoRecipients, SharingAgreement
from intelbus.records import (
    Correction,
    DomainRecord,
    Heartbeat,
    Incident,
    Retraction,
    Sighting,
    StreamHead,
)
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport import kafka as transport
from intelbus.transport.security import TransportSecurity
from intelbus.transport.topics import Family, topic_name
from producers.state import ProducerState, Reservation
from producers.state import StreamHead as StateHead

log = get_logger("producers.publisher")

_KINDS: dict[type, RecordKind] = {
    Sighting: RecordKind.SIGHTING,
    Incident: RecordKind.INCIDENT,
    Correction: RecordKind.CORRECTION,
    Retraction: RecordKind.RETRACTION,
}
SEND_ATTEMPTS = 3


class PublishError(Exception):
    """A record was not acknowledged after every attempt; it stays pending in the producer state."""


@dataclass(frozen=True, slots=True)
class Published:
    """What the broker acknowledged for one record."""

    record_id: str
    topic: str
    partition: int
    offset: int
    sequence: int
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A record ready to seal: where it goes, to whom, and its encoded payload."""

    topic: str
    kind: RecordKind
    fingerprint: bytes
    payload: bytes
    keys: tuple[PublicIdentity, ...]
    record_id: uuid.UUID


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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
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
        self.clock = clock
        self._producer: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

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
                "a retraction needs the family (sightings or incidents) of the record it withdraws"
            )
        return topic_name(family, prefix=self.prefix)

    # -- publishing ---------------------------------------------------------------------------------

    def recipients_for(self, record: DomainRecord, named: Sequence[str] = ()) -> tuple[str, ...]:
        """The agreement's recipients for a record (fail closed).

        Raises:
            NoRecipients: none, or one the directory does not list as a consumer or auditor.
        """
        facts = record.replacement.facts() if isinstance(record, Correction) else record.facts()
        known = {
            a.agency_id: a
            for a in self.directory.latest.agencies
            if (Role.CONSUMER in a.roles or Role.AUDITOR in a.roles) and a.removed_at is None
        }
        return self.agreement.recipients(facts, named=named, known=known)

    def publish(
        self, record: DomainRecord, *, named: Sequence[str] = (), family: Family | None = None
    ) -> Published:
        """Publish one validated record; returns only once the broker acknowledged it.

        Raises:
            NoRecipients: not published (fail closed).
            UnknownKey: a recipient has no usable key.
            PublishError: not acknowledged; it stays pending and is resent first next time.
        """
        p = self._prepare(record, named, family)
        return self._publish_payload(
            p.topic,
            kind=p.kind,
            fingerprint=p.fingerprint,
            payload=p.payload,
            keys=p.keys,
            record_id=p.record_id,
        )

    def publish_many(
        self,
        records: Sequence[DomainRecord],
        *,
        named: Sequence[str] = (),
        family: Family | None = None,
    ) -> list[Published]:
        """Publish several records: one durable reservation for all, sends pipelined, then acks.

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
        prepared = [self._prepare(r, named, family) for r in records]
        with self._lock:
            heads: dict[str, StateHead] = {}
            reservations: list[Reservation] = []
            for p in prepared:
                head = heads.get(p.topic) or self.state.head(p.topic)
                sealed = seal(
                    self.identity,
                    environment=self.environment,
                    topic=p.topic,
                    kind=p.kind,
                    sequence=head.next_sequence,
                    prev_digest=head.last_digest,
                    schema_fingerprint=p.fingerprint,
                    payload=p.payload,
                    recipients=p.keys,
                    record_id=p.record_id,
                    datakeys=self.datakeys,
                )
                reservations.append(Reservation(head, str(p.record_id), sealed.digest, sealed.data))
                heads[p.topic] = StateHead(p.topic, head.next_sequence, sealed.digest)
            self.state.reserve_many(reservations)
            if self._producer is None:
                self._producer = transport.make_producer(self.bootstrap, security=self.security)
            results = transport.send_many(
                self._producer,
                [(r.head.stream, r.sealed) for r in reservations],
                key=self.identity.agency_id.encode(),
            )
            acks: list[tuple[str, int, int]] = []
            failed = 0
            try:
                for r, result in zip(reservations, results, strict=True):
                    if isinstance(result, transport.SendFailed):
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
                        acked = self._send(r.head.stream, r.sealed)  # same bytes, with retries
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
                tuple(k.agency_id for k in p.keys),
            )
            for r, p, (_, partition, offset) in zip(reservations, prepared, acks, strict=True)
        ]
        log.info("records.published", count=len(out))
        return out

    def _prepare(
        self, record: DomainRecord, named: Sequence[str], family: Family | None
    ) -> _Prepared:
        topic = self.topic_for(record, family)
        recipients = self.recipients_for(record, named)
        now = self.clock()
        keys = tuple(self.directory.recipient_key(a, now) for a in recipients)
        fingerprint, payload = self.registry.encode(record.SCHEMA, record.to_avro())
        return _Prepared(
            topic, _KINDS[type(record)], fingerprint, payload, keys, uuid.UUID(record.record_id)
        )

    def _publish_payload(
        self,
        topic: str,
        *,
        kind: RecordKind,
        fingerprint: bytes,
        payload: bytes,
        keys: Sequence[PublicIdentity],
        record_id: uuid.UUID,
    ) -> Published:
        with self._lock:
            head = self.state.head(topic)
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
                record_id=record_id,
                datakeys=self.datakeys,
            )
            self.state.reserve(
                head, record_id=str(record_id), digest=sealed.digest, sealed=sealed.data
            )
            partition, offset = self._send(topic, sealed.data)
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
                partition, offset = self._send(pending.stream, pending.sealed)
                self.state.acknowledge(pending.record_id, partition, offset)
                log.info(
                    "record.resent",
                    record_id=pending.record_id,
                    topic=pending.stream,
                    offset=offset,
                )
                sent += 1
        return sent

    def _send(self, topic: str, data: bytes) -> tuple[int, int]:
        last: transport.SendFailed | None = None
        for attempt in range(1, SEND_ATTEMPTS + 1):
            if self._producer is None:
                self._producer = transport.make_producer(self.bootstrap, security=self.security)
            try:
                return transport.send_and_wait(
                    self._producer, topic, data, key=self.identity.agency_id.encode()
                )
            except transport.SendFailed as e:
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
        raise PublishError(f"not acknowledged after {SEND_ATTEMPTS} attempt(s): {last}")

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
                StreamHead(stream=h.stream, last_sequence=h.last_sequence)
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
        keys = [self.directory.recipient_key(a, now) for a in readers]
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

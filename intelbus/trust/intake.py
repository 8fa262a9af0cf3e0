"""Intake: from the bytes Kafka handed over to a :class:`~intelbus.trust.model.Prepared` record.

1. Size cap, before any parsing.
2. Envelope verification (docs/envelope.md steps 1-7) against the directory history, at the
   broker's append time, bound to the environment, topic and partition it was read from.
3. Broker time: bus topics use LogAppendTime, and consumers and auditors refuse to start on one
   that does not. A record that still arrives without a broker time (an operator changed the
   topic while they ran) is judged at its signed creation time only if that time cannot matter:
   its key has no revocation, retirement or removal in the newest directory. Otherwise a leaked
   key could back-date it past the cutoff: ``no_broker_time``.
4. For a recipient: open and decode with the schema registry (the pydantic models validate again).
   A record sealed to an encryption epoch whose key the recipient destroyed is kept as
   ``shredded`` (not a content error): the judge counts it and keeps nothing of it.

No I/O and no shared mutable state beyond the unwrap cache and the root cache (format 3's batch
signatures: one Ed25519 verification per batch, see intelbus/envelope/verify.py), so auditors
run this in worker threads. Every failure is a typed :class:`~intelbus.errors.RecordError` kept in the result,
never raised: the judge decides what it means.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope.epochs import EpochKeys
from intelbus.envelope.unseal import UnwrapCache, open_record
from intelbus.envelope.verify import RootCache, verify
from intelbus.envelope.wire import MAX_RECORD_BYTES, parse
from intelbus.errors import NoBrokerTime, OversizeEnvelope, RecordError, Shredded, UnhandledValue
from intelbus.identity import AgencyIdentity, KeyResolver
from intelbus.serde.registry import SchemaRegistry
from intelbus.trust.model import Claim, Position, Prepared


class Intake:
    """Prepares records for one reader: its environment, directory, and (if it reads) its key."""

    def __init__(
        self,
        *,
        resolver: KeyResolver,
        environment: str,
        identity: AgencyIdentity | None = None,
        registry: SchemaRegistry | None = None,
        directory: DirectoryHistory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        epochs: EpochKeys | None = None,
    ) -> None:
        if identity is not None and registry is None:
            raise ValueError("reading contents needs the schema registry")
        self.resolver = resolver
        # For records without a broker time; without it, every such record is refused.
        self.directory = directory
        self.clock = clock
        self.environment = environment
        self.identity = identity
        self.registry = registry
        self._unwrap = UnwrapCache(identity) if identity is not None else None
        #: Batch roots this reader verified (successes only; keys are still resolved per record).
        self._roots = RootCache()
        #: The reader's encryption-epoch keyring (held and destroyed epoch keys), if it has one.
        self.epochs = epochs

    def prepare(self, position: Position, value: bytes) -> Prepared:
        """Steps 1-4 (module docstring). Never raises for bad input."""
        try:
            return self._prepare(position, value)
        except Exception as e:  # noqa: BLE001 - no record may stop a reader (issue 20)
            # Every step raises typed errors for what it refuses; anything else is a bound that
            # is missing. Refuse the record (its type names the defect; its message may quote
            # contents and is dropped) rather than let it stop the reader at every restart.
            error = UnhandledValue(f"preparing the record raised {type(e).__name__}")
            return Prepared(position, value, error=error, claim=claim_of(value))

    def _prepare(self, position: Position, value: bytes) -> Prepared:
        try:
            if len(value) > MAX_RECORD_BYTES:
                raise OversizeEnvelope(f"record of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
            if position.appended_at is None:
                # Before verifying at the signed time: a key with a cutoff is refused whatever
                # that time says (the claimed key id suffices to refuse).
                self._untimed(position, parse(value).header.key_id)
            verified = verify(
                value,
                self.resolver,
                expected_environment=self.environment,
                expected_topic=position.topic,
                expected_partition=position.partition,
                witnessed_at=position.appended_at,
                roots=self._roots,
            )
        except RecordError as e:
            return Prepared(position, value, error=e, claim=claim_of(value))
        identity = self.identity
        if identity is None or identity.agency_id not in verified.recipient_ids:
            return Prepared(position, value, verified)
        assert self.registry is not None  # noqa: S101 - checked in __init__
        try:
            payload = open_record(verified, identity, self._unwrap, self.epochs)
            model = self.registry.decode_model(verified.schema_fingerprint, payload)
        except Shredded as e:
            return Prepared(position, value, verified, addressed=True, shredded=e)
        except RecordError as e:
            return Prepared(position, value, verified, addressed=True, content_error=e)
        return Prepared(position, value, verified, addressed=True, content=model)

    def _untimed(self, position: Position, key_id: bytes) -> None:
        """Step 3 for a record the broker did not time.

        Raises:
            NoBrokerTime: its key has a cutoff a back-dated creation time could escape.
        """
        where = f"{position.topic}[{position.partition}]@{position.offset}"
        problem = (
            "cannot be checked (no directory given)"
            if self.directory is None
            else self.directory.blemish(key_id.hex(), self.clock())
        )
        if problem is not None:
            raise NoBrokerTime(
                f"{where} carries no broker append time and its key {key_id.hex()} {problem}: "
                "its signed creation time cannot be trusted"
            )


def claim_of(value: bytes) -> Claim:
    """Record id, producer and sequence as *claimed* by bytes that did not verify (for reports)."""
    try:
        h = parse(value).header
    except Exception:  # noqa: BLE001 - a claim is best effort; unparsable bytes claim nothing
        return Claim()
    return Claim(str(h.record_id), h.producer_id, h.sequence)

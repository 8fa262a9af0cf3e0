"""The exception hierarchy of intelbus: every error the bus raises on purpose, in one place.

Every class derives from :class:`IntelbusError`. The families (after sigstore, which keeps "this
could not be read" apart from "this was read and is not acceptable"):

* :class:`RecordError`: something is wrong with one record. The consumer quarantines it under the
  error's stable :class:`ReasonCode` and carries on; the auditor reports it under the same code.
  Two kinds, never confused:

  - :class:`Malformed`: the bytes could not be parsed (layout, size, format version, schema).
    Nothing about the record can be trusted, not even the ids it claims.
  - :class:`Refused`: the record was parsed and is refused by a rule (signature, key, binding,
    chain, identity, amendment, policy). Whether its ids are authentic depends on how far
    verification got: a record refused after its signature verified is a genuine record in the
    wrong place or out of turn, never noise.

* :class:`InfraError`: the machinery around the records failed (broker, Java, Maven, database, a
  topic's settings). Retried or reported to the operator; never a reason to quarantine a record.
* :class:`ConfigError`, :class:`DirectoryError`, :class:`PublishRefused` and the rest: a person's
  input or the trust anchors are unusable; one clear line, never a traceback.

Messages carry ids, sizes, counts and times, never record contents or key material. Low-level
errors (PyNaCl, fastavro, kafka-python, database drivers) are wrapped once, at the boundary where
they happen, with ``raise ... from e``.
"""

from __future__ import annotations

import enum


class ReasonCode(enum.StrEnum):
    """Stable reason codes: stored with every quarantined record, printed in every audit finding.

    Never renumber, rename or reuse one: stores and reports written years ago hold these strings.
    """

    # Could not be parsed (Malformed).
    MALFORMED = "malformed"
    OVERSIZE = "oversize"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_SCHEMA = "unknown_schema"
    SCHEMA_VIOLATION = "schema_violation"
    # Not authentic, or not by a key valid for this producer, role, topic and broker time.
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    KEY_NOT_VALID = "key_not_valid"
    KEY_REVOKED = "key_revoked"
    NO_BROKER_TIME = "no_broker_time"
    # Authentic, but not where (topic, partition, environment, family) its producer put it.
    BINDING_MISMATCH = "binding_mismatch"
    # Not for this agency, or does not open.
    NOT_A_RECIPIENT = "not_a_recipient"
    DECRYPTION_FAILED = "decryption_failed"
    # The producer stream's hash chain (intelbus/chain.py).
    CHAIN_REPLAY = "chain_replay"
    CHAIN_GAP = "chain_gap"
    CHAIN_FORK = "chain_fork"
    CHAIN_DUPLICATE = "chain_duplicate"
    CHAIN_REORDER = "chain_reorder"
    CHAIN_JUMP = "chain_jump"
    # A record's identity is (producer, record id).
    RECORD_ID_REUSED = "record_id_reused"
    # Corrections, retractions and erasures.
    FOREIGN_TARGET = "foreign_target"
    KIND_CHANGED = "kind_changed"
    TARGET_NOT_CONTENT = "target_not_content"
    # The receiving agency's sharing policy.
    POLICY_QUARANTINE = "policy_quarantine"
    # Time (issue 20): a record or heartbeat that describes the future beyond the skew bound.
    FUTURE_TIME = "future_time"
    # A value no rule foresaw made the judge fail: refused, and logged as a defect to fix.
    UNHANDLED_VALUE = "unhandled_value"
    # Findings an auditor makes over a whole topic rather than one record.
    CLOCK_SKEW = "clock_skew"
    HEARTBEAT_MISSING = "heartbeat_missing"
    # Sequence numbers a producer's heartbeat vouched for and the reader does not hold (issue 20).
    RECORDS_MISSING = "records_missing"
    RECIPIENT_NOT_ENTITLED = "recipient_not_entitled"
    # A force's store names a record (or a tombstone) the topic does not hold as it says (issue 16).
    STORE_MISMATCH = "store_mismatch"
    # Crypto-shredding (issue 16): a record sealed to an encryption epoch whose private key its
    # recipient destroyed (not a refusal: counted, never quarantined), and one sealed to an epoch
    # whose key this recipient does not hold and never destroyed (refused: fail closed).
    SHREDDED = "shredded"
    EPOCH_KEY_MISSING = "epoch_key_missing"


class IntelbusError(Exception):
    """Root of every error intelbus raises on purpose."""


class ConfigError(IntelbusError):
    """A configuration file or setting is missing, unknown or invalid."""


class UnsafeFile(ConfigError):
    """A file is not safe to use: a private key readable by others, a symlink where a file is
    written, a store owned by another agency. The message names the file and the fix."""


class InsecureFileError(UnsafeFile):
    """A file that must be private is not: group or others may access it, it is a symbolic link
    where none is allowed, or it is not a regular file.

    The message is one line naming the path, what is wrong and the fix. :attr:`path` is the file;
    :attr:`mode` its permission bits when they are the problem, else None.
    """

    def __init__(self, message: str, *, path: object, mode: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.mode = mode


class KeyringError(ConfigError):
    """An encryption-epoch keyring refuses an operation (destroying a current epoch, overlapping
    windows) or cannot be used (a file that is not an epoch key, another agency's keyring)."""


class ReportInvalid(ConfigError):
    """An audit report is malformed, of another format, or does not match its own digest (its
    findings or summary were changed after it was written). The message names the report and
    what is wrong, never its contents."""


# --- Infrastructure. -------------------------------------------------------------------------------


class InfraError(IntelbusError):
    """The machinery around the records failed (broker, JVM, Maven, database). Retried or reported."""


class ToolMissingError(InfraError):
    """A tool needed to run Kafka locally is missing or broken. The message says how to fix it."""


class KafkaUnavailableError(InfraError):
    """No Kafka broker could be reached or started. The message says what is missing and how to fix it."""


class TopicMissing(KafkaUnavailableError):
    """A topic does not exist (create the bus topics first)."""


class KafkaStartError(KafkaUnavailableError):
    """A local broker did not start; the message says why and where its log is."""


class TransportSecurityError(KafkaUnavailableError):
    """A TLS setting or file is unusable, or the broker refused the connection's security."""


class NotAuthorized(TransportSecurityError):
    """The broker's authorizer refused an operation; :attr:`resource_type` says what was denied."""

    resource_type: str = "unknown"


class SendFailed(KafkaUnavailableError):
    """A record was not acknowledged. ``indeterminate`` is True when it may have been written anyway
    (a timeout, a lost connection): resend the *same* bytes, never reseal."""

    def __init__(self, message: str, *, indeterminate: bool) -> None:
        super().__init__(message)
        self.indeterminate = indeterminate


class TopicMisconfigured(InfraError):
    """A bus topic's settings break what trust relies on (for example its timestamp type is not
    LogAppendTime, so the broker's clock no longer witnesses when records arrived). Nothing is
    read or committed until an operator fixes the topic."""


class AuditWorkerError(InfraError):
    """An auditor's verify worker process died or answered for other records than it was given:
    the replay stops (no report claims records that nobody checked)."""


class StoreError(InfraError):
    """The store could not commit or read. Nothing of a failed batch was kept; retry the batch."""


class PrepareFailed(InfraError):
    """The worker processes preparing a batch died (again). Nothing of the batch was judged or
    committed; read it again from the store's offsets."""


# --- Whose is this: a consumer's own store, key and policy. -------------------------------------------


class OwnershipError(IntelbusError):
    """A consumer may not go on with what it was given: a store bound to another agency or held by
    another writer, a key that is not the directory's current key for its agency, a sharing policy
    changed into one that does not load. It refuses before joining its Kafka group (or stops before
    judging another batch): nothing is read, judged, written or committed. One line, exit 3.

    :attr:`code` is stable (logs, monitoring and tests match on it): never rename or reuse one.
    """

    code: str = "ownership"


class StoreOwnerMismatch(OwnershipError):
    """The store is bound to another agency (its owner is written when it is created)."""

    code = "store_owner_mismatch"


class StoreLocked(OwnershipError):
    """Another writer holds the store's writer lock (a SQLite store has one writer), or the lock
    this writer held was removed or replaced while it ran."""

    code = "store_locked"


class KeyNotCurrent(OwnershipError):
    """The consumer's key is not the directory's current key for its agency (a rotated key,
    another agency's key, a key the directory never listed)."""

    code = "key_not_current"


class PolicyReloadFailed(OwnershipError):
    """The sharing policy file changed while the consumer ran and the new one does not load."""

    code = "policy_reload_failed"


# --- The auditor's own state. ------------------------------------------------------------------------


class AuditStateError(IntelbusError):
    """An auditor's checkpoint (or the findings file it accounts for) is not what this auditor
    signed: unsigned, signed by another key, altered since, or unreadable. The replay refuses to
    resume and starts nothing either (resuming would trust a hand-edited position or findings;
    starting afresh silently would hide the tampering): nothing is read, written or truncated.
    ``intelbus audit replay --restart`` discards the checkpoint and starts over. One line, exit 3.

    :attr:`code` is stable (logs, monitoring and tests match on it): never rename or reuse one.
    """

    code: str = "audit_state"


class CheckpointUnsigned(AuditStateError):
    """The checkpoint carries no signature (an older format, or one written by hand)."""

    code = "checkpoint_unsigned"


class CheckpointForeignKey(AuditStateError):
    """The checkpoint names another signing key than this auditor's."""

    code = "checkpoint_foreign_key"


class CheckpointForged(AuditStateError):
    """The checkpoint's signature does not verify under this auditor's key for this topic: it was
    altered after it was signed, or made for another topic or environment."""

    code = "checkpoint_forged"


class CheckpointUnreadable(AuditStateError):
    """The checkpoint is not a signed checkpoint at all (truncated, not JSON, missing fields)."""

    code = "checkpoint_unreadable"


class FindingsAltered(AuditStateError):
    """The findings file does not hold the findings the signed checkpoint accounts for."""

    code = "findings_altered"


# --- Trust anchors and publishing. ------------------------------------------------------------------


class DirectoryError(IntelbusError):
    """A directory version is invalid, may not be trusted, or may no longer be relied on."""


class InvalidDirectory(DirectoryError):
    """The document does not parse, or breaks a structural rule (ids, keys, threshold, times)."""


class ThresholdNotMet(DirectoryError):
    """Fewer distinct admin keys than the threshold signed this version."""


class BadVersion(DirectoryError):
    """The version is not exactly the next one (rollback, replay or a skipped version)."""


class DirectoryExpired(DirectoryError):
    """The newest trusted directory has expired: nothing may be published, consumed or audited
    against it until a newer version is fetched (``intelbus directory refresh``)."""


class PublishRefused(IntelbusError):
    """A record is not published because a rule forbids it (fail closed). Nothing was sent."""


class StateBehind(PublishRefused):
    """The topic holds records of this producer that its state file never reserved (a lost
    state file made again, or a second one for the same agency): publishing would reuse their
    sequence numbers. Nothing is published until ``intelbus publish resync``."""


class NoRecipients(PublishRefused):
    """The agreement gives this record no recipients (or an unknown one): it is not published."""


class PublishError(IntelbusError):
    """A record was not acknowledged after every attempt; it stays pending in the producer state."""


class PublishPending(PublishError):
    """The record was reserved by an earlier run and never acknowledged: it is resent, byte for
    byte, by ``intelbus publish retry`` (or given up by ``intelbus publish abandon``)."""


class AclDerivationError(IntelbusError):
    """The directory does not yield a consistent set of Kafka ACLs."""


class CertError(IntelbusError):
    """A certificate or its key could not be made, read or used."""


class SchemaDefinitionError(IntelbusError):
    """A schema file is invalid, fails the lint, or is an incompatible change. Not a record error."""


# --- One record. ---------------------------------------------------------------------------------------


class RecordError(IntelbusError):
    """One record is bad. The consumer quarantines it under :attr:`reason` and carries on."""

    reason: ReasonCode = ReasonCode.MALFORMED

    def __init__(self, message: str, *, reason: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"[{self.reason.value}] {super().__str__()}"


class Malformed(RecordError):
    """The record could not be parsed; nothing it claims is trusted."""


class Refused(RecordError):
    """The record was parsed and is refused by a rule."""


class EnvelopeError(RecordError):
    """A sealed record could not be parsed, verified or opened (every envelope error is one)."""


class MalformedEnvelope(EnvelopeError, Malformed):
    """The fixed-layout header or a length field is inconsistent, truncated or has trailing bytes."""

    reason = ReasonCode.MALFORMED


class OversizeEnvelope(EnvelopeError, Malformed):
    """The record or one of its parts exceeds a hard size cap. Checked before any other work."""

    reason = ReasonCode.OVERSIZE


class UnsupportedVersion(EnvelopeError, Malformed):
    """The envelope format version (or a suite id) is not one this build understands."""

    reason = ReasonCode.UNSUPPORTED_VERSION


class UnknownKey(EnvelopeError, Refused):
    """The signing key id is not known (to the key set or the directory in force)."""

    reason = ReasonCode.UNKNOWN_KEY


class BadSignature(EnvelopeError, Refused):
    """The Ed25519 signature does not verify over the signed bytes."""

    reason = ReasonCode.BAD_SIGNATURE


class BindingMismatch(EnvelopeError, Refused):
    """A signed binding (environment, topic, partition, producer, family) contradicts where the
    record was read: a genuine record in the wrong place."""

    reason = ReasonCode.BINDING_MISMATCH


class KeyNotValid(EnvelopeError, Refused):
    """The key is known but not valid for this producer, role, topic or broker time."""

    reason = ReasonCode.KEY_NOT_VALID


class KeyRevoked(EnvelopeError, Refused):
    """The key was revoked, or presumed leaked, before the broker appended the record."""

    reason = ReasonCode.KEY_REVOKED


class NoBrokerTime(EnvelopeError, Refused):
    """The record carries no broker append time, so its key cannot be judged when it arrived."""

    reason = ReasonCode.NO_BROKER_TIME


class NotARecipient(EnvelopeError, Refused):
    """This agency is not in the record's recipient list, so it cannot (and must not) open it."""

    reason = ReasonCode.NOT_A_RECIPIENT


class NoCurrentEpoch(UnknownKey):
    """A recipient's key lists encryption epochs but none covers the sealing time: the producer
    must not fall back to the long-term key (that would escape the shredding schedule)."""


class Shredded(EnvelopeError):
    """The record was sealed to an encryption epoch whose private key its recipient destroyed.

    Not a refusal: the record is authentic and in its chain; its contents are gone on purpose
    (crypto-shredding). A consumer counts it and stores nothing of it; ``envelope open`` says so.
    """

    reason = ReasonCode.SHREDDED

    def __init__(self, message: str, *, epoch_id: str, agency_id: str, destroyed_at: str) -> None:
        super().__init__(message)
        self.epoch_id = epoch_id
        self.agency_id = agency_id
        self.destroyed_at = destroyed_at

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields: the default (cls, args) pickling would drop them, and a prepare
        # worker hands this back to the consumer through a pipe (consumers/prepare_pool.py).
        return (_shredded, (str(self.args[0]), self.epoch_id, self.agency_id, self.destroyed_at))


def _shredded(message: str, epoch_id: str, agency_id: str, destroyed_at: str) -> Shredded:
    return Shredded(message, epoch_id=epoch_id, agency_id=agency_id, destroyed_at=destroyed_at)


class EpochKeyMissing(EnvelopeError, Refused):
    """Sealed to an encryption epoch of this agency whose private key it neither holds nor
    destroyed (a keyring not copied, a lost file): refused, so nothing is silently lost."""

    reason = ReasonCode.EPOCH_KEY_MISSING


class DecryptionFailed(EnvelopeError, Refused):
    """Opening failed. Once decryption starts, every failure is this one class (no oracle)."""

    reason = ReasonCode.DECRYPTION_FAILED


class SchemaError(Malformed):
    """A payload's schema is unknown, or the payload does not match it."""

    reason = ReasonCode.SCHEMA_VIOLATION


class UnknownSchema(SchemaError):
    """No writer schema with this fingerprint is registered."""

    reason = ReasonCode.UNKNOWN_SCHEMA


class SchemaViolation(SchemaError):
    """The payload does not decode or validate against its schema (or has trailing bytes)."""

    reason = ReasonCode.SCHEMA_VIOLATION


class ChainError(Refused):
    """A record does not continue its producer stream's hash chain (intelbus/chain.py)."""


class ChainReplay(ChainError):
    """A sequence number already passed and not missing: an old record delivered again."""

    reason = ReasonCode.CHAIN_REPLAY


class ChainFork(ChainError):
    """The record's previous digest does not match the chain, or a second record claims the newest
    sequence number: two histories, or a spliced stream."""

    reason = ReasonCode.CHAIN_FORK


class ChainJump(ChainError):
    """The sequence number jumps further ahead than any plausible gap (fast-forward attack)."""

    reason = ReasonCode.CHAIN_JUMP


class ChainDuplicate(ChainError):
    """The same record again, byte for byte (a resend after a lost acknowledgement, or a copy)."""

    reason = ReasonCode.CHAIN_DUPLICATE


class RecordIdReused(Refused):
    """A producer used one of its record ids again for a different record."""

    reason = ReasonCode.RECORD_ID_REUSED


class ForeignTarget(Refused):
    """A correction, retraction or erasure names a record id only another producer has published."""

    reason = ReasonCode.FOREIGN_TARGET


class TargetNotContent(Refused):
    """An amendment names one of its producer's own amendments (a correction, retraction or
    erasure) as its target: only sightings and incidents can be amended or erased."""

    reason = ReasonCode.TARGET_NOT_CONTENT


class KindChanged(Refused):
    """A correction would change its record's kind or family (a sighting into an incident)."""

    reason = ReasonCode.KIND_CHANGED


class PolicyQuarantine(Refused):
    """The receiving agency's sharing policy quarantines the record (or its new version)."""

    reason = ReasonCode.POLICY_QUARANTINE


class FutureTime(Refused):
    """A signed time (creation, observation, occurrence, amendment, heartbeat) lies further after
    the broker's append time (or the reader's clock) than the stated skew bound."""

    reason = ReasonCode.FUTURE_TIME


class UnhandledValue(Refused):
    """Judging the record raised an error outside the typed hierarchy: a value no bound caught.

    The record is quarantined so that no signed record can stop a consumer; the error's type is
    logged (never its message, which may quote contents) so the missing bound can be added.
    """

    reason = ReasonCode.UNHANDLED_VALUE

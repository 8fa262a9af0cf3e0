"""The exception hierarchy of intelbus.

Every error the bus raises on purpose derives from :class:`IntelbusError`. Two families matter:

* :class:`RecordError`: something is wrong with one record. The consumer quarantines the record with
  the error's stable :class:`ReasonCode` and carries on. Messages carry ids and sizes, never record
  contents or key material.
* :class:`InfraError`: something is wrong with the machinery around the records (broker, Java,
  Maven, database). These are retried or reported to the operator; they are never a reason to
  quarantine a record.

Low-level errors (from PyNaCl, fastavro, kafka-python) are wrapped once, at the boundary where they
happen, with ``raise ... from e``.
"""

from __future__ import annotations

import enum


class ReasonCode(enum.StrEnum):
    """Stable reason codes stored with every quarantined record. Never renumber or reuse one."""

    MALFORMED = "malformed"
    OVERSIZE = "oversize"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BINDING_MISMATCH = "binding_mismatch"
    KEY_NOT_VALID = "key_not_valid"
    KEY_REVOKED = "key_revoked"
    NOT_A_RECIPIENT = "not_a_recipient"
    DECRYPTION_FAILED = "decryption_failed"
    UNKNOWN_SCHEMA = "unknown_schema"
    SCHEMA_VIOLATION = "schema_violation"
    CHAIN_REPLAY = "chain_replay"
    CHAIN_GAP = "chain_gap"
    CHAIN_FORK = "chain_fork"
    POLICY_QUARANTINE = "policy_quarantine"
    FOREIGN_TARGET = "foreign_target"
    # Auditor replay findings (consumers/audit): judged over a whole topic, not one record.
    CHAIN_DUPLICATE = "chain_duplicate"
    CHAIN_REORDER = "chain_reorder"
    CHAIN_JUMP = "chain_jump"
    CLOCK_SKEW = "clock_skew"
    HEARTBEAT_MISSING = "heartbeat_missing"
    RECIPIENT_NOT_ENTITLED = "recipient_not_entitled"


class IntelbusError(Exception):
    """Root of every error intelbus raises on purpose."""


class ConfigError(IntelbusError):
    """A configuration file or setting is missing, unknown or invalid."""


class InfraError(IntelbusError):
    """The machinery around the records failed (broker, JVM, Maven, database). Retried or reported."""


class KafkaUnavailableError(InfraError):
    """No Kafka broker could be reached or started. The message says what is missing and how to fix it."""


class RecordError(IntelbusError):
    """One record is bad. The consumer quarantines it under :attr:`reason` and carries on."""

    reason: ReasonCode = ReasonCode.MALFORMED

    def __init__(self, message: str, *, reason: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"[{self.reason.value}] {super().__str__()}"


# --- The envelope (parse, then verify, then open). See docs/envelope.md. ---------------------------


class EnvelopeError(RecordError):
    """A sealed record could not be parsed, verified or opened."""


class MalformedEnvelope(EnvelopeError):
    """The fixed-layout header or a length field is inconsistent, truncated or has trailing bytes."""

    reason = ReasonCode.MALFORMED


class OversizeEnvelope(EnvelopeError):
    """The record or one of its parts exceeds a hard size cap. Checked before any other work."""

    reason = ReasonCode.OVERSIZE


class UnsupportedVersion(EnvelopeError):
    """The envelope format version (or a suite id) is not one this build understands."""

    reason = ReasonCode.UNSUPPORTED_VERSION


class UnknownKey(EnvelopeError):
    """The signing key id is not known (to the key set or the directory in force)."""

    reason = ReasonCode.UNKNOWN_KEY


class BadSignature(EnvelopeError):
    """The Ed25519 signature does not verify over the signed bytes."""

    reason = ReasonCode.BAD_SIGNATURE


class BindingMismatch(EnvelopeError):
    """A signed binding (environment, topic, producer, recipients...) contradicts the context."""

    reason = ReasonCode.BINDING_MISMATCH


class KeyNotValid(EnvelopeError):
    """The key is known but not valid for this producer, role, topic or time."""

    reason = ReasonCode.KEY_NOT_VALID


class KeyRevoked(EnvelopeError):
    """The key was revoked before the record was published (or it leaked before then)."""

    reason = ReasonCode.KEY_REVOKED


class NotARecipient(EnvelopeError):
    """This agency is not in the record's recipient list, so it cannot (and must not) open it."""

    reason = ReasonCode.NOT_A_RECIPIENT


class DecryptionFailed(EnvelopeError):
    """Opening failed. Once decryption starts, every failure is this one class (no oracle)."""

    reason = ReasonCode.DECRYPTION_FAILED


# --- Schemas and payloads. ---------------------------------------------------------------------------


class SchemaError(RecordError):
    """A payload's schema is unknown, or the payload does not match it."""

    reason = ReasonCode.SCHEMA_VIOLATION


class UnknownSchema(SchemaError):
    """No writer schema with this fingerprint is registered."""

    reason = ReasonCode.UNKNOWN_SCHEMA


class SchemaViolation(SchemaError):
    """The payload does not decode or validate against its schema (or has trailing bytes)."""

    reason = ReasonCode.SCHEMA_VIOLATION


class SchemaDefinitionError(IntelbusError):
    """A schema file is invalid, fails the lint, or is an incompatible change. Not a record error."""


# --- Per-producer hash chains. See intelbus/chain.py. -------------------------------------------------


class ChainError(RecordError):
    """A record does not continue its producer's hash chain."""


class ChainReplay(ChainError):
    """The sequence number was already seen: an old record delivered again (possibly at a new offset)."""

    reason = ReasonCode.CHAIN_REPLAY


class ChainFork(ChainError):
    """The record's previous-hash does not match the chain: a fork or a spliced stream."""

    reason = ReasonCode.CHAIN_FORK


class ChainJump(ChainError):
    """The sequence number jumps further ahead than any plausible gap (fast-forward attack)."""

    reason = ReasonCode.CHAIN_GAP

"""The directory document: a versioned, signed list of agencies, their keys, roles and topics.

A version is ``{"signed": <DirectoryBody>, "signatures": [...]}``. The signature covers a domain
prefix and the *canonical JSON* of the body (sorted keys, no whitespace, UTF-8), so any two parties
that hold the same body agree on the signed bytes byte for byte.

Structural checks happen here, when a document is parsed (TUF's "parse, then verify"): unique ids,
threshold within the admin key count, public keys that are valid curve points, key ids that match
their keys, times in UTC. Signature checks live in :mod:`intelbus.directory.trust`.
"""

from __future__ import annotations

import enum
import itertools
import json
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from intelbus import _nacl
from intelbus.errors import InvalidDirectory
from intelbus.identity import EpochRecipient, PublicIdentity, derive_epoch_id, derive_key_id

DIRECTORY_TYPE = "intelbus.directory"
SPEC_VERSION = 1
SIGNING_PREFIX = b"intelbus/directory/v1\x00"
MAX_DIRECTORY_BYTES = 4 * 1024 * 1024
AGENCY_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,62}$"


class Role(enum.StrEnum):
    """What an agency may do on the bus."""

    PRODUCER = "producer"
    CONSUMER = "consumer"
    AUDITOR = "auditor"
    ADMIN = "admin"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None or value.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
        raise ValueError("times must be timezone-aware UTC")
    return value


def _hex_of(length: int) -> Any:  # noqa: ANN401 - returns a validator callable
    def check(value: str) -> str:
        if len(value) != 2 * length or value != value.lower():
            raise ValueError(f"expected {2 * length} lower-case hex characters")
        bytes.fromhex(value)
        return value

    return check


UtcTime = Annotated[datetime, AfterValidator(_utc)]
KeyIdHex = Annotated[str, AfterValidator(_hex_of(16))]
PublicHex = Annotated[str, AfterValidator(_hex_of(32))]
SigHex = Annotated[str, AfterValidator(_hex_of(64))]
AgencyId = Annotated[str, Field(pattern=AGENCY_ID_PATTERN)]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]

_FROZEN = ConfigDict(frozen=True, extra="forbid", strict=False)


class Revocation(BaseModel):
    """A key's revocation: when, why, and since when it must be presumed leaked (if it did)."""

    model_config = _FROZEN
    revoked_at: UtcTime
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    compromised_since: UtcTime | None = None

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.compromised_since is not None and self.compromised_since > self.revoked_at:
            raise ValueError("compromised_since cannot be later than revoked_at")
        return self


class EncEpoch(BaseModel):
    """One encryption epoch of an agency key: an X25519 public key producers seal to within
    ``[not_before, not_after)``. Its private key is destroyed once its records' retention has
    passed (crypto-shredding, docs/envelope.md)."""

    model_config = _FROZEN
    epoch_id: KeyIdHex
    enc_public: PublicHex
    not_before: UtcTime
    not_after: UtcTime

    @model_validator(mode="after")
    def _key(self) -> Self:
        public = bytes.fromhex(self.enc_public)
        _nacl.check_box_public_key(public)
        if derive_epoch_id(public).hex() != self.epoch_id:
            raise ValueError(f"epoch_id {self.epoch_id} does not match its public key")
        if self.not_after <= self.not_before:
            raise ValueError(f"epoch {self.epoch_id}: not_after must be later than not_before")
        return self

    def covers(self, at: datetime) -> bool:
        """Whether a producer sealing at ``at`` seals to this epoch."""
        return self.not_before <= at < self.not_after


class AgencyKey(BaseModel):
    """One key pair of an agency (Ed25519 for signing, X25519 for receiving) with its window.

    ``enc_epochs``, when listed, replace the long-term X25519 key for sealing: a producer seals
    to the epoch that covers the sealing time. An empty tuple is left out of the canonical JSON,
    so directory versions signed before epochs existed keep their exact bytes and signatures.
    """

    model_config = _FROZEN
    key_id: KeyIdHex
    sign_public: PublicHex
    enc_public: PublicHex
    not_before: UtcTime
    not_after: UtcTime | None = None
    revocation: Revocation | None = None
    enc_epochs: tuple[EncEpoch, ...] = ()

    @model_serializer(mode="wrap")
    def _omit_no_epochs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.enc_epochs:
            data.pop("enc_epochs", None)
        return data

    @model_validator(mode="after")
    def _epochs(self) -> Self:
        ordered = sorted(self.enc_epochs, key=lambda e: e.not_before)
        for earlier, later in itertools.pairwise(ordered):
            if later.not_before < earlier.not_after:
                raise ValueError(
                    f"key {self.key_id}: epochs {earlier.epoch_id} and {later.epoch_id} overlap"
                )
        ids = [e.epoch_id for e in self.enc_epochs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key {self.key_id}: an epoch is listed twice")
        return self

    def epoch_at(self, at: datetime) -> EncEpoch | None:
        """The epoch a producer seals to at ``at`` (None: none covers it)."""
        return next((e for e in self.enc_epochs if e.covers(at)), None)

    def epoch(self, epoch_id_hex: str) -> EncEpoch | None:
        """The epoch with this id, or None."""
        return next((e for e in self.enc_epochs if e.epoch_id == epoch_id_hex), None)

    def sealing_key(self, agency_id: str, epoch: EncEpoch) -> EpochRecipient:
        """What a producer seals to for ``epoch`` of this key."""
        return EpochRecipient(
            agency_id, bytes.fromhex(epoch.epoch_id), bytes.fromhex(epoch.enc_public)
        )

    @model_validator(mode="after")
    def _keys(self) -> Self:
        sign_pk = bytes.fromhex(self.sign_public)
        enc_pk = bytes.fromhex(self.enc_public)
        # Reject small-order and non-canonical points when a key is added (SECURITY.md).
        _nacl.check_sign_public_key(sign_pk)
        _nacl.check_box_public_key(enc_pk)
        if derive_key_id(sign_pk, enc_pk).hex() != self.key_id:
            raise ValueError(f"key_id {self.key_id} does not match its public keys")
        if self.not_after is not None and self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self

    def public_identity(self, agency_id: str) -> PublicIdentity:
        """The key as the envelope code uses it."""
        return PublicIdentity.from_public_bytes(
            agency_id, bytes.fromhex(self.sign_public), bytes.fromhex(self.enc_public)
        )


class Agency(BaseModel):
    """A member of the federation."""

    model_config = _FROZEN
    agency_id: AgencyId
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    roles: tuple[Role, ...] = Field(min_length=1)
    publish_topics: tuple[TopicName, ...] = ()
    force_areas: tuple[Annotated[str, Field(max_length=64)], ...] = ()
    keys: tuple[AgencyKey, ...] = Field(min_length=1)
    removed_at: UtcTime | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"agency {self.agency_id}: duplicate roles")
        if self.publish_topics and Role.PRODUCER not in self.roles:
            raise ValueError(f"agency {self.agency_id}: only producers have publish topics")
        return self


class AdminKey(BaseModel):
    """An Ed25519 key allowed to sign directory versions, and who holds it."""

    model_config = _FROZEN
    key_id: KeyIdHex
    public: PublicHex
    holder: Annotated[str, Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _key(self) -> Self:
        pk = bytes.fromhex(self.public)
        _nacl.check_sign_public_key(pk)
        if admin_key_id(pk).hex() != self.key_id:
            raise ValueError(f"admin key_id {self.key_id} does not match its public key")
        return self


class DirectoryBody(BaseModel):
    """The signed part of a directory version."""

    model_config = _FROZEN
    type: Literal["intelbus.directory"] = "intelbus.directory"
    spec_version: Literal[1] = 1
    environment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
    version: Annotated[int, Field(ge=1)]
    issued_at: UtcTime
    expires: UtcTime
    threshold: Annotated[int, Field(ge=1)]
    admin_keys: tuple[AdminKey, ...] = Field(min_length=1)
    agencies: tuple[Agency, ...] = ()

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.expires <= self.issued_at:
            raise ValueError("expires must be later than issued_at")
        admin_publics = [k.public for k in self.admin_keys]
        if len(set(admin_publics)) != len(admin_publics):
            # A key listed twice would let one holder count twice towards the threshold.
            raise ValueError("an admin key is listed twice")
        if self.threshold > len(self.admin_keys):
            raise ValueError("threshold exceeds the number of admin keys")
        ids = [a.agency_id for a in self.agencies]
        if len(set(ids)) != len(ids):
            raise ValueError("an agency is listed twice")
        key_ids = [k.key_id for a in self.agencies for k in a.keys]
        if len(set(key_ids)) != len(key_ids):
            raise ValueError("a key id appears twice")
        # Epoch ids share the recipient entry's key id slot with key ids: each names one key.
        epoch_ids = [e.epoch_id for a in self.agencies for k in a.keys for e in k.enc_epochs]
        if len(set(epoch_ids)) != len(epoch_ids) or set(epoch_ids) & set(key_ids):
            raise ValueError("an encryption epoch id appears twice")
        return self

    def canonical_bytes(self) -> bytes:
        """The exact bytes that admin signatures cover (after :data:`SIGNING_PREFIX`)."""
        return canonical_json(self.model_dump(mode="json"))

    @cached_property
    def _agencies_by_id(self) -> dict[str, Agency]:
        # Built once per (frozen) body: a publisher asks for every recipient of every record, and
        # a scan made publishing cost grow with the directory's size (docs/performance.md).
        return {a.agency_id: a for a in self.agencies}

    @cached_property
    def _keys_by_id(self) -> dict[str, tuple[Agency, AgencyKey]]:
        return {k.key_id: (a, k) for a in self.agencies for k in a.keys}

    def agency(self, agency_id: str) -> Agency | None:
        """The agency with this id, or None."""
        return self._agencies_by_id.get(agency_id)

    def find_epoch(self, epoch_id: str) -> tuple[Agency, AgencyKey, EncEpoch] | None:
        """The agency, key and encryption epoch with this epoch id, or None."""
        for a in self.agencies:
            for k in a.keys:
                e = k.epoch(epoch_id)
                if e is not None:
                    return a, k, e
        return None

    def find_key(self, key_id: str) -> tuple[Agency, AgencyKey] | None:
        """The agency and key with this key id, or None."""
        return self._keys_by_id.get(key_id)


class Signature(BaseModel):
    """One admin's signature over a body."""

    model_config = _FROZEN
    key_id: KeyIdHex
    sig: SigHex


class SignedDirectory(BaseModel):
    """A directory version as stored in files and on the directory topic."""

    model_config = _FROZEN
    signed: DirectoryBody
    signatures: tuple[Signature, ...] = ()

    def to_bytes(self) -> bytes:
        """Canonical JSON of the whole document."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDirectory:
        """Parse and structurally validate a document.

        Raises:
            InvalidDirectory: oversize, not JSON, or breaks a structural rule.
        """
        if len(data) > MAX_DIRECTORY_BYTES:
            raise InvalidDirectory(f"directory document of {len(data)} bytes exceeds the cap")
        try:
            return cls.model_validate_json(data)
        except ValidationError as e:
            # pydantic's message names fields and rules; it holds public data only.
            raise InvalidDirectory(
                f"invalid directory document: {e.error_count()} error(s): {e}"
            ) from e

    def with_signature(self, sig: Signature) -> SignedDirectory:
        """A copy with one more signature (replacing an earlier one by the same key)."""
        kept = tuple(s for s in self.signatures if s.key_id != sig.key_id)
        return SignedDirectory(signed=self.signed, signatures=(*kept, sig))


def canonical_json(value: Any) -> bytes:  # noqa: ANN401 - any JSON value
    """Deterministic JSON: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def admin_key_id(public: bytes) -> bytes:
    """Key id of an admin (Ed25519) public key: BLAKE2b-128 with its own personalisation."""
    return _nacl.blake2b(public, digest_size=16, person=b"ibus-admin-key")


def signing_message(body: DirectoryBody) -> bytes:
    """What an admin signs: a domain prefix, then the canonical body."""
    return SIGNING_PREFIX + body.canonical_bytes()

"""Drafts of the next directory version: each operation returns an unsigned version N+1.

Operations never delete history: a rotated key gets a ``not_after``, a revoked key keeps its entry
with a :class:`Revocation`, a removed agency keeps its keys with ``removed_at``. An auditor replaying
old records years later still finds every key that ever signed one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from intelbus.directory.model import (
    AdminKey,
    Agency,
    AgencyKey,
    DirectoryBody,
    EncEpoch,
    Revocation,
    Role,
    SignedDirectory,
    admin_key_id,
)
from intelbus.errors import InvalidDirectory
from intelbus.identity import PublicIdentity

DEFAULT_VALIDITY = timedelta(days=365)


def agency_key(identity: PublicIdentity, not_before: datetime) -> AgencyKey:
    """A directory key entry for a public identity."""
    return AgencyKey(
        key_id=identity.key_id.hex(),
        sign_public=identity.sign_public.hex(),
        enc_public=identity.enc_public.hex(),
        not_before=not_before,
    )


def admin_key(public: bytes, holder: str) -> AdminKey:
    """An admin key entry for an Ed25519 public key."""
    return AdminKey(key_id=admin_key_id(public).hex(), public=public.hex(), holder=holder)


def initial(
    *,
    environment: str,
    admin_keys: Sequence[AdminKey],
    threshold: int,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Version 1, unsigned: admin keys and threshold, no agencies yet."""
    body = DirectoryBody(
        environment=environment,
        version=1,
        issued_at=now,
        expires=now + validity,
        threshold=threshold,
        admin_keys=tuple(admin_keys),
    )
    return SignedDirectory(signed=body)


def _next(
    body: DirectoryBody, now: datetime, validity: timedelta, **changes: object
) -> SignedDirectory:
    data = body.model_dump()
    data.update(version=body.version + 1, issued_at=now, expires=now + validity, **changes)
    return SignedDirectory(signed=DirectoryBody.model_validate(data))


def _replace_agency(body: DirectoryBody, agency: Agency) -> tuple[Agency, ...]:
    return tuple(agency if a.agency_id == agency.agency_id else a for a in body.agencies)


def _require(body: DirectoryBody, agency_id: str) -> Agency:
    agency = body.agency(agency_id)
    if agency is None:
        raise InvalidDirectory(f"no agency {agency_id} in directory v{body.version}")
    return agency


def add_agency(
    body: DirectoryBody,
    *,
    agency_id: str,
    display_name: str,
    roles: Sequence[Role],
    identity: PublicIdentity,
    now: datetime,
    publish_topics: Sequence[str] = (),
    force_areas: Sequence[str] = (),
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Draft N+1 with a new agency and its first key (valid from ``now``)."""
    if body.agency(agency_id) is not None:
        raise InvalidDirectory(f"agency {agency_id} is already in directory v{body.version}")
    if identity.agency_id != agency_id:
        raise InvalidDirectory(f"the key file is for {identity.agency_id}, not {agency_id}")
    agency = Agency(
        agency_id=agency_id,
        display_name=display_name,
        roles=tuple(roles),
        publish_topics=tuple(publish_topics),
        force_areas=tuple(force_areas),
        keys=(agency_key(identity, now),),
    )
    return _next(body, now, validity, agencies=(*body.agencies, agency))


def rotate_key(
    body: DirectoryBody,
    *,
    agency_id: str,
    identity: PublicIdentity,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Draft N+1 where the agency's current keys end at ``now`` and ``identity`` starts then.

    Records signed by the old key before ``now`` stay valid for ever; that is what rotation (as
    opposed to revocation) means.
    """
    agency = _require(body, agency_id)
    keys = tuple(
        k.model_copy(update={"not_after": now}) if k.not_after is None or k.not_after > now else k
        for k in agency.keys
    )
    updated = agency.model_copy(update={"keys": (*keys, agency_key(identity, now))})
    return _next(body, now, validity, agencies=_replace_agency(body, updated))


def revoke_key(
    body: DirectoryBody,
    *,
    agency_id: str,
    key_id: str,
    reason: str,
    now: datetime,
    compromised_since: datetime | None = None,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Draft N+1 revoking one key at ``now``; ``compromised_since`` when it leaked earlier."""
    agency = _require(body, agency_id)
    if not any(k.key_id == key_id for k in agency.keys):
        raise InvalidDirectory(f"agency {agency_id} has no key {key_id}")
    revocation = Revocation(revoked_at=now, reason=reason, compromised_since=compromised_since)
    keys = tuple(
        k.model_copy(update={"revocation": revocation}) if k.key_id == key_id else k
        for k in agency.keys
    )
    updated = agency.model_copy(update={"keys": keys})
    return _next(body, now, validity, agencies=_replace_agency(body, updated))


def parse_epochs(document: Mapping[str, Any]) -> tuple[str, str, tuple[EncEpoch, ...]]:
    """The agency id, key id and epochs of an epochs document (``intelbus keys epoch new``).

    Raises:
        InvalidDirectory: it is not an epochs document, or an epoch is invalid.
    """
    if document.get("format") != "intelbus-epochs-v1":
        raise InvalidDirectory("not an intelbus epochs document (format intelbus-epochs-v1)")
    try:
        epochs = tuple(EncEpoch.model_validate(e) for e in document["epochs"])
        return str(document["agency_id"]), str(document["key_id"]), epochs
    except (KeyError, TypeError, ValidationError) as e:
        raise InvalidDirectory(f"invalid epochs document: {e}") from None


def add_epochs(
    body: DirectoryBody,
    *,
    agency_id: str,
    key_id: str,
    epochs: Sequence[EncEpoch],
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Draft N+1 listing more encryption epochs for one of the agency's keys.

    Epochs already listed identically are skipped (a keyring's document lists all its epochs);
    one listed with other values, or one overlapping another, is refused. Listed epochs are never
    removed: an auditor, years later, still sees which epoch every record was sealed to.

    Raises:
        InvalidDirectory: no such agency or key, a revoked key, nothing new, or invalid epochs.
    """
    agency = _require(body, agency_id)
    key = next((k for k in agency.keys if k.key_id == key_id), None)
    if key is None:
        raise InvalidDirectory(f"agency {agency_id} has no key {key_id}")
    if key.revocation is not None:
        raise InvalidDirectory(f"key {key_id} of {agency_id} is revoked: give it no new epochs")
    listed = {e.epoch_id: e for e in key.enc_epochs}
    new: list[EncEpoch] = []
    for epoch in epochs:
        known = listed.get(epoch.epoch_id)
        if known is None:
            new.append(epoch)
        elif known != epoch:
            raise InvalidDirectory(f"epoch {epoch.epoch_id} is already listed with other values")
    if not new:
        raise InvalidDirectory(f"every epoch is already listed for key {key_id} of {agency_id}")
    try:
        updated_key = AgencyKey.model_validate(
            {**key.model_dump(), "enc_epochs": (*key.enc_epochs, *new)}
        )
    except ValidationError as e:
        raise InvalidDirectory(f"cannot add these epochs: {e}") from None
    keys = tuple(updated_key if k.key_id == key_id else k for k in agency.keys)
    updated = agency.model_copy(update={"keys": keys})
    return _next(body, now, validity, agencies=_replace_agency(body, updated))


def remove_agency(
    body: DirectoryBody, *, agency_id: str, now: datetime, validity: timedelta = DEFAULT_VALIDITY
) -> SignedDirectory:
    """Draft N+1 where the agency leaves at ``now`` (its keys stay listed for replay)."""
    agency = _require(body, agency_id)
    keys = tuple(
        k.model_copy(update={"not_after": now}) if k.not_after is None or k.not_after > now else k
        for k in agency.keys
    )
    updated = agency.model_copy(update={"removed_at": now, "keys": keys})
    return _next(body, now, validity, agencies=_replace_agency(body, updated))


def set_admins(
    body: DirectoryBody,
    *,
    admin_keys: Sequence[AdminKey],
    threshold: int,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> SignedDirectory:
    """Draft N+1 with a new admin key set and threshold (signed by old and new thresholds)."""
    return _next(body, now, validity, admin_keys=tuple(admin_keys), threshold=threshold)


def renew(
    body: DirectoryBody, *, now: datetime, validity: timedelta = DEFAULT_VALIDITY
) -> SignedDirectory:
    """Draft N+1 that changes nothing but the issue and expiry times."""
    return _next(body, now, validity)

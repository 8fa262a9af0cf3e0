"""Trust in directory versions: threshold signatures, the update chain, and key resolution.

The rules follow TUF's root metadata (client workflow 5.3):

1. A client starts from a *pinned* version it got out of band, which must carry a threshold of
   signatures by its own admin keys.
2. Version N+1 is accepted only if it is exactly N+1, for the same environment, and signed by a
   threshold of version N's admin keys **and** a threshold of its own admin keys. So one stolen
   admin key is never enough, and a rotated-out admin set cannot sign for the new one alone.
3. A signature counts once per distinct admin public key: duplicate signatures, and one key listed
   twice, never count twice.
4. The newest accepted version must not have expired when the client relies on it.

Every accepted version is kept (:class:`DirectoryHistory`), so a record is judged by the version in
force when it was published, while revocations are taken from the newest version (a revocation is
learned after the fact, and a key that leaked must stop being trusted for the past too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from intelbus import _nacl
from intelbus.directory.model import (
    AdminKey,
    AgencyKey,
    DirectoryBody,
    Revocation,
    Role,
    Signature,
    SignedDirectory,
    admin_key_id,
    signing_message,
)
from intelbus.errors import (
    BadSignature,
    BadVersion,
    DirectoryExpired,
    InvalidDirectory,
    KeyNotValid,
    KeyRevoked,
    NoCurrentEpoch,
    ThresholdNotMet,
    UnknownKey,
)
from intelbus.identity import PublicIdentity, SealingKey


def count_valid_signatures(
    body: DirectoryBody, signatures: Iterable[Signature], admin_keys: Sequence[AdminKey]
) -> set[str]:
    """The distinct admin public keys (hex) among ``admin_keys`` that validly signed ``body``."""
    by_id = {k.key_id: k for k in admin_keys}
    message = signing_message(body)
    signers: set[str] = set()
    for sig in signatures:
        key = by_id.get(sig.key_id)
        if key is None or key.public in signers:
            continue
        try:
            _nacl.verify_signature(bytes.fromhex(key.public), message, bytes.fromhex(sig.sig))
        except BadSignature:
            continue
        signers.add(key.public)
    return signers


def check_threshold(
    doc: SignedDirectory, admin_keys: Sequence[AdminKey], threshold: int, *, whose: str
) -> None:
    """Raise unless ``threshold`` distinct keys of ``admin_keys`` signed ``doc``.

    Raises:
        ThresholdNotMet: too few valid signatures.
    """
    signers = count_valid_signatures(doc.signed, doc.signatures, admin_keys)
    if len(signers) < threshold:
        raise ThresholdNotMet(
            f"directory v{doc.signed.version}: {len(signers)} valid signature(s) by {whose} "
            f"admin keys, threshold {threshold}"
        )


def sign(doc: SignedDirectory, admin_seed: bytes) -> SignedDirectory:
    """Add one admin's signature (``admin_seed`` is the admin's Ed25519 seed)."""
    public = _nacl.sign_public_from_seed(admin_seed)
    sig = _nacl.sign(admin_seed, signing_message(doc.signed))
    return doc.with_signature(Signature(key_id=admin_key_id(public).hex(), sig=sig.hex()))


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """How a key stood at a given time: the key, its agency, and a later compromise if any."""

    identity: PublicIdentity
    agency_id: str
    directory_version: int
    compromised_since: datetime | None


class DirectoryHistory:
    """Every accepted directory version of one environment, oldest first.

    Implements the envelope's ``KeyResolver`` protocol through :meth:`resolve_signing_key`.
    """

    def __init__(self, pinned: SignedDirectory) -> None:
        """Trust ``pinned`` (got out of band) after checking it is signed by its own threshold.

        Raises:
            ThresholdNotMet: the pinned version is not signed by a threshold of its own keys.
        """
        check_threshold(pinned, pinned.signed.admin_keys, pinned.signed.threshold, whose="its own")
        self._versions: list[SignedDirectory] = [pinned]
        # Validated identities by (agency id, key id). A key id is a hash of the public keys, so
        # one id always names the same keys; the points were checked when the entry was parsed,
        # and checking them again per record cost more than verifying the signature itself.
        # Bounded by the number of keys the directory has ever listed.
        self._identities: dict[tuple[str, str], PublicIdentity] = {}

    @property
    def latest(self) -> DirectoryBody:
        """The newest accepted version's body."""
        return self._versions[-1].signed

    @property
    def versions(self) -> tuple[SignedDirectory, ...]:
        """Every accepted version, oldest first."""
        return tuple(self._versions)

    @property
    def environment(self) -> str:
        return self._versions[0].signed.environment

    def update(self, doc: SignedDirectory) -> bool:
        """Accept ``doc`` as the next version. Returns False (no change) for a version already held.

        Raises:
            BadVersion: not exactly N+1 (a skipped version), or an older one that differs from ours.
            InvalidDirectory: another environment.
            ThresholdNotMet: not signed by a threshold of both the old and the new admin keys.
        """
        current = self.latest
        new = doc.signed
        if new.environment != current.environment:
            raise InvalidDirectory(
                f"directory for environment {new.environment!r}, expected {current.environment!r}"
            )
        if new.version <= current.version:
            held = (
                self._versions[new.version - self._versions[0].signed.version]
                if new.version >= self._versions[0].signed.version
                else None
            )
            if held is not None and held.signed == new:
                return False  # the same version again (e.g. re-read from the topic): harmless
            raise BadVersion(
                f"directory v{new.version} offered while v{current.version} is trusted (rollback)"
            )
        if new.version != current.version + 1:
            raise BadVersion(
                f"directory v{new.version} offered while v{current.version} is trusted "
                f"(skipped v{current.version + 1})"
            )
        if new.issued_at < current.issued_at:
            raise InvalidDirectory(f"directory v{new.version} is issued before v{current.version}")
        check_threshold(doc, current.admin_keys, current.threshold, whose="the previous version's")
        check_threshold(doc, new.admin_keys, new.threshold, whose="its own")
        self._versions.append(doc)
        return True

    def check_fresh(self, now: datetime) -> None:
        """Raise if the newest trusted version has expired at ``now``.

        Raises:
            DirectoryExpired: it has.
        """
        if now >= self.latest.expires:
            raise DirectoryExpired(
                f"directory v{self.latest.version} expired at {self.latest.expires.isoformat()}"
            )

    def in_force_at(self, at: datetime) -> DirectoryBody | None:
        """The newest version issued at or before ``at``, or None if ``at`` predates them all."""
        found: DirectoryBody | None = None
        for doc in self._versions:
            if doc.signed.issued_at <= at:
                found = doc.signed
            else:
                break
        return found

    def key_status(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> KeyStatus:
        """Judge a producer's key for a record the broker appended at ``witnessed_at``.

        Everything is judged at the broker's append time: the directory version in force, the
        agency's publishing rights and removal, the key's validity window, its revocation and the
        start of a compromise. A producer's own clock (``at``, the signed creation time) is
        attacker-controlled once a key leaks, so it decides nothing when a broker witnessed the
        record; it is used only offline (``witnessed_at`` None: a file checked by hand).
        Revocations are read from the newest version: they are learned after the fact.

        Raises:
            UnknownKey: no version in force then lists the key.
            KeyNotValid: the key belongs to another agency, or the agency may not publish to
                ``topic`` then (no producer role, not its topic, removed), or the time is outside
                the key's validity window.
            KeyRevoked: the key was revoked, or presumed leaked, at or before that time.
        """
        kid = key_id.hex()
        judged = at if witnessed_at is None else witnessed_at
        when = judged.isoformat()
        body = self.in_force_at(judged)
        if body is None:
            raise UnknownKey(f"no directory version was in force at {when}")
        found = body.find_key(kid)
        if found is None:
            raise UnknownKey(f"key {kid} is not in directory v{body.version}")
        agency, key = found
        if agency.agency_id != producer_id:
            raise KeyNotValid(f"key {kid} belongs to {agency.agency_id}, not {producer_id}")
        if Role.PRODUCER not in agency.roles:
            raise KeyNotValid(f"agency {producer_id} has no producer role in v{body.version}")
        if topic not in agency.publish_topics:
            raise KeyNotValid(f"agency {producer_id} may not publish to {topic} in v{body.version}")
        if agency.removed_at is not None and agency.removed_at <= judged:
            raise KeyNotValid(
                f"agency {producer_id} was removed at {agency.removed_at.isoformat()}, "
                f"before {when}"
            )
        if judged < key.not_before or (key.not_after is not None and judged >= key.not_after):
            raise KeyNotValid(f"key {kid} is outside its validity window at {when}")
        revocation = self.revocation(kid) or key.revocation
        compromised_since = None
        if revocation is not None:
            if revocation.revoked_at <= judged:
                raise KeyRevoked(f"key {kid} was revoked at {revocation.revoked_at.isoformat()}")
            if revocation.compromised_since is not None:
                if revocation.compromised_since <= judged:
                    raise KeyRevoked(
                        f"key {kid} is presumed compromised since "
                        f"{revocation.compromised_since.isoformat()}"
                    )
                compromised_since = revocation.compromised_since
        return KeyStatus(
            self._identity(agency.agency_id, key), agency.agency_id, body.version, compromised_since
        )

    def blemish(self, key_id_hex: str, now: datetime) -> str | None:
        """Why a record of this key could have been back-dated to escape a cutoff, or None.

        Without the broker's append time, a record's signed creation time is all there is, and a
        leaked key can write any time. That only matters if the newest version draws a line the
        key's records must fall before: a revocation, a compromise, a retirement (``not_after``)
        or its agency's removal that has come by ``now``. A key with none of these is as good at
        any time, so its records do not need a witness.
        """
        found = self.latest.find_key(key_id_hex)
        if found is None:
            return "is not in the newest directory version"
        agency, key = found
        if key.revocation is not None:
            return "was revoked"
        if key.not_after is not None and key.not_after <= now:
            return "was retired"
        if agency.removed_at is not None and agency.removed_at <= now:
            return "belongs to a removed agency"
        return None

    def revocation(self, key_id_hex: str) -> Revocation | None:
        """The key's revocation as the newest version states it (None: not revoked)."""
        newest = self.latest.find_key(key_id_hex)
        return newest[1].revocation if newest is not None else None

    def resolve_signing_key(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> PublicIdentity:
        """The envelope's KeyResolver protocol: the public identity, or a typed refusal."""
        return self.key_status(key_id, producer_id, topic, at, witnessed_at).identity

    def recipient_key(self, agency_id: str, at: datetime) -> PublicIdentity:
        """The encryption key a producer should seal to for ``agency_id`` at ``at``.

        Raises:
            UnknownKey: no such agency, or it has no current, unrevoked key.
        """
        body = self.latest
        agency = body.agency(agency_id)
        if agency is None or (agency.removed_at is not None and agency.removed_at <= at):
            raise UnknownKey(f"no agency {agency_id} in directory v{body.version}")
        usable = [
            k
            for k in agency.keys
            if k.revocation is None
            and k.not_before <= at
            and (k.not_after is None or at < k.not_after)
        ]
        if not usable:
            raise UnknownKey(f"agency {agency_id} has no usable key at {at.isoformat()}")
        newest = max(usable, key=lambda k: k.not_before)
        return self._identity(agency.agency_id, newest)

    def sealing_key(self, agency_id: str, at: datetime) -> SealingKey:
        """What a producer seals to for ``agency_id`` at ``at``: the current key's encryption
        epoch covering ``at`` when that key lists epochs, else the key itself (as before epochs).

        Raises:
            UnknownKey: no such agency, or it has no current, unrevoked key.
            NoCurrentEpoch: its current key lists epochs but none covers ``at`` (fail closed:
                sealing to the long-term key would put the record out of reach of shredding).
        """
        identity = self.recipient_key(agency_id, at)
        found = self.latest.find_key(identity.key_id.hex())
        if found is None or not found[1].enc_epochs:
            return identity
        key = found[1]
        epoch = key.epoch_at(at)
        if epoch is None:
            raise NoCurrentEpoch(
                f"no current encryption epoch for {agency_id} at {at.isoformat()} "
                f"(key {key.key_id} lists {len(key.enc_epochs)}, none covers it): "
                "its directory entry needs a new epoch"
            )
        return key.sealing_key(agency_id, epoch)

    def _identity(self, agency_id: str, key: AgencyKey) -> PublicIdentity:
        cached = self._identities.get((agency_id, key.key_id))
        if cached is None:
            cached = key.public_identity(agency_id)
            self._identities[(agency_id, key.key_id)] = cached
        return cached

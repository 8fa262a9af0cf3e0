"""Agency identities: an Ed25519 signing key and an X25519 encryption key, and their key id.

* :class:`PublicIdentity` is what others know of an agency key (shareable, in the directory).
* :class:`AgencyIdentity` also holds the secrets. Its ``repr``/``str`` never show them.
* The key id is BLAKE2b-128 over both public keys with a domain-separating personalisation, so a
  key id names exactly one (signing, encryption) pair.
* Key files are JSON, created with mode 0600 by ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never
  overwritten, never widened, never written through a link), optionally encrypted under a
  passphrase with Argon2id + XSalsa20-Poly1305. A key file that group or others may access is
  refused when loaded, as ssh refuses one (:func:`intelbus.files.read_private`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from intelbus import _nacl
from intelbus.errors import ConfigError, DecryptionFailed, KeyNotValid, UnknownKey
from intelbus.files import open_private_new, read_private

KEY_FILE_FORMAT = "intelbus-key-v1"
_KEY_ID_PERSON = b"ibus-key-id"
_EPOCH_ID_PERSON = b"ibus-enc-epoch"


def derive_key_id(sign_public: bytes, enc_public: bytes) -> bytes:
    """The 16-byte key id of a (signing, encryption) public key pair."""
    return _nacl.blake2b(sign_public + enc_public, digest_size=16, person=_KEY_ID_PERSON)


def derive_epoch_id(enc_public: bytes) -> bytes:
    """The 16-byte id of an encryption epoch's X25519 public key.

    Its own personalisation keeps epoch ids and key ids apart: no epoch id can equal a key id
    (short of a BLAKE2b collision across personalisations), so a recipient entry's key id slot
    names one or the other without ambiguity.
    """
    return _nacl.blake2b(enc_public, digest_size=16, person=_EPOCH_ID_PERSON)


@dataclass(frozen=True, slots=True)
class EpochRecipient:
    """What a producer seals to when a recipient's key has encryption epochs: the agency, the
    epoch id (carried in the recipient entry's key id slot) and the epoch's X25519 public key."""

    agency_id: str
    key_id: bytes
    enc_public: bytes


class SealingKey(Protocol):
    """A recipient as sealing sees it: a :class:`PublicIdentity` or an :class:`EpochRecipient`."""

    @property
    def agency_id(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    @property
    def enc_public(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """An agency's public keys and key id."""

    agency_id: str
    sign_public: bytes
    enc_public: bytes
    key_id: bytes = field(compare=False)

    @classmethod
    def from_public_bytes(
        cls, agency_id: str, sign_public: bytes, enc_public: bytes
    ) -> PublicIdentity:
        """Build and validate (small-order or non-canonical keys are refused).

        Raises:
            ValueError: a public key is invalid.
        """
        _nacl.check_sign_public_key(sign_public)
        _nacl.check_box_public_key(enc_public)
        return cls(agency_id, sign_public, enc_public, derive_key_id(sign_public, enc_public))

    def to_json(self) -> str:
        """The shareable public key file."""
        return json.dumps(
            {
                "format": "intelbus-public-key-v1",
                "agency_id": self.agency_id,
                "key_id": self.key_id.hex(),
                "sign_public": self.sign_public.hex(),
                "enc_public": self.enc_public.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> PublicIdentity:
        """Parse a public key file; the key id must match the keys.

        Raises:
            ValueError: malformed, invalid keys, or a key id that does not match.
        """
        raw = json.loads(text)
        ident = cls.from_public_bytes(
            str(raw["agency_id"]),
            bytes.fromhex(raw["sign_public"]),
            bytes.fromhex(raw["enc_public"]),
        )
        if "key_id" in raw and raw["key_id"] != ident.key_id.hex():
            raise ValueError("key_id does not match the public keys")
        return ident


class AgencyIdentity:
    """An agency's private keys. Secrets stay inside; ``repr`` shows only the agency and key id."""

    __slots__ = ("_enc_secret", "_sign_secret", "_sign_seed", "public")

    _sign_secret: bytes
    _sign_seed: bytes
    _enc_secret: bytes
    public: PublicIdentity

    def __init__(self, agency_id: str, sign_seed: bytes, enc_secret: bytes) -> None:
        """Derive the public keys and key id from a 32-byte Ed25519 seed and X25519 secret.

        Raises:
            ValueError: a secret has the wrong length, or a derived public key is unusable.
        """
        sign_public, sign_secret = _nacl.sign_keypair_from_seed(sign_seed)
        public = PublicIdentity.from_public_bytes(
            agency_id, sign_public, _nacl.box_public_from_secret(enc_secret)
        )
        # Frozen: set once here, through object.__setattr__ (see __setattr__ below).
        object.__setattr__(self, "_sign_secret", sign_secret)
        object.__setattr__(self, "_sign_seed", bytes(sign_seed))
        object.__setattr__(self, "_enc_secret", bytes(enc_secret))
        object.__setattr__(self, "public", public)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"AgencyIdentity is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"AgencyIdentity is immutable (cannot delete {name})")

    @classmethod
    def generate(cls, agency_id: str) -> AgencyIdentity:
        """Fresh random keys."""
        return cls(agency_id, _nacl.random_bytes(32), _nacl.random_bytes(32))

    @property
    def agency_id(self) -> str:
        return self.public.agency_id

    @property
    def key_id(self) -> bytes:
        return self.public.key_id

    @property
    def sign_public(self) -> bytes:
        return self.public.sign_public

    @property
    def enc_public(self) -> bytes:
        return self.public.enc_public

    def __repr__(self) -> str:
        return f"AgencyIdentity(agency_id={self.agency_id!r}, key_id={self.key_id.hex()}, secrets=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("AgencyIdentity cannot be pickled (it holds private keys)")

    def sign(self, message: bytes) -> bytes:
        """A detached Ed25519 signature."""
        return _nacl.sign_with_secret(self._sign_secret, message)

    def signing_seed(self) -> bytes:
        """The Ed25519 seed (for admin signing of directory versions)."""
        return self._sign_seed

    def open_sealed(self, sealed: bytes) -> bytes:
        """Open a sealed box addressed to this identity.

        Raises:
            DecryptionFailed: it does not open.
        """
        return _nacl.seal_open(self._enc_secret, self.public.enc_public, sealed)

    # -- key files ---------------------------------------------------------------------------------

    def save(
        self,
        path: Path,
        *,
        passphrase: bytes | None = None,
        opslimit: int = _nacl.PWHASH_OPSLIMIT,
        memlimit: int = _nacl.PWHASH_MEMLIMIT,
    ) -> None:
        """Write a new key file with mode 0600 (refuses to overwrite an existing file).

        Created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a symbolic link at ``path``, even a
        dangling one, is refused like any existing file, so the key is never written through it.

        Raises:
            FileExistsError: something (a file or a link) is already at ``path``.
        """
        secret = self._sign_seed + self._enc_secret
        doc: dict[str, object] = {
            "format": KEY_FILE_FORMAT,
            "agency_id": self.agency_id,
            "key_id": self.key_id.hex(),
        }
        if passphrase is None:
            doc.update(encrypted=False, secret=secret.hex())
        else:
            salt = _nacl.random_bytes(_nacl.PWHASH_SALT_BYTES)
            key = _nacl.passphrase_key(passphrase, salt, opslimit=opslimit, memlimit=memlimit)
            doc.update(
                encrypted=True,
                kdf="argon2id",
                salt=salt.hex(),
                opslimit=opslimit,
                memlimit=memlimit,
                box=_nacl.secretbox_encrypt(key, secret).hex(),
            )
        with open_private_new(path) as f:
            f.write(json.dumps(doc, indent=2).encode())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path, *, passphrase: bytes | None = None) -> AgencyIdentity:
        """Read a key file.

        Raises:
            InsecureFileError: group or others may access the file (a :class:`ConfigError`; the
                message names the path, its mode and ``chmod 600``), or it is not a regular file.
            ConfigError: unreadable, malformed, encrypted without a passphrase, wrong passphrase,
                or its key id does not match its keys.
        """
        try:
            # Judged before anything is parsed, passphrase or not, as ssh does.
            raw = json.loads(read_private(path, what="key file").decode())
            if raw.get("format") != KEY_FILE_FORMAT:
                raise ConfigError(f"{path} is not an intelbus key file")
            if raw["encrypted"]:
                if passphrase is None:
                    raise ConfigError(f"{path} is passphrase-protected; give the passphrase")
                key = _nacl.passphrase_key(
                    passphrase,
                    bytes.fromhex(raw["salt"]),
                    opslimit=int(raw["opslimit"]),
                    memlimit=int(raw["memlimit"]),
                )
                secret = _nacl.secretbox_decrypt(key, bytes.fromhex(raw["box"]))
            else:
                secret = bytes.fromhex(raw["secret"])
            if len(secret) != 64:
                raise ConfigError(f"{path}: secret has the wrong length")
            identity = cls(str(raw["agency_id"]), secret[:32], secret[32:])
        except DecryptionFailed as e:
            raise ConfigError(f"{path}: wrong passphrase or damaged key file") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Only the exception type is reported: a parse error message could quote key material.
            raise ConfigError(f"cannot read key file {path} ({type(e).__name__})") from None
        if raw.get("key_id") not in (None, identity.key_id.hex()):
            raise ConfigError(f"{path}: key id does not match the keys")
        return identity


class KeyResolver(Protocol):
    """Who may have signed a record: the envelope asks, the directory (or a key ring) answers."""

    def resolve_signing_key(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> PublicIdentity:
        """The producer's public identity for ``key_id``.

        ``at`` is the creation time the record claims (signed); ``witnessed_at`` the broker's
        append time when known, which a leaked key cannot back-date.

        Raises:
            UnknownKey, KeyNotValid, KeyRevoked: refuse and say why.
        """
        ...


class StaticKeyRing:
    """A fixed set of public identities (tests, the ``--key`` CLI option): no windows, no roles."""

    def __init__(self, identities: Iterable[PublicIdentity] = ()) -> None:
        """Register ``identities`` (each checked as by :meth:`add`).

        Raises:
            ValueError: an invalid public key, a key id that does not match its keys, or keys
                already registered to another agency.
        """
        self._by_id: dict[bytes, PublicIdentity] = {}
        for ident in identities:
            self.add(ident)

    def add(self, identity: PublicIdentity) -> None:
        """Register one identity. Keys are re-checked here: a ``PublicIdentity`` built directly
        (not through ``from_public_bytes``) may hold a small-order or non-canonical key.

        Raises:
            ValueError: an invalid public key, a key id that does not match its keys, or keys
                already registered to another agency.
        """
        _nacl.check_sign_public_key(identity.sign_public)
        _nacl.check_box_public_key(identity.enc_public)
        if derive_key_id(identity.sign_public, identity.enc_public) != identity.key_id:
            raise ValueError(f"key id {identity.key_id.hex()} does not match its public keys")
        known = self._by_id.get(identity.key_id)
        if known is not None and known.agency_id != identity.agency_id:
            # Same keys (the key id is derived from them) claimed by two agencies.
            raise ValueError(f"key {identity.key_id.hex()} is already registered to another agency")
        self._by_id[identity.key_id] = identity

    def __len__(self) -> int:
        return len(self._by_id)

    def resolve_signing_key(
        self,
        key_id: bytes,
        producer_id: str,
        topic: str,
        at: datetime,
        witnessed_at: datetime | None = None,
    ) -> PublicIdentity:
        del topic, at, witnessed_at
        ident = self._by_id.get(key_id)
        if ident is None:
            raise UnknownKey(f"key {key_id.hex()} is not in the key ring")
        if ident.agency_id != producer_id:
            raise KeyNotValid(f"key {key_id.hex()} belongs to {ident.agency_id}, not {producer_id}")
        return ident

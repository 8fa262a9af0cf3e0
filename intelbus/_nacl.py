"""The only module that imports PyNaCl: thin, explicit wrappers over libsodium primitives.

Our "hazmat" layer. Nothing here invents a primitive; every function is one libsodium call (or the
exact composition libsodium itself uses, as for the sealed box below). Nonces and ephemeral keys
can be passed in explicitly (for test vectors); callers in production let them be drawn here.
Failures are mapped to intelbus's typed errors at this boundary.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as b
import nacl.exceptions
import nacl.utils
from nacl.pwhash import argon2id

from intelbus.errors import BadSignature, DecryptionFailed

SIGN_PUBLIC_BYTES = 32
SIGN_SEED_BYTES = 32
SIGNATURE_BYTES = 64
BOX_KEY_BYTES = 32
SEAL_OVERHEAD = b.crypto_box_SEALBYTES  # 48: ephemeral public key + Poly1305 tag
AEAD_KEY_BYTES = b.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
AEAD_NONCE_BYTES = b.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
AEAD_TAG_BYTES = b.crypto_aead_xchacha20poly1305_ietf_ABYTES
SECRETBOX_NONCE_BYTES = b.crypto_secretbox_NONCEBYTES
PWHASH_SALT_BYTES = argon2id.SALTBYTES
PWHASH_OPSLIMIT = argon2id.OPSLIMIT_MODERATE
PWHASH_MEMLIMIT = argon2id.MEMLIMIT_MODERATE


def random_bytes(n: int) -> bytes:
    """``n`` bytes from libsodium's CSPRNG."""
    return nacl.utils.random(n)


def blake2b(data: bytes, *, digest_size: int = 32, person: bytes = b"", key: bytes = b"") -> bytes:
    """BLAKE2b with an optional personalisation (domain separation, at most 16 bytes).

    The standard library's BLAKE2b: the same function as libsodium's ``crypto_generichash`` (same
    output, zero-padded personalisation; tests/unit/test_envelope.py checks), without PyNaCl's
    per-call argument checking, which cost ~5 us of the ~7 us per record digest.
    """
    return hashlib.blake2b(data, digest_size=digest_size, key=key, person=person).digest()


# --- Ed25519 ---------------------------------------------------------------------------------------


def sign_keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, libsodium secret key) for a 32-byte seed."""
    if len(seed) != SIGN_SEED_BYTES:
        raise ValueError("an Ed25519 seed is 32 bytes")
    pk, sk = b.crypto_sign_seed_keypair(seed)
    return pk, sk


def sign_public_from_seed(seed: bytes) -> bytes:
    """The Ed25519 public key of a seed."""
    return sign_keypair_from_seed(seed)[0]


def sign(seed: bytes, message: bytes) -> bytes:
    """A detached Ed25519 signature (deterministic)."""
    _, sk = sign_keypair_from_seed(seed)
    return b.crypto_sign(message, sk)[:SIGNATURE_BYTES]


def sign_with_secret(secret_key: bytes, message: bytes) -> bytes:
    """A detached signature with a libsodium 64-byte secret key (avoids re-deriving per record)."""
    return b.crypto_sign(message, secret_key)[:SIGNATURE_BYTES]


def verify_signature(public: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature (libsodium's strict verification).

    Raises:
        BadSignature: it does not verify (or has the wrong length).
    """
    if len(signature) != SIGNATURE_BYTES or len(public) != SIGN_PUBLIC_BYTES:
        raise BadSignature("signature or public key has the wrong length")
    try:
        b.crypto_sign_open(signature + message, public)
    except nacl.exceptions.BadSignatureError as e:
        raise BadSignature("signature does not verify") from e


def check_sign_public_key(public: bytes) -> None:
    """Refuse Ed25519 public keys that are not canonical, not on the curve, or of small order.

    ``VerifyKey`` accepts the identity point without complaint, so keys are checked when they are
    registered (SECURITY.md).

    Raises:
        ValueError: the key is unusable.
    """
    if len(public) != SIGN_PUBLIC_BYTES or not b.crypto_core_ed25519_is_valid_point(public):
        raise ValueError("invalid Ed25519 public key (non-canonical, off-curve or small order)")


# --- X25519 sealed boxes ---------------------------------------------------------------------------


def box_public_from_secret(secret: bytes) -> bytes:
    """The X25519 public key of a 32-byte secret."""
    if len(secret) != BOX_KEY_BYTES:
        raise ValueError("an X25519 secret key is 32 bytes")
    return b.crypto_scalarmult_base(secret)


def check_box_public_key(public: bytes) -> None:
    """Refuse X25519 public keys of small order (the shared secret would be all zeros).

    Raises:
        ValueError: the key is unusable.
    """
    if len(public) != BOX_KEY_BYTES:
        raise ValueError("an X25519 public key is 32 bytes")
    try:
        b.crypto_scalarmult(random_bytes(BOX_KEY_BYTES), public)
    except nacl.exceptions.RuntimeError as e:
        raise ValueError("invalid X25519 public key (small order)") from e


def seal(
    recipient_public: bytes, message: bytes, *, ephemeral_secret: bytes | None = None
) -> bytes:
    """An anonymous sealed box to ``recipient_public``.

    With ``ephemeral_secret`` given (test vectors only) this is libsodium's own ``crypto_box_seal``
    construction spelled out: nonce = BLAKE2b-192(epk || pk), output = epk || crypto_box(...). The
    result opens with ``crypto_box_seal_open``.
    """
    if ephemeral_secret is None:
        return b.crypto_box_seal(message, recipient_public)
    epk = b.crypto_scalarmult_base(ephemeral_secret)
    nonce = b.crypto_generichash_blake2b_salt_personal(epk + recipient_public, digest_size=24)
    return epk + b.crypto_box(message, nonce, recipient_public, ephemeral_secret)


def seal_open(recipient_secret: bytes, recipient_public: bytes, sealed: bytes) -> bytes:
    """Open a sealed box.

    Raises:
        DecryptionFailed: it does not open.
    """
    try:
        return b.crypto_box_seal_open(sealed, recipient_public, recipient_secret)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError) as e:
        raise DecryptionFailed("data key does not open") from e


# --- XChaCha20-Poly1305 ----------------------------------------------------------------------------


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) with an explicit 24-byte nonce; returns ciphertext || tag.

    PyNaCl's public binding. Calling its private compiled module directly saved ~8 us per record
    (the wrapper formats its error messages on every call), measured in issue 19 and declined: the
    envelope's cryptography goes through PyNaCl's public API only.
    """
    return b.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate.

    Raises:
        DecryptionFailed: wrong key, nonce, associated data, or tampered ciphertext.
    """
    try:
        return b.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, associated, nonce, key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError) as e:
        raise DecryptionFailed("payload does not decrypt") from e


# --- Passphrase protection of key files ------------------------------------------------------------


def passphrase_key(
    passphrase: bytes,
    salt: bytes,
    *,
    opslimit: int = PWHASH_OPSLIMIT,
    memlimit: int = PWHASH_MEMLIMIT,
) -> bytes:
    """A 32-byte key from a passphrase with Argon2id."""
    return argon2id.kdf(
        b.crypto_secretbox_KEYBYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def secretbox_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """XSalsa20-Poly1305 with a random nonce; returns nonce || ciphertext."""
    nonce = random_bytes(SECRETBOX_NONCE_BYTES)
    return nonce + b.crypto_secretbox(plaintext, nonce, key)


def secretbox_decrypt(key: bytes, boxed: bytes) -> bytes:
    """Open a :func:`secretbox_encrypt` box.

    Raises:
        DecryptionFailed: wrong key (passphrase) or tampered box.
    """
    try:
        return b.crypto_secretbox_open(
            boxed[SECRETBOX_NONCE_BYTES:], boxed[:SECRETBOX_NONCE_BYTES], key
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError) as e:
        raise DecryptionFailed("wrong passphrase or damaged key file") from e


# --- Password hashes (the TAXII server's per-user credentials) ----------------------------------

#: The cheapest Argon2id costs libsodium accepts: for tests only, never a default.
PWHASH_MIN_OPSLIMIT = argon2id.OPSLIMIT_MIN
PWHASH_MIN_MEMLIMIT = argon2id.MEMLIMIT_MIN


def password_hash(
    password: bytes, *, opslimit: int = PWHASH_OPSLIMIT, memlimit: int = PWHASH_MEMLIMIT
) -> bytes:
    """An Argon2id hash string (``$argon2id$v=19$m=...``) with a random salt and its costs."""
    return argon2id.str(password, opslimit=opslimit, memlimit=memlimit)


def password_verify(hashed: bytes, password: bytes) -> bool:
    """Whether ``password`` matches ``hashed`` (an :func:`password_hash` string); a malformed
    hash is a mismatch, never an exception."""
    try:
        return bool(argon2id.verify(hashed, password))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False

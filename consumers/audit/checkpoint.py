"""Resuming a replay: where each partition stands, the replay's state, and the findings written.

A checkpoint is one JSON file (0600), replaced atomically (write, fsync, rename; never written
through a link), holding the topic, environment and directory version it was made for, each
partition's next and end offsets (the end is fixed when the replay starts, so a resumed replay
covers the same records), the fixed-size state (:mod:`consumers.audit.state`), and how many bytes
of the findings file it accounts for with their digest: on resume the findings file must still
hold exactly those bytes, and is cut back to that length, so findings written after the
checkpoint are not written twice. A resumed replay therefore ends with the same findings, counts
and digest as one that never stopped. It holds ids, offsets and digests, never contents or keys.

**Signed.** A checkpoint decides what a resumed replay skips and which findings it keeps, so one
edited by hand (positions moved past a hostile record, a finding dropped, a count lowered) would
make the report say "clean". So the checkpoint's body is signed with the auditor's Ed25519 key
over a context that names this format, the environment and the topic, and verified on resume
before anything in it is used. The body is kept as the exact string that was signed (no
re-serialisation can disagree with the signer). Unsigned, signed by another key, altered,
unreadable: refused (:class:`~intelbus.errors.AuditStateError`), nothing touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.audit.state import AuditState
from intelbus import _nacl
from intelbus.errors import (
    BadSignature,
    CheckpointForeignKey,
    CheckpointForged,
    CheckpointUnreadable,
    CheckpointUnsigned,
    ConfigError,
)
from intelbus.files import PRIVATE_MODE, atomic_write, read_private
from intelbus.identity import AgencyIdentity, PublicIdentity

FORMAT = "intelbus.audit.checkpoint/v3"
#: Formats written by earlier versions: unsigned, so never resumed.
_UNSIGNED_FORMATS = frozenset({"intelbus.audit.checkpoint/v1", "intelbus.audit.checkpoint/v2"})
#: Domain separation: a checkpoint signature can never pass for a record, a directory version or
#: any other signature the auditor's key makes.
_CONTEXT = b"intelbus/audit/checkpoint/v3\x00"
#: The ledger's meta key holding the checkpoint committed with it.
LEDGER_KEY = "audit_checkpoint"
#: How to start over, in every refusal.
START_OVER = (
    "start over with --restart (the checkpoint, its ledger and findings file are discarded)"
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A replay, frozen between two batches."""

    topic: str
    environment: str
    directory_version: int
    baseline_first_sight: bool
    positions: dict[int, tuple[int, int]]
    state: dict[str, Any]  # AuditState.to_json()
    findings_bytes: int
    findings_digest: str  # of those bytes (consumers.audit.report.FindingSpool.digest)
    complete: bool

    def audit_state(self) -> AuditState:
        """The replay state to continue from.

        Raises:
            ConfigError: the state is not one this version wrote.
        """
        try:
            return AuditState.from_json(self.state)
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"checkpoint state is unreadable: {type(e).__name__}") from e

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "topic": self.topic,
            "environment": self.environment,
            "directory_version": self.directory_version,
            "baseline_first_sight": self.baseline_first_sight,
            "positions": {str(p): [a, b] for p, (a, b) in sorted(self.positions.items())},
            "findings_bytes": self.findings_bytes,
            "findings_digest": self.findings_digest,
            "complete": self.complete,
            "state": self.state,
        }


def _context(environment: str, topic: str) -> bytes:
    """What a signature binds the body to besides itself: the format, environment and topic."""
    out = bytearray(_CONTEXT)
    for part in (environment, topic):
        raw = part.encode()
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def from_json(raw: object, *, source: str) -> Checkpoint:
    """A checkpoint from its (already verified) body.

    Raises:
        CheckpointUnreadable: not a checkpoint body this version writes.
    """
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CheckpointUnreadable(
                f"checkpoint {source} is not an audit checkpoint of this version ({FORMAT}); "
                + START_OVER
            )
        return Checkpoint(
            topic=str(raw["topic"]),
            environment=str(raw["environment"]),
            directory_version=int(raw["directory_version"]),
            baseline_first_sight=bool(raw["baseline_first_sight"]),
            positions={int(p): (int(a), int(b)) for p, (a, b) in raw["positions"].items()},
            state=dict(raw["state"]),
            findings_bytes=int(raw["findings_bytes"]),
            findings_digest=str(raw["findings_digest"]),
            complete=bool(raw["complete"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointUnreadable(
            f"checkpoint {source} is unreadable ({type(e).__name__}); " + START_OVER
        ) from e


def signed(checkpoint: Checkpoint, signer: AgencyIdentity) -> str:
    """The checkpoint as signed JSON text: the body (exactly the bytes signed), key id, signature."""
    body = json.dumps(checkpoint.to_json(), sort_keys=True, separators=(",", ":"))
    signature = signer.sign(_context(checkpoint.environment, checkpoint.topic) + body.encode())
    return json.dumps(
        {
            "format": FORMAT,
            "key_id": signer.key_id.hex(),
            "signature": signature.hex(),
            "body": body,
        },
        separators=(",", ":"),
    )


def verified(text: str | bytes, *, source: str, key: PublicIdentity) -> Checkpoint:
    """The checkpoint in ``text`` if ``key`` signed it for the topic and environment it names.

    Nothing of the body is used before its signature verifies.

    Raises:
        CheckpointUnreadable: not JSON, or not a signed checkpoint's shape.
        CheckpointUnsigned: no signature (an older format, or written by hand).
        CheckpointForeignKey: signed by another key than ``key``.
        CheckpointForged: the signature does not verify (altered since it was signed).
    """
    try:
        outer = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointUnreadable(
            f"checkpoint {source} is not JSON (truncated?); " + START_OVER
        ) from e
    if not isinstance(outer, dict):
        raise CheckpointUnreadable(f"checkpoint {source} is not a signed checkpoint; " + START_OVER)
    if outer.get("format") in _UNSIGNED_FORMATS or "signature" not in outer:
        raise CheckpointUnsigned(
            f"checkpoint {source} is not signed, so its positions and findings cannot be trusted; "
            + START_OVER
        )
    body, key_id, signature = outer.get("body"), outer.get("key_id"), outer.get("signature")
    if not (
        outer.get("format") == FORMAT
        and isinstance(body, str)
        and isinstance(key_id, str)
        and isinstance(signature, str)
    ):
        raise CheckpointUnreadable(
            f"checkpoint {source} is not a signed checkpoint of this version ({FORMAT}); "
            + START_OVER
        )
    if key_id != key.key_id.hex():
        raise CheckpointForeignKey(
            f"checkpoint {source} was signed by key {key_id[:32]}, not this auditor's key "
            f"{key.key_id.hex()}; " + START_OVER
        )
    try:
        inner = json.loads(body)
        claimed = (str(inner["environment"]), str(inner["topic"]))
        _nacl.verify_signature(
            key.sign_public, _context(*claimed) + body.encode(), bytes.fromhex(signature)
        )
    except (ValueError, KeyError, TypeError, BadSignature) as e:
        raise CheckpointForged(
            f"checkpoint {source} does not verify under this auditor's key: it was altered after "
            "it was signed; " + START_OVER
        ) from e
    return from_json(inner, source=source)


def save(path: Path, text: str) -> None:
    """Replace ``path`` atomically with the signed checkpoint ``text`` (0600, never through a
    link)."""
    atomic_write(path, text.encode(), mode=PRIVATE_MODE)


def load(
    path: Path, *, key: PublicIdentity, topic: str, environment: str, directory_version: int
) -> Checkpoint:
    """Read a checkpoint this auditor signed for this topic, environment and directory version.

    Raises:
        AuditStateError: unreadable, unsigned, signed by another key, or altered.
        InsecureFileError: a link, not a regular file, or open to group or others.
        ConfigError: genuine, but made for another topic, environment or directory version (the
            findings would not be comparable).
    """
    try:
        raw = read_private(path, what="audit checkpoint")
    except OSError as e:
        raise ConfigError(f"checkpoint {path} cannot be read: {e.strerror}") from e
    return require_for(
        verified(raw, source=str(path), key=key),
        source=str(path),
        topic=topic,
        environment=environment,
        directory_version=directory_version,
    )


def require_for(
    cp: Checkpoint, *, source: str, topic: str, environment: str, directory_version: int
) -> Checkpoint:
    """``cp`` if it was made for this topic, environment and directory version.

    Raises:
        ConfigError: made for another one (the findings would not be comparable).
    """
    wanted = (topic, environment, directory_version)
    found = (cp.topic, cp.environment, cp.directory_version)
    if found != wanted:
        raise ConfigError(
            f"checkpoint {source} is for topic {cp.topic}, environment {cp.environment}, "
            f"directory v{cp.directory_version}; this replay is {topic}, {environment}, "
            f"v{directory_version}"
        )
    return cp

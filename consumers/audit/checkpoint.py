"""Resuming a replay: where each partition stands, the replay's state, and the findings written.

A checkpoint is one JSON file (0600), replaced atomically (write, fsync, rename; never written
through a link), holding the topic, environment and directory version it was made for, each
partition's next and end offsets (the end is fixed when the replay starts, so a resumed replay
covers the same records), the fixed-size state (:mod:`consumers.audit.state`) and how many bytes of the findings file it accounts for: on
resume the findings file is cut back to that length, so findings written after the checkpoint
are not written twice. A resumed replay therefore ends with the same findings, counts and digest
as one that never stopped. It holds ids, offsets and digests, never contents or keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.audit.state import AuditState
from intelbus.errors import ConfigError
from intelbus.files import PRIVATE_MODE, atomic_write

FORMAT = "intelbus.audit.checkpoint/v2"
#: The ledger's meta key holding the checkpoint committed with it.
LEDGER_KEY = "audit_checkpoint"


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
            "complete": self.complete,
            "state": self.state,
        }


def from_json(raw: object, *, source: str) -> Checkpoint:
    """A checkpoint from its JSON object.

    Raises:
        ConfigError: not a checkpoint this version writes.
    """
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ConfigError(f"{source} is not an audit checkpoint of this version ({FORMAT})")
        return Checkpoint(
            topic=str(raw["topic"]),
            environment=str(raw["environment"]),
            directory_version=int(raw["directory_version"]),
            baseline_first_sight=bool(raw["baseline_first_sight"]),
            positions={int(p): (int(a), int(b)) for p, (a, b) in raw["positions"].items()},
            state=dict(raw["state"]),
            findings_bytes=int(raw["findings_bytes"]),
            complete=bool(raw["complete"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"checkpoint {source} is unreadable: {type(e).__name__}") from e


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` atomically with ``checkpoint`` (0600, never written through a link)."""
    data = json.dumps(checkpoint.to_json(), separators=(",", ":")).encode()
    atomic_write(path, data, mode=PRIVATE_MODE)


def load(path: Path, *, topic: str, environment: str, directory_version: int) -> Checkpoint:
    """Read a checkpoint made for this topic, environment and directory version.

    Raises:
        ConfigError: unreadable, or made for another topic, environment or directory version
            (the findings would not be comparable).
    """
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"checkpoint {path} is unreadable: {type(e).__name__}") from e
    return require_for(
        from_json(raw, source=str(path)),
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

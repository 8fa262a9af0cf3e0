"""Resuming a replay: where each partition stands, the replay's state, and the findings written.

A checkpoint is one JSON file, replaced atomically (write, fsync, rename), holding the topic,
environment and directory version it was made for, each partition's next and end offsets (the end
is fixed when the replay starts, so a resumed replay covers the same records), the fixed-size
state (:mod:`consumers.audit.state`) and how many bytes of the findings file it accounts for: on
resume the findings file is cut back to that length, so findings written after the checkpoint
are not written twice. A resumed replay therefore ends with the same findings, counts and digest
as one that never stopped. It holds ids, offsets and digests, never contents or keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.audit.state import AuditState
from intelbus.errors import ConfigError

FORMAT = "intelbus.audit.checkpoint/v1"


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


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` atomically with ``checkpoint`` (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(checkpoint.to_json(), separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def load(path: Path, *, topic: str, environment: str, directory_version: int) -> Checkpoint:
    """Read a checkpoint made for this topic, environment and directory version.

    Raises:
        ConfigError: unreadable, or made for another topic, environment or directory version
            (the findings would not be comparable).
    """
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("format") != FORMAT:
            raise ConfigError(f"{path} is not an audit checkpoint")
        cp = Checkpoint(
            topic=str(raw["topic"]),
            environment=str(raw["environment"]),
            directory_version=int(raw["directory_version"]),
            baseline_first_sight=bool(raw["baseline_first_sight"]),
            positions={int(p): (int(a), int(b)) for p, (a, b) in raw["positions"].items()},
            state=dict(raw["state"]),
            findings_bytes=int(raw["findings_bytes"]),
            complete=bool(raw["complete"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"checkpoint {path} is unreadable: {type(e).__name__}") from e
    wanted = (topic, environment, directory_version)
    found = (cp.topic, cp.environment, cp.directory_version)
    if found != wanted:
        raise ConfigError(
            f"checkpoint {path} is for topic {cp.topic}, environment {cp.environment}, directory "
            f"v{cp.directory_version}; this replay is {topic}, {environment}, v{directory_version}"
        )
    return cp

"""One audit, start to finish: plan the offsets, resume or start, replay, checkpoint, report.

This is what ``intelbus audit replay`` runs, and what the tests and the benchmark call.
"""

from __future__ import annotations

import enum
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from consumers.audit import checkpoint as cp
from consumers.audit.keycache import CachedResolver
from consumers.audit.replay import AuditConfig, AuditJudge, Replay, Verifier
from consumers.audit.report import FindingSpool, summary, write_report
from consumers.audit.source import RecordSource
from consumers.audit.state import AuditState
from intelbus.directory.trust import DirectoryHistory
from intelbus.errors import ConfigError
from intelbus.identity import AgencyIdentity
from intelbus.log import get_logger
from intelbus.serde.registry import SchemaRegistry
from intelbus.store.sqlite import SqliteStore
from intelbus.trust.intake import Intake

log = get_logger("consumers.audit")
CHECKPOINT_EVERY = 20_000
#: Without a checkpoint, the judge's working state still goes to the ledger this often (memory).
LEDGER_EVERY = 20_000


class StartKind(enum.StrEnum):
    BEGINNING = "beginning"
    SINCE = "since"
    OFFSETS = "offsets"


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where the replay starts: every partition's beginning, a time, or given offsets."""

    kind: StartKind = StartKind.BEGINNING
    since: datetime | None = None
    offsets: dict[int, int] = field(default_factory=dict)


def plan(source: RecordSource, start: StartAt) -> dict[int, tuple[int, int]]:
    """partition -> (first offset to read, end offset), for every partition of the topic.

    With offsets, partitions not named start at their beginning (every partition is audited).
    """
    bounds = source.bounds()
    if start.kind is StartKind.SINCE:
        assert start.since is not None  # noqa: S101 - built so by the CLI
        found = source.offsets_at(start.since)
        return {p: (found.get(p, end), end) for p, (_, end) in bounds.items()}
    if start.kind is StartKind.OFFSETS:
        unknown = set(start.offsets) - set(bounds)
        if unknown:
            raise ValueError(f"no partition(s) {sorted(unknown)} in {source.topic}")
        return {
            p: (min(max(start.offsets.get(p, begin), begin), end), end)
            for p, (begin, end) in bounds.items()
        }
    return dict(bounds)


@dataclass(frozen=True, slots=True)
class AuditResult:
    """What an audit found (the report's summary) and how long it took."""

    summary: dict[str, Any]
    run: dict[str, Any]
    complete: bool
    sample: list[Any]

    @property
    def integrity_findings(self) -> int:
        return int(self.summary["findings"]["integrity"])

    @property
    def digest(self) -> str:
        return str(self.summary["digest"]["value"])


def audit(  # noqa: PLR0915 - one linear procedure, clearer in one place
    *,
    source: RecordSource,
    history: DirectoryHistory,
    config: AuditConfig,
    start: StartAt = StartAt(),
    identity: AgencyIdentity | None = None,
    registry: SchemaRegistry | None = None,
    checkpoint: Path | None = None,
    report: Path | None = None,
    workers: int | None = None,
    batch_size: int = 2000,
    stop_after: int | None = None,
    as_of: datetime | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: Callable[[int, int], None] | None = None,
    sample_size: int = 20,
) -> AuditResult:
    """Replay ``source``'s topic and judge every record.

    ``progress(done, total)`` is called after each batch. ``stop_after`` stops (with a checkpoint)
    after about that many records, for tests and for operators who audit in slices.

    Raises:
        ConfigError: an unusable checkpoint.
        KafkaUnavailableError: the broker failed or stalled.
    """
    topic = source.topic
    version = history.latest.version
    environment = config.environment
    resumed: cp.Checkpoint | None = None
    tmpdir = tempfile.TemporaryDirectory(prefix="intelbus-audit-")
    if checkpoint is not None:
        spool_path = checkpoint.with_name(checkpoint.name + ".findings.jsonl")
        ledger_path = checkpoint.with_name(checkpoint.name + ".ledger")
    else:
        spool_path = Path(tmpdir.name) / "findings.jsonl"
        ledger_path = Path(tmpdir.name) / "ledger.sqlite"
    if checkpoint is not None and checkpoint.exists():
        cp.load(checkpoint, topic=topic, environment=environment, directory_version=version)
        resumed = cp.require_for(
            _resume_point(checkpoint, ledger_path),
            source=str(ledger_path),
            topic=topic,
            environment=environment,
            directory_version=version,
        )
        _require_spool(spool_path, resumed.findings_bytes)
        config = AuditConfig(
            **{**_fields(config), "baseline_first_sight": resumed.baseline_first_sight}
        )
    else:
        if ledger_path.exists():
            ledger_path.unlink()  # a ledger without its checkpoint: never saved, start again
        if start.kind is not StartKind.BEGINNING:
            config = AuditConfig(**{**_fields(config), "baseline_first_sight": True})
    ledger = SqliteStore(ledger_path)
    spool = FindingSpool(spool_path, resume_at=resumed.findings_bytes if resumed else None)
    state = resumed.audit_state() if resumed else AuditState.empty(topic)
    positions = resumed.positions if resumed else plan(source, start)
    judge = AuditJudge(
        history,
        config,
        state,
        spool.write,
        ledger,
        auditor_id=identity.agency_id if identity is not None else None,
    )
    intake = Intake(
        resolver=CachedResolver(history),
        environment=environment,
        identity=identity,
        registry=registry,
        directory=history,
    )
    replay = Replay(
        source=source,
        verifier=Verifier(intake),
        judge=judge,
        positions=positions,
        workers=workers,
        batch_size=batch_size,
    )

    def save(*, complete: bool) -> None:
        """Commit the judge's working state to the ledger together with the checkpoint (one
        transaction), then write the checkpoint file beside it."""
        point = cp.Checkpoint(
            topic=topic,
            environment=environment,
            directory_version=version,
            baseline_first_sight=config.baseline_first_sight,
            positions={p: (a, b) for p, (a, b) in replay.positions.items()},
            state=state.to_json(),
            findings_bytes=spool.sync(),
            complete=complete,
        )
        judge.flush({cp.LEDGER_KEY: json.dumps(point.to_json(), separators=(",", ":"))})
        if checkpoint is not None:
            cp.save(checkpoint, point)

    total = replay.remaining
    done = 0
    since_saved = 0
    started = time.monotonic()

    def on_batch(n: int) -> None:
        nonlocal done, since_saved
        done += n
        since_saved += n
        if since_saved >= (checkpoint_every if checkpoint is not None else LEDGER_EVERY):
            save(complete=False)
            since_saved = 0
        if progress is not None:
            progress(done, total)

    log.info("audit.started", topic=topic, records=total, resumed=resumed is not None)
    try:
        if resumed is not None and resumed.complete:
            complete = True
        else:
            complete = replay.run(on_batch=on_batch, stop_after=stop_after)
            if complete:
                judge.finish(as_of)
            save(complete=complete)
        elapsed = time.monotonic() - started
        summary_obj = summary(
            state,
            environment=environment,
            directory_version=version,
            complete=complete,
            decrypting=identity is not None,
        )
        run = {
            "records_this_run": done,
            "seconds": round(elapsed, 3),
            "records_per_second": round(done / elapsed, 1) if elapsed > 0 else None,
            "workers": replay.workers,
            "resumed": resumed is not None,
        }
        if report is not None:
            write_report(report, summary_obj, run, spool)
        sample = spool.findings(sample_size)
    finally:
        spool.close()
        ledger.close()
        tmpdir.cleanup()
    log.info(
        "audit.finished",
        topic=topic,
        records=state.records,
        integrity=state.integrity,
        warnings=state.warnings,
        complete=complete,
        seconds=round(elapsed, 3),
    )
    return AuditResult(summary_obj, run, complete, sample)


def _resume_point(checkpoint: Path, ledger_path: Path) -> cp.Checkpoint:
    """Where to resume: the checkpoint committed with the ledger (the file beside it may be one
    save behind, if the process stopped between the two).

    Raises:
        ConfigError: the ledger is missing or holds no checkpoint.
    """
    if not ledger_path.exists():
        raise ConfigError(f"checkpoint {checkpoint} has no ledger beside it ({ledger_path.name})")
    ledger = SqliteStore(ledger_path)
    try:
        raw = ledger.meta(cp.LEDGER_KEY)
    finally:
        ledger.close()
    if raw is None:
        raise ConfigError(f"the ledger beside checkpoint {checkpoint} holds no checkpoint")
    return cp.from_json(json.loads(raw), source=str(ledger_path))


def _require_spool(path: Path, length: int) -> None:
    """The findings file a checkpoint accounts for must hold at least that many bytes (it is cut
    back to them); a missing or shorter one would lose findings, or pad the report with zeros.

    Raises:
        ConfigError: missing or too short.
    """
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        raise ConfigError(
            f"the findings file {path.name} the checkpoint accounts for is missing"
        ) from None
    if size < length:
        raise ConfigError(
            f"the findings file {path.name} holds {size} bytes, fewer than the {length} the "
            "checkpoint accounts for"
        )


def _fields(config: AuditConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in AuditConfig.__slots__}

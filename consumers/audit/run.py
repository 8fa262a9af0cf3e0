"""One audit, start to finish: plan the offsets, resume or start, replay, checkpoint, report.

This is what ``intelbus audit replay`` runs, and what the tests and the benchmark call.

A checkpoint is signed with the auditor's key and verified before it is resumed
(:mod:`consumers.audit.checkpoint`), so auditing with a checkpoint needs the key: without one, the
replay refuses rather than write a checkpoint nobody can authenticate.
"""

from __future__ import annotations

import enum
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from consumers.audit import checkpoint as cp
from consumers.audit.keycache import CachedResolver
from consumers.audit.replay import AuditConfig, AuditJudge, Replay, Verifier
from consumers.audit.report import FindingSpool, spooled, summary, write_report
from consumers.audit.source import RecordSource
from consumers.audit.state import AuditState
from consumers.audit.storecheck import StoreCheck
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope.epochs import EpochKeys
from intelbus.errors import ConfigError
from intelbus.identity import AgencyIdentity
from intelbus.log import get_logger
from intelbus.serde.registry import SchemaRegistry
from intelbus.store.base import Coverage
from intelbus.store.sqlite import SqliteStore
from intelbus.trust.intake import Intake
from intelbus.trust.model import FeedBeat

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
        """The report's digest: records, summary and findings."""
        return str(self.summary["digest"]["value"])

    @property
    def records_digest(self) -> str:
        """The records' digest alone (order-independent; what a force computes from its store)."""
        return str(self.summary["digest"]["records"])


def audit(  # noqa: PLR0915 - one linear procedure, clearer in one place
    *,
    source: RecordSource,
    history: DirectoryHistory,
    config: AuditConfig,
    start: StartAt = StartAt(),
    identity: AgencyIdentity | None = None,
    registry: SchemaRegistry | None = None,
    checkpoint: Path | None = None,
    checkpoint_key: AgencyIdentity | None = None,
    restart: bool = False,
    report: Path | None = None,
    workers: int | None = None,
    batch_size: int = 2000,
    stop_after: int | None = None,
    as_of: datetime | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: Callable[[int, int], None] | None = None,
    sample_size: int = 20,
    vouched: Sequence[FeedBeat] | None = None,
    store: Coverage | None = None,
    epochs: EpochKeys | None = None,
) -> AuditResult:
    """Replay ``source``'s topic and judge every record.

    ``progress(done, total)`` is called after each batch. ``stop_after`` stops (with a checkpoint)
    after about that many records, for tests and for operators who audit in slices.

    ``vouched`` are the producers' heartbeats' vouched stream heads, read from the heartbeats
    topic before this replay began (:func:`consumers.audit.vouched.vouched_heads`): after a
    complete replay from the beginning, every record they vouch for on this topic and the topic
    does not hold is a ``records_missing`` finding. None: completeness is not checked.

    ``store`` is what a force's store holds of this topic (:meth:`Store.coverage`): after a
    complete replay from the beginning, each row the topic does not bear out (id, producer and
    digest at that position), and each accepted record the store read past without keeping a
    trace of, is a ``store_mismatch`` finding; the report's ``store`` section counts the rows,
    tombstones included (consumers/audit/storecheck.py).

    ``checkpoint_key`` signs and verifies the checkpoint (default: ``identity``, the auditor's key,
    which also opens what is addressed to it). ``restart`` discards an existing checkpoint, its
    ledger and findings file, and starts afresh.

    Raises:
        ConfigError: a checkpoint without a key, or one made for another topic, environment or
            directory version (or without its ledger or findings).
        AuditStateError: a checkpoint (or its findings file) that this key did not sign as it is.
        KafkaUnavailableError: the broker failed or stalled.
    """
    topic = source.topic
    version = history.latest.version
    environment = config.environment
    signer = checkpoint_key or identity
    resumed: cp.Checkpoint | None = None
    tmpdir = tempfile.TemporaryDirectory(prefix="intelbus-audit-")
    spool_path, ledger_path = _paths(checkpoint, Path(tmpdir.name), signer, restart=restart)
    if checkpoint is not None and checkpoint.exists():
        assert signer is not None  # noqa: S101 - refused above
        resumed, spool = _resume(
            checkpoint,
            ledger_path,
            spool_path,
            signer,
            topic=topic,
            environment=environment,
            directory_version=version,
        )
        config = AuditConfig(
            **{**_fields(config), "baseline_first_sight": resumed.baseline_first_sight}
        )
    else:
        if ledger_path.exists():
            ledger_path.unlink()  # a ledger without its checkpoint: never saved, start again
        if start.kind is not StartKind.BEGINNING:
            config = AuditConfig(**{**_fields(config), "baseline_first_sight": True})
        spool = FindingSpool(spool_path)
    ledger = SqliteStore(ledger_path)
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
        # The auditor's encryption-epoch keys: what it destroyed reads as not opened, no finding.
        epochs=epochs,
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
            findings_digest=spool.digest(),
            complete=complete,
        )
        if signer is None:
            judge.flush()  # no checkpoint: the ledger is a temporary file, never resumed
            return
        text = cp.signed(point, signer)
        judge.flush({cp.LEDGER_KEY: text})
        if checkpoint is not None:
            cp.save(checkpoint, text)

    # From the beginning, in one run only: a replay that started later does not hold what came
    # before its start, and a resumed one fixed its end offsets before these heartbeats were read
    # (they could vouch for records appended after that end).
    checks_completeness = (
        vouched is not None and not config.baseline_first_sight and resumed is None
    )
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

    if store is not None:
        if resumed is not None or config.baseline_first_sight:
            # Rows before this run's start, or read by an earlier run, could not be ticked off.
            raise ConfigError(
                "checking a store needs one replay from the beginning (no checkpoint)"
            )
        judge.store_check = StoreCheck.of(store)
    log.info("audit.started", topic=topic, records=total, resumed=resumed is not None)
    try:
        if resumed is not None and resumed.complete:
            complete = True
        else:
            complete = replay.run(on_batch=on_batch, stop_after=stop_after)
            if complete:
                judge.finish(as_of)
                if checks_completeness:
                    judge.completeness(vouched or ())
                judge.finish_store_check()
            save(complete=complete)
        elapsed = time.monotonic() - started
        summary_obj = summary(
            state,
            environment=environment,
            directory_version=version,
            complete=complete,
            decrypting=identity is not None,
            findings=spooled(spool),
            store=judge.store_check.summary() if judge.store_check else None,
        )
        run = {
            "records_this_run": done,
            "seconds": round(elapsed, 3),
            "records_per_second": round(done / elapsed, 1) if elapsed > 0 else None,
            "workers": replay.workers,
            "resumed": resumed is not None,
            "completeness_checked": checks_completeness,
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


def _paths(
    checkpoint: Path | None, tmp: Path, signer: AgencyIdentity | None, *, restart: bool
) -> tuple[Path, Path]:
    """The findings spool and ledger paths: beside the checkpoint, or in ``tmp`` without one.

    Raises:
        ConfigError: a checkpoint without a key to sign it.
    """
    if checkpoint is None:
        return tmp / "findings.jsonl", tmp / "ledger.sqlite"
    if signer is None:
        # An unsigned checkpoint could be edited to skip records or drop findings unnoticed.
        raise ConfigError(
            "a checkpoint is signed with the auditor's key and verified on resume: give the "
            "auditor's key (--key-file), or audit without --checkpoint"
        )
    spool_path = checkpoint.with_name(checkpoint.name + ".findings.jsonl")
    ledger_path = checkpoint.with_name(checkpoint.name + ".ledger")
    if restart:
        _discard(checkpoint, ledger_path, spool_path)
    return spool_path, ledger_path


def _resume(
    checkpoint: Path,
    ledger_path: Path,
    spool_path: Path,
    signer: AgencyIdentity,
    *,
    topic: str,
    environment: str,
    directory_version: int,
) -> tuple[cp.Checkpoint, FindingSpool]:
    """The verified checkpoint to resume from, and its findings spool cut back to it.

    Everything is verified (the file, the ledger's copy, the findings the checkpoint signed)
    before anything is cut, deleted or written, so a refused resume leaves every file as it was.

    Raises:
        AuditStateError: not signed by ``signer`` as it is, or findings edited since.
        ConfigError: for another topic, environment or directory version; ledger or findings
            missing.
    """
    cp.load(
        checkpoint,
        key=signer.public,
        topic=topic,
        environment=environment,
        directory_version=directory_version,
    )
    resumed = cp.require_for(
        _resume_point(checkpoint, ledger_path, signer),
        source=str(ledger_path),
        topic=topic,
        environment=environment,
        directory_version=directory_version,
    )
    _require_spool(spool_path, resumed.findings_bytes)
    spool = FindingSpool(
        spool_path, resume_at=resumed.findings_bytes, expect_digest=resumed.findings_digest
    )
    return resumed, spool


def _discard(checkpoint: Path, ledger_path: Path, spool_path: Path) -> None:
    """Start over: remove a checkpoint, its ledger (with SQLite's side files) and findings."""
    for path in (
        checkpoint,
        spool_path,
        *(Path(f"{ledger_path}{s}") for s in ("", "-wal", "-shm")),
    ):
        path.unlink(missing_ok=True)
    log.info("audit.restarted", checkpoint=checkpoint.name)


def _resume_point(checkpoint: Path, ledger_path: Path, key: AgencyIdentity) -> cp.Checkpoint:
    """Where to resume: the checkpoint committed with the ledger (the file beside it may be one
    save behind, if the process stopped between the two), verified like the file.

    Raises:
        ConfigError: the ledger is missing or holds no checkpoint.
        AuditStateError: the ledger's checkpoint is not one ``key`` signed as it is.
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
    return cp.verified(raw, source=str(ledger_path), key=key.public)


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

"""``intelbus audit``: replay a topic's whole history and judge it, without reading its contents.

``audit replay`` verifies every record of every partition (docs/audit.md) with a consumer of its
own (no group, nothing committed), prints a summary, optionally writes a JSON report with every
finding, and exits non-zero when integrity findings exist. ``audit digest`` prints or compares
the order-independent digest two parties use to check they saw the same records.

Exit codes: 0 clean (warnings allowed), 1 integrity findings (or digests differ), 2 a bad option
or file (a malformed report, or one that does not match its own digest), 3 the environment refused
(the broker could not be reached, the directory has expired, the topic is not LogAppendTime, or the
checkpoint is not one this auditor signed: ``--restart`` starts over), 130 interrupted (resume with
the same checkpoint).

A checkpoint is signed with the auditor's key (``--key-file``) and verified on resume; without a
key, ``--checkpoint`` is refused (exit 2).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from consumers.audit.keycache import CachedResolver
from consumers.audit.replay import AuditConfig
from consumers.audit.report import render, verify_report
from consumers.audit.run import AuditResult, StartAt, StartKind, audit
from consumers.audit.source import KafkaSource
from consumers.audit.vouched import vouched_heads
from intelbus.cli.store_cmd import resolve_store
from intelbus.directory import store as dstore
from intelbus.directory.follow import DirectoryFollower, Freshness, freshness
from intelbus.directory.trust import DirectoryHistory
from intelbus.envelope.epochs import EpochKeys
from intelbus.errors import (
    AuditStateError,
    ConfigError,
    DirectoryExpired,
    IntelbusError,
    KafkaUnavailableError,
    TopicMisconfigured,
    TopicMissing,
)
from intelbus.identity import AgencyIdentity
from intelbus.keyring import load_epochs
from intelbus.kinds import Family
from intelbus.log import get_logger
from intelbus.policy.agreement import SharingAgreement
from intelbus.serde.registry import SchemaRegistry
from intelbus.store import open_store
from intelbus.store.base import Coverage
from intelbus.transport.topics import topic_beside
from intelbus.trust.intake import Intake
from intelbus.trust.model import FeedBeat

app = typer.Typer(help="Auditor replay: verify a topic's history with public keys only.")
console = Console()
err = Console(stderr=True, soft_wrap=True)
log = get_logger("cli.audit")

EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_INTERRUPTED = 130


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed; a time without a zone is refused), or ``now``.

    Raises:
        ConfigError: not a time.
    """
    if text == "now":
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(f"{text!r} is not an ISO 8601 time") from e
    if t.tzinfo is None:
        raise ConfigError(f"{text!r} has no time zone (add Z or +00:00)")
    return t.astimezone(UTC)


def parse_offsets(text: str) -> dict[int, int]:
    """``P:O,P:O`` into partition -> offset.

    Raises:
        ConfigError: malformed.
    """
    out: dict[int, int] = {}
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            p, o = part.split(":")
            out[int(p)] = int(o)
    except ValueError as e:
        raise ConfigError(f"--offsets {text!r}: expected PARTITION:OFFSET[,...]") from e
    if not out or any(p < 0 or o < 0 for p, o in out.items()):
        raise ConfigError(f"--offsets {text!r}: expected non-negative PARTITION:OFFSET pairs")
    return out


def _start(from_beginning: bool, since: str | None, offsets: str | None) -> StartAt:
    chosen = sum([from_beginning, since is not None, offsets is not None])
    if chosen > 1:
        raise ConfigError("choose one of --from-beginning, --since and --offsets")
    if since is not None:
        return StartAt(StartKind.SINCE, since=parse_time(since))
    if offsets is not None:
        return StartAt(StartKind.OFFSETS, offsets=parse_offsets(offsets))
    return StartAt()


def _bootstrap(value: str | None) -> str:
    found = value or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not found:
        raise ConfigError("no --bootstrap-servers and KAFKA_BOOTSTRAP_SERVERS is unset")
    return found


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]audit"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>9} rec/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def replay(
    topics: list[str] = typer.Option(
        [], "--topic", help="A topic to replay, all partitions (repeat for several)."
    ),
    prefix: str | None = typer.Option(
        None,
        "--prefix",
        help="Replay the bus's topics of this prefix: PREFIX.sightings, .incidents, .heartbeats.",
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="From every partition's first record (the default)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="From the first record appended at or after this ISO 8601 time."
    ),
    offsets: str | None = typer.Option(
        None, "--offsets", help="PARTITION:OFFSET[,...]; other partitions from their beginning."
    ),
    directory: Path = typer.Option(..., "--directory", help="Folder of directory versions."),
    environment: str | None = typer.Option(
        None, "--environment", help="Bus environment (default: the directory's)."
    ),
    bootstrap_servers: str | None = typer.Option(
        None,
        "--bootstrap-server",
        "--bootstrap-servers",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka brokers.",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Resume from (and save progress to) this file, signed with --key-file's key.",
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Discard the --checkpoint (with its ledger and findings file) and start over.",
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write the JSON report with every finding here."
    ),
    key_file: Path | None = typer.Option(
        None,
        "--key-file",
        help="The auditor's key: signs the checkpoint, and opens what is addressed to it.",
    ),
    passphrase_env: str | None = typer.Option(
        None, "--passphrase-env", help="Environment variable holding the key file's passphrase."
    ),
    agreement: Path | None = typer.Option(
        None, "--agreement", help="The producer's sharing agreement: recipients must be in it."
    ),
    heartbeat_interval: float | None = typer.Option(
        None, "--heartbeat-interval", min=0.001, help="Agreed heartbeat interval in seconds."
    ),
    max_skew: float = typer.Option(
        300.0, "--max-skew", min=0.001, help="Seconds allowed between creation and append time."
    ),
    as_of: str = typer.Option(
        "now", "--as-of", help="Judge the last heartbeat's age at this time (ISO 8601 or now)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Verify worker processes (default: one per core; 1: serial, in one process).",
    ),
    batch_size: int = typer.Option(2000, "--batch-size", min=1, max=100_000),
    directory_topic: str | None = typer.Option(
        None,
        "--directory-topic",
        help="The directory topic to read newer versions from (default: PREFIX.directory).",
    ),
    allow_create_time: bool = typer.Option(
        False,
        "--allow-create-time",
        help="Audit a topic that is not LogAppendTime; records without a broker time whose key "
        "was ever revoked, retired or removed are then findings (no_broker_time).",
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="A force's store (SQLite path or postgresql:// URL) to hold to the topic: every "
        "record and tombstone it keeps must be the record at that position (needs a replay from "
        "the beginning, without a checkpoint).",
    ),
    allow_expired_directory: bool = typer.Option(
        False,
        "--allow-expired-directory",
        help="Audit even though the newest directory version has expired (a bus that no longer "
        "issues versions); revocations made after it cannot be known.",
    ),
) -> None:
    """Verify every record of one or several topics: signatures, keys, bindings, chains, skew,
    heartbeats, completeness. With several, each gets its own report (and checkpoint), named
    after the topic beside the path given; the exit status is the worst of theirs."""
    chosen = list(topics) or (
        [f"{prefix}.{f.value}" for f in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS)]
        if prefix
        else []
    )
    if not chosen:
        raise typer.BadParameter("name a --topic (repeatable) or a --prefix", param_hint="--topic")
    worst = 0
    for one in chosen:
        if len(chosen) > 1:
            console.print(f"== {one}", highlight=False)
        try:
            _replay_one(
                topic=one,
                from_beginning=from_beginning,
                since=since,
                offsets=offsets,
                directory=directory,
                environment=environment,
                bootstrap_servers=bootstrap_servers,
                checkpoint=_beside(checkpoint, one, len(chosen)),
                restart=restart,
                report=_beside(report, one, len(chosen)),
                key_file=key_file,
                passphrase_env=passphrase_env,
                agreement=agreement,
                heartbeat_interval=heartbeat_interval,
                max_skew=max_skew,
                as_of=as_of,
                workers=workers,
                batch_size=batch_size,
                directory_topic=directory_topic,
                allow_create_time=allow_create_time,
                allow_expired_directory=allow_expired_directory,
                store=store,
            )
        except typer.Exit as e:
            worst = max(worst, int(e.exit_code or 0))
            if worst in (EXIT_USAGE, EXIT_INTERRUPTED):
                break
    if worst:
        raise typer.Exit(worst)


def _require_heartbeat_key(topic: str, key_file: Path | None, interval: float | None) -> None:
    """Without the key, a heartbeat's promised interval cannot be read, so no silence can be
    judged: saying "clean" would vouch for a freeze nobody looked for (exit 1, "unverifiable")."""
    if topic != topic_beside(topic, Family.HEARTBEATS) or key_file is not None or interval:
        return
    err.print(
        f"{topic}: heartbeats unverifiable without --key-file (to read their promised "
        "interval) or --heartbeat-interval: not judged",
        highlight=False,
    )
    raise typer.Exit(EXIT_FINDINGS)


def _beside(path: Path | None, topic: str, count: int) -> Path | None:
    """With several topics, each one's file beside the path given: audit.json -> audit.T.json."""
    if path is None or count == 1:
        return path
    return path.with_name(f"{path.stem}.{topic}{path.suffix}")


def _replay_one(
    *,
    topic: str,
    from_beginning: bool,
    since: str | None,
    offsets: str | None,
    directory: Path,
    environment: str | None,
    bootstrap_servers: str | None,
    checkpoint: Path | None,
    restart: bool,
    report: Path | None,
    key_file: Path | None,
    passphrase_env: str | None,
    agreement: Path | None,
    heartbeat_interval: float | None,
    max_skew: float,
    as_of: str,
    workers: int | None,
    batch_size: int,
    directory_topic: str | None,
    allow_create_time: bool,
    allow_expired_directory: bool,
    store: str | None = None,
) -> None:
    """Verify every record of a topic: signatures, keys, bindings, chains, skew, heartbeats."""
    _require_heartbeat_key(topic, key_file, heartbeat_interval)
    try:
        start = _start(from_beginning, since, offsets)
        identity, epochs = _auditor_keys(key_file, passphrase_env, checkpoint)
        history = dstore.load_folder(directory)
        env = environment or history.environment
        config = AuditConfig(
            environment=env,
            max_skew=timedelta(seconds=max_skew),
            heartbeat_interval=(
                timedelta(seconds=heartbeat_interval) if heartbeat_interval else None
            ),
            agreement=SharingAgreement.load(agreement) if agreement is not None else None,
        )
        judged_at = parse_time(as_of)
        bootstrap = _bootstrap(bootstrap_servers)
        _follow_directory(
            history,
            bootstrap,
            directory_topic or topic_beside(topic, Family.DIRECTORY),
            directory,
            allow_expired=allow_expired_directory,
        )
        # The heartbeats first: what they vouch for was appended before the replay's end.
        vouched = _vouched(bootstrap, topic, history, env, identity, start, epochs)
        coverage = _store_coverage(store, topic) if store is not None else None
        source = KafkaSource(bootstrap, topic)
        _require_log_append_time(source, allow=allow_create_time)
    except (KafkaUnavailableError, DirectoryExpired, TopicMisconfigured) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_BROKER) from None
    except (IntelbusError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        registry = SchemaRegistry.load() if identity is not None else None

        def run_audit(progress: Callable[[int, int], None]) -> AuditResult:
            return audit(
                source=source,
                history=history,
                config=config,
                start=start,
                identity=identity,
                registry=registry,
                checkpoint=checkpoint,
                restart=restart,
                report=report,
                workers=workers,
                batch_size=batch_size,
                as_of=judged_at,
                progress=progress,
                vouched=vouched,
                store=coverage,
                epochs=epochs,
            )

        result = _with_progress(run_audit, source.topic)
    except KeyboardInterrupt:
        err.print("interrupted; run again with the same --checkpoint to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except AuditStateError as e:
        # The auditor's own state was altered: refuse, touch nothing, say how to start over.
        log.warning("audit.checkpoint_refused", code=e.code)
        err.print(f"[bold red]error:[/] {e.code}: {e}", highlight=False)
        raise typer.Exit(EXIT_BROKER) from None
    except KafkaUnavailableError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_BROKER) from None
    except (IntelbusError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    finally:
        source.close()
    render(console, result.summary, result.sample)
    run = result.run
    console.print(
        f"{run['records_this_run']} records in {run['seconds']}s "
        f"({run['records_per_second']} records/s, {run['workers']} verify workers)"
    )
    if report is not None:
        console.print(f"report: {report}")
    if result.integrity_findings:
        raise typer.Exit(EXIT_FINDINGS)


def _auditor_keys(
    key_file: Path | None, passphrase_env: str | None, checkpoint: Path | None
) -> tuple[AgencyIdentity | None, EpochKeys | None]:
    """The auditor's key (if given) and the encryption epochs of its keyring beside it."""
    identity = _auditor_key(key_file, passphrase_env, checkpoint=checkpoint)
    if key_file is None or identity is None:
        return identity, None
    return identity, load_epochs(key_file, identity.agency_id)


def _store_coverage(location: str, topic: str) -> Coverage:
    """What a force's store holds of ``topic``, read without taking its writer lock.

    Raises:
        IntelbusError: no store there, or it cannot be opened.
    """
    handle = open_store(resolve_store(location, None))
    try:
        return handle.coverage(topic)
    finally:
        handle.close()


def _vouched(
    bootstrap: str,
    topic: str,
    history: DirectoryHistory,
    environment: str,
    identity: AgencyIdentity | None,
    start: StartAt,
    epochs: EpochKeys | None = None,
) -> list[FeedBeat] | None:
    """The heartbeats' vouched stream heads for a completeness check, or None (and why, on
    stderr) when it cannot be made: heartbeats open only with the auditor's key, and only a
    replay from the beginning holds every record they vouch for.

    Raises:
        KafkaUnavailableError: the heartbeats topic exists but could not be read.
    """
    heartbeats = topic_beside(topic, Family.HEARTBEATS)
    if topic == heartbeats or start.kind is not StartKind.BEGINNING:
        return None
    if identity is None:
        err.print(
            "note: completeness not checked: heartbeats open only with the auditor's key "
            "(--key-file)",
            highlight=False,
        )
        return None
    intake = Intake(
        resolver=CachedResolver(history),
        environment=environment,
        identity=identity,
        registry=SchemaRegistry.load(),
        directory=history,
        epochs=epochs,
    )
    try:
        source = KafkaSource(bootstrap, heartbeats)
    except TopicMissing:
        err.print(f"note: completeness not checked: no topic {heartbeats}", highlight=False)
        return None
    try:
        return vouched_heads(source, intake)
    except TopicMissing:
        err.print(f"note: completeness not checked: no topic {heartbeats}", highlight=False)
        return None
    finally:
        source.close()


def _auditor_key(
    key_file: Path | None, passphrase_env: str | None, *, checkpoint: Path | None
) -> AgencyIdentity | None:
    """The auditor's key, if given; required with a checkpoint (which it signs).

    Raises:
        ConfigError: a checkpoint without a key, or an unusable key file.
    """
    if key_file is None:
        if checkpoint is not None:
            # Refused before reading anything: an unsigned checkpoint could be edited unnoticed.
            raise ConfigError(
                "--checkpoint needs --key-file: the checkpoint is signed with the auditor's key "
                "and verified on resume (or audit without --checkpoint)"
            )
        return None
    secret = os.environ.get(passphrase_env) if passphrase_env else None
    return AgencyIdentity.load(key_file, passphrase=secret.encode() if secret else None)


def _require_log_append_time(source: KafkaSource, *, allow: bool) -> None:
    """Refuse (or, allowed, warn about) a topic whose broker clock does not witness arrivals.

    Raises:
        TopicMisconfigured: not LogAppendTime and not allowed (the source is closed).
    """
    kind = source.timestamp_type()
    if kind == "LogAppendTime":
        return
    message = (
        f"{source.topic} uses message.timestamp.type={kind}, not LogAppendTime: the broker's "
        "clock does not witness when its records arrived, so a leaked key could back-date them"
    )
    if not allow:
        source.close()
        raise TopicMisconfigured(message + " (or pass --allow-create-time)")
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def _follow_directory(
    history: DirectoryHistory,
    bootstrap: str,
    topic: str,
    folder: Path,
    *,
    allow_expired: bool,
) -> None:
    """Bring the directory up to date from its topic, and refuse an expired one.

    Raises:
        DirectoryExpired: the newest version has expired (unless allowed).
        KafkaUnavailableError: the cluster cannot be reached.
    """
    follower = DirectoryFollower(history, bootstrap_servers=bootstrap, topic=topic, folder=folder)
    try:
        follower.catch_up()
    finally:
        follower.close()
    if follower.missing:
        err.print(
            f"[yellow]warning:[/] directory topic {topic} does not exist; judging with the "
            "folder's versions only",
            highlight=False,
        )
    for problem in follower.problems[:5]:
        err.print(f"[yellow]warning:[/] directory topic: {problem}", highlight=False)
    health = freshness(history, datetime.now(UTC))
    if health.state is Freshness.EXPIRED:
        if not allow_expired:
            raise DirectoryExpired(health.describe() + " (or pass --allow-expired-directory)")
        err.print(f"[yellow]warning:[/] {health.describe()}", highlight=False)


def _with_progress(
    run_audit: Callable[[Callable[[int, int], None]], AuditResult], topic: str
) -> AuditResult:
    """Run the audit with a progress bar (rate, ETA) on a terminal, and progress logs otherwise."""
    started = time.monotonic()
    if sys.stderr.isatty():
        with _progress_bar() as bar:
            task = bar.add_task("audit", total=None, rate="-")

            def show(done: int, total: int) -> None:
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:,.0f}")

            return run_audit(show)
    last = [started]

    def log_progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5.0 or done >= total:
            last[0] = now
            rate = round(done / max(now - started, 1e-9))
            log.info("audit.progress", topic=topic, records=done, total=total, per_second=rate)

    return run_audit(log_progress)


def _digest_values(
    reports: list[Path],
    topic: str | None,
    directory: Path | None,
    bootstrap: str | None,
    *,
    records_only: bool = False,
) -> list[tuple[str, str, int]]:
    """(where from, digest, record count) of each report, and of a fresh replay of ``topic``.

    The report's digest (records, summary and findings), or with ``records_only`` the records'
    digest alone. Each report is first checked against its own digest.

    Raises:
        ConfigError (ReportInvalid among them), DirectoryExpired, KafkaUnavailableError.
    """
    key = "records" if records_only else "value"
    values: list[tuple[str, str, int]] = []
    for path in reports:
        found = verify_report(path)
        if not found.complete:
            raise ConfigError(f"{path} is the report of an incomplete replay")
        values.append((str(path), found.records if records_only else found.value, found.count))
    if topic is not None:
        if directory is None:
            raise ConfigError("--topic needs --directory")
        history = dstore.load_folder(directory)
        servers = _bootstrap(bootstrap)
        # Judged with the same directory as `audit replay` (authentic and other records are
        # different digest items), so both commands give the same digest for the same topic.
        _follow_directory(
            history,
            servers,
            topic_beside(topic, Family.DIRECTORY),
            directory,
            allow_expired=False,
        )
        source = KafkaSource(servers, topic)
        try:
            result = audit(
                source=source, history=history, config=AuditConfig(environment=history.environment)
            )
        finally:
            source.close()
        d = result.summary["digest"]
        values.append((f"replay of {topic}", str(d[key]), int(d["count"])))
    return values


def digest(
    reports: list[Path] = typer.Option(
        [], "--report", help="A JSON report of `audit replay` (give two to compare them)."
    ),
    expect: str | None = typer.Option(
        None, "--expect", help="The digest another party computed (64 hex characters)."
    ),
    topic: str | None = typer.Option(
        None, "--topic", help="Compute it now by replaying this topic (needs --directory)."
    ),
    directory: Path | None = typer.Option(
        None, "--directory", help="Folder of directory versions."
    ),
    bootstrap_servers: str | None = typer.Option(
        None,
        "--bootstrap-server",
        "--bootstrap-servers",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka brokers.",
    ),
    records_only: bool = typer.Option(
        False,
        "--records",
        help="Compare the records' digest alone (what a force computes from its store), not "
        "the report's digest (records, summary and findings).",
    ),
) -> None:
    """Print a report's digest (records, summary and findings), and compare it with another's."""
    wanted = expect.strip().lower() if expect is not None else None
    if wanted is not None and (
        len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted)
    ):
        raise typer.BadParameter(
            f"{expect!r} is not a digest (64 hex characters)", param_hint="--expect"
        )
    try:
        values = _digest_values(
            reports, topic, directory, bootstrap_servers, records_only=records_only
        )
    except (KafkaUnavailableError, DirectoryExpired) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_BROKER) from None
    except (IntelbusError, OSError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if wanted is not None:
        values.append(("--expect", wanted, -1))
    if not values:
        err.print("[bold red]error:[/] give --report, --topic or --expect")
        raise typer.Exit(EXIT_USAGE)
    for where, value, count in values:
        counted = f" ({count} records)" if count >= 0 else ""
        console.print(f"{value}  {where}{counted}", highlight=False)
    if len(values) > 1:
        if len({v for _, v, _ in values}) == 1:
            console.print("digests match")
        else:
            console.print("[bold red]digests differ[/]")
            raise typer.Exit(EXIT_FINDINGS)


app.command(name="replay")(replay)
app.command(name="digest")(digest)

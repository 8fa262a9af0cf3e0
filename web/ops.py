"""What the operations pages show, without HTTP: feed health, the quarantine, consumer lag and the
inspectorate's audit reports.

* Feeds are judged exactly as ``intelbus store feeds`` judges them (consumers/liveness.py
  :func:`assess` and :func:`missing_records`, the same tolerance and settle defaults). Like that
  command, this reads no record contents, so it writes no access log entry.
* The quarantine is read as ``intelbus store quarantine`` reads it, and like that command writes
  an access log entry (action ``quarantine``, naming the records the rows identify) before
  anything is returned: if the entry cannot be written, nothing is shown (fail closed).
* Lag compares the offsets the store committed for the consumer's group with the broker's log
  end offsets (intelbus.transport.kafka, the only module that speaks to Kafka). A broker that
  cannot be reached is a warning beside the stored offsets, never a failure: the engineer at
  3 a.m. needs the stored half exactly when the broker is the problem. Every broker wait is
  bounded, and the whole call is bounded again by a thread join.
* Audit reports are files in the configured folder, listed by name; a name from a request is only
  ever compared with that list, never joined to a path. Only files the console's own user (or
  root) owns and nobody else may write are listed: a report planted by another local user would
  still match its own (unkeyed) digest. Each report is checked against its own
  digest (consumers.audit.report.verify_report) and a failure is part of what is shown.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from consumers.audit.report import verify_report
from consumers.config import ConsumerConfig
from consumers.liveness import DEFAULT_TOLERANCE, FeedHealth, assess
from intelbus.errors import ConfigError, IntelbusError, KafkaUnavailableError, ReportInvalid
from intelbus.log import get_logger
from intelbus.store import Store
from intelbus.store.access import AccessLog, NewAccess
from intelbus.store.base import QuarantineEntry
from intelbus.transport import kafka as transport
from intelbus.transport.topics import topic_name
from intelbus.trust.completeness import DEFAULT_SETTLE, MissingRange, missing_records

log = get_logger("web.ops")

#: Rows read from the store for the quarantine page before the reason filter is applied.
QUARANTINE_READ: Final = 5000
QUARANTINE_SHOWN: Final = 500
#: The broker's answer for the lag page: per wait, and for the whole call.
BROKER_TIMEOUT_S: Final = 4.0
#: Findings listed on a report's page (the JSON report holds them all).
FINDINGS_SHOWN: Final = 200
#: An audit report file name: no separators, no leading dot, ``.json``.
REPORT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.json")
_REPORT_MAX_BYTES: Final = 256 * 1024 * 1024


class AccessNotLogged(IntelbusError):
    """The access log entry could not be written: nothing is shown."""


def span(value: timedelta) -> str:
    """A duration for a person: ``45 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``."""
    seconds = max(int(value.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


# --- feeds ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedsView:
    health: tuple[FeedHealth, ...]
    missing: tuple[MissingRange, ...]
    now: datetime
    tolerance: float

    @property
    def stale(self) -> int:
        return sum(1 for h in self.health if h.stale)

    @property
    def headline(self) -> str:
        """One line for the top of the page."""
        if not self.health:
            text = "no heartbeat seen yet"
        elif self.stale:
            text = f"{self.stale} stale of {len(self.health)} feed(s)"
        else:
            text = f"all feeds alive ({len(self.health)})"
        if self.missing:
            held = sum(m.count for m in self.missing)
            text += (
                f"; {len(self.missing)} missing range(s), {held} record(s) vouched for and not held"
            )
        return text

    @property
    def ok(self) -> bool:
        return bool(self.health) and not self.stale and not self.missing


def feeds_view(
    store: Store,
    now: datetime,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    settle: timedelta = DEFAULT_SETTLE,
) -> FeedsView:
    """Every feed judged at ``now`` as ``intelbus store feeds`` judges it."""
    beats = store.feeds()
    health = assess(beats, now, tolerance)
    missing = missing_records(beats, store.load_chain(), now, settle)
    ordered = sorted(health, key=lambda h: (not h.stale, h.producer_id, h.topic))
    return FeedsView(tuple(ordered), tuple(missing), now, tolerance)


# --- quarantine ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuarantineView:
    entries: tuple[QuarantineEntry, ...]
    #: reason code -> rows, over the whole quarantine (the store's summary).
    counts: Mapping[str, int]
    reason: str | None
    #: More rows matched than are shown.
    more: bool

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def quarantine_counts(store: Store) -> dict[str, int]:
    """reason code -> quarantined rows (``quarantined:<reason>`` of the store's summary)."""
    prefix = "quarantined:"
    return {k[len(prefix) :]: v for k, v in sorted(store.summary().items()) if k.startswith(prefix)}


def read_quarantine(store: Store, user: str, reason: str | None) -> QuarantineView:
    """The quarantine (filtered by reason code), after writing the access log entry.

    Raises:
        AccessNotLogged: the entry could not be written (nothing may be shown).
    """
    counts = quarantine_counts(store)
    reason = reason or None  # an empty filter is no filter; an unknown code matches nothing
    rows = store.quarantine_entries(limit=QUARANTINE_READ)
    chosen = [q for q in rows if reason is None or q.reason == reason]
    shown = tuple(chosen[:QUARANTINE_SHOWN])
    named = tuple(
        (q.producer_id, q.record_id)
        for q in shown
        if q.producer_id is not None and q.record_id is not None
    )
    query: dict[str, Any] = {"limit": QUARANTINE_SHOWN, "entries": len(shown), "via": "web"}
    if reason is not None:
        query["reason"] = reason
    try:
        AccessLog(store).append(NewAccess(user, "quarantine", named, query, None, None))
    except (IntelbusError, ValueError) as e:
        raise AccessNotLogged(
            f"the access log could not be written ({type(e).__name__}): nothing is shown"
        ) from None
    more = len(chosen) > len(shown) or (len(rows) >= QUARANTINE_READ)
    return QuarantineView(shown, counts, reason, more)


# --- lag -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LagRow:
    topic: str
    partition: int
    #: The next offset the store will read (None: nothing committed for this partition).
    committed: int | None
    #: The broker's log end offset (None: unknown).
    end: int | None

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return max(self.end - (self.committed or 0), 0)


@dataclass(frozen=True, slots=True)
class LagView:
    group: str
    bootstrap: str
    rows: tuple[LagRow, ...]
    #: One line when the broker's half is unknown (unreachable, or a topic it does not have).
    warnings: tuple[str, ...] = ()

    @property
    def total(self) -> int | None:
        lags = [r.lag for r in self.rows]
        if not lags or any(v is None for v in lags):
            return None
        return sum(v for v in lags if v is not None)


def consumer_topics(config: ConsumerConfig) -> list[str]:
    """The topics the consumer reads, named as consumers/agency.py names them."""
    return [topic_name(f, prefix=config.topic_prefix) for f in config.families]


EndOffsets = Mapping[str, Mapping[int, int] | None]


def broker_ends(
    config: ConsumerConfig, topics: Sequence[str], *, timeout_s: float = BROKER_TIMEOUT_S
) -> EndOffsets:
    """The broker's log end offsets of ``topics``, bounded by ``timeout_s`` (plus a margin).

    Raises:
        KafkaUnavailableError: the broker cannot be reached or did not answer in time.
        ConfigError: no bootstrap address, or unusable TLS settings.
    """
    bootstrap = config.bootstrap()
    security = config.transport_security()
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["ends"] = transport.log_end_offsets(
                bootstrap, topics, security=security, timeout_s=timeout_s
            )
        except Exception as e:  # noqa: BLE001 - handed to the caller's thread below
            result["error"] = e

    worker = threading.Thread(target=ask, name="web-lag", daemon=True)
    worker.start()
    worker.join(timeout_s * 2 + 2)
    if worker.is_alive():
        # The client's own bounds failed us: answer now; the daemon thread ends on its own.
        raise KafkaUnavailableError(f"Kafka at {bootstrap} did not answer in time")
    error = result.get("error")
    if isinstance(error, IntelbusError):
        raise error
    if error is not None:
        raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap}: {type(error).__name__}")
    ends: EndOffsets = result["ends"]
    return ends


def lag_view(
    store: Store, config: ConsumerConfig, *, timeout_s: float = BROKER_TIMEOUT_S
) -> LagView:
    """Stored offsets of the consumer's group against the broker's log ends, per partition."""
    topics = consumer_topics(config)
    group = config.group
    stored = {t: store.load_offsets(group, t) for t in topics}
    try:
        bootstrap = config.bootstrap()
    except ConfigError:
        bootstrap = "(no bootstrap_servers in the config)"
    warnings: list[str] = []
    ends: EndOffsets = {}
    try:
        ends = broker_ends(config, topics, timeout_s=timeout_s)
    except ConfigError as e:
        # No address, or TLS settings that cannot be used: say which, it is the operator's fix.
        log.warning("web.lag_broker_unusable", error=type(e).__name__)
        warnings.append(f"the broker at {bootstrap} cannot be used ({e}): lag unknown")
    except IntelbusError as e:
        log.warning("web.lag_broker_unreachable", error=type(e).__name__)
        warnings.append(f"the broker at {bootstrap} cannot be reached: lag unknown")
    rows: list[LagRow] = []
    for topic in topics:
        topic_ends = ends.get(topic)
        if ends and topic_ends is None:
            warnings.append(f"the broker has no topic {topic}")
        partitions = sorted(set(stored[topic]) | set(topic_ends or {}))
        rows.extend(
            LagRow(
                topic,
                p,
                stored[topic].get(p),
                None if topic_ends is None else topic_ends.get(p),
            )
            for p in partitions
        )
    return LagView(group, bootstrap, tuple(rows), tuple(warnings))


# --- audit reports -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFile:
    name: str
    size: int
    modified: datetime


def list_reports(folder: Path) -> list[ReportFile]:
    """The audit report files in ``folder`` (regular files named ``*.json``; no links, no
    sub-folders), newest first. An unreadable folder lists nothing."""
    found: list[ReportFile] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        if not REPORT_NAME.fullmatch(path.name) or path.is_symlink() or not path.is_file():
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if not _trusted(st):
            # Not listed, so not shown: a report's "verified" only says it matches its own
            # unkeyed digest, which a local user who can drop a file in the folder (a shared or
            # world-writable one) can compute for a report of their own making.
            log.warning("web.audit_report_untrusted", report=path.name)
            continue
        found.append(ReportFile(path.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def _trusted(st: os.stat_result) -> bool:
    """A report file the console's own user (or root) owns and nobody else may write."""
    return st.st_uid in {os.getuid(), 0} and not st.st_mode & 0o022


def find_report(folder: Path, name: str) -> Path | None:
    """The listed report called ``name``, or None: the name is only compared with the listing,
    so nothing from a request reaches the file system."""
    for report in list_reports(folder):
        if report.name == name:
            return folder / report.name
    return None


_FINDING_KEYS: Final = (
    "topic",
    "partition",
    "offset",
    "reason",
    "severity",
    "producer_id",
    "message",
)


def _text(value: object) -> str:
    """A figure for display: what the file says, whatever its type (an unverified report may
    hold anything), never a template error."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True)[:200]


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ReportFigures:
    """A report's summary as text, every figure present (``-`` when the file lacks it)."""

    topic: str
    environment: str
    directory_version: str
    verdict: str
    complete: str
    records: str
    authentic: str
    erasures: str
    integrity: str
    warning: str
    records_digest: str
    digest: str
    digest_count: str
    by_reason: tuple[tuple[str, str], ...]
    #: (producer, records, authentic, findings, lowest..highest)
    producers: tuple[tuple[str, str, str, str, str], ...]
    #: (partition, first offset, last offset, records)
    partitions: tuple[tuple[str, str, str, str], ...]
    #: The store check's counts, when the replay checked a force's store.
    store: tuple[tuple[str, str], ...]


def figures(summary: Mapping[str, Any]) -> ReportFigures:
    found = _as_dict(summary.get("findings"))
    digest = _as_dict(summary.get("digest"))
    producers = []
    for p, counts in _as_dict(summary.get("producers")).items():
        c = _as_dict(counts)
        low, high = c.get("lowest_sequence"), c.get("highest_sequence")
        seqs = "-" if low is None else f"{_text(low)}..{_text(high)}"
        producers.append(
            (
                str(p),
                _text(c.get("records")),
                _text(c.get("authentic")),
                _text(c.get("findings")),
                seqs,
            )
        )
    partitions = [
        (
            str(p),
            _text(_as_dict(span).get("first_offset")),
            _text(_as_dict(span).get("last_offset")),
            _text(_as_dict(span).get("records")),
        )
        for p, span in _as_dict(summary.get("partitions")).items()
    ]
    return ReportFigures(
        topic=_text(summary.get("topic")),
        environment=_text(summary.get("environment")),
        directory_version=_text(summary.get("directory_version")),
        verdict=_text(summary.get("verdict")),
        complete=_text(summary.get("complete")),
        records=_text(summary.get("records")),
        authentic=_text(summary.get("authentic")),
        erasures=_text(summary.get("erasures")),
        integrity=_text(found.get("integrity")),
        warning=_text(found.get("warning")),
        records_digest=_text(digest.get("records")),
        digest=_text(digest.get("value")),
        digest_count=_text(digest.get("count")),
        by_reason=tuple((str(k), _text(v)) for k, v in _as_dict(found.get("by_reason")).items()),
        producers=tuple(producers),
        partitions=tuple(partitions),
        store=tuple((str(k), _text(v)) for k, v in _as_dict(summary.get("store")).items()),
    )


@dataclass(frozen=True, slots=True)
class AuditReportView:
    name: str
    verified: bool
    #: Why it failed its own verification (names the report by its file name only).
    problem: str | None
    #: The summary as the file states it (None when the file could not be read as a report).
    figures: ReportFigures | None
    #: The run's facts (times, options), as text.
    run: tuple[tuple[str, str], ...] = ()
    #: The first findings, each as the :data:`_FINDING_KEYS` texts.
    findings: tuple[dict[str, str], ...] = ()
    findings_total: int = 0


def load_report(path: Path) -> AuditReportView:
    """A report file, checked against its own digest; a failing one is still described (what it
    states, marked unverified), never hidden."""
    name = path.name
    problem: str | None = None
    try:
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return AuditReportView(
                name, False, f"report {name} is larger than the console reads", None
            )
        held = path.read_bytes()
        try:
            verify_report(path)
            # What passed must be what is shown: a file replaced meanwhile fails.
            if path.read_bytes() != held:
                raise ReportInvalid(f"report {name} changed while it was being read")
        except ReportInvalid as e:
            problem = str(e).replace(str(path), name)
    except OSError as e:
        return AuditReportView(name, False, f"report {name} cannot be read: {e.strerror}", None)
    try:
        data = _as_dict(json.loads(held))
    except ValueError:
        return AuditReportView(name, False, problem or f"report {name} is not JSON", None)
    summary = data.get("summary")
    findings = [f for f in data.get("findings") or [] if isinstance(f, dict)]
    return AuditReportView(
        name,
        problem is None,
        problem,
        figures(summary) if isinstance(summary, dict) else None,
        tuple((str(k), _text(v)) for k, v in _as_dict(data.get("run")).items()),
        tuple({k: _text(f.get(k)) for k in _FINDING_KEYS} for f in findings[:FINDINGS_SHOWN]),
        len(findings),
    )

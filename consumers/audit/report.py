"""The audit's outputs: findings streamed to disk, the JSON report, and the human summary.

Findings are appended to a JSON Lines *spool* as they are found (never held in memory without
bound); the final JSON report is written by streaming the spool into its ``findings`` array, after
a summary that needs no per-record state. The summary holds no timing, so two replays of the same
records produce the same report; run times go to the separate ``run`` object. The spool and the
report are 0600 and never written through a symbolic link.

The report's digest covers the findings and the summary as well as the records
(:func:`consumers.audit.digest.report_digest`); :func:`verify_report` recomputes it from a report
file, so a report whose findings were edited afterwards is refused. The spool keeps a running
BLAKE2b of its bytes: a signed checkpoint records it, and a resumed spool must still match it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from consumers.audit.checkpoint import START_OVER
from consumers.audit.digest import report_digest
from consumers.audit.findings import Finding
from consumers.audit.state import AuditState
from intelbus.errors import FindingsAltered, ReportInvalid
from intelbus.files import PRIVATE_MODE, atomic_writer, open_private_existing, open_private_new

#: v3: the summary's digest has ``records`` (the records only, what a force compares with) and
#: ``value`` (records, summary and findings). v2: per producer ``lowest_sequence`` and
#: ``highest_sequence`` (v1 had ``first_sequence``/``last_sequence``), ``chain_reorder`` a warning.
REPORT_FORMAT = "intelbus.audit.report/v3"
SAMPLE_FINDINGS = 20
#: Summary entries the report's digest leaves out: itself, and what the auditor could decrypt
#: (that depends on whether it holds its key, not on the topic or on what it found).
_NOT_DIGESTED = frozenset({"digest", "contents"})
_SPOOL_PERSON = b"ibus-audit-spool"


def _spool_hash() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32, person=_SPOOL_PERSON)


class FindingSpool:
    """An append-only JSON Lines file of findings; cut back to a checkpoint's length on resume.

    The file is 0600 and never reached through a symbolic link: a new spool replaces whatever was
    at the path (a link there is removed, not followed), a resumed one must be a private regular
    file, and it is read back through the same open file, never reopened by name.
    """

    def __init__(
        self, path: Path, *, resume_at: int | None = None, expect_digest: str | None = None
    ) -> None:
        """Start a new spool at ``path``, or resume the one there at byte ``resume_at``, whose
        first ``resume_at`` bytes must have the digest ``expect_digest`` (a signed checkpoint's).

        Nothing is cut or written before that is checked.

        Raises:
            FindingsAltered: the bytes the checkpoint accounts for are not the ones it signed.
            InsecureFileError: resuming a spool that is a link, or that group or others may access.
            OSError: the file cannot be created or opened.
        """
        self.path = path
        self._hash = _spool_hash()
        fh: IO[bytes]
        if resume_at is None:
            path.unlink(missing_ok=True)
            fh = open_private_new(path)
        else:
            fh = open_private_existing(path, what="audit findings file")
            try:
                self._hash_prefix(fh.fileno(), resume_at)
                if expect_digest is not None and self._hash.hexdigest() != expect_digest:
                    raise FindingsAltered(
                        f"the findings file {path.name} does not hold the findings the signed "
                        "checkpoint accounts for (edited since); " + START_OVER
                    )
                os.ftruncate(fh.fileno(), resume_at)
            except BaseException:
                fh.close()
                raise
        self._fh = fh
        self._fh.seek(0, os.SEEK_END)

    def _hash_prefix(self, fd: int, length: int) -> None:
        offset = 0
        while offset < length:
            chunk = os.pread(fd, min(1 << 16, length - offset), offset)
            if not chunk:
                break
            self._hash.update(chunk)
            offset += len(chunk)

    def write(self, finding: Finding) -> None:
        data = json.dumps(finding.to_json(), separators=(",", ":")).encode() + b"\n"
        self._hash.update(data)
        self._fh.write(data)

    def sync(self) -> int:
        """Flush to disk; the byte length a checkpoint records."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def digest(self) -> str:
        """BLAKE2b-256 of every byte written so far (what a checkpoint signs with the length)."""
        return str(self._hash.copy().hexdigest())

    def close(self) -> None:
        self._fh.close()

    def lines(self) -> Iterator[bytes]:
        """The findings written so far, one JSON document per item (blank lines skipped)."""
        self._fh.flush()
        fd = self._fh.fileno()
        offset = 0
        pending = b""
        while chunk := os.pread(fd, 1 << 16, offset):
            offset += len(chunk)
            *complete, pending = (pending + chunk).split(b"\n")
            yield from (line for line in complete if line.strip())
        if pending.strip():
            yield pending

    def findings(self, limit: int | None = None) -> list[Finding]:
        return [Finding.from_json(json.loads(line)) for line in islice(self.lines(), limit)]


def verdict(state: AuditState, *, complete: bool) -> str:
    if not complete:
        return "incomplete"
    if state.integrity:
        return "integrity findings"
    return "clean with warnings" if state.warnings else "clean"


def summary_facts(summary_obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a summary the report's digest covers."""
    return {k: v for k, v in summary_obj.items() if k not in _NOT_DIGESTED}


def summary(
    state: AuditState,
    *,
    environment: str,
    directory_version: int,
    complete: bool,
    decrypting: bool,
    findings: Iterable[Mapping[str, Any]],
    store: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's summary: deterministic for the same records (no times of the run).

    ``findings`` are every finding of the report, in its order (their JSON objects): the
    digest's ``value`` covers them, the summary and the records.
    """
    out: dict[str, Any] = {
        "topic": state.topic,
        "environment": environment,
        "directory_version": directory_version,
        "complete": complete,
        "verdict": verdict(state, complete=complete),
        "records": state.records,
        "authentic": state.authentic,
        "erasures": state.erasures,
        "findings": {
            "integrity": state.integrity,
            "warning": state.warnings,
            "by_reason": dict(sorted(state.by_reason.items())),
        },
        "producers": {
            p: {
                "records": c.records,
                "authentic": c.authentic,
                "findings": c.findings,
                "lowest_sequence": c.lowest_sequence,
                "highest_sequence": c.highest_sequence,
            }
            for p, c in sorted(state.producers.items())
        },
        "partitions": {
            str(p): {
                "first_offset": s.first_offset,
                "last_offset": s.last_offset,
                "records": s.records,
            }
            for p, s in sorted(state.partitions.items())
        },
        "contents": {
            "checked": decrypting,
            "addressed": state.addressed,
            "decrypted_and_decoded": state.decrypted,
        },
    }
    if store is not None:
        # A force's store checked against the topic (consumers/audit/storecheck.py).
        out["store"] = dict(store)
    records = state.digest.hexdigest()
    out["digest"] = {
        "count": state.digest.count,
        "records": records,
        "value": report_digest(records, summary_facts(out), findings),
    }
    return out


def spooled(spool: FindingSpool) -> Iterator[dict[str, Any]]:
    """Every finding in ``spool``, as the JSON objects the report holds."""
    for line in spool.lines():
        found = json.loads(line)
        if isinstance(found, dict):
            yield found


@dataclass(frozen=True, slots=True)
class ReportDigest:
    """What a verified report states: its digest, its records digest and record count."""

    value: str
    records: str
    count: int
    complete: bool


def _field(obj: object, path: str) -> object:
    """``obj[a][b]...`` for ``path`` ``a.b...``.

    Raises:
        ReportInvalid: a part is missing (the message names the dotted path).
    """
    here = obj
    for part in path.split("."):
        if not isinstance(here, dict) or part not in here:
            raise ReportInvalid(f"no {path}")
        here = here[part]
    return here


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportInvalid("a count is not a non-negative integer")
    return value


def verify_report(path: Path) -> ReportDigest:
    """Read a JSON report and check that it matches its own digest.

    Raises:
        ReportInvalid: unreadable, not a report of this format, a field missing or of the wrong
            type, findings that do not add up to the summary's counts, or a digest that does not
            match the findings and summary (edited after it was written).
    """
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise ReportInvalid(f"report {path} cannot be read: {e.strerror}") from e
    except ValueError as e:
        raise ReportInvalid(f"report {path} is not JSON (truncated?)") from e
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ReportInvalid(f"{path} is not an audit report of this version ({REPORT_FORMAT})")
    try:
        summary_obj = _field(data, "summary")
        findings = _field(data, "findings")
        stated = _field(summary_obj, "digest.value")
        records = _field(summary_obj, "digest.records")
        count = _count(_field(summary_obj, "digest.count"))
        counted = _count(_field(summary_obj, "findings.integrity")) + _count(
            _field(summary_obj, "findings.warning")
        )
        complete = _field(summary_obj, "complete")
        if not (
            isinstance(summary_obj, dict)
            and isinstance(stated, str)
            and isinstance(records, str)
            and isinstance(complete, bool)
            and isinstance(findings, list)
            and all(isinstance(f, dict) for f in findings)
        ):
            raise ReportInvalid("a digest field or a finding has the wrong type")
    except ReportInvalid as e:
        raise ReportInvalid(f"report {path} is malformed: {e}") from None
    if counted != len(findings):
        raise ReportInvalid(
            f"report {path} lists {len(findings)} findings but its summary counts {counted}"
        )
    try:
        recomputed = report_digest(records, summary_facts(summary_obj), findings)
    except ValueError:
        raise ReportInvalid(
            f"report {path} is malformed: its records digest is not 64 hex characters"
        ) from None
    if recomputed != stated:
        raise ReportInvalid(
            f"report {path} does not match its digest: its findings or summary were changed "
            "after it was written"
        )
    return ReportDigest(stated, records, count, complete)


def write_report(
    path: Path, summary_obj: dict[str, Any], run: dict[str, Any], spool: FindingSpool
) -> None:
    """Write the JSON report: summary, run facts, then every finding streamed from the spool.

    The report is created 0600 beside ``path`` and renamed over it (never written through a link;
    see :func:`intelbus.files.atomic_writer`).
    """
    with atomic_writer(path, mode=PRIVATE_MODE) as out:
        head = {"format": REPORT_FORMAT, "summary": summary_obj, "run": run}
        text = json.dumps(head, indent=1)
        out.write(text[: text.rfind("}")].rstrip().encode() + b',\n "findings": [')
        first = True
        for line in spool.lines():
            out.write((b"\n  " if first else b",\n  ") + line)
            first = False
        out.write(b"\n ]\n}\n")


def render(console: Console, summary_obj: dict[str, Any], sample: list[Finding]) -> None:
    """The human summary: per producer, per finding, partitions, the digest and the verdict."""
    s = summary_obj
    console.print(
        f"audit of [bold]{s['topic']}[/] (environment {s['environment']}, directory "
        f"v{s['directory_version']}): {s['records']} records, {s['authentic']} authentic"
    )
    if s.get("store"):
        st = s["store"]
        console.print(
            f"store checked against the topic: {st['rows']} row(s), {st['matched']} matched, "
            f"{st['mismatched']} mismatched; tombstones: {st['erased']} erased, "
            f"{st['pruned']} pruned"
        )
    if s.get("erasures"):
        console.print(
            f"{s['erasures']} erasure record(s): each erased its target at every agency holding "
            "it; the erased records are still on the topic, verified and digested"
        )
    producers = Table(title="per producer")
    for col in ("producer", "records", "authentic", "findings", "sequences"):
        producers.add_column(col, justify="left" if col == "producer" else "right")
    for p, c in s["producers"].items():
        seqs = (
            "-"
            if c["lowest_sequence"] is None
            else f"{c['lowest_sequence']}..{c['highest_sequence']}"
        )
        producers.add_row(p, str(c["records"]), str(c["authentic"]), str(c["findings"]), seqs)
    console.print(producers)
    if s["findings"]["by_reason"]:
        reasons = Table(title="findings")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        for reason, n in s["findings"]["by_reason"].items():
            reasons.add_row(reason, str(n))
        console.print(reasons)
    parts = Table(title="partitions")
    for col in ("partition", "first offset", "last offset", "records"):
        parts.add_column(col, justify="right")
    for p, span in s["partitions"].items():
        parts.add_row(p, str(span["first_offset"]), str(span["last_offset"]), str(span["records"]))
    console.print(parts)
    for f in sample:
        console.print(
            f"  [{f.severity.value}] {f.reason.value} at {f.topic}[{f.partition}]@{f.offset}: {f.message}",
            highlight=False,
            markup=False,
        )
    total = s["findings"]["integrity"] + s["findings"]["warning"]
    if total > len(sample):
        console.print(f"  ... {total - len(sample)} more in the JSON report")
    if s["contents"]["checked"]:
        c = s["contents"]
        console.print(
            f"contents: {c['addressed']} addressed to the auditor, {c['decrypted_and_decoded']} opened and decoded"
        )
    console.print(f"records digest ({s['digest']['count']} records): {s['digest']['records']}")
    console.print(f"report digest (records, summary and findings): {s['digest']['value']}")
    colour = {"clean": "green", "clean with warnings": "yellow"}.get(s["verdict"], "red")
    console.print(
        f"verdict: [bold {colour}]{s['verdict']}[/] ({s['findings']['integrity']} integrity, "
        f"{s['findings']['warning']} warning)"
    )

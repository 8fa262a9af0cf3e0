"""The audit's outputs: findings streamed to disk, the JSON report, and the human summary.

Findings are appended to a JSON Lines *spool* as they are found (never held in memory without
bound); the final JSON report is written by streaming the spool into its ``findings`` array, after
a summary that needs no per-record state. The summary holds no timing, so two replays of the same
records produce the same report; run times go to the separate ``run`` object. The spool and the
report are 0600 and never written through a symbolic link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from consumers.audit.findings import Finding
from consumers.audit.state import AuditState
from intelbus.files import PRIVATE_MODE, atomic_writer, open_private_existing, open_private_new

#: v2: per producer ``lowest_sequence``/``highest_sequence`` (v1 had ``first_sequence`` and
#: ``last_sequence``, the last one seen), and ``chain_reorder`` is a warning.
REPORT_FORMAT = "intelbus.audit.report/v2"
SAMPLE_FINDINGS = 20


class FindingSpool:
    """An append-only JSON Lines file of findings; cut back to a checkpoint's length on resume.

    The file is 0600 and never reached through a symbolic link: a new spool replaces whatever was
    at the path (a link there is removed, not followed), a resumed one must be a private regular
    file, and it is read back through the same open file, never reopened by name.
    """

    def __init__(self, path: Path, *, resume_at: int | None = None) -> None:
        """Start a new spool at ``path``, or resume the one there at byte ``resume_at``.

        Raises:
            InsecureFileError: resuming a spool that is a link, or that group or others may access.
            OSError: the file cannot be created or opened.
        """
        self.path = path
        fh: IO[bytes]
        if resume_at is None:
            path.unlink(missing_ok=True)
            fh = open_private_new(path)
        else:
            fh = open_private_existing(path, what="audit findings file")
            os.ftruncate(fh.fileno(), resume_at)
        self._fh = fh
        self._fh.seek(0, os.SEEK_END)

    def write(self, finding: Finding) -> None:
        self._fh.write(json.dumps(finding.to_json(), separators=(",", ":")).encode() + b"\n")

    def sync(self) -> int:
        """Flush to disk; the byte length a checkpoint records."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

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


def summary(
    state: AuditState,
    *,
    environment: str,
    directory_version: int,
    complete: bool,
    decrypting: bool,
) -> dict[str, Any]:
    """The report's summary: deterministic for the same records (no times of the run)."""
    return {
        "topic": state.topic,
        "environment": environment,
        "directory_version": directory_version,
        "complete": complete,
        "verdict": verdict(state, complete=complete),
        "records": state.records,
        "authentic": state.authentic,
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
        "digest": {"count": state.digest.count, "value": state.digest.hexdigest()},
    }


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
    console.print(f"digest ({s['digest']['count']} records): {s['digest']['value']}")
    colour = {"clean": "green", "clean with warnings": "yellow"}.get(s["verdict"], "red")
    console.print(
        f"verdict: [bold {colour}]{s['verdict']}[/] ({s['findings']['integrity']} integrity, "
        f"{s['findings']['warning']} warning)"
    )

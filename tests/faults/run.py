"""The report card: the fault matrix on a real 3-node cluster, plus the attack and fuzz suites,
merged into ``docs/report-card.json`` and ``docs/report-card.md``.

Run it with ``scripts/faults`` (or ``python -m tests.faults``). Every figure on the card comes from
this one run; a suite that is missing or did not run is said to be so, never shown as zeros.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from deploy.kafka.jars import KAFKA_VERSION
from tests.faults.checker import CheckReport
from tests.faults.scenarios import REPO, CaseResult, FaultSetupError, matrix, open_bed
from tests.integration.conftest import SCRIPT as PG_SCRIPT
from tests.integration.conftest import URL_ENV as PG_URL_ENV
from tests.integration.conftest import fresh_postgres_database

ATTACK_REPORT_ENV = "INTELBUS_ATTACK_REPORT"
LIMITS = (
    "kill -9 is not power loss: the page cache survives a killed process, so nothing here shows "
    "durability against a host crash or a lost disk write cache.",
    "One host: the three brokers share one machine, its clock, its disk and its CPUs "
    f"({os.cpu_count()} here); a correlated host failure takes the whole cluster.",
    "Loopback only: network faults come from a userspace TCP proxy in front of each broker's client "
    "and replication listener (pass, delay, trickle, blackhole, reset); the controller listener is "
    "not proxied, and there is no packet loss, reordering or asymmetric partition below TCP.",
    "Every broker advertises its proxy's port in the fault matrix, so all client and replication "
    "traffic of every case passed through the proxy (in pass mode outside the fault window).",
    "The producer's delivery, request and metadata timeouts are shortened (15 s, 5 s, 10 s) so sends "
    "to a dead cluster fail in seconds; acks=all, idempotence, max in flight 5 and no compression are "
    "the bus's own settings.",
    "The consumer is checked after the producer finished and faults healed (and, in the consumer "
    "cases, across its own crashes). The store is SQLite, and PostgreSQL in the consumer crash "
    "cases marked so; the disk-full case is SQLite's alone (a file-size limit on the consumer "
    "process does not reach a database server), and no case kills the PostgreSQL server itself.",
    "Fault timing follows acknowledgement counts, not wall-clock instants, so a rerun inflicts the "
    "same faults at the same points of the stream, but the interleaving inside Kafka differs.",
    "A passing matrix shows these faults did not lose or duplicate anything in these runs; it is "
    "evidence, not proof, of the absence of such bugs.",
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, Any]:
    """The versions SECURITY.md asks for, and the machine."""
    return {
        "kafka": KAFKA_VERSION,
        "kafka-python": _version("kafka-python"),
        "pynacl": _version("pynacl"),
        "libsodium": "bundled with PyNaCl " + _version("pynacl"),
        "fastavro": _version("fastavro"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def run_hostile_suites(report_file: Path) -> dict[str, Any]:
    """pytest tests/attacks tests/fuzz with ``INTELBUS_ATTACK_REPORT`` set; their lines merged."""
    present = [p for p in ("tests/attacks", "tests/fuzz") if any((REPO / p).glob("test_*.py"))]
    for prop in (
        "tests/property/test_consumer_auditor_agree.py",
        "tests/property/test_signed_values.py",
    ):
        if (REPO / prop).is_file():
            present.append(prop)
    if not present:
        return {"ran": False, "why": "the attack and fuzz suites have no tests in this tree yet"}
    report_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", *present, "-q", "-p", "no:cacheprovider"]
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, ATTACK_REPORT_ENV: str(report_file)},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = []
    if report_file.is_file():
        for line in report_file.read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {
        "ran": True,
        "paths": present,
        "command": f"{ATTACK_REPORT_ENV}=<file> " + shlex.join(["pytest", *cmd[3:]]),
        "pytest_exit": proc.returncode,
        "pytest_summary": tail[-1] if tail else "",
        "seconds": round(time.monotonic() - started, 1),
        "attacks": summarise_attacks([x for x in lines if x.get("suite") == "attacks"]),
        "genuine": summarise_genuine([x for x in lines if x.get("suite") == "genuine"]),
        "fuzz": summarise_fuzz([x for x in lines if x.get("suite") == "fuzz"]),
        "availability": summarise_availability(
            [x for x in lines if x.get("suite") == "availability"]
        ),
        "completeness": summarise_completeness(
            [x for x in lines if x.get("suite") == "completeness"]
        ),
    }


# Card rows: the attack classes (SECURITY.md's table and issue 14's), matched on case names.
ATTACK_CLASSES = {
    "forged": ("forg", "unknown_key", "unknown-key", "unsigned", "wrong_signature", "impostor"),
    "tampered": ("tamper", "flip", "trunc", "bit"),
    "spliced": ("splic", "mix", "swap"),
    "replayed": ("replay",),
    "forwarded": ("forward",),
    "wrong place (topic, environment, partition)": ("cross_", "reorder", "partition"),
    "key compromise and back-dating": ("revoked", "expired_key", "backdat", "stolen_admin"),
    "fast-forward": ("fast_forward",),
    "laundering (amendments under policy)": ("laundering",),
    "squatting (record ids)": ("squatting",),
    "extraneous (foreign amendments)": ("foreign", "extraneous"),
    "recovery from a leaked key": ("recovery",),
    "endless data (bounds, bombs)": ("bomb", "oversize", "bounds"),
    "indefinite freeze (heartbeats)": ("freeze",),
    "signed hostile values (bounds, time)": ("hostile_value",),
    "whose is this (stores, keys, policies)": ("ownership",),
    "the auditor's own state and rights": ("auditor", "checkpoint"),
    "local user (files, links, modes)": ("local_user",),
    "erasure (of others' records, of amendments, hidden targets)": ("erasure",),
}


def summarise_attacks(lines: list[dict[str, Any]]) -> dict[str, Any]:
    if not lines:
        return {"cases": 0, "note": "the attack suite wrote no results"}
    accepted = [x for x in lines if x.get("outcome") != "rejected"]
    changed = [x for x in lines if not x.get("trusted_state_unchanged", False)]
    wrong_reason = [
        x
        for x in lines
        if x.get("outcome") == "rejected" and x.get("reason") != x.get("expected_reason")
    ]
    classes: dict[str, dict[str, int]] = {}
    for name, keys in ATTACK_CLASSES.items():
        hits = [x for x in lines if any(k in str(x.get("case", "")).lower() for k in keys)]
        classes[name] = {
            "cases": len(hits),
            "accepted": sum(1 for x in hits if x.get("outcome") != "rejected"),
        }
    return {
        "cases": len(lines),
        "by_source": dict(Counter(str(x.get("source")) for x in lines)),
        "rejected": len(lines) - len(accepted),
        "accepted": len(accepted),
        "accepted_cases": sorted({str(x.get("case")) for x in accepted})[:20],
        "trusted_state_changed": len(changed),
        "rejected_with_another_reason": len(wrong_reason),
        "classes": classes,
    }


def summarise_genuine(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """After each attack, CST's next genuine records: how many were published, how many kept."""
    if not lines:
        return {"cases": 0, "note": "no attack case checked the genuine feed after it"}
    published = sum(int(x.get("published", 0)) for x in lines)
    kept = sum(int(x.get("kept", 0)) for x in lines)
    return {
        "cases": len(lines),
        "published": published,
        "kept": kept,
        "lost": published - kept,
        "lost_cases": sorted(
            {
                str(x.get("case"))
                for x in lines
                if int(x.get("kept", 0)) < int(x.get("published", 0))
            }
        )[:20],
    }


def summarise_availability(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Validly signed hostile values: how many stopped a consumer (issue 20)."""
    if not lines:
        return {"cases": 0, "note": "no case delivered a signed hostile value"}
    stopped = sorted({str(x.get("case")) for x in lines if x.get("stopped")})
    return {"cases": len(lines), "stopped": len(stopped), "stopped_cases": stopped[:20]}


def summarise_completeness(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Records withheld while heartbeats flowed: how many went unreported (issue 20)."""
    if not lines:
        return {"cases": 0, "note": "no case withheld records"}
    withheld = sum(int(x.get("withheld", 0)) for x in lines)
    reported = sum(min(int(x.get("reported", 0)), int(x.get("withheld", 0))) for x in lines)
    return {
        "cases": len(lines),
        "withheld": withheld,
        "reported": reported,
        "unreported": withheld - reported,
    }


def summarise_fuzz(lines: list[dict[str, Any]]) -> dict[str, Any]:
    if not lines:
        return {"targets": 0, "note": "the fuzz suite wrote no results"}
    targets: dict[str, dict[str, int]] = {}
    for x in lines:
        t = targets.setdefault(
            str(x.get("target")), {"examples": 0, "typed_errors": 0, "crashes": 0}
        )
        for k in t:
            t[k] += int(x.get(k, 0))
    return {
        "targets": len(targets),
        "examples": sum(t["examples"] for t in targets.values()),
        "typed_errors": sum(t["typed_errors"] for t in targets.values()),
        "crashes": sum(t["crashes"] for t in targets.values()),
        "by_target": targets,
    }


def build_card(
    cases: list[CaseResult],
    hostile: dict[str, Any],
    *,
    seed: int,
    scale: int,
    command: str,
    seconds: float,
) -> dict[str, Any]:
    fault_totals = {
        k: sum(int(c.check.get(k) or 0) for c in cases)
        for k in (
            "acknowledged",
            "lost",
            "topic_duplicates",
            "store_duplicates",
            "store_missing",
            "sequence_gaps",
            "offset_gaps",
            "order_violations",
            "inconsistent_offsets",
            "unexpected",
        )
    }
    done: dict[str, bool | None] = {
        "every fault case passed": all(c.passed for c in cases) and bool(cases),
        "0 acknowledged records lost": fault_totals["lost"] == 0
        and fault_totals["store_missing"] == 0
        and all(not c.error for c in cases),
        "0 duplicate rows in any store": fault_totals["store_duplicates"] == 0
        and all(not c.error for c in cases),
    }
    if hostile.get("ran"):
        attacks = hostile["attacks"]
        fuzz = hostile["fuzz"]
        genuine = hostile.get("genuine", {})
        done["0 hostile records accepted"] = (
            attacks.get("cases", 0) > 0 and attacks.get("accepted", 1) == 0
        )
        done["0 genuine records lost to an attack"] = (
            genuine.get("cases", 0) > 0 and genuine.get("lost", 1) == 0
        )
        done["0 consumer crashes from hostile input"] = (
            fuzz.get("targets", 0) > 0
            and fuzz.get("crashes", 1) == 0
            and hostile["pytest_exit"] == 0
        )
        avail = hostile.get("availability", {})
        done["0 consumers stopped by a hostile record"] = (
            avail.get("cases", 0) > 0 and avail.get("stopped", 1) == 0
        )
        whole = hostile.get("completeness", {})
        done["0 records withheld and not reported"] = (
            whole.get("cases", 0) > 0 and whole.get("unreported", 1) == 0
        )
    else:
        done["0 hostile records accepted"] = None
        done["0 genuine records lost to an attack"] = None
        done["0 consumer crashes from hostile input"] = None
        done["0 consumers stopped by a hostile record"] = None
        done["0 records withheld and not reported"] = None
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "seed": seed,
        "scale": scale,
        "seconds": round(seconds, 1),
        "versions": versions(),
        "cluster": {
            "nodes": 3,
            "replication_factor": 3,
            "min_insync_replicas": 2,
            "unclean_leader_election": False,
            "producer": "acks=all, idempotent, max.in.flight 5, no compression; Publisher.publish_many",
            "consumer": "intelbus consume (SQLite store, PostgreSQL where the case says so; "
            "offsets stored with the records)",
        },
        "done_when": done,
        "faults": {"totals": fault_totals, "cases": [c.to_dict() for c in cases]},
        "hostile_input": hostile,
        "limits": list(LIMITS),
        "must_be_zero": list(CheckReport.MUST_BE_ZERO),
    }


def _mark(v: bool | None) -> str:
    return "not run" if v is None else ("yes" if v else "**NO**")


def _issue20_lines(h: dict[str, Any]) -> list[str]:
    """The card's lines on signed hostile values and on completeness (issue 20)."""
    out: list[str] = []
    v = h.get("availability", {})
    if v.get("cases"):
        out += [
            f"Signed hostile values (a legitimate key, values no bound allowed): {v['cases']} "
            f"cases; **consumers stopped by a hostile record {v['stopped']}** (an untyped "
            "error, or a store a restarted consumer could not read back).",
            "",
        ]
    else:
        out += [f"Signed hostile values: {v.get('note', 'not measured')}.", ""]
    c = h.get("completeness", {})
    if c.get("cases"):
        out += [
            f"Completeness: {c['cases']} cases withheld or deleted {c['withheld']} records "
            f"that heartbeats vouched for; reported missing {c['reported']}, "
            f"**records withheld and not reported {c['unreported']}**.",
            "",
        ]
    else:
        out += [f"Completeness: {c.get('note', 'not measured')}.", ""]
    return out


def to_markdown(card: dict[str, Any]) -> str:
    v = card["versions"]
    out = [
        "# Report card: faults and hostile input",
        "",
        f"Generated {card['generated_at']} by `{card['command']}` (seed {card['seed']}, "
        f"scale {card['scale']}, {card['seconds']:.0f} s). Regenerate with the same command; "
        "the figures come from that one run.",
        "",
        "## Done when",
        "",
        "| criterion | met |",
        "|---|---|",
        *(f"| {k} | {_mark(val)} |" for k, val in card["done_when"].items()),
        "",
        "## Fault matrix (3 KRaft nodes, RF 3, min ISR 2, acks=all, idempotent producer)",
        "",
        "| case | fault | records | acked | lost | topic dups | store dups | missing from store "
        "| gaps | order | inconsistent | unexpected | quarantined | passed | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in card["faults"]["cases"]:
        k = c["check"]
        if c["error"]:
            out.append(
                f"| {c['name']} | {c['fault']} | {c['records']} | - | - | - | - | - | - | - | - | - | - "
                f"| **NO** (error: {c['error'][:160].replace('|', '/')}) | {c['seconds']} |"
            )
            continue
        q = ", ".join(f"{n} {r}" for r, n in sorted(k.get("quarantined", {}).items())) or "0"
        out.append(
            f"| {c['name']} | {c['fault']} | {c['records']} | {k['acknowledged']} | {k['lost']} "
            f"| {k['topic_duplicates']} | {k['store_duplicates']} | {k['store_missing']} "
            f"| {k['sequence_gaps']}+{k['offset_gaps']} | {k['order_violations']} "
            f"| {k['inconsistent_offsets']} | {k['unexpected']} | {q} | {_mark(c['passed'])} | {c['seconds']} |"
        )
    out += [
        "",
        "Gaps are sequence gaps + offset gaps. Topic duplicates are allowed (at-least-once: an "
        "indeterminate send is resent with the same bytes); the consumer refuses the second copy as "
        "a `chain_replay` (or `chain_duplicate` when it is the stream's newest record) and the "
        "store keeps one row.",
        "",
        "### Expectations and figures per case",
        "",
    ]
    for c in card["faults"]["cases"]:
        exp = "; ".join(f"{name}: {_mark(ok)}" for name, ok in c["expectations"].items())
        figs = ", ".join(f"{name}={val}" for name, val in c["figures"].items())
        out.append(f"- **{c['name']}**: {exp or '-'}. Figures: {figs or '-'}.")
    out += ["", "## Hostile input (attack suite and fuzzing)", ""]
    h = card["hostile_input"]
    if not h.get("ran"):
        out.append(f"**Not run**: {h.get('why')}. No figure is claimed for it on this card.")
    else:
        a, f = h["attacks"], h["fuzz"]
        out += [
            f"`{h['command']}`: pytest exit {h['pytest_exit']} ({h['pytest_summary']}).",
            "",
        ]
        if a.get("cases"):
            out += [
                f"Attack cases: {a['cases']} ({', '.join(f'{s} {n}' for s, n in a['by_source'].items())}); "
                f"rejected {a['rejected']}, **accepted {a['accepted']}**, trusted state changed "
                f"{a['trusted_state_changed']}, rejected under another reason code {a['rejected_with_another_reason']}.",
                "",
                "| attack class | cases | accepted |",
                "|---|---|---|",
                *(f"| {n} | {x['cases']} | {x['accepted']} |" for n, x in a["classes"].items()),
                "",
            ]
        else:
            out += [f"Attack suite: {a.get('note')}.", ""]
        out += _issue20_lines(h)
        g = h.get("genuine", {})
        if g.get("cases"):
            out += [
                f"Genuine feed after the attacks: {g['cases']} cases published {g['published']} of "
                f"CST's genuine records right after the attack; kept {g['kept']}, "
                f"**genuine records lost to an attack {g['lost']}**.",
                "",
            ]
        else:
            out += [f"Genuine feed after the attacks: {g.get('note', 'not measured')}.", ""]
        if f.get("targets"):
            out += [
                f"Fuzz targets: {f['targets']}, examples {f['examples']}, typed errors {f['typed_errors']}, "
                f"**crashes {f['crashes']}** (an exception outside the typed hierarchy).",
                "",
                "| target | examples | typed errors | crashes |",
                "|---|---|---|---|",
                *(
                    f"| {t} | {x['examples']} | {x['typed_errors']} | {x['crashes']} |"
                    for t, x in sorted(f["by_target"].items())
                ),
            ]
        else:
            out.append(f"Fuzz suite: {f.get('note')}.")
    out += [
        "",
        "## Versions",
        "",
        f"Kafka {v['kafka']}, kafka-python {v['kafka-python']}, PyNaCl {v['pynacl']} ({v['libsodium']}), "
        f"fastavro {v['fastavro']}, Python {v['python']}, {v['cpu_count']} CPUs, {v['platform']}.",
        "",
        "## What this does not show",
        "",
        *(f"- {line}" for line in card["limits"]),
        "",
    ]
    return "\n".join(out)


@contextlib.contextmanager
def postgres_server() -> Iterator[Callable[[], contextlib.AbstractContextManager[str]]]:
    """PostgreSQL for the run: ``INTELBUS_TEST_POSTGRES_URL``, else a throwaway cluster started by
    scripts/postgres.sh (as the tests do). Yields a factory of fresh, empty databases. When no
    server can be had, the factory raises why: those cases fail on the card, never go missing."""
    url = os.environ.get(PG_URL_ENV) or None
    bash = shutil.which("bash") or "/bin/bash"
    cluster: str | None = None
    why = ""
    if url is None:
        # Not under the run folder: the cluster runs as the postgres OS user when we are root.
        cluster = tempfile.mkdtemp(prefix="intelbus-pg-")
        started = subprocess.run(
            [bash, str(PG_SCRIPT), "start", cluster],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        lines = started.stdout.strip().splitlines()
        if started.returncode == 0 and lines:
            url = lines[-1]
        else:
            why = started.stderr.strip()[-500:] or f"scripts/postgres.sh exit {started.returncode}"

    def fresh() -> contextlib.AbstractContextManager[str]:
        if url is None:
            raise FaultSetupError(f"PostgreSQL could not be started: {why}")
        return fresh_postgres_database(url)

    try:
        yield fresh
    finally:
        if cluster is not None:
            subprocess.run(
                [bash, str(PG_SCRIPT), "stop", cluster],
                capture_output=True,
                timeout=120,
                check=False,
            )
            shutil.rmtree(cluster, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=int, default=20_000, help="records in the leader-kill case")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument(
        "--work", type=Path, default=REPO / ".intelbus" / "faults", help="logs and stores, kept"
    )
    parser.add_argument(
        "--skip-hostile", action="store_true", help="fault matrix only (the card says so)"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["scripts/faults", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    # Kept after the run (logs of every producer, consumer and broker) for post-mortems.
    args.work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    if args.skip_hostile:
        hostile: dict[str, Any] = {"ran": False, "why": "skipped with --skip-hostile"}
    else:
        hostile = run_hostile_suites(root / "attack-report.jsonl")
    with postgres_server() as postgres, open_bed(root / "bed", proxied=True) as bed:
        cases = matrix(bed, seed=args.seed, scale=args.scale, postgres=postgres)
    card = build_card(
        cases,
        hostile,
        seed=args.seed,
        scale=args.scale,
        command=command,
        seconds=time.monotonic() - started,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report-card.json").write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    (args.out / "report-card.md").write_text(to_markdown(card))
    for name, ok in card["done_when"].items():
        print(f"{_mark(ok):>8}  {name}")  # noqa: T201 - the command reports its verdict
    print(f"logs, stores and broker data kept in {root}")  # noqa: T201 - where to look
    print(f"wrote {args.out / 'report-card.md'} and report-card.json")  # noqa: T201 - ditto
    return 0 if all(ok is not False for ok in card["done_when"].values()) else 1

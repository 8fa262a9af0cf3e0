"""The auditor's own state: signed checkpoints and a report digest that covers the findings.

Issue 20, class 6. A checkpoint decides what a resumed replay skips and which findings it keeps,
so every way of altering one (an edited position, a dropped finding, a swapped signature, another
key, no signature, a truncated file) is refused with a stable code, and nothing is touched. A
report's digest covers its findings and summary as well as the records, so two reports that
disagree never share one, and a report edited afterwards no longer matches its own.

Records come from the real publisher through the BusSimulator; delivery through a real broker is
tests/attacks/test_auditor_state.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumers.audit import checkpoint as cp
from consumers.audit.digest import report_digest
from consumers.audit.report import REPORT_FORMAT, summary_facts, verify_report
from consumers.audit.state import AuditState
from intelbus.cli.main import app
from intelbus.errors import (
    AuditStateError,
    CheckpointForeignKey,
    CheckpointForged,
    CheckpointUnreadable,
    CheckpointUnsigned,
    ConfigError,
    FindingsAltered,
    ReasonCode,
    ReportInvalid,
)
from intelbus.identity import AgencyIdentity
from intelbus.store.sqlite import SqliteStore
from intelbus.transport.kafka import Message
from tests.simulator import ENV, REGISTRY, SIGHTINGS, BusSimulator
from tests.unit.test_audit import _hostile_topic, _messages, _publish, _report_findings, _run

runner = CliRunner()


def _flat(text: str) -> str:
    """Console output without the line breaks rich adds at the terminal width."""
    return " ".join(text.split())


AUDITOR = AgencyIdentity.generate("inspectorate")


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path)


def _point(**changes: Any) -> cp.Checkpoint:
    base: dict[str, Any] = {
        "topic": SIGHTINGS,
        "environment": ENV,
        "directory_version": 3,
        "baseline_first_sight": False,
        "positions": {0: (10, 40), 1: (0, 5)},
        "state": AuditState.empty(SIGHTINGS).to_json(),
        "findings_bytes": 120,
        "findings_digest": "ab" * 32,
        "complete": False,
    }
    return cp.Checkpoint(**{**base, **changes})


def _edit_body(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    """The signed checkpoint with its body changed and its signature kept (a hand edit)."""
    outer = json.loads(text)
    body = json.loads(outer["body"])
    change(body)
    outer["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return json.dumps(outer)


def _verify(text: str, key: AgencyIdentity = AUDITOR) -> cp.Checkpoint:
    return cp.verified(text, source="ckpt", key=key.public)


# --- Signing and verifying one checkpoint. --------------------------------------------------------


def test_a_signed_checkpoint_verifies_and_round_trips() -> None:
    point = _point()
    assert _verify(cp.signed(point, AUDITOR)) == point


def _move_past(body: dict[str, Any]) -> None:
    body["positions"]["0"][0] = 39


def _drop_finding(body: dict[str, Any]) -> None:
    body["findings_bytes"] = 60
    body["state"]["counts"]["integrity"] = 0


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("a position moved past a hostile record", _move_past),
        ("a finding dropped (bytes and count)", _drop_finding),
        ("marked complete", lambda b: b.__setitem__("complete", True)),
        ("another topic named in the body", lambda b: b.__setitem__("topic", "bus.incidents")),
        ("findings digest replaced", lambda b: b.__setitem__("findings_digest", "00" * 32)),
    ],
)
def test_an_edited_checkpoint_is_refused_as_forged(
    what: str, change: Callable[[dict[str, Any]], None]
) -> None:
    text = _edit_body(cp.signed(_point(), AUDITOR), change)
    with pytest.raises(CheckpointForged) as refused:
        _verify(text)
    assert refused.value.code == "checkpoint_forged", what
    assert "--restart" in str(refused.value)


def test_a_swapped_signature_is_refused() -> None:
    """The signature of another genuine checkpoint (say an earlier one) does not carry over."""
    genuine = json.loads(cp.signed(_point(), AUDITOR))
    other = json.loads(cp.signed(_point(positions={0: (39, 40), 1: (5, 5)}), AUDITOR))
    swapped = {**other, "signature": genuine["signature"]}
    with pytest.raises(CheckpointForged):
        _verify(json.dumps(swapped))
    mangled = {**genuine, "signature": "zz" + genuine["signature"][2:]}
    with pytest.raises(CheckpointForged):
        _verify(json.dumps(mangled))


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    """Signed by someone else: refused by name; claiming our key id does not help either."""
    mallory = AgencyIdentity.generate("inspectorate")
    theirs = cp.signed(_point(), mallory)
    with pytest.raises(CheckpointForeignKey) as refused:
        _verify(theirs)
    assert refused.value.code == "checkpoint_foreign_key"
    claimed = {**json.loads(theirs), "key_id": AUDITOR.key_id.hex()}
    with pytest.raises(CheckpointForged):
        _verify(json.dumps(claimed))


def test_the_signature_is_bound_to_the_topic_and_environment() -> None:
    """The signed context names the environment and topic: a signature made over the same body
    bytes under another topic's context does not verify."""
    point = _point()
    body = json.dumps(point.to_json(), sort_keys=True, separators=(",", ":"))
    wrong = AUDITOR.sign(cp._context(ENV, "bus.incidents") + body.encode())
    text = json.dumps(
        {
            "format": cp.FORMAT,
            "key_id": AUDITOR.key_id.hex(),
            "signature": wrong.hex(),
            "body": body,
        }
    )
    with pytest.raises(CheckpointForged):
        _verify(text)


def test_an_unsigned_checkpoint_is_refused() -> None:
    """The previous (unsigned) format, and a body without a signature, are never trusted."""
    point = _point()
    old = {**point.to_json(), "format": "intelbus.audit.checkpoint/v2"}
    with pytest.raises(CheckpointUnsigned) as refused:
        _verify(json.dumps(old))
    assert refused.value.code == "checkpoint_unsigned"
    bare = json.loads(cp.signed(point, AUDITOR))
    del bare["signature"]
    with pytest.raises(CheckpointUnsigned):
        _verify(json.dumps(bare))


@pytest.mark.parametrize("cut", [0, 1, 50, -1])
def test_a_truncated_or_malformed_checkpoint_is_refused(cut: int) -> None:
    text = cp.signed(_point(), AUDITOR)
    with pytest.raises(CheckpointUnreadable) as refused:
        _verify(text[:cut])
    assert refused.value.code == "checkpoint_unreadable"
    for junk in ("[]", '{"format": "x", "signature": 1}', '"text"'):
        with pytest.raises(AuditStateError):
            _verify(junk)


# --- Resuming an audit from a checkpoint that was altered. ----------------------------------------


def _files(ckpt: Path) -> dict[str, bytes]:
    """Every file of a checkpoint, and the checkpoint its ledger holds."""
    out = {
        p.name: p.read_bytes()
        for p in (ckpt, ckpt.with_name(ckpt.name + ".findings.jsonl"))
        if p.exists()
    }
    ledger = SqliteStore(ckpt.with_name(ckpt.name + ".ledger"))
    try:
        out["ledger"] = (ledger.meta(cp.LEDGER_KEY) or "").encode()
    finally:
        ledger.close()
    return out


def _early_hostile(sim: BusSimulator) -> list[Message]:
    """30 records with garbage at offset 3 and a replay of record 1 at offset 6 (found early)."""
    _publish(sim, 30)
    values = [m.value for m in _messages(sim)]
    values.insert(3, b"garbage")
    values.insert(6, values[1])
    return [Message(SIGHTINGS, 0, i, v, datetime.now(UTC)) for i, v in enumerate(values)]


def _stopped(sim: BusSimulator, tmp_path: Path) -> tuple[list[Message], Path]:
    """A hostile topic, audited up to past its first findings, with a checkpoint."""
    messages = _early_hostile(sim)
    ckpt = tmp_path / "audit.ckpt"
    first = _run(sim, messages, checkpoint=ckpt, stop_after=14, checkpoint_every=7)
    assert not first.complete
    assert first.summary["findings"]["by_reason"] == {
        ReasonCode.MALFORMED.value: 1,
        ReasonCode.CHAIN_REPLAY.value: 1,
    }
    return messages, ckpt


def test_resuming_from_an_edited_checkpoint_is_refused_and_touches_nothing(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Positions moved to the end in the file, then in the ledger as well: both refused with the
    code, every file unchanged; --restart (restart=True) then audits the whole topic again."""
    messages, ckpt = _stopped(sim, tmp_path)
    full = _run(sim, messages, report=tmp_path / "full.json")

    def to_the_end(body: dict[str, Any]) -> None:
        for pos in body["positions"].values():
            pos[0] = pos[1]

    ckpt.write_text(_edit_body(ckpt.read_text(), to_the_end))
    before = _files(ckpt)
    with pytest.raises(CheckpointForged):
        _run(sim, messages, checkpoint=ckpt, report=tmp_path / "r.json")
    assert _files(ckpt) == before
    assert not (tmp_path / "r.json").exists()
    # The same edit to the ledger's copy, with the file restored to a genuine one.
    ledger = SqliteStore(ckpt.with_name("audit.ckpt.ledger"))
    try:
        genuine = ledger.meta(cp.LEDGER_KEY) or ""
        ledger._conn.execute(
            "UPDATE meta SET value = ? WHERE key = ?",
            (_edit_body(genuine, to_the_end), cp.LEDGER_KEY),
        )
        ledger._conn.commit()
    finally:
        ledger.close()
    ckpt.write_text(genuine)
    before = _files(ckpt)
    with pytest.raises(CheckpointForged):
        _run(sim, messages, checkpoint=ckpt)
    assert _files(ckpt) == before
    again = _run(sim, messages, checkpoint=ckpt, report=tmp_path / "r.json", restart=True)
    assert again.complete
    assert again.run["resumed"] is False
    assert again.summary == full.summary
    assert _report_findings(tmp_path / "r.json") == _report_findings(tmp_path / "full.json")


def test_a_finding_dropped_from_the_findings_file_is_refused(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """A finding replaced by blanks of the same length (the length check alone would pass)."""
    messages, ckpt = _stopped(sim, tmp_path)
    spool = ckpt.with_name("audit.ckpt.findings.jsonl")
    lines = spool.read_bytes().split(b"\n")
    assert ReasonCode.MALFORMED.value.encode() in lines[0]
    spool.write_bytes(b"\n".join([b" " * len(lines[0]), *lines[1:]]))
    before = _files(ckpt)
    with pytest.raises(FindingsAltered) as refused:
        _run(sim, messages, checkpoint=ckpt)
    assert refused.value.code == "findings_altered"
    assert _files(ckpt) == before


@pytest.mark.parametrize("kind", ["other key", "unsigned", "truncated"])
def test_a_checkpoint_file_by_another_key_unsigned_or_truncated_is_refused_on_resume(
    sim: BusSimulator, tmp_path: Path, kind: str
) -> None:
    messages, ckpt = _stopped(sim, tmp_path)
    text = ckpt.read_text()
    point = cp.verified(text, source="t", key=sim.identities["inspectorate"].public)
    expected: type[AuditStateError]
    if kind == "other key":
        ckpt.write_text(cp.signed(point, AgencyIdentity.generate("inspectorate")))
        expected = CheckpointForeignKey
    elif kind == "unsigned":
        ckpt.write_text(json.dumps(point.to_json()))
        expected = CheckpointUnsigned
    else:
        ckpt.write_text(text[: len(text) // 2])
        expected = CheckpointUnreadable
    before = _files(ckpt)
    with pytest.raises(expected):
        _run(sim, messages, checkpoint=ckpt)
    assert _files(ckpt) == before


def test_a_checkpoint_needs_the_auditors_key(sim: BusSimulator, tmp_path: Path) -> None:
    """Without a key the auditor neither writes nor resumes a checkpoint: it says so."""
    messages = _hostile_topic(sim)
    with pytest.raises(ConfigError, match="auditor's key"):
        _run(sim, messages, checkpoint=tmp_path / "audit.ckpt", checkpoint_key=None)
    assert not (tmp_path / "audit.ckpt").exists()


def test_the_cli_refuses_a_checkpoint_without_a_key_before_reading_anything(
    tmp_path: Path,
) -> None:
    """Exit 2 (a bad option) without --key-file, before any broker is contacted."""
    args = ["audit", "replay", "--topic", SIGHTINGS, "--directory", str(tmp_path)]
    args += ["--checkpoint", str(tmp_path / "c"), "--bootstrap-servers", "127.0.0.1:9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--checkpoint needs --key-file" in _flat(result.output)
    assert not (tmp_path / "c").exists()


# --- The report's digest. -------------------------------------------------------------------------


def _report(sim: BusSimulator, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    _run(sim, _hostile_topic(sim), report=path)
    return path


def test_two_reports_that_differ_only_in_findings_have_different_digests() -> None:
    facts = {"topic": SIGHTINGS, "records": 3, "findings": {"integrity": 1, "warning": 0}}
    records = "cd" * 32
    a = [{"reason": "chain_replay", "offset": 4, "message": "x"}]
    b = [{"reason": "chain_replay", "offset": 5, "message": "x"}]
    assert report_digest(records, facts, a) != report_digest(records, facts, b)
    assert report_digest(records, facts, a) != report_digest(records, facts, [])
    assert report_digest(records, facts, a + a) != report_digest(records, facts, a)
    other_facts = {**facts, "findings": {"integrity": 0, "warning": 1}}
    assert report_digest(records, facts, a) != report_digest(records, other_facts, a)
    assert report_digest(records, facts, a) == report_digest(records, dict(facts), list(a))


def test_a_report_digest_covers_findings_and_not_what_the_auditor_could_open(
    sim: BusSimulator, tmp_path: Path
) -> None:
    """Same records, one finding fewer (a record withheld only from the finding's view): same
    records digest is not enough, the report digests differ; decrypting does not change it."""
    messages = _hostile_topic(sim)
    plain = _run(sim, messages)
    opened = _run(sim, messages, identity=sim.identities["inspectorate"], registry=REGISTRY)
    assert opened.summary["contents"] != plain.summary["contents"]
    assert opened.digest == plain.digest
    facts = summary_facts(plain.summary)
    assert "contents" not in facts
    assert "digest" not in facts
    assert plain.records_digest == plain.summary["digest"]["records"]


def test_a_report_verifies_and_an_edited_one_does_not(sim: BusSimulator, tmp_path: Path) -> None:
    path = _report(sim, tmp_path, "r.json")
    found = verify_report(path)
    data = json.loads(path.read_text())
    assert found.value == data["summary"]["digest"]["value"]
    # A finding dropped, and the counts lowered to match: the digest no longer does.
    dropped = {**data, "findings": data["findings"][1:]}
    dropped["summary"] = json.loads(json.dumps(data["summary"]))
    dropped["summary"]["findings"]["integrity"] -= 1
    (tmp_path / "dropped.json").write_text(json.dumps(dropped))
    with pytest.raises(ReportInvalid, match="does not match its digest"):
        verify_report(tmp_path / "dropped.json")
    # Dropped without fixing the counts: said plainly.
    (tmp_path / "short.json").write_text(json.dumps({**data, "findings": data["findings"][1:]}))
    with pytest.raises(ReportInvalid, match="summary counts"):
        verify_report(tmp_path / "short.json")
    # Re-digested by the editor: self-consistent, but it no longer matches the genuine report.
    dropped["summary"]["digest"]["value"] = report_digest(
        dropped["summary"]["digest"]["records"],
        summary_facts(dropped["summary"]),
        dropped["findings"],
    )
    (tmp_path / "redigested.json").write_text(json.dumps(dropped))
    assert verify_report(tmp_path / "redigested.json").value != found.value
    assert verify_report(tmp_path / "redigested.json").records == found.records


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ("[]", "not an audit report"),
        (json.dumps({"format": "intelbus.audit.report/v2", "summary": {}}), "not an audit report"),
        (json.dumps({"format": REPORT_FORMAT}), "no summary"),
        (json.dumps({"format": REPORT_FORMAT, "summary": {}, "findings": []}), "no digest.value"),
        (
            json.dumps(
                {
                    "format": REPORT_FORMAT,
                    "findings": [],
                    "summary": {
                        "complete": True,
                        "digest": {"value": "x", "records": "y", "count": 1},
                        "findings": {"integrity": "0", "warning": 0},
                    },
                }
            ),
            "not a non-negative integer",
        ),
        (
            json.dumps(
                {
                    "format": REPORT_FORMAT,
                    "findings": [],
                    "summary": {
                        "complete": True,
                        "digest": {"value": "x", "records": "nothex", "count": 1},
                        "findings": {"integrity": 0, "warning": 0},
                    },
                }
            ),
            "64 hex",
        ),
    ],
)
def test_a_malformed_report_gives_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReportInvalid, match=message):
        verify_report(path)
    result = runner.invoke(app, ["audit", "digest", "--report", str(path)])
    assert result.exit_code == 2
    assert message in _flat(result.output)
    assert "Traceback" not in result.output
    assert "KeyError" not in result.output


def test_the_digest_command_compares_report_digests_or_records_only(
    sim: BusSimulator, tmp_path: Path
) -> None:
    a = _report(sim, tmp_path, "a.json")
    data = json.loads(a.read_text())
    # Another report of the same records that found one thing fewer (re-digested by its author).
    b_data = json.loads(a.read_text())
    b_data["findings"] = data["findings"][1:]
    b_data["summary"]["findings"]["integrity"] -= 1
    b_data["summary"]["digest"]["value"] = report_digest(
        b_data["summary"]["digest"]["records"], summary_facts(b_data["summary"]), b_data["findings"]
    )
    b = tmp_path / "b.json"
    b.write_text(json.dumps(b_data))
    differ = runner.invoke(app, ["audit", "digest", "--report", str(a), "--report", str(b)])
    assert differ.exit_code == 1, differ.output
    assert "digests differ" in differ.output
    same = runner.invoke(
        app, ["audit", "digest", "--records", "--report", str(a), "--report", str(b)]
    )
    assert same.exit_code == 0, same.output
    assert "digests match" in same.output

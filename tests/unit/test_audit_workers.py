"""Intake in worker processes (consumers/audit/workers.py) finds exactly what the serial path finds.

One hostile topic holds every attack class the audit tests use — forged, tampered and garbage
records, a copy from another partition, a replay, a withheld record delivered late (a reorder), a
gap, a record without a broker time, a foreign retraction and correction, an own retraction — and
is replayed serially (``workers=1``) and in 2 and 3 worker processes, with and without the
auditor's decryption key (records addressed to it are opened in the judging process): the reports
must be identical, finding for finding. A worker that dies stops the replay with a typed error
and no report.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.audit import workers as audit_workers
from consumers.audit.replay import AuditConfig
from consumers.audit.run import audit
from consumers.audit.source import MemorySource
from intelbus.errors import AuditWorkerError, ReasonCode
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family
from intelbus.records import Correction, Retraction
from intelbus.transport.kafka import Message
from tests.simulator import ENV, REGISTRY, SIGHTINGS, BusSimulator
from tests.unit.test_audit import _append, _messages, _publish, _seal, _sighting


def _retraction_of(target: str) -> Retraction:
    return Retraction(
        record_id=str(uuid.uuid4()),
        retracts_record_id=target,
        retracted_at=datetime.now(UTC),
        reason="not true",
        grading=_sighting().grading,
    )


def _hostile(sim: BusSimulator) -> list[Message]:
    _publish(sim, 30)
    first = next(r for r in sim.log if r.topic == SIGHTINGS)
    cst_records = [r for r in sim.log if r.topic == SIGHTINGS]
    # Amendments: CST retracts its own record; the rogue producer retracts and corrects it.
    own = sim.publisher("cst")
    target = own.publish(_sighting()).record_id
    own.publish(_retraction_of(target), family=Family.SIGHTINGS)
    rogue = sim.publisher("rogue")
    rogue.publish(_retraction_of(target), family=Family.SIGHTINGS)
    replacement = _sighting()
    rogue.publish(
        Correction(
            record_id=str(uuid.uuid4()),
            corrects_record_id=target,
            corrected_at=datetime.now(UTC),
            reason="detail",
            replacement=replacement.model_copy(update={"record_id": target}),  # type: ignore[attr-defined]
            grading=replacement.grading,  # type: ignore[attr-defined]
        )
    )
    messages = _messages(sim)
    assert len(messages) > len(cst_records)
    late = messages.pop(12)  # withheld, delivered at the end: a reorder
    del messages[6]  # never delivered: a gap
    _append(messages, messages[3].value)  # a replay
    impostor = AgencyIdentity.generate("cst")
    _append(messages, _seal(sim, impostor, sequence=40, prev=bytes(32)))  # forged (unknown key)
    flipped = bytearray(messages[0].value)
    flipped[-80] ^= 1
    _append(messages, bytes(flipped))  # tampered
    _append(messages, b"\x00not an envelope")  # garbage
    _append(messages, first.value, partition=1)  # a copy on another partition
    _append(messages, late.value)
    _append(messages, messages[20].value, appended_at=None)  # no broker time (and a replay)
    return messages


def _report(
    tmp_path: Path, sim: BusSimulator, messages: list[Message], **kw: Any
) -> dict[str, Any]:
    path = tmp_path / f"report-{uuid.uuid4().hex[:8]}.json"
    result = audit(
        source=MemorySource(SIGHTINGS, messages),
        history=sim.history,
        config=AuditConfig(environment=ENV),
        report=path,
        **kw,
    )
    assert result.complete
    data = json.loads(path.read_text())
    return {"summary": data["summary"], "findings": data["findings"]}


@pytest.mark.parametrize("decrypting", [False, True])
def test_worker_processes_report_exactly_what_the_serial_replay_reports(
    tmp_path: Path, decrypting: bool
) -> None:
    sim = BusSimulator(tmp_path)
    messages = _hostile(sim)
    keys: dict[str, Any] = (
        {"identity": sim.identities["inspectorate"], "registry": REGISTRY} if decrypting else {}
    )
    serial = _report(tmp_path, sim, messages, workers=1, batch_size=7, **keys)
    reasons = {f["reason"] for f in serial["findings"]}
    # The topic exercises every class: a report that found none of them would prove nothing.
    assert {
        ReasonCode.UNKNOWN_KEY.value,
        ReasonCode.BAD_SIGNATURE.value,
        ReasonCode.MALFORMED.value,
        ReasonCode.BINDING_MISMATCH.value,
        ReasonCode.CHAIN_REPLAY.value,
        ReasonCode.CHAIN_REORDER.value,
        ReasonCode.FOREIGN_TARGET.value,
    } <= reasons, reasons
    if decrypting:
        assert serial["summary"]["contents"]["decrypted_and_decoded"] > 0
    for workers, batch in ((2, 7), (2, 2000), (3, 5)):
        parallel = _report(tmp_path, sim, messages, workers=workers, batch_size=batch, **keys)
        assert parallel == serial, (workers, batch)


def _die(topic: str, items: object) -> object:
    os._exit(3)


_REAL_CHUNK = audit_workers._verify_chunk


def _short(topic: str, items: list[Any]) -> tuple[list[Any], int]:
    compact, total = _REAL_CHUNK(topic, items)
    return compact[1:], total


def test_a_worker_that_dies_stops_the_replay_with_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = BusSimulator(tmp_path)
    _publish(sim, 10)
    messages = _messages(sim)
    monkeypatch.setattr(audit_workers, "_verify_chunk", _die)
    report = tmp_path / "report.json"
    with pytest.raises(AuditWorkerError, match="worker died"):
        audit(
            source=MemorySource(SIGHTINGS, messages),
            history=sim.history,
            config=AuditConfig(environment=ENV),
            report=report,
            workers=2,
        )
    assert not report.exists()


def test_a_worker_answering_for_other_records_stops_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = BusSimulator(tmp_path)
    _publish(sim, 10)
    messages = _messages(sim)
    monkeypatch.setattr(audit_workers, "_verify_chunk", _short)
    with pytest.raises(AuditWorkerError, match="answered for"):
        audit(
            source=MemorySource(SIGHTINGS, [replace(m) for m in messages]),
            history=sim.history,
            config=AuditConfig(environment=ENV),
            workers=2,
        )

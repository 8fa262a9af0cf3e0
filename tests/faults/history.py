"""A producer's send history, in the style of Jepsen's operation log: one JSON line per event.

Each record the producer tries to publish gets an ``invoke`` event before the send, then one
completion: ``ok`` (the broker acknowledged it: partition and offset are known), ``fail`` (it was
definitely not written) or ``indeterminate`` (it may or may not have been written). A record with an
``invoke`` and no completion (the producer was killed mid-batch) is indeterminate too.

Lines are flushed as they are written, so a ``kill -9`` of the producer loses at most a line in
flight (kill -9 keeps the page cache); :func:`read_history` ignores a torn last line.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Self


class Status(enum.StrEnum):
    """What happened to one send attempt."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True)
class SendEvent:
    """One line of the history."""

    record_id: str
    status: Status
    sequence: int | None = None
    partition: int | None = None
    offset: int | None = None
    at: float = 0.0  # wall-clock seconds, to place an event against a fault window

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> SendEvent:
        raw = json.loads(line)
        return cls(
            record_id=str(raw["record_id"]),
            status=Status(raw["status"]),
            sequence=raw.get("sequence"),
            partition=raw.get("partition"),
            offset=raw.get("offset"),
            at=float(raw.get("at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final word on one record: ``ok`` wins over everything, then ``indeterminate``."""

    record_id: str
    status: Status
    sequence: int | None
    partition: int | None
    offset: int | None


class HistoryWriter:
    """Appends events to a history file (several processes may append to one file in turn)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, event: SendEvent) -> None:
        if not event.at:
            event = SendEvent(
                event.record_id,
                event.status,
                event.sequence,
                event.partition,
                event.offset,
                time.time(),
            )
        self._file.write(event.to_json() + "\n")
        self._file.flush()

    def invoke(self, record_ids: Iterable[str]) -> None:
        for rid in record_ids:
            self.write(SendEvent(rid, Status.INVOKE))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_history(path: Path) -> list[SendEvent]:
    """Every complete event in ``path`` (a torn last line from a killed writer is skipped)."""
    if not path.is_file():
        return []
    events: list[SendEvent] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            events.append(SendEvent.from_json(line))
        except (ValueError, KeyError):
            continue  # only a line cut short by kill -9 can be unreadable
    return events


def outcomes(events: Iterable[SendEvent]) -> dict[str, Outcome]:
    """record id -> its final outcome, from its events in order.

    ``ok`` if any attempt was acknowledged (the first ack's position is kept). Otherwise
    ``indeterminate`` if any attempt was, or if the last attempt never completed (killed mid-send);
    ``fail`` only when every attempt definitely failed.
    """
    acked: dict[str, SendEvent] = {}
    maybe: set[str] = set()
    open_invoke: dict[str, bool] = {}
    last: dict[str, SendEvent] = {}
    for e in events:
        last.setdefault(e.record_id, e)
        if e.status is Status.OK:
            acked.setdefault(e.record_id, e)
            open_invoke[e.record_id] = False
        elif e.status is Status.INVOKE:
            open_invoke[e.record_id] = True
        else:
            if e.status is Status.INDETERMINATE:
                maybe.add(e.record_id)
            open_invoke[e.record_id] = False
    out: dict[str, Outcome] = {}
    for rid in last:
        ok = acked.get(rid)
        if ok is not None:
            out[rid] = Outcome(rid, Status.OK, ok.sequence, ok.partition, ok.offset)
        elif rid in maybe or open_invoke.get(rid, False):
            out[rid] = Outcome(rid, Status.INDETERMINATE, None, None, None)
        else:
            out[rid] = Outcome(rid, Status.FAIL, None, None, None)
    return out

"""The fault suite's producer process: ``python -m tests.faults.produce`` (killable with kill -9).

Publishes ``--count`` deterministic sealed records through :class:`producers.publisher.Publisher`
(``publish_many`` in batches) and logs every send to a history file (tests/faults/history.py). On
start it first resends, byte for byte, whatever an earlier (killed) run left unacknowledged, and
skips records its durable state already holds: the restart path a real producer takes.

Exit 0 when every record was acknowledged; 3 when the cluster refused (the records stay pending).

Timeouts: a send to a dead cluster must fail in seconds for the matrix to finish, so the delivery,
request and metadata timeouts are shortened here (see ``FAULT_TIMEOUTS``). The settings the
durability argument rests on (acks=all, idempotence, max in flight, no compression) are untouched.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from intelbus.errors import IntelbusError, PublishError
from intelbus.transport import kafka as transport
from producers.config import ProducerConfig
from producers.publisher import Publisher, build_publisher
from tests.faults.history import HistoryWriter, SendEvent, Status
from tests.faults.workspace import records

FAULT_TIMEOUTS = {
    "delivery_timeout_ms": 15_000,
    "request_timeout_ms": 5_000,
    "max_block_ms": 10_000,
}
EXIT_REFUSED = 3


def _sends(state_file: Path, record_ids: Sequence[str] | None = None) -> dict[str, tuple[Any, ...]]:
    """record id -> (status, sequence, partition, offset) from the producer's state file (read-only)."""
    conn = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT record_id, status, sequence, partition, offset FROM sends")
        out = {str(r[0]): tuple(r[1:]) for r in rows}
    except sqlite3.OperationalError:  # no state yet
        out = {}
    finally:
        conn.close()
    if record_ids is None:
        return out
    return {rid: out[rid] for rid in record_ids if rid in out}


def _log_from_state(history: HistoryWriter, state_file: Path, ids: Sequence[str]) -> None:
    """After a failed call: what the state says was acknowledged is ok, the rest indeterminate."""
    found = _sends(state_file, ids)
    for rid in ids:
        row = found.get(rid)
        if row is not None and row[0] == "acked":
            history.write(SendEvent(rid, Status.OK, int(row[1]), int(row[2]), int(row[3])))
        else:
            history.write(SendEvent(rid, Status.INDETERMINATE))


def _resend(publisher: Publisher, history: HistoryWriter, state_file: Path) -> bool:
    pending = [p.record_id for p in publisher.state.pending()]
    if not pending:
        return True
    history.invoke(pending)
    try:
        publisher.resend_pending()
    except (PublishError, IntelbusError):
        _log_from_state(history, state_file, pending)
        return False
    _log_from_state(history, state_file, pending)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.produce")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--pause-ms", type=int, default=0, help="pause between batches (a steady-rate producer)"
    )
    parser.add_argument(
        "--no-recover", action="store_true", help="exit at the first refusal, do not resend"
    )
    args = parser.parse_args(argv)
    transport.PRODUCER_DEFAULTS = MappingProxyType(
        {**transport.PRODUCER_DEFAULTS, **FAULT_TIMEOUTS}
    )

    config = ProducerConfig.load(args.config)
    publisher = build_publisher(config)
    state_file = config.state_file
    try:
        with HistoryWriter(args.history) as history:
            if not _resend(publisher, history, state_file):
                return EXIT_REFUSED
            held = set(_sends(state_file))
            todo = [r for r in records(args.seed, args.count) if r.record_id not in held]
            for start in range(0, len(todo), args.batch):
                if start and args.pause_ms:
                    time.sleep(args.pause_ms / 1000)
                chunk = todo[start : start + args.batch]
                ids = [r.record_id for r in chunk]
                history.invoke(ids)
                try:
                    published = publisher.publish_many(chunk)
                except (PublishError, IntelbusError):
                    _log_from_state(history, state_file, ids)
                    # Later records must not overtake the pending ones: resend those first.
                    if args.no_recover or not _resend(publisher, history, state_file):
                        return EXIT_REFUSED
                    continue
                for p in published:
                    history.write(
                        SendEvent(p.record_id, Status.OK, p.sequence, p.partition, p.offset)
                    )
    finally:
        publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

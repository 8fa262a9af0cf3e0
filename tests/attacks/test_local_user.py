"""Class 7 of the trust model: a local user on a consumer's host (files, links, permissions).

The attacker can read what the umask lets it read, and plant links where the consumer will write.
Each case is the refusal (typed error naming the file and the fix) or the safe outcome, recorded
for the report card like the other attack classes; tests/unit/test_files.py tests the mechanisms
one by one.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from intelbus.errors import InsecureFileError
from intelbus.identity import AgencyIdentity
from intelbus.store.export import write_csv, write_export_file, write_jsonl
from intelbus.store.sqlite import SqliteStore
from tests.attacks.harness import sighting
from tests.attacks.report import attack_result
from tests.simulator import BusSimulator, SimulatedConsumer


def _record(case: str, refused: bool, reason: str) -> None:
    attack_result(
        case=case,
        source="simulated",
        expected_reason=reason,
        outcome="rejected" if refused else "accepted",
        reason=reason if refused else "none",
        trusted_state_unchanged=True,
    )


@pytest.fixture
def umask_open() -> Iterator[None]:
    """The most permissive umask, so modes come from the code, not the environment."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """As ssh does: a key file group or others may read is not loaded (one line: path, mode, fix)."""
    path = tmp_path / "herts-police.key"
    AgencyIdentity.generate("herts-police").save(path)
    path.chmod(mode)
    with pytest.raises(InsecureFileError) as info:
        AgencyIdentity.load(path)
    message = str(info.value)
    _record(f"local_user.readable_key.{mode:o}", True, "insecure_file")
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert "chmod 600" in message
    assert "\n" not in message


def test_a_new_store_and_its_journal_are_private(
    tmp_path: Path, umask_open: None, sim: BusSimulator
) -> None:
    """Whatever the umask, a consumer's new SQLite store (and the WAL SQLite makes beside it) is
    0600: another local user cannot read what the force holds."""
    consumer = SimulatedConsumer(sim, store_path=tmp_path / "herts.sqlite")
    try:
        sim.publisher().publish(sighting())
        consumer.deliver(list(sim.log))
        for f in tmp_path.glob("herts.sqlite*"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        consumer.close()
    _record("local_user.store_mode", True, "mode_0600")


def test_a_link_planted_at_the_store_path_is_refused(tmp_path: Path) -> None:
    """A link where the store will be created (pointing at a file of the attacker's choosing) is
    refused; the link's target is untouched."""
    target = tmp_path / "attacker-owned"
    target.write_bytes(b"keep me")
    (tmp_path / "herts.sqlite").symlink_to(target)
    with pytest.raises(InsecureFileError):
        SqliteStore(tmp_path / "herts.sqlite")
    assert target.read_bytes() == b"keep me"
    _record("local_user.store_link", True, "insecure_file")


def test_an_export_never_writes_through_a_planted_link(
    tmp_path: Path, sim: BusSimulator, umask_open: None
) -> None:
    """A link planted at the export's path (or any temporary name beside it) is replaced, never
    written through; the export is 0600."""
    consumer = SimulatedConsumer(sim, store_path=tmp_path / "herts.sqlite")
    try:
        sim.publisher().publish(sighting())
        consumer.deliver(list(sim.log))
        victim = tmp_path / "victim"
        victim.write_bytes(b"precious")
        out = tmp_path / "export.jsonl"
        out.symlink_to(victim)
        for name in (".export.jsonl.tmp", "export.jsonl.tmp", "export.jsonl.partial"):
            (tmp_path / name).symlink_to(victim)
        n = write_export_file(out, lambda fh: write_jsonl(consumer.store.iter_records(), fh))
        assert n == 1
        assert victim.read_bytes() == b"precious"
        assert not out.is_symlink()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
    finally:
        consumer.close()
    _record("local_user.export_link", True, "link_replaced")


def test_a_csv_cell_cannot_split_a_row_or_smuggle_a_formula(
    tmp_path: Path, sim: BusSimulator
) -> None:
    """A producer's free text with a lone CR, line breaks and formulas on later lines: still one
    CSV row per record, and no line of any cell starts as a formula."""
    text = "Seen at the gate.\rSecond line\n=HYPERLINK(\"http://x\")\r\n  +cmd|' /C calc'!A0"
    record = sighting().model_copy(update={"description": text})
    consumer = SimulatedConsumer(
        sim,
        store_path=tmp_path / "herts.sqlite",
        policy={"agency": "herts-police", "rules": [{"id": "all", "action": "store"}]},
    )
    try:
        sim.publisher().publish(record)
        consumer.deliver(list(sim.log))
        out = io.StringIO(newline="")
        assert write_csv(consumer.store.iter_records(), out) == 1
    finally:
        consumer.close()
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert len(rows) == 2  # the header and the one record
    for cell in rows[1]:
        for line in cell.split("\n"):
            assert not line.lstrip().startswith(("=", "+", "-", "@")), line
    _record("local_user.csv_injection", True, "neutralised")


@pytest.fixture
def sim(tmp_path: Path) -> BusSimulator:
    return BusSimulator(tmp_path / "bus", broker_clock=datetime.now(UTC))

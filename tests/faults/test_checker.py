"""The durability checker on synthetic histories: each finding is detected, and a clean run is clean.

The checker is the judge of every fault case, so each of its figures is shown to move when (and
only when) the fault it names is present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.checker import (
    CheckReport,
    StoreRow,
    StoreView,
    TopicEntry,
    check,
    entry_from_value,
)
from tests.faults.history import HistoryWriter, SendEvent, Status, outcomes, read_history

TOPIC = "t.sightings"


def _rid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _clean(n: int = 5) -> tuple[list[SendEvent], list[TopicEntry], StoreView]:
    """n records, each invoked, acknowledged at offset i, read there, and stored once."""
    history: list[SendEvent] = []
    topic: list[TopicEntry] = []
    rows: list[StoreRow] = []
    for i in range(n):
        history.append(SendEvent(_rid(i), Status.INVOKE))
        history.append(SendEvent(_rid(i), Status.OK, sequence=i, partition=0, offset=i))
        topic.append(TopicEntry(0, i, _rid(i), "cst", TOPIC, i))
        rows.append(StoreRow(_rid(i), TOPIC, 0, i, "cst", i))
    return history, topic, StoreView(tuple(rows), {}, {(TOPIC, 0): n})


def test_a_clean_run_passes_with_every_figure_zero() -> None:
    history, topic, store = _clean()
    report = check(history, topic, store)
    assert report.passed
    assert (report.attempted, report.acknowledged, report.read, report.stored) == (5, 5, 5, 5)
    assert {name: getattr(report, name) for name in CheckReport.MUST_BE_ZERO} == dict.fromkeys(
        CheckReport.MUST_BE_ZERO, 0
    )
    assert report.topic_duplicates == 0


def test_an_acknowledged_record_missing_from_the_topic_is_lost() -> None:
    history, topic, store = _clean()
    del topic[2]
    report = check(history, topic, store)
    assert report.lost == 1
    assert report.samples["lost"] == [_rid(2)]
    assert report.offset_gaps == 1  # offset 2 is missing from the partition
    assert report.sequence_gaps == 1
    assert not report.passed


def test_an_indeterminate_record_may_be_absent_without_being_lost() -> None:
    history, topic, store = _clean(3)
    history.append(SendEvent(_rid(9), Status.INVOKE))  # killed before any completion
    history.append(SendEvent(_rid(8), Status.INVOKE))
    history.append(SendEvent(_rid(8), Status.INDETERMINATE))
    report = check(history, topic, store)
    assert (report.indeterminate, report.lost, report.indeterminate_written) == (2, 0, 0)
    assert report.passed


def test_a_record_never_attempted_or_definitely_failed_is_unexpected() -> None:
    history, topic, _ = _clean(2)
    history += [SendEvent(_rid(5), Status.INVOKE), SendEvent(_rid(5), Status.FAIL)]
    topic += [
        TopicEntry(0, 2, _rid(5), "cst", TOPIC, 2),
        TopicEntry(0, 3, _rid(6), "cst", TOPIC, 3),
    ]
    report = check(history, topic, None)
    assert report.unexpected == 2
    assert sorted(report.samples["unexpected"]) == [_rid(5), _rid(6)]


def test_garbage_in_the_topic_is_unexpected_and_unparseable() -> None:
    history, topic, _ = _clean(2)
    topic.append(entry_from_value(0, 2, b"\x00not an envelope"))
    report = check(history, topic)
    assert (report.unparseable, report.unexpected) == (1, 1)


def test_a_resent_copy_is_a_topic_duplicate_not_a_failure() -> None:
    history, topic, store = _clean(3)
    topic.append(TopicEntry(0, 3, _rid(1), "cst", TOPIC, 1))  # the same bytes resent
    report = check(history, topic, store)
    assert report.topic_duplicates == 1
    assert report.order_violations == 0  # a later copy of a seen sequence is not out of order
    assert report.passed


def test_two_store_rows_for_one_sequence_are_store_duplicates() -> None:
    history, topic, store = _clean(3)
    rows = (*store.rows, StoreRow(_rid(7), TOPIC, 0, 1, "cst", 1))
    topic.append(TopicEntry(0, 3, _rid(7), "cst", TOPIC, 1))
    history += [SendEvent(_rid(7), Status.OK, sequence=1, partition=0, offset=3)]
    report = check(history, topic, StoreView(rows))
    assert report.store_duplicates == 1
    assert report.inconsistent_offsets == 1  # rid 7 is stored at offset 1 but lives at offset 3
    assert not report.passed


def test_an_acknowledged_record_missing_from_the_store() -> None:
    history, topic, store = _clean(4)
    report = check(history, topic, StoreView(store.rows[:3]))
    assert report.store_missing == 1
    assert report.samples["store_missing"] == [_rid(3)]


def test_a_stored_record_the_topic_never_held_is_store_unexpected() -> None:
    history, topic, store = _clean(2)
    report = check(history, topic, StoreView((*store.rows, StoreRow(_rid(4), TOPIC, 0, 9, "x", 0))))
    assert report.store_unexpected == 1


def test_an_ack_whose_offset_holds_another_record_is_inconsistent() -> None:
    history, topic, store = _clean(3)
    history.append(SendEvent(_rid(1), Status.OK, sequence=1, partition=0, offset=2))
    history.insert(0, SendEvent(_rid(1), Status.OK, sequence=1, partition=0, offset=2))
    report = check(history, topic, store)
    assert report.inconsistent_offsets == 1
    assert report.samples["inconsistent_offsets"] == [_rid(1)]


def test_a_sequence_appearing_before_an_earlier_one_is_an_order_violation() -> None:
    swapped = [
        TopicEntry(0, 0, _rid(0), "cst", TOPIC, 0),
        TopicEntry(0, 1, _rid(2), "cst", TOPIC, 2),
        TopicEntry(0, 2, _rid(1), "cst", TOPIC, 1),
        TopicEntry(0, 3, _rid(3), "cst", TOPIC, 3),
    ]
    history = [SendEvent(e.record_id or "", Status.OK, e.sequence, 0, e.offset) for e in swapped]
    report = check(history, swapped, None)
    assert report.order_violations == 1
    assert report.sequence_gaps == 0


def test_streams_are_checked_apart_by_partition_and_producer() -> None:
    """Two producers interleaved in one partition, each in order, are not out of order."""
    topic = [
        TopicEntry(0, 0, _rid(0), "cst", TOPIC, 0),
        TopicEntry(0, 1, _rid(1), "other", TOPIC, 0),
        TopicEntry(0, 2, _rid(2), "cst", TOPIC, 1),
        TopicEntry(0, 3, _rid(3), "other", TOPIC, 1),
    ]
    history = [SendEvent(e.record_id or "", Status.OK, e.sequence, 0, e.offset) for e in topic]
    report = check(history, topic)
    assert (report.order_violations, report.sequence_gaps, report.offset_gaps) == (0, 0, 0)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([Status.INVOKE], Status.INDETERMINATE),
        ([Status.INVOKE, Status.FAIL], Status.FAIL),
        ([Status.INVOKE, Status.FAIL, Status.INVOKE], Status.INDETERMINATE),
        ([Status.INVOKE, Status.INDETERMINATE, Status.INVOKE, Status.FAIL], Status.INDETERMINATE),
        ([Status.INVOKE, Status.INDETERMINATE, Status.INVOKE, Status.OK], Status.OK),
    ],
)
def test_final_outcome_of_a_record(events: list[Status], expected: Status) -> None:
    history = [
        SendEvent("r", s, 0 if s is Status.OK else None, 0, 0 if s is Status.OK else None)
        for s in events
    ]
    assert outcomes(history)["r"].status is expected


def test_history_file_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        w.invoke([_rid(1)])
        w.write(SendEvent(_rid(1), Status.OK, sequence=0, partition=1, offset=7))
    with path.open("a") as f:
        f.write('{"record_id": "torn')  # what kill -9 mid-write leaves behind
    events = read_history(path)
    assert [e.status for e in events] == [Status.INVOKE, Status.OK]
    assert events[1].at > 0
    assert outcomes(events)[_rid(1)].offset == 7

"""RootCache.root_message: the batch-root message a verifier builds, remembered per batch.

A remembered message must be exactly what :func:`batch_root_message` returns for the header,
tree size and root asked about: every field the message covers changes it, and a header the
builder refuses is refused (and never remembered).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import pytest

from intelbus.envelope import RootCache, parse
from intelbus.envelope.wire import FORMAT_V2, batch_root_message

VECTORS = Path(__file__).parents[1] / "vectors" / "envelope_v3.json"
RECORDS = [
    parse(bytes.fromhex(v["expected_record"])) for v in json.loads(VECTORS.read_text())["positive"]
]
ROOT = bytes(range(32))


def test_a_remembered_message_is_the_built_one() -> None:
    cache = RootCache()
    for sealed in RECORDS:
        h, size = sealed.header, sealed.proof.tree_size  # type: ignore[union-attr]
        first = cache.root_message(h, size, ROOT)
        assert first == batch_root_message(h, size, ROOT)
        assert cache.root_message(h, size, ROOT) is first  # remembered, not rebuilt


@pytest.mark.parametrize(
    "change",
    [
        {"environment": "other-env"},
        {"topic": "other.topic"},
        {"partition": 7},
        {"producer_id": "someone-else"},
        {"key_id": bytes(16)},
        # Fields the message does not cover share it: the record id, the sequence.
        {"record_id": uuid.uuid4()},
        {"sequence": 99},
    ],
)
def test_every_covered_field_changes_the_message(change: dict[str, object]) -> None:
    cache = RootCache()
    h = RECORDS[0].header
    other = dataclasses.replace(h, **change)  # type: ignore[arg-type]
    before = cache.root_message(h, 3, ROOT)
    after = cache.root_message(other, 3, ROOT)
    assert after == batch_root_message(other, 3, ROOT)
    covered = set(change) - {"record_id", "sequence"}
    assert (after != before) == bool(covered)
    assert cache.root_message(h, 3, bytes(32)) != before
    assert cache.root_message(h, 2, ROOT) != before


def test_a_refused_header_is_refused_and_not_remembered() -> None:
    cache = RootCache()
    v2 = dataclasses.replace(RECORDS[0].header, format_version=FORMAT_V2)
    for _ in range(2):
        with pytest.raises(ValueError, match="only a v3 record"):
            cache.root_message(v2, 3, ROOT)
    with pytest.raises(ValueError, match="tree size"):
        cache.root_message(RECORDS[0].header, 65, ROOT)


def test_the_memory_is_bounded() -> None:
    cache = RootCache(capacity=4)
    h = RECORDS[0].header
    messages = [cache.root_message(h, 3, bytes([i]) * 32) for i in range(10)]
    assert len(set(messages)) == 10
    assert len(cache._messages) <= 4

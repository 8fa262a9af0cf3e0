"""The fast fault tier, run in every CI run: one broker kill on a real 3-node cluster.

RF 3, min ISR 2, acks=all and idempotent: a few thousand sealed records are published through the
real Publisher (in its own process) while the partition leader is killed with kill -9; the consumer
then stores them. The checker must find every acknowledged record in the topic and exactly once in
the store. The full matrix (tests/faults/scenarios.py) runs from ``scripts/faults``.

A broker that cannot start fails this module (LocalKafka raises), it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import OPT_OUT_ENV
from tests.faults.scenarios import Bed, leader_kill, open_bed
from tests.faults.workspace import build

pytestmark = pytest.mark.kafka  # counted with the Kafka tests; a skip fails CI (tests/conftest.py)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    if os.environ.get(OPT_OUT_ENV) == "1":
        pytest.skip(f"Kafka tests skipped on request ({OPT_OUT_ENV}=1)")
    with open_bed(tmp_path_factory.mktemp("faults-fast"), proxied=False) as b:
        yield b


def test_leader_kill_9_loses_no_acknowledged_record_and_stores_none_twice(bed: Bed) -> None:
    ws = build(bed.root / "leader-kill", bed.bootstrap)
    result = leader_kill(bed, ws, count=3000, kills=1, seed=11)
    check = result.check
    assert result.figures["killed_leaders"], "no leader was killed"
    assert check["acknowledged"] == 3000
    assert check["lost"] == 0
    assert check["store_missing"] == 0
    assert check["store_duplicates"] == 0
    assert check["stored"] == 3000
    assert check["violations"] == {}
    assert {k: v for k, v in result.expectations.items() if not v} == {}
    assert result.passed

"""The consumer's crash hook (consumers/agency.py) is off by default and refuses unknown points.

The fault matrix proves each point really kills the consumer (exit -9, store consistent); this
checks the part that must never fire in production: without the variable, nothing is armed.
"""

from __future__ import annotations

import pytest

from consumers.agency import CRASH_AT_BATCH_ENV, CRASH_AT_ENV, CRASH_POINTS, _CrashPlan
from intelbus.errors import ConfigError
from intelbus.store.base import Batch


def test_unset_arms_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_AT_ENV, raising=False)
    plan = _CrashPlan.from_env()
    assert CRASH_POINTS  # else the next line checks nothing
    assert not any(plan.armed(p, n) for p in CRASH_POINTS for n in range(1, 10))
    batch = Batch(group_id="g", offsets={("t", 0): 5})
    assert plan.in_transaction(batch, 2) is batch


def test_an_unknown_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_AT_ENV, "after_pol")
    with pytest.raises(ConfigError):
        _CrashPlan.from_env()


def test_a_point_is_armed_for_its_batch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_AT_ENV, "mid_transaction")
    monkeypatch.setenv(CRASH_AT_BATCH_ENV, "3")
    plan = _CrashPlan.from_env()
    assert plan.armed("mid_transaction", 3)
    assert not plan.armed("mid_transaction", 2)
    assert not plan.armed("after_poll", 3)
    batch = Batch(group_id="g", offsets={("t", 0): 5})
    assert plan.in_transaction(batch, 2) is batch
    assert plan.in_transaction(batch, 3) is not batch  # its offsets now kill the process when read

"""The store's canonical JSON (payloads, lists) is byte for byte what ``json.dumps`` with its
options makes: the encoder built once gives the same text, and refuses the same values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intelbus.errors import StoreError
from intelbus.samples import feed
from intelbus.store.base import SqlStore


def _reference(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)


def test_every_sample_payload_encodes_as_json_dumps_did() -> None:
    payloads = [r.model_dump(mode="json") for r in feed(seed=1, sightings=60, incidents=20)]
    assert len(payloads) == 80
    for p in payloads:
        assert SqlStore._json_text(p) == _reference(p)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_any_json_value_encodes_as_json_dumps_did(value: object) -> None:
    expected = _reference(value)
    if "\\u0000" in expected:
        with pytest.raises(StoreError):
            SqlStore._json_text(value)
    else:
        assert SqlStore._json_text(value) == expected


@pytest.mark.parametrize("value", [math.nan, {"x": math.inf}, {"when": object()}, {1j: 1}])
def test_values_json_dumps_refused_are_refused(value: object) -> None:
    with pytest.raises(StoreError):
        SqlStore._json_text(value)

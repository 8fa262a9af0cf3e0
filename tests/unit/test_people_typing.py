"""What people type, made canonical: enumeration spellings, input rows, searches, topic drift."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from intelbus.policy.facts import Classification, Tlp
from intelbus.records import ForceArea, Sighting
from intelbus.spelling import canonical
from intelbus.store.search import matches
from intelbus.transport.topics import TopicState, bus_topics, drift
from producers.inputs import future_times, normalise, read_items
from producers.templates import template_text


@pytest.mark.parametrize(
    ("kind", "typed", "expected"),
    [
        (Tlp, "TLP:AMBER", Tlp.AMBER),
        (Tlp, "amber", Tlp.AMBER),
        (Tlp, "TLP:AMBER+STRICT", Tlp.AMBER_STRICT),
        (Tlp, "amber strict", Tlp.AMBER_STRICT),
        (Tlp, "PURPLE", None),
        (Classification, "Official-Sensitive", Classification.OFFICIAL_SENSITIVE),
        (ForceArea, "metropolitan", ForceArea.METROPOLITAN),
        (ForceArea, "City of London", ForceArea.CITY_OF_LONDON),
        (ForceArea, "gotham", None),
    ],
)
def test_common_spellings_map_to_the_canonical_symbol(
    kind: type, typed: str, expected: object
) -> None:
    assert canonical(kind, typed) == expected


def test_a_template_row_as_a_spreadsheet_saves_it_is_a_valid_record() -> None:
    text = "\ufeff" + template_text("sighting", "csv").replace("CLEAR", "green")
    (item,) = list(read_items(text, "csv"))
    assert item.data is not None
    data, generated = normalise(item.data)
    record = Sighting.model_validate(data)
    assert generated
    assert record.grading.tlp is Tlp.GREEN
    assert isinstance(record.place.latitude, float)


def test_a_generated_id_depends_on_the_contents_only() -> None:
    (item,) = list(read_items(template_text("sighting", "csv"), "csv"))
    assert item.data is not None
    first, _ = normalise(item.data)
    again, _ = normalise(item.data)
    other, _ = normalise({**item.data, "reporter_ref": "CST-R-0001"})
    assert first["record_id"] == again["record_id"] != other["record_id"]
    assert uuid.UUID(first["record_id"]).version == 5


def test_times_with_an_offset_become_utc_and_the_future_is_named() -> None:
    data, _ = normalise({"observed_at": "2026-09-01T19:30:00+01:00"})
    assert data["observed_at"] == "2026-09-01T18:30:00+00:00"
    naive, _ = normalise({"observed_at": "2026-09-01T19:30:00"})
    assert naive["observed_at"] == "2026-09-01T19:30:00"  # left for the model to refuse
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    assert future_times({"observed_at": ahead}, datetime.now(UTC), timedelta(minutes=5)) == [
        f"observed_at: {ahead} is in the future"
    ]


def test_search_finds_values_not_field_names_and_registrations_however_spaced() -> None:
    payload = {"grading": {"tlp": "GREEN"}, "vehicles": [{"registration": "AB12CDE"}]}
    assert not matches(payload, "grading")
    assert matches(payload, "AB12 CDE")
    assert matches(payload, "ab12-cde")
    assert matches(payload, "green")
    assert not matches(payload, "   ")


def test_drift_names_each_setting_that_differs_and_allows_more_partitions() -> None:
    spec = next(s for s in bus_topics(prefix="p", replication_factor=1) if s.name == "p.sightings")
    good = TopicState(spec.name, dict.fromkeys(range(5), (1,)), dict(spec.configs))
    assert drift(spec, good) == []
    bad = TopicState(spec.name, {0: (1,)}, {**spec.configs, "message.timestamp.type": "CreateTime"})
    problems = drift(spec, bad)
    assert len(problems) == 2
    assert "1 partition(s), needs 3" in problems[0]
    assert "message.timestamp.type is 'CreateTime', needs 'LogAppendTime'" in problems[1]
    assert drift(spec, None) == ["p.sightings does not exist"]

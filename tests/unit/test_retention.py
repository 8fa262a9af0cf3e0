"""Retention in a consumer's sharing policy: which rule, from when, until when, and every refusal."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelbus.cli import demo_cmd
from intelbus.errors import ConfigError
from intelbus.policy.decide import decide
from intelbus.policy.facts import Classification, RecordFacts, Tlp
from intelbus.policy.retention import (
    DEFAULT_RETENTION,
    DEFAULT_RETENTION_RULE_ID,
    MAX_DAYS,
    Basis,
    RetentionDecision,
    RetentionPolicy,
    RetentionSpec,
    expired,
    retention_for,
    review_due,
)
from intelbus.policy.rules import SharingPolicy

EVENT = datetime(2026, 1, 10, 9, tzinfo=UTC)
STORED = datetime(2026, 1, 12, 18, tzinfo=UTC)

HEAD = """agency = "herts-police"
own_force_areas = ["HERTFORDSHIRE"]
[[rules]]
id = "all"
action = "store"
"""

SECTION = """
[retention]
keep_days = 100
review_days = 50
[[retention.rules]]
id = "red"
tlp = ["RED"]
keep_days = 10
review_days = 5
[[retention.rules]]
id = "own-incidents"
kinds = ["incident"]
force_area = "own"
keep_days = 2000
review_days = 300
from = "stored"
[[retention.rules]]
id = "other-incidents"
kinds = ["incident"]
force_area = "other"
keep_days = 700
review_days = 200
[[retention.rules]]
id = "conditional"
handling_code = "C"
keep_days = 30
review_days = 30
[[retention.rules]]
id = "low-classification-in-kent"
classification_max = "OFFICIAL"
force_area = ["KENT"]
keep_days = 60
review_days = 20
"""


def load(tmp_path: Path, text: str) -> SharingPolicy:
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(text))
    return SharingPolicy.load(path)


def decision(policy: SharingPolicy | RetentionPolicy, **labels: object) -> RetentionDecision:
    given_labels: dict[str, object] = {
        "kind": "sighting",
        "tlp": "GREEN",
        "handling_code": "P",
        "classification": "OFFICIAL",
        "force_area": "HERTFORDSHIRE",
        "occurred_at": EVENT,
        "stored_at": STORED,
    }
    given_labels.update(labels)
    return retention_for(policy, **given_labels)  # type: ignore[arg-type]


@pytest.fixture
def policy(tmp_path: Path) -> SharingPolicy:
    return load(tmp_path, HEAD + SECTION)


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "rule_id"),
    [
        ({"tlp": "RED", "kind": "incident"}, "red"),  # first match wins over own-incidents
        ({"kind": "incident"}, "own-incidents"),
        ({"kind": "incident", "force_area": "METROPOLITAN"}, "other-incidents"),
        ({"kind": "incident", "force_area": None}, "other-incidents"),  # no area is not own
        ({"handling_code": "C"}, "conditional"),
        ({"force_area": "KENT"}, "low-classification-in-kent"),
        ({"force_area": "KENT", "classification": "OFFICIAL_SENSITIVE"}, DEFAULT_RETENTION_RULE_ID),
        ({}, DEFAULT_RETENTION_RULE_ID),
    ],
)
def test_the_first_matching_rule_decides(
    policy: SharingPolicy, labels: dict[str, object], rule_id: str
) -> None:
    assert decision(policy, **labels).rule_id == rule_id


def test_a_label_the_record_does_not_carry_matches_no_rule_that_asks_for_it(
    policy: SharingPolicy,
) -> None:
    """A receipt without a TLP is not RED; an unknown handling code is not C; an unknown
    classification is under no ceiling."""
    assert decision(policy, tlp=None).rule_id == DEFAULT_RETENTION_RULE_ID
    assert decision(policy, handling_code=None).rule_id == DEFAULT_RETENTION_RULE_ID
    for classification in (None, "NOT_A_CLASSIFICATION"):
        got = decision(policy, force_area="KENT", classification=classification)
        assert got.rule_id == DEFAULT_RETENTION_RULE_ID


def test_the_periods_of_the_matching_rule_apply(policy: SharingPolicy) -> None:
    red = decision(policy, tlp="RED")
    assert red.start == EVENT
    assert red.review_at == EVENT + timedelta(days=5)
    assert red.keep_until == EVENT + timedelta(days=10)
    default = decision(policy)
    assert default.review_at == EVENT + timedelta(days=50)
    assert default.keep_until == EVENT + timedelta(days=100)


# --- the clock ------------------------------------------------------------------------------


def test_from_event_counts_from_the_event_and_from_stored_from_the_store(
    policy: SharingPolicy,
) -> None:
    by_event = decision(policy, kind="incident", force_area="KENT")
    assert (by_event.rule_id, by_event.basis, by_event.start) == (
        "other-incidents",
        Basis.EVENT,
        EVENT,
    )
    assert by_event.keep_until == EVENT + timedelta(days=700)
    by_stored = decision(policy, kind="incident")
    assert (by_stored.rule_id, by_stored.basis, by_stored.start) == (
        "own-incidents",
        Basis.STORED,
        STORED,
    )
    assert by_stored.review_at == STORED + timedelta(days=300)
    assert by_stored.keep_until == STORED + timedelta(days=2000)


def test_the_section_sets_the_clock_of_rules_that_do_not(tmp_path: Path) -> None:
    text = HEAD + SECTION.replace("review_days = 50\n", 'review_days = 50\nfrom = "stored"\n', 1)
    stored_policy = load(tmp_path, text)
    assert decision(stored_policy).start == STORED
    assert decision(stored_policy, tlp="RED").basis is Basis.STORED
    # A rule's own "from" still wins over the section's.
    assert decision(stored_policy, kind="incident").basis is Basis.STORED


def test_a_future_event_cannot_extend_retention(policy: SharingPolicy) -> None:
    """A record describing a time after it was stored (a wrong clock, a hostile producer)
    counts from when it was stored."""
    future = STORED + timedelta(days=3650)
    got = decision(policy, occurred_at=future)
    assert got.start == STORED
    assert got.keep_until == STORED + timedelta(days=100)


def test_a_record_without_an_event_time_counts_from_when_it_was_stored(
    policy: SharingPolicy,
) -> None:
    got = decision(policy, occurred_at=None)
    assert (got.basis, got.start) == (Basis.EVENT, STORED)


def test_times_are_compared_in_utc_and_naive_times_are_refused(policy: SharingPolicy) -> None:
    plus_two = timezone(timedelta(hours=2))
    got = decision(policy, occurred_at=EVENT.astimezone(plus_two))
    assert got.start == EVENT
    assert got.start.tzinfo is UTC
    with pytest.raises(ValueError, match="occurred_at has no timezone"):
        decision(policy, occurred_at=EVENT.replace(tzinfo=None))
    with pytest.raises(ValueError, match="stored_at has no timezone"):
        decision(policy, stored_at=STORED.replace(tzinfo=None))
    with pytest.raises(ValueError, match="now has no timezone"):
        expired(got, datetime(2030, 1, 1))  # noqa: DTZ001 - the refusal is what is tested


def test_a_period_that_would_pass_the_end_of_time_stops_there(policy: SharingPolicy) -> None:
    late = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
    got = decision(policy, occurred_at=late, stored_at=late)
    assert got.keep_until == datetime.max.replace(tzinfo=UTC)
    assert not expired(got, late)


# --- expiry and review ----------------------------------------------------------------------


def test_expired_from_the_limit_itself_and_review_due_from_the_review_date(
    policy: SharingPolicy,
) -> None:
    got = decision(policy)
    tick = timedelta(microseconds=1)
    assert not expired(got, got.keep_until - tick)
    assert expired(got, got.keep_until)
    assert expired(got, got.keep_until + timedelta(days=1))
    assert not review_due(got, got.review_at - tick)
    assert review_due(got, got.review_at)
    assert not expired(got, got.review_at)  # reviewed before it goes


# --- defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "rule_id", "keep", "review"),
    [
        ({"kind": "sighting"}, "sightings", 365, 183),
        ({"kind": "incident"}, "incidents", 2190, 365),
        ({"kind": "incident", "tlp": "RED"}, "red-short", 180, 90),
        ({"kind": "sighting", "tlp": "RED"}, "red-short", 180, 90),
        ({"kind": "something-new"}, DEFAULT_RETENTION_RULE_ID, 365, 183),
    ],
)
def test_a_policy_without_a_retention_section_gets_the_documented_defaults(
    tmp_path: Path, labels: dict[str, object], rule_id: str, keep: int, review: int
) -> None:
    policy = load(tmp_path, HEAD)
    assert not policy.retention.explicit
    got = decision(policy, **labels)
    assert (got.rule_id, got.basis) == (rule_id, Basis.EVENT)
    assert got.keep_until - got.start == timedelta(days=keep)
    assert got.review_at - got.start == timedelta(days=review)
    assert got.retention_hash == RetentionPolicy.from_spec(None).retention_hash


def test_the_defaults_are_the_ones_the_data_map_documents() -> None:
    """docs/data-protection.md states the defaults: a change here must change it too."""
    doc = (Path(__file__).parents[2] / "docs" / "data-protection.md").read_text()
    assert f"`{DEFAULT_RETENTION.keep_days}` days" in doc
    for rule in DEFAULT_RETENTION.rules:
        assert f"| `{rule.id}` |" in doc
        assert f"| {rule.keep_days} | {rule.review_days} |" in doc


def test_a_retention_policy_compiles_on_its_own() -> None:
    """retention_for takes a RetentionPolicy as well as a SharingPolicy carrying one."""
    got = decision(RetentionPolicy.from_spec(None), kind="incident")
    assert got.rule_id == "incidents"


# --- the hash -------------------------------------------------------------------------------


def test_a_policy_without_retention_hashes_as_before_retention_existed(tmp_path: Path) -> None:
    """Pinned: the GMP demo policy (no [retention] section) hashed to this before this change,
    so records stored under it still name the policy that admitted them."""
    gmp = load(tmp_path, demo_cmd.POLICIES["gmp"])
    assert gmp.policy_hash == "55ddc4a1a68a2c2a97893fd0b491b5aca03b5cd751827414b20a614b0d1bbc01"


def test_the_policy_hash_and_the_retention_hash_change_with_the_retention(
    tmp_path: Path,
) -> None:
    without = load(tmp_path, HEAD)
    with_section = load(tmp_path, HEAD + SECTION)
    longer = load(tmp_path, HEAD + SECTION.replace("keep_days = 10\n", "keep_days = 11\n", 1))
    hashes = {p.policy_hash for p in (without, with_section, longer)}
    assert len(hashes) == 3
    retention_hashes = {p.retention.retention_hash for p in (without, with_section, longer)}
    assert len(retention_hashes) == 3
    assert decision(longer).retention_hash == longer.retention.retention_hash
    # The same section written again (a comment, another order of keys) hashes the same.
    again = load(tmp_path, HEAD + SECTION.replace("[retention]\n", "[retention]\n# why\n", 1))
    assert again.policy_hash == with_section.policy_hash


def test_writing_out_the_defaults_is_explicit_but_decides_the_same(tmp_path: Path) -> None:
    spelled_out = HEAD + textwrap.dedent("""
        [retention]
        keep_days = 365
        review_days = 183
        from = "event"
        [[retention.rules]]
        id = "red-short"
        tlp = ["RED"]
        keep_days = 180
        review_days = 90
        [[retention.rules]]
        id = "incidents"
        kinds = ["incident"]
        keep_days = 2190
        review_days = 365
        [[retention.rules]]
        id = "sightings"
        kinds = ["sighting"]
        keep_days = 365
        review_days = 183
        """)
    implicit, explicit = load(tmp_path, HEAD), load(tmp_path, spelled_out)
    assert explicit.retention.explicit
    assert explicit.retention.retention_hash == implicit.retention.retention_hash
    assert explicit.policy_hash != implicit.policy_hash  # the file says more
    for kind in ("sighting", "incident"):
        assert decision(explicit, kind=kind) == decision(implicit, kind=kind)


def test_retention_does_not_change_sharing_decisions(tmp_path: Path) -> None:
    without, with_section = load(tmp_path, HEAD), load(tmp_path, HEAD + SECTION)
    facts = RecordFacts(
        "sighting", Tlp.GREEN, Classification.OFFICIAL, "P", (), "1", "A", "HERTFORDSHIRE", EVENT
    )
    a, b = decide(without, facts, STORED), decide(with_section, facts, STORED)
    assert (a.action, a.rule_id, a.redact) == (b.action, b.rule_id, b.redact)
    assert without.rules == with_section.rules


# --- refusals at load -----------------------------------------------------------------------


def refused(tmp_path: Path, section: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, HEAD + textwrap.dedent(section))
    return str(raised.value)


RULE = """
[retention]
keep_days = 100
review_days = 50
[[retention.rules]]
id = "the-rule"
"""


@pytest.mark.parametrize("field", ["keep_days", "review_days"])
@pytest.mark.parametrize("days", [0, -1, MAX_DAYS + 1])
def test_a_rule_with_days_out_of_range_is_refused_naming_rule_and_field(
    tmp_path: Path, field: str, days: int
) -> None:
    other = "review_days" if field == "keep_days" else "keep_days"
    message = refused(tmp_path, RULE + f"{field} = {days}\n{other} = 1\n")
    assert "retention rule the-rule" in message
    assert f"{field} is {days}" in message


@pytest.mark.parametrize("field", ["keep_days", "review_days"])
@pytest.mark.parametrize("days", [0, -5])
def test_a_section_with_days_out_of_range_is_refused_naming_the_field(
    tmp_path: Path, field: str, days: int
) -> None:
    section = "[retention]\nkeep_days = 100\nreview_days = 50\n".replace(
        f"{field} = {100 if field == 'keep_days' else 50}", f"{field} = {days}"
    )
    message = refused(tmp_path, section)
    assert f"retention: {field} is {days}" in message


def test_a_review_later_than_the_limit_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, RULE + "keep_days = 30\nreview_days = 31\n")
    assert "retention rule the-rule: review_days (31) is later than keep_days (30)" in message
    section = refused(tmp_path, "[retention]\nkeep_days = 30\nreview_days = 60\n")
    assert "retention: review_days (60) is later than keep_days (30)" in section


def test_a_review_on_the_last_day_is_allowed(tmp_path: Path) -> None:
    policy = load(tmp_path, HEAD + RULE + "keep_days = 30\nreview_days = 30\n")
    got = decision(policy)
    assert got.review_at == got.keep_until


@pytest.mark.parametrize("matcher", ["kinds", "tlp", "force_area"])
def test_an_empty_matcher_list_is_refused(tmp_path: Path, matcher: str) -> None:
    message = refused(tmp_path, RULE + f"keep_days = 30\nreview_days = 10\n{matcher} = []\n")
    assert f"retention rule the-rule: {matcher} is empty" in message


def test_unknown_keys_are_refused_naming_the_rule_or_section(tmp_path: Path) -> None:
    message = refused(tmp_path, RULE + "keep_days = 30\nreview_days = 10\nkeep_for = 3\n")
    assert "retention rule the-rule: unknown key 'keep_for'" in message
    section = refused(tmp_path, "[retention]\nkeep_days = 30\nreview_days = 10\nreview = 3\n")
    assert "retention: unknown key 'review'" in section


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('kinds = ["correction"]', "kinds"),  # retention judges stored records, not amendments
        ('tlp = ["PURPLE"]', "tlp"),
        ('handling_code = "X"', "handling_code"),
        ('classification_max = "VERY_SECRET"', "classification_max"),
        ('from = "received"', "from"),
        ("keep_days = 30.5", "keep_days"),
        ("keep_days = true", "keep_days"),
        ('keep_days = "30"', "keep_days"),
    ],
)
def test_unknown_values_are_refused_naming_the_field(tmp_path: Path, line: str, field: str) -> None:
    body = "keep_days = 30\nreview_days = 10\n"
    if line.startswith("keep_days"):
        body = "review_days = 10\n"
    message = refused(tmp_path, RULE + body + line + "\n")
    assert f"retention.rules.0.{field}" in message


def test_a_section_or_rule_missing_its_periods_is_refused(tmp_path: Path) -> None:
    assert "retention.keep_days" in refused(tmp_path, "[retention]\nreview_days = 10\n")
    assert "retention.rules.0.review_days" in refused(tmp_path, RULE + "keep_days = 30\n")


@pytest.mark.parametrize("rule_id", ["twice", DEFAULT_RETENTION_RULE_ID])
def test_duplicate_or_reserved_rule_ids_are_refused(tmp_path: Path, rule_id: str) -> None:
    rule = f'[[retention.rules]]\nid = "{rule_id}"\nkeep_days = 30\nreview_days = 10\n'
    twice = rule if rule_id == "twice" else ""
    message = refused(tmp_path, "[retention]\nkeep_days = 30\nreview_days = 10\n" + rule + twice)
    assert "retention: rule ids must be unique" in message


def test_the_demo_policies_load_with_their_retention(tmp_path: Path) -> None:
    """The Met and Herts set retention; GMP keeps the defaults."""
    explicit = {
        agency: load(tmp_path, text).retention.explicit
        for agency, text in demo_cmd.POLICIES.items()
    }
    assert explicit == {"met-police": True, "herts-police": True, "gmp": False}


# --- properties -----------------------------------------------------------------------------

_times = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; timezones added
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=1))]),
)
_periods = st.tuples(st.integers(1, MAX_DAYS), st.integers(1, MAX_DAYS)).map(
    lambda p: (max(p), min(p))
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    section=_periods,
    rule=_periods,
    rule_from=st.sampled_from([None, "event", "stored"]),
    tlp=st.sampled_from([None, *[t.value for t in Tlp]]),
    kind=st.sampled_from(["sighting", "incident", "other"]),
    occurred_at=st.none() | _times,
    stored_at=_times,
)
def test_the_limit_is_never_before_the_review_nor_the_review_before_the_start(
    *,
    section: tuple[int, int],
    rule: tuple[int, int],
    rule_from: str | None,
    tlp: str | None,
    kind: str,
    occurred_at: datetime | None,
    stored_at: datetime,
) -> None:
    spec = RetentionSpec.model_validate(
        {
            "keep_days": section[0],
            "review_days": section[1],
            "rules": [
                {
                    "id": "r",
                    "tlp": ["RED", "AMBER"],
                    "keep_days": rule[0],
                    "review_days": rule[1],
                    **({"from": rule_from} if rule_from else {}),
                }
            ],
        }
    )
    got = decision(
        RetentionPolicy.from_spec(spec),
        kind=kind,
        tlp=tlp,
        occurred_at=occurred_at,
        stored_at=stored_at,
    )
    assert got.start <= stored_at
    if occurred_at is not None and got.basis is Basis.EVENT:
        assert got.start <= occurred_at
    assert got.start <= got.review_at <= got.keep_until
    assert not expired(got, got.start)
    assert expired(got, got.keep_until)
    expected = rule if tlp in ("RED", "AMBER") else section
    assert got.keep_until - got.start == timedelta(days=expected[0])
    assert got.review_at - got.start == timedelta(days=expected[1])

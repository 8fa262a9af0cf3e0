"""Sharing decisions: the producer's agreement (who receives) and a consumer's policy (what it keeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intelbus.errors import ConfigError
from intelbus.policy.agreement import NoRecipients, SharingAgreement
from intelbus.policy.decide import CONDITIONS_RULE_ID, decide
from intelbus.policy.facts import Classification, RecordFacts, Tlp
from intelbus.policy.redact import REDACTED, redact
from intelbus.policy.rules import DEFAULT_RULE_ID, Action, PolicySpec, SharingPolicy

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

AGREEMENT = SharingAgreement.model_validate(
    {
        "producer": "cst",
        "member_forces": ["met-police", "herts-police", "gmp"],
        "amber_partners": ["jewish-care"],
        "auditors": ["inspectorate"],
        "auditor_tlp": ["CLEAR", "GREEN", "AMBER"],
        "force_areas": {
            "met-police": ["METROPOLITAN", "CITY_OF_LONDON"],
            "herts-police": ["HERTFORDSHIRE"],
            "gmp": ["GREATER_MANCHESTER"],
        },
        "accepts_conditions": {"met-police": ["*"], "herts-police": ["no-onward-disclosure"]},
    }
)


def facts(**overrides: object) -> RecordFacts:
    base: dict[str, object] = {
        "kind": "sighting",
        "tlp": Tlp.GREEN,
        "classification": Classification.OFFICIAL,
        "handling_code": "P",
        "conditions": (),
        "source_evaluation": "1",
        "assessment": "A",
        "force_area": "HERTFORDSHIRE",
        "occurred_at": NOW - timedelta(days=1),
    }
    base.update(overrides)
    return RecordFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tlp", "expected"),
    [
        (Tlp.CLEAR, ("gmp", "herts-police", "inspectorate", "met-police")),
        (Tlp.GREEN, ("gmp", "herts-police", "inspectorate", "met-police")),
        (Tlp.AMBER, ("herts-police", "inspectorate", "jewish-care")),
    ],
)
def test_agreement_recipients_by_tlp(tlp: Tlp, expected: tuple[str, ...]) -> None:
    """CLEAR/GREEN go to all member forces; AMBER to the area's force and named partners."""
    assert AGREEMENT.recipients(facts(tlp=tlp)) == expected


@pytest.mark.parametrize("tlp", [Tlp.AMBER_STRICT, Tlp.RED])
def test_red_and_amber_strict_go_only_to_named_recipients(tlp: Tlp) -> None:
    """No names, no publication; with names, exactly those (never the auditors by default)."""
    with pytest.raises(NoRecipients, match="named"):
        AGREEMENT.recipients(facts(tlp=tlp))
    assert AGREEMENT.recipients(facts(tlp=tlp), named=["met-police"]) == ("met-police",)


def test_handling_code_c_goes_only_to_agencies_accepting_its_conditions() -> None:
    """Herts accepts no-onward-disclosure only; the Met accepts anything; GMP nothing."""
    one = facts(handling_code="C", conditions=("no-onward-disclosure",))
    assert AGREEMENT.recipients(one) == ("herts-police", "met-police")
    two = facts(handling_code="C", conditions=("no-onward-disclosure", "not-for-court"))
    assert AGREEMENT.recipients(two) == ("met-police",)


def test_an_amber_record_outside_every_area_is_not_published_without_partners() -> None:
    """Fail closed: nobody to send to means not published."""
    bare = AGREEMENT.model_copy(update={"amber_partners": (), "auditors": ()})
    with pytest.raises(NoRecipients):
        bare.recipients(facts(tlp=Tlp.AMBER, force_area="WEST_MIDLANDS"))
    with pytest.raises(NoRecipients):
        bare.recipients(facts(tlp=Tlp.AMBER, force_area=None))


def test_unknown_recipients_are_refused_not_dropped() -> None:
    """A recipient the directory cannot seal to stops the publication."""
    with pytest.raises(NoRecipients, match="not in the directory: gmp"):
        AGREEMENT.recipients(facts(), known={"met-police": 1, "herts-police": 1, "inspectorate": 1})


def test_agreement_file_rejects_unknown_keys(tmp_path: Path) -> None:
    """A typo in the agreement is an error at load time, not a silent default."""
    path = tmp_path / "agreement.toml"
    path.write_text('producer = "cst"\nmember_force = ["met-police"]\n')
    with pytest.raises(ConfigError, match="member_force"):
        SharingAgreement.load(path)


HERTS_POLICY = """
agency = "herts-police"
own_force_areas = ["HERTFORDSHIRE"]
accepted_conditions = ["no-onward-disclosure"]

[[rules]]
id = "quarantine-false"
assessment = ["E"]
action = "quarantine"

[[rules]]
id = "own-sightings"
kinds = ["sighting"]
force_area = "own"
classification_max = "OFFICIAL_SENSITIVE"
action = "store"

[[rules]]
id = "incidents-redacted"
kinds = ["incident"]
max_age_days = 365
action = "redact"
redact = ["victim", "reporter_ref", "place.address"]

[[rules]]
id = "other-areas"
force_area = "other"
action = "withhold"
"""


@pytest.fixture
def herts(tmp_path: Path) -> SharingPolicy:
    path = tmp_path / "herts.toml"
    path.write_text(HERTS_POLICY)
    return SharingPolicy.load(path)


@pytest.mark.parametrize(
    ("record", "action", "rule"),
    [
        (facts(), Action.STORE, "own-sightings"),
        (facts(assessment="E"), Action.QUARANTINE, "quarantine-false"),
        (facts(classification=Classification.SECRET), Action.WITHHOLD, DEFAULT_RULE_ID),
        (facts(kind="incident", force_area="METROPOLITAN"), Action.REDACT, "incidents-redacted"),
        (
            facts(kind="incident", occurred_at=NOW - timedelta(days=400)),
            Action.WITHHOLD,
            DEFAULT_RULE_ID,
        ),
        (facts(force_area="GREATER_MANCHESTER"), Action.WITHHOLD, "other-areas"),
        (
            facts(handling_code="C", conditions=("not-for-court",)),
            Action.WITHHOLD,
            CONDITIONS_RULE_ID,
        ),
        (
            facts(handling_code="C", conditions=("no-onward-disclosure",)),
            Action.STORE,
            "own-sightings",
        ),
    ],
)
def test_first_matching_rule_wins_and_default_is_deny(
    herts: SharingPolicy, record: RecordFacts, action: Action, rule: str
) -> None:
    """Rules run in order; a record no rule admits is withheld."""
    decision = decide(herts, record, NOW)
    assert (decision.action, decision.rule_id) == (action, rule)
    assert decision.policy_hash == herts.policy_hash


def test_an_empty_policy_stores_nothing() -> None:
    """No rules: everything is withheld."""
    empty = SharingPolicy.from_spec(PolicySpec(agency="gmp"))
    for tlp in Tlp:
        assert decide(empty, facts(tlp=tlp), NOW).action is Action.WITHHOLD


def test_policy_hash_changes_with_the_policy(herts: SharingPolicy) -> None:
    """The hash stored with each record identifies the exact policy that admitted it."""
    other = SharingPolicy.from_spec(PolicySpec(agency="herts-police"))
    assert herts.policy_hash != other.policy_hash
    assert len(herts.policy_hash) == 64


@pytest.mark.parametrize(
    "bad",
    [
        'agency = "x1"\n[[rules]]\nid = "a"\naction = "stor"\n',
        'agency = "x1"\n[[rules]]\nid = "a"\naction = "redact"\n',
        'agency = "x1"\n[[rules]]\nid = "a"\naction = "store"\ntlp = ["AMBER+STRICT"]\n',
        'agency = "x1"\n[[rules]]\nid = "a"\naction = "store"\n[[rules]]\nid = "a"\naction = "store"\n',
        'agency = "x1"\nrule = []\n',
    ],
)
def test_invalid_policies_are_refused_at_load(tmp_path: Path, bad: str) -> None:
    """Unknown actions, values or keys, and duplicate rule ids, are load-time errors."""
    path = tmp_path / "p.toml"
    path.write_text(bad)
    with pytest.raises(ConfigError):
        SharingPolicy.load(path)


def test_redaction_keeps_keys_and_reports_what_it_removed() -> None:
    """Redacted fields are visibly marked; absent paths are ignored; the input is untouched."""
    payload = {
        "victim": {"name": "x"},
        "reporter_ref": "R-1",
        "place": {"address": "1 High St", "area": "Borehamwood"},
    }
    out, done = redact(payload, ["victim", "place.address", "vehicles", "place.nothing"])
    assert out == {
        "victim": REDACTED,
        "reporter_ref": "R-1",
        "place": {"address": REDACTED, "area": "Borehamwood"},
    }
    assert done == ("victim", "place.address")
    assert payload["victim"] == {"name": "x"}

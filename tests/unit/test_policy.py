"""Sharing decisions: the producer's agreement (who receives) and a consumer's policy (what it keeps)."""

from __future__ import annotations

import ast
import copy
import json
import re
import textwrap
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from intelbus.errors import ConfigError, NoRecipients
from intelbus.policy import rules as rules_module
from intelbus.policy.agreement import SharingAgreement
from intelbus.policy.decide import CONDITIONS_RULE_ID, decide
from intelbus.policy.facts import Classification, RecordFacts, Tlp
from intelbus.policy.redact import REDACTED, redact
from intelbus.policy.rules import (
    DEFAULT_RULE_ID,
    KIND_FIELD_PATHS,
    LABEL_PATHS,
    Action,
    PolicySpec,
    SharingPolicy,
    field_paths,
)
from intelbus.records import Incident, Sighting
from intelbus.serde.registry import SchemaRegistry

REPO = Path(__file__).parents[2]

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
redact = ["victim_details", "reporter_ref", "place.address_or_area"]

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


# --- Redaction through lists -------------------------------------------------------------------

GRADING = {
    "source_evaluation": "S2",
    "assessment": "B",
    "handling_code": "P",
    "handling_conditions": [],
    "tlp": "GREEN",
    "classification": "OFFICIAL",
}
PLACE = {
    "site_name": "Beth Shalom",
    "site_kind": "SYNAGOGUE",
    "address_or_area": "1 High Street",
    "force_area": "HERTFORDSHIRE",
    "latitude": 51.65,
    "longitude": -0.27,
}


def sighting_payload() -> dict[str, Any]:
    """A sighting with every optional field set somewhere, as the consumer redacts it (JSON)."""
    model = Sighting.model_validate(
        {
            "record_id": "0b8a2f8e-8d52-4c7e-9a55-6c8f1d2e3a4b",
            "grading": GRADING,
            "observed_at": "2026-05-30T10:00:00Z",
            "place": PLACE,
            "behaviours": ["FILMING", "LOITERING"],
            "description": "Two men filming the entrance.",
            "persons": [
                {"summary": "Tall man", "approx_age": "30s", "clothing": "Black coat"},
                {"summary": "Short man"},
            ],
            "vehicles": [
                {"registration": "AB12 CDE", "make": "Ford", "model": "Focus", "colour": "Blue"},
                {"make": "Vauxhall"},
                {"registration": "xy99zzz"},
            ],
            "reporter_ref": "R-17",
            "police_crime_reference": "CR-2026-1",
        }
    )
    out: dict[str, Any] = json.loads(model.model_dump_json())
    return out


def incident_payload() -> dict[str, Any]:
    """An incident with every optional field set, as the consumer redacts it (JSON)."""
    model = Incident.model_validate(
        {
            "record_id": "5d1c7f3a-2b4e-4f6a-8c9d-0e1f2a3b4c5d",
            "grading": GRADING,
            "occurred_at": "2026-05-29T21:30:00Z",
            "place": PLACE,
            "category": "THREATS",
            "mode": "IN_PERSON",
            "victim_type": "INDIVIDUAL",
            "victim_details": "Congregant leaving evening service.",
            "offender_description": "Man in a grey hoodie.",
            "description": "Shouted threats at a congregant.",
            "police_crime_reference": "CR-2026-2",
            "status": "REPORTED",
            "reporter_ref": "R-18",
        }
    )
    out: dict[str, Any] = json.loads(model.model_dump_json())
    return out


PAYLOADS = {"sighting": sighting_payload, "incident": incident_payload}


def test_a_path_through_a_list_redacts_that_field_of_every_element() -> None:
    """`vehicles.registration` replaces each vehicle's registration; `persons` the whole list."""
    payload = sighting_payload()
    before = copy.deepcopy(payload)
    out, done = redact(payload, ["vehicles.registration", "persons"])
    assert done == ("vehicles.registration", "persons")
    assert out["vehicles"] == [
        {"registration": REDACTED, "make": "Ford", "model": "Focus", "colour": "Blue"},
        {"registration": None, "make": "Vauxhall", "model": None, "colour": None},
        {"registration": REDACTED, "make": None, "model": None, "colour": None},
    ]
    assert out["persons"] == REDACTED
    untouched = {k: v for k, v in before.items() if k not in {"vehicles", "persons"}}
    assert {k: v for k, v in out.items() if k not in {"vehicles", "persons"}} == untouched
    assert payload == before  # the input is not mutated


def test_a_path_through_nested_lists_reaches_every_element_at_every_level() -> None:
    """Lists inside list elements, and lists of lists, are walked the same way."""
    payload = {
        "groups": [
            {"members": [{"name": "a", "age": 1}, {"name": None, "age": 2}]},
            {"members": []},
            {"members": [{"name": "c", "age": 3}]},
            {"members": None},
        ],
        "grid": [[{"x": 1, "y": 0}], [], [{"x": 2}, {"y": 3}]],
    }
    before = copy.deepcopy(payload)
    out, done = redact(payload, ["groups.members.name", "grid.x"])
    assert out == {
        "groups": [
            {"members": [{"name": REDACTED, "age": 1}, {"name": None, "age": 2}]},
            {"members": []},
            {"members": [{"name": REDACTED, "age": 3}]},
            {"members": None},
        ],
        "grid": [[{"x": REDACTED, "y": 0}], [], [{"x": REDACTED}, {"y": 3}]],
    }
    assert done == ("groups.members.name", "grid.x")
    assert payload == before


def test_a_list_path_counts_as_redacted_only_when_a_value_was_replaced() -> None:
    """No element has the field (or it is null): nothing replaced, the path is not reported."""
    payload = {"vehicles": [{"registration": None, "make": "Ford"}, {"make": "Kia"}], "persons": []}
    out, done = redact(payload, ["vehicles.registration", "persons.summary", "vehicles.make"])
    assert out == {
        "vehicles": [{"registration": None, "make": REDACTED}, {"make": REDACTED}],
        "persons": [],
    }
    assert done == ("vehicles.make",)


# --- Which redact paths a policy accepts -------------------------------------------------------


def _label_conflict(path: str) -> bool:
    return any(
        path == label or path.startswith(label + ".") or label.startswith(path + ".")
        for label in LABEL_PATHS
    )


def _avro_paths(schema: Any, prefix: str = "", named: dict[str, Any] | None = None) -> set[str]:
    """Every dotted field path of an (expanded) Avro record, through records, arrays and unions."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return _avro_paths(named[schema], prefix, named) if schema in named else set()
    if isinstance(schema, list):
        return set().union(*(_avro_paths(branch, prefix, named) for branch in schema))
    if schema.get("type") == "array":
        return _avro_paths(schema["items"], prefix, named)
    if schema.get("type") != "record":
        return set()
    named[schema["name"]] = schema
    found: set[str] = set()
    for f in schema["fields"]:
        path = prefix + f["name"]
        found |= {path} | _avro_paths(f["type"], path + ".", named)
    return found


def test_the_valid_paths_are_exactly_the_avro_schemas_fields() -> None:
    """The paths derived from the models are those of the wire schemas (the source of truth)."""
    registry = SchemaRegistry.load()
    for model in (Sighting, Incident):
        avro = _avro_paths(registry.current(model.SCHEMA).schema)
        assert field_paths(model) == avro
        assert KIND_FIELD_PATHS[model.KIND] == avro
    assert "vehicles.registration" in KIND_FIELD_PATHS["sighting"]
    assert "persons.summary" in KIND_FIELD_PATHS["sighting"]
    every = KIND_FIELD_PATHS["sighting"] | KIND_FIELD_PATHS["incident"]
    assert set(LABEL_PATHS) <= every  # no stale label


def _policy(**rule: object) -> str:
    lines = ['agency = "x1"', "[[rules]]", 'id = "r"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in rule.items()]
    return "\n".join(lines) + "\n"


def _load(tmp_path: Path, text: str) -> SharingPolicy:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return SharingPolicy.load(path)


@pytest.mark.parametrize(
    ("kind", "path"),
    sorted((kind, path) for kind, paths in KIND_FIELD_PATHS.items() for path in paths),
)
def test_a_field_path_is_accepted_exactly_when_it_is_not_a_label_and_it_redacts(
    tmp_path: Path, kind: str, path: str
) -> None:
    """Every field of the kind loads unless it touches a label; every accepted one redacts a record."""
    text = _policy(kinds=[kind], action="redact", redact=[path])
    if _label_conflict(path):
        with pytest.raises(ConfigError, match="the bus needs to apply sharing rules"):
            _load(tmp_path, text)
        return
    policy = _load(tmp_path, text)
    decision = decide(policy, facts(kind=kind), NOW)
    assert (decision.action, decision.redact) == (Action.REDACT, (path,))
    payload = PAYLOADS[kind]()
    out, done = redact(payload, decision.redact)
    assert done == (path,)
    assert out != payload


INCIDENT_FIELDS = (
    "category, description, grading, mode, occurred_at, offender_description, place, "
    "police_crime_reference, record_id, reporter_ref, status, victim_details, victim_type"
)
SIGHTING_FIELDS = (
    "behaviours, description, grading, observed_at, persons, place, police_crime_reference, "
    "record_id, reporter_ref, vehicles"
)
LABEL_WHY = (
    "the bus needs to apply sharing rules and handling "
    "(the stored labels and later policy decisions depend on it)"
)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"kinds": ["incident"], "redact": ["victim_detail"]},
            f"redact path 'victim_detail' is not a field of incident (fields: {INCIDENT_FIELDS})",
        ),
        (
            {"kinds": ["sighting", "correction"], "redact": ["victim_details"]},
            f"redact path 'victim_details' is not a field of sighting (fields: {SIGHTING_FIELDS})",
        ),
        (
            {"kinds": ["incident"], "redact": ["vehicles.registration"]},
            f"redact path 'vehicles.registration' is not a field of incident (fields: {INCIDENT_FIELDS})",
        ),
        (
            {"redact": ["place.address"]},
            "redact path 'place.address' is not a field of sighting or incident (fields of place: "
            "place.address_or_area, place.force_area, place.latitude, place.longitude, "
            "place.site_kind, place.site_name)",
        ),
        (
            {"redact": ["vehicles.plate"]},
            "redact path 'vehicles.plate' is not a field of sighting or incident (fields of "
            "vehicles: vehicles.colour, vehicles.make, vehicles.model, vehicles.registration)",
        ),
        (
            {"redact": ["reporter_ref.name"]},
            "redact path 'reporter_ref.name' is not a field of sighting or incident "
            "(reporter_ref has no fields under it)",
        ),
        (
            {"kinds": ["incident", "correction"], "redact": ["replacement.victim_details"]},
            "redact path 'replacement.victim_details' is not a field of incident: a correction is "
            "judged and redacted as the new version of the record it corrects: redact "
            "'victim_details', which covers it",
        ),
        (
            {"redact": ["record_id"]},
            f"redact path 'record_id' cannot be redacted: it is a label {LABEL_WHY}",
        ),
        (
            {"redact": ["grading"]},
            f"redact path 'grading' cannot be redacted: it is a label {LABEL_WHY}",
        ),
        (
            {"redact": ["grading.handling_conditions"]},
            "redact path 'grading.handling_conditions' cannot be redacted: it is part of grading, "
            f"a label {LABEL_WHY}",
        ),
        (
            {"redact": ["place.force_area"]},
            f"redact path 'place.force_area' cannot be redacted: it is a label {LABEL_WHY}",
        ),
        (
            {"redact": ["place"]},
            "redact path 'place' cannot be redacted: it holds place.force_area, "
            f"a label {LABEL_WHY}",
        ),
        (
            {"kinds": ["sighting"], "redact": ["observed_at"]},
            f"redact path 'observed_at' cannot be redacted: it is a label {LABEL_WHY}",
        ),
        (
            {"kinds": ["incident"], "redact": ["occurred_at"]},
            f"redact path 'occurred_at' cannot be redacted: it is a label {LABEL_WHY}",
        ),
    ],
)
def test_an_unappliable_redact_path_is_refused_in_one_line(
    tmp_path: Path, rule: dict[str, object], message: str
) -> None:
    """Unknown for every kind the rule can match, or a label: the rule, the path and why."""
    text = _policy(action="redact", **rule)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value) == f"invalid sharing policy {tmp_path / 'p.toml'}: rule r: {message}"
    assert "\n" not in str(caught.value)


def test_a_path_of_either_kind_is_valid_for_a_rule_matching_both(tmp_path: Path) -> None:
    """No kinds: a field of sighting or of incident will do (the other kind simply lacks it)."""
    policy = _load(
        tmp_path,
        _policy(action="redact", redact=["victim_details", "vehicles.registration"]),
    )
    paths = decide(policy, facts(kind="incident"), NOW).redact
    _, done = redact(incident_payload(), paths)
    assert done == ("victim_details",)
    _, done = redact(sighting_payload(), paths)
    assert done == ("vehicles.registration",)


AMENDMENT_WHY = (
    "lists only amendment kinds, so the rule would match nothing: a correction is judged as the "
    "new version of the sighting or incident it corrects, and a retraction always applies "
    '(list "sighting" and/or "incident")'
)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kinds": ["correction"]}, f'kinds ["correction"] {AMENDMENT_WHY}'),
        ({"kinds": ["retraction"]}, f'kinds ["retraction"] {AMENDMENT_WHY}'),
        (
            {"kinds": ["correction", "retraction"]},
            f'kinds ["correction", "retraction"] {AMENDMENT_WHY}',
        ),
        (
            {"kinds": []},
            "kinds is empty, so the rule would match nothing (leave kinds out to match any)",
        ),
        ({"tlp": []}, "tlp is empty, so the rule would match nothing (leave tlp out to match any)"),
        (
            {"force_area": []},
            "force_area is empty, so the rule would match nothing (leave force_area out to match any)",
        ),
    ],
)
def test_a_rule_that_could_match_nothing_is_refused(
    tmp_path: Path, rule: dict[str, object], message: str
) -> None:
    """Amendment kinds alone, or an empty list matcher, would silently never match."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _policy(action="quarantine", **rule))
    assert str(caught.value) == f"invalid sharing policy {tmp_path / 'p.toml'}: rule r: {message}"
    with pytest.raises(
        ConfigError, match=re.escape(f"invalid sharing policy of x1: rule r: {message}")
    ):
        SharingPolicy.from_spec(
            PolicySpec.model_validate(tomllib.loads(_policy(action="store", **rule)))
        )


def test_every_problem_of_a_policy_is_named_on_one_line(tmp_path: Path) -> None:
    """Several unappliable rules: all are reported, still one line."""
    text = _policy(kinds=["retraction"], action="store") + (
        '[[rules]]\nid = "s"\naction = "redact"\nredact = ["reporter_ref", "grading.tlp"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value) == (
        f"invalid sharing policy {tmp_path / 'p.toml'}: "
        f'rule r: kinds ["retraction"] {AMENDMENT_WHY}; '
        "rule s: redact path 'grading.tlp' cannot be redacted: it is part of grading, "
        f"a label {LABEL_WHY}"
    )


def test_amendment_kinds_beside_a_judged_kind_load_and_have_no_effect(tmp_path: Path) -> None:
    """`kinds = ["sighting", "correction", "retraction"]` decides exactly as `["sighting"]`."""
    with_amendments = _load(
        tmp_path, _policy(kinds=["sighting", "correction", "retraction"], action="quarantine")
    )
    without = _load(tmp_path, _policy(kinds=["sighting"], action="quarantine"))
    for kind in ("sighting", "incident", "correction", "retraction"):
        for tlp in Tlp:
            record = facts(kind=kind, tlp=tlp)
            a, b = decide(with_amendments, record, NOW), decide(without, record, NOW)
            assert (a.action, a.rule_id) == (b.action, b.rule_id)
    assert decide(with_amendments, facts(kind="retraction"), NOW).rule_id == DEFAULT_RULE_ID
    assert decide(with_amendments, facts(kind="sighting"), NOW).action is Action.QUARANTINE


# --- Every policy in the repository still loads ------------------------------------------------

# Files whose policies are deliberately invalid (refusal tests and the fuzz corpus's seeds).
DELIBERATELY_INVALID = {"tests/unit/test_policy.py", "tests/fuzz/generate_corpus.py"}


def _toml_policy(text: str) -> dict[str, Any]:
    """A policy from a TOML string, or from the literal block (``::``) of a docstring."""
    if "::\n" in text:
        block = text.split("::\n", 1)[1].splitlines()
        end = next((i for i, line in enumerate(block) if line and not line.startswith(" ")), None)
        text = textwrap.dedent("\n".join(block[:end]))
    return tomllib.loads(text)


def _repository_policies() -> dict[str, dict[str, Any]]:
    """Every literal sharing policy in the repository: TOML strings and dicts in Python files,
    TOML files and ```toml blocks in Markdown (the fuzz corpus is replayed by test_corpus)."""
    found: dict[str, dict[str, Any]] = {}
    for file in sorted(REPO.rglob("*")):
        rel = file.relative_to(REPO).as_posix()
        if (
            not file.is_file()
            or any(part.startswith(".") for part in file.relative_to(REPO).parts)
            or rel in DELIBERATELY_INVALID
            or rel.startswith("tests/fuzz/corpus/")
        ):
            continue
        if file.suffix == ".py":
            for node in ast.walk(ast.parse(file.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and "[[rules]]" in node.value
                ):
                    found[f"{rel}:{node.lineno}"] = _toml_policy(node.value)
                elif isinstance(node, ast.Dict) and {"agency", "rules"} <= {
                    k.value for k in node.keys if isinstance(k, ast.Constant)
                }:
                    try:
                        found[f"{rel}:{node.lineno}"] = ast.literal_eval(node)
                    except ValueError:
                        continue  # built at run time
        elif file.suffix == ".toml" and "[[rules]]" in file.read_text():
            found[rel] = tomllib.loads(file.read_text())
        elif file.suffix == ".md":
            blocks = re.findall(r"```toml\n(.*?)```", file.read_text(), flags=re.DOTALL)
            for i, block in enumerate(b for b in blocks if "[[rules]]" in b):
                found[f"{rel}#{i}"] = tomllib.loads(block)
    return found


REPOSITORY_POLICIES = _repository_policies()


def test_the_repository_scan_finds_the_known_policies() -> None:
    """The demo's three, the simulator's, the benchmark's, and the module docstring's example."""
    files = [where.split(":")[0] for where in REPOSITORY_POLICIES]
    assert files.count("intelbus/cli/demo_cmd.py") == 3
    assert {"intelbus/policy/rules.py", "tests/simulator.py", "bench/federation.py"} <= set(files)


@pytest.mark.parametrize("where", sorted(REPOSITORY_POLICIES))
def test_every_policy_in_the_repository_loads(where: str) -> None:
    """No committed policy names a path or kind that cannot be applied."""
    spec = PolicySpec.model_validate(REPOSITORY_POLICIES[where])
    assert rules_module.policy_problems(spec) == ()
    SharingPolicy.from_spec(spec)


def test_records_equal_in_the_deciding_facts_get_the_same_recipients() -> None:
    """The publisher decides once per distinct ``deciding`` value in a batch: every fact the
    agreement reads must be in it, so two records equal there can never need different answers
    (or different refusals)."""
    import itertools  # noqa: PLC0415 - this test only

    def answer(f: RecordFacts, named: tuple[str, ...]) -> object:
        try:
            return AGREEMENT.recipients(f, named=named)
        except NoRecipients as e:
            return str(e)

    grid = [
        facts(
            kind=kind,
            tlp=tlp,
            classification=cls,
            handling_code=code,
            conditions=conds if code == "C" else (),
            source_evaluation=src,
            assessment=assess,
            force_area=area,
            occurred_at=when,
        )
        for kind, tlp, cls, code, conds, src, assess, area, when in itertools.product(
            ("sighting", "incident"),
            tuple(Tlp),
            (Classification.OFFICIAL, Classification.OFFICIAL_SENSITIVE),
            ("P", "C"),
            (("no-onward-disclosure",), ("other",)),
            ("1", "3"),
            ("A", "E"),
            ("HERTFORDSHIRE", "GREATER_MANCHESTER", None),
            (NOW, None),
        )
    ]
    for named in ((), ("gmp",)):
        seen: dict[tuple[object, ...], object] = {}
        for f in grid:
            got = answer(f, named)
            assert seen.setdefault(AGREEMENT.deciding(f), got) == got
        # It is a real partition: the answers do differ between deciding values.
        assert len({repr(v) for v in seen.values()}) > 3

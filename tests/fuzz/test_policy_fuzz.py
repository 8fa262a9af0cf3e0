"""Fuzzing the sharing-policy engine (Hypothesis; settings in profile.py).

* ``policy.decide``: random policies and random record facts. A rule whose ``kinds`` lists only
  amendment kinds is refused at load; otherwise ``decide`` never raises, and agrees with an
  independent reading of the rules (first match wins, default deny, handling conditions checked
  before any rule, ``correction``/``retraction`` in ``kinds`` have no effect); a record whose
  conditions are not accepted is never kept.
* ``policy.redact``: random JSON-like payloads (nested dicts and lists) and random dotted paths:
  ``redact`` never raises, never changes its input, and agrees with an independent (recursive)
  reading of the paths (a step through a list applies to every element).
* ``policy.load_mutated``: the committed policy files, mutated byte by byte (and random bytes):
  loading gives a valid policy or :class:`~intelbus.errors.ConfigError`, nothing else.
"""

from __future__ import annotations

import copy
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intelbus.cli import demo_cmd
from intelbus.errors import ConfigError
from intelbus.policy.decide import CONDITIONS_RULE_ID, decide
from intelbus.policy.facts import CLASSIFICATION_ORDER, Classification, RecordFacts, Tlp
from intelbus.policy.redact import REDACTED, redact
from intelbus.policy.rules import DEFAULT_RULE_ID, Action, PolicySpec, SharingPolicy
from tests.attacks.report import FuzzTally
from tests.fuzz.profile import FUZZ

NOW = datetime(2026, 6, 1, tzinfo=UTC)
AREAS = ["HERTFORDSHIRE", "METROPOLITAN", "GREATER_MANCHESTER", "KENT"]
KINDS = ["sighting", "incident", "correction", "retraction"]
JUDGED = {"sighting", "incident"}  # amendment kinds in a rule's kinds have no effect
CONDITIONS = ["no-onward-disclosure", "no-publication", "police-only"]


def _maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


_subset = lambda values: st.lists(st.sampled_from(values), min_size=1, unique=True)  # noqa: E731

_rules = st.fixed_dictionaries(
    {"action": st.sampled_from([a.value for a in Action])},
    optional={
        "kinds": _subset(KINDS),
        "tlp": _subset([t.value for t in Tlp]),
        "classification_max": st.sampled_from([c.value for c in Classification]),
        "handling_code": st.sampled_from(["P", "C"]),
        "conditions_accepted": st.booleans(),
        "source_evaluation": _subset(["1", "2", "3"]),
        "assessment": _subset(["A", "B", "C", "D", "E"]),
        "force_area": st.sampled_from(["own", "other", "any"]) | _subset(AREAS),
        "max_age_days": st.integers(0, 60),
    },
)
_specs = st.builds(
    lambda rules, own, accepted: {
        "agency": "herts-police",
        "own_force_areas": own,
        "accepted_conditions": accepted,
        "rules": [
            {
                **r,
                "id": f"r{i}",
                # Fields of both sighting and incident: valid whatever the rule's kinds.
                **(
                    {"redact": ["reporter_ref", "place.site_name"]}
                    if r["action"] == "redact"
                    else {}
                ),
            }
            for i, r in enumerate(rules)
        ],
    },
    st.lists(_rules, max_size=6),
    st.lists(st.sampled_from(AREAS), unique=True),
    st.lists(st.sampled_from(CONDITIONS), unique=True),
)
_facts = st.builds(
    RecordFacts,
    kind=st.sampled_from(KINDS),
    tlp=st.sampled_from(Tlp),
    classification=st.sampled_from(Classification),
    handling_code=st.sampled_from(["P", "C"]),
    conditions=st.lists(st.sampled_from(CONDITIONS), unique=True, max_size=2).map(tuple),
    source_evaluation=st.sampled_from(["1", "2", "3"]),
    assessment=st.sampled_from(["A", "B", "C", "D", "E"]),
    force_area=_maybe(st.sampled_from(AREAS)),  # type: ignore[arg-type]
    occurred_at=_maybe(st.integers(0, 90).map(lambda d: NOW - timedelta(days=d))),  # type: ignore[arg-type]
)


def _matches(rule: dict[str, object], spec: dict[str, object], f: RecordFacts) -> bool:
    """The rules as the policy module's docstring states them, read independently."""
    own = set(spec["own_force_areas"])  # type: ignore[call-overload]
    if "kinds" in rule and f.kind not in JUDGED & set(rule["kinds"]):  # type: ignore[call-overload]
        return False
    if "tlp" in rule and f.tlp.value not in rule["tlp"]:  # type: ignore[operator]
        return False
    ceiling = rule.get("classification_max")
    if (
        ceiling is not None
        and CLASSIFICATION_ORDER[f.classification] > CLASSIFICATION_ORDER[Classification(ceiling)]
    ):
        return False
    if "handling_code" in rule and f.handling_code != rule["handling_code"]:
        return False
    if (
        rule.get("conditions_accepted") is True
        and f.handling_code == "C"
        and not set(f.conditions) <= set(spec["accepted_conditions"])  # type: ignore[call-overload]
    ):
        return False
    if "source_evaluation" in rule and f.source_evaluation not in rule["source_evaluation"]:  # type: ignore[operator]
        return False
    if "assessment" in rule and f.assessment not in rule["assessment"]:  # type: ignore[operator]
        return False
    area = rule.get("force_area", "any")
    if area == "own" and (f.force_area is None or f.force_area not in own):
        return False
    if area == "other" and f.force_area is not None and f.force_area in own:
        return False
    if isinstance(area, list) and f.force_area not in area:
        return False
    days = rule.get("max_age_days")
    if days is not None:
        assert isinstance(days, int)
        if f.occurred_at is None or NOW - f.occurred_at > timedelta(days=days):
            return False
    return True


def test_decide_agrees_with_the_rules_read_independently() -> None:
    """First matching rule, default deny, unaccepted conditions withheld before any rule."""
    tally = FuzzTally("policy.decide")

    @FUZZ
    @given(spec=_specs, facts=_facts)
    def run(spec: dict[str, object], facts: RecordFacts) -> None:
        rules = spec["rules"]
        assert isinstance(rules, list)
        amendments_only = [r["id"] for r in rules if "kinds" in r and not JUDGED & set(r["kinds"])]
        if amendments_only:  # it would match nothing: refused, naming the rule
            with pytest.raises(ConfigError, match=f"rule {amendments_only[0]}: kinds "):
                SharingPolicy.from_spec(PolicySpec.model_validate(spec))
            return
        policy = SharingPolicy.from_spec(PolicySpec.model_validate(spec))
        r = tally.run(lambda: decide(policy, facts, NOW), ())
        assert r.crash is None, f"decide raised: {r.crash}"
        decision = r.value
        assert decision is not None
        accepted = set(spec["accepted_conditions"])  # type: ignore[call-overload]
        if facts.handling_code == "C" and not set(facts.conditions) <= accepted:
            assert (decision.action, decision.rule_id) == (Action.WITHHOLD, CONDITIONS_RULE_ID)
            return
        first = next((r for r in rules if _matches(r, spec, facts)), None)
        if first is None:
            assert (decision.action, decision.rule_id) == (Action.WITHHOLD, DEFAULT_RULE_ID)
        else:
            assert (decision.action.value, decision.rule_id) == (first["action"], first["id"])
        assert decision.policy_hash == policy.policy_hash

    try:
        run()
    finally:
        tally.write()


def test_mutated_policy_files_load_or_fail_typed() -> None:
    """Every committed demo policy, mutated, and random bytes: a policy or a ConfigError."""
    tally = FuzzTally("policy.load_mutated")
    seeds = [text.encode() for text in demo_cmd.POLICIES.values()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"

        @FUZZ
        @given(
            which=st.integers(0, len(seeds) - 1),
            edits=st.lists(
                st.tuples(st.integers(0, 2000), st.binary(min_size=0, max_size=4)), max_size=4
            ),
            raw=st.none() | st.binary(max_size=300),
        )
        def run(which: int, edits: list[tuple[int, bytes]], raw: bytes | None) -> None:
            data = bytearray(seeds[which]) if raw is None else bytearray(raw)
            for at, replacement in edits:
                i = at % (len(data) + 1)
                data[i : i + len(replacement) or i + 1] = replacement
            path.write_bytes(bytes(data))
            r = tally.run(lambda: SharingPolicy.load(path), (ConfigError,))
            assert r.crash is None, f"untyped exception: {r.crash}"

        try:
            run()
        finally:
            tally.write()
    # Both outcomes were exercised: only refusals (or only loads) would prove half the claim.
    assert 0 < tally.typed_errors < tally.examples, tally


KEYS = ["a", "b", "c"]
_json = st.recursive(
    st.none() | st.integers(-3, 3) | st.sampled_from(["x", REDACTED]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=24,
)
_payloads = st.dictionaries(st.sampled_from(KEYS), _json, max_size=3)
_paths = st.lists(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join), max_size=4)


def _redacted(node: object, parts: list[str]) -> tuple[object, bool]:
    """``node`` with the path ``parts`` redacted, and whether a value was replaced (read from the
    redact module's docstring: a step through a list applies to every element; null is left)."""
    if isinstance(node, list):
        results = [_redacted(element, parts) for element in node]
        return [r for r, _ in results], any(changed for _, changed in results)
    if not isinstance(node, dict) or node.get(parts[0]) is None:
        return node, False
    if len(parts) == 1:
        return {**node, parts[0]: REDACTED}, True
    inner, changed = _redacted(node[parts[0]], parts[1:])
    return {**node, parts[0]: inner}, changed


def test_redact_agrees_with_the_paths_read_independently() -> None:
    """Every value each path reaches, through any lists, is replaced; nothing else; input intact."""
    tally = FuzzTally("policy.redact")

    @FUZZ
    @given(payload=_payloads, paths=_paths)
    def run(payload: dict[str, object], paths: list[str]) -> None:
        before = copy.deepcopy(payload)
        r = tally.run(lambda: redact(payload, paths), ())
        assert r.crash is None, f"redact raised: {r.crash}"
        assert r.value is not None
        out, done = r.value
        assert payload == before
        expected: object = before
        expected_done = []
        for path in paths:
            expected, changed = _redacted(expected, path.split("."))
            if changed:
                expected_done.append(path)
        assert out == expected
        assert done == tuple(expected_done)

    try:
        run()
    finally:
        tally.write()

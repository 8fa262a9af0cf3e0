"""Turn a record's facts and an agency's policy into a :class:`Decision`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from intelbus.policy.facts import RecordFacts
from intelbus.policy.rules import DEFAULT_RULE_ID, Action, SharingPolicy

CONDITIONS_RULE_ID = "handling-conditions-not-accepted"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one record, which rule said so, and under which policy."""

    action: Action
    rule_id: str
    redact: tuple[str, ...]
    policy_hash: str


def decide(policy: SharingPolicy, facts: RecordFacts, now: datetime) -> Decision:
    """First matching rule wins; no match withholds (default deny).

    A handling-code-C record whose conditions the agency has not accepted is withheld before any
    rule runs: the conditions must travel with the record and bind whoever stores it.
    """
    if facts.handling_code == "C" and not set(facts.conditions) <= policy.accepted_conditions:
        return Decision(Action.WITHHOLD, CONDITIONS_RULE_ID, (), policy.policy_hash)
    for rule in policy.rules:
        if rule.match(facts, now):
            return Decision(rule.action, rule.rule_id, rule.redact, policy.policy_hash)
    return Decision(Action.WITHHOLD, DEFAULT_RULE_ID, (), policy.policy_hash)

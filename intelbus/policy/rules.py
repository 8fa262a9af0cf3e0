"""A consumer agency's sharing policy: ordered rules, first match wins, default deny.

The policy is a TOML file, validated at load time (unknown keys and unknown values refused)::

    agency = "herts-police"
    own_force_areas = ["HERTFORDSHIRE"]
    accepted_conditions = ["no-onward-disclosure"]

    [[rules]]
    id = "own-area-sightings"
    kinds = ["sighting"]
    force_area = "own"                 # "own", "other", "any", or a list of areas
    tlp = ["CLEAR", "GREEN", "AMBER"]
    action = "store"

    [[rules]]
    id = "incidents-redacted"
    kinds = ["incident"]
    action = "redact"
    redact = ["victim", "reporter_ref"]

    [[rules]]
    id = "everything-else"
    action = "withhold"

Matchers (all optional; a rule matches when every given matcher matches): ``kinds``, ``tlp``,
``classification_max``, ``handling_code``, ``conditions_accepted`` (true: every condition of a
handling-code-C record is in ``accepted_conditions``), ``source_evaluation``, ``assessment``,
``force_area``, ``max_age_days`` (by the time the record describes). Actions: ``store``,
``redact`` (with ``redact`` field paths), ``withhold`` (keep a receipt only), ``quarantine``.

When no rule matches, the record is withheld under the rule id ``default-deny``: a record that
cannot be classified is not shared. A policy with no rules withholds everything.

A handling-code-C record whose conditions this agency has not accepted is never stored, whatever
the rules say: that check runs before the rules (``decide.decide``).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intelbus.errors import ConfigError
from intelbus.policy.facts import CLASSIFICATION_ORDER, Classification, RecordFacts, Tlp
from intelbus.tomlfile import read_toml

DEFAULT_RULE_ID = "default-deny"


class Action(enum.StrEnum):
    """What a consumer does with a record it received."""

    STORE = "store"
    REDACT = "redact"
    WITHHOLD = "withhold"
    QUARANTINE = "quarantine"


class Matcher(Protocol):
    """One condition of a rule."""

    def __call__(self, facts: RecordFacts, now: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class AllOf:
    """Matches when every matcher matches. With no matchers it matches everything (a catch-all)."""

    matchers: tuple[Matcher, ...]

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return all(m(facts, now) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Matches when at least one matcher matches. With no matchers it matches nothing (fail closed)."""

    matchers: tuple[Matcher, ...]

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return any(m(facts, now) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class FieldIn:
    """A facts attribute is one of the given values."""

    attribute: str
    values: frozenset[str]

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        value = getattr(facts, self.attribute)
        return value is not None and str(value) in self.values


@dataclass(frozen=True, slots=True)
class ClassificationAtMost:
    """The record's classification is no higher than a ceiling."""

    ceiling: Classification

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return CLASSIFICATION_ORDER[facts.classification] <= CLASSIFICATION_ORDER[self.ceiling]


@dataclass(frozen=True, slots=True)
class ConditionsAccepted:
    """Handling code P, or C with every condition among the accepted ones."""

    accepted: frozenset[str]

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return facts.handling_code == "P" or set(facts.conditions) <= self.accepted


@dataclass(frozen=True, slots=True)
class NotOlderThan:
    """The record describes something no older than ``max_age`` (records with no time do not match)."""

    max_age: timedelta

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return facts.occurred_at is not None and now - facts.occurred_at <= self.max_age


_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class RuleSpec(BaseModel):
    """One rule as written in the policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: _Name
    action: Action
    kinds: tuple[Literal["sighting", "incident", "correction", "retraction"], ...] | None = None
    tlp: tuple[Tlp, ...] | None = None
    classification_max: Classification | None = None
    handling_code: Literal["P", "C"] | None = None
    conditions_accepted: bool | None = None
    source_evaluation: tuple[Literal["1", "2", "3"], ...] | None = None
    assessment: tuple[Literal["A", "B", "C", "D", "E"], ...] | None = None
    force_area: Literal["own", "other", "any"] | tuple[str, ...] = "any"
    max_age_days: Annotated[int, Field(ge=0)] | None = None
    redact: tuple[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.]*$")], ...] = ()

    @model_validator(mode="after")
    def _redact_only_with_redact(self) -> RuleSpec:
        if self.action is Action.REDACT and not self.redact:
            raise ValueError(f"rule {self.id}: action redact needs a non-empty redact list")
        if self.action is not Action.REDACT and self.redact:
            raise ValueError(
                f"rule {self.id}: redact fields given but action is {self.action.value}"
            )
        return self


class PolicySpec(BaseModel):
    """A whole policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    agency: _Name
    own_force_areas: tuple[str, ...] = ()
    accepted_conditions: tuple[str, ...] = ()
    rules: tuple[RuleSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicySpec:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)) or DEFAULT_RULE_ID in ids:
            raise ValueError(f"rule ids must be unique and not {DEFAULT_RULE_ID!r}")
        return self


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule."""

    rule_id: str
    match: AllOf
    action: Action
    redact: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SharingPolicy:
    """A compiled policy and the hash of its canonical form (stored with every record it admits)."""

    agency: str
    rules: tuple[Rule, ...]
    accepted_conditions: frozenset[str]
    policy_hash: str

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> SharingPolicy:
        """Compile a validated spec."""
        own = frozenset(spec.own_force_areas)
        rules = tuple(
            Rule(
                r.id,
                AllOf(tuple(_matchers(r, own, frozenset(spec.accepted_conditions)))),
                r.action,
                r.redact,
            )
            for r in spec.rules
        )
        canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        return cls(spec.agency, rules, frozenset(spec.accepted_conditions), digest)

    @classmethod
    def load(cls, path: Path) -> SharingPolicy:
        """Read, validate and compile a policy file.

        Raises:
            ConfigError: unreadable, not TOML, or invalid.
        """
        raw = read_toml(path, "sharing policy")
        try:
            return cls.from_spec(PolicySpec.model_validate(raw))
        except ValidationError as e:
            raise ConfigError(f"invalid sharing policy {path}: {e}") from e


def _matchers(rule: RuleSpec, own: frozenset[str], accepted: frozenset[str]) -> list[Matcher]:
    found: list[Matcher] = []
    if rule.kinds is not None:
        found.append(FieldIn("kind", frozenset(rule.kinds)))
    if rule.tlp is not None:
        found.append(FieldIn("tlp", frozenset(t.value for t in rule.tlp)))
    if rule.classification_max is not None:
        found.append(ClassificationAtMost(rule.classification_max))
    if rule.handling_code is not None:
        found.append(FieldIn("handling_code", frozenset({rule.handling_code})))
    if rule.conditions_accepted is True:
        found.append(ConditionsAccepted(accepted))
    if rule.source_evaluation is not None:
        found.append(FieldIn("source_evaluation", frozenset(rule.source_evaluation)))
    if rule.assessment is not None:
        found.append(FieldIn("assessment", frozenset(rule.assessment)))
    if rule.force_area == "own":
        found.append(FieldIn("force_area", own))
    elif rule.force_area == "other":
        found.append(_Not(FieldIn("force_area", own)))
    elif isinstance(rule.force_area, tuple):
        found.append(FieldIn("force_area", frozenset(rule.force_area)))
    if rule.max_age_days is not None:
        found.append(NotOlderThan(timedelta(days=rule.max_age_days)))
    return found


@dataclass(frozen=True, slots=True)
class _Not:
    inner: Matcher

    def __call__(self, facts: RecordFacts, now: datetime) -> bool:
        return not self.inner(facts, now)

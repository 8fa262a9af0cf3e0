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
    redact = ["victim_details", "reporter_ref", "place.address_or_area"]

    [[rules]]
    id = "everything-else"
    action = "withhold"

Matchers (all optional; a rule matches when every given matcher matches): ``kinds``, ``tlp``,
``classification_max``, ``handling_code``, ``conditions_accepted`` (true: every condition of a
handling-code-C record is in ``accepted_conditions``), ``source_evaluation``, ``assessment``,
``force_area``, ``max_age_days`` (by the time the record describes). Actions: ``store``,
``redact`` (with ``redact`` field paths), ``withhold`` (keep a receipt only), ``quarantine``.
A list matcher given empty (``tlp = []``) would match nothing, and is refused.

**Kinds.** A policy judges sightings and incidents. A correction is not judged as a kind of its
own: it produces a new version of the record it corrects, and that version is judged exactly as a
new record of its kind (sighting or incident). A retraction always applies. So ``correction`` and
``retraction`` in ``kinds`` have no effect: they are still accepted beside ``sighting`` or
``incident`` (older policy files keep loading), but a rule whose ``kinds`` lists only them would
match nothing and is refused.

**Redaction paths.** Each ``redact`` entry is a dotted path naming a field at any depth, through
nested records and lists of records; a path through a list applies to every element
(``vehicles.registration`` redacts each vehicle's registration, ``persons`` the whole list). At
load every path is checked against the record models (which mirror the Avro schemas) of the kinds
the rule can match, its ``kinds`` or both sighting and incident without one. Refused: a path that
is a field of none of those kinds, and a path that would remove a label the bus needs to apply
sharing rules and handling (:data:`LABEL_PATHS`: ``record_id``, ``grading`` and anything under
it, ``place.force_area``, ``observed_at``, ``occurred_at``, or a record holding one, such as
``place``), because the stored labels and later policy decisions depend on them. A field that is
empty in a particular record is skipped when that record is redacted.

When no rule matches, the record is withheld under the rule id ``default-deny``: a record that
cannot be classified is not shared. A policy with no rules withholds everything.

A handling-code-C record whose conditions this agency has not accepted is never stored, whatever
the rules say: that check runs before the rules (``decide.decide``).

**Retention.** An optional ``[retention]`` section says how long stored payloads are kept and
when a person must review them (:mod:`intelbus.policy.retention`, which documents it and its
defaults). A policy without one hashes exactly as before the section existed; with one, the
section is part of the policy hash.

Every refusal above is a :class:`~intelbus.errors.ConfigError` at load time, naming the rule, the
field and why, never a rule that silently does nothing.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, Protocol, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intelbus.errors import ConfigError
from intelbus.policy.facts import CLASSIFICATION_ORDER, Classification, RecordFacts, Tlp
from intelbus.policy.retention import DEFAULT_RETENTION_POLICY, RetentionPolicy, RetentionSpec
from intelbus.records import KIND_TYPES
from intelbus.tomlfile import read_toml

DEFAULT_RULE_ID = "default-deny"

#: The record kinds a policy judges (what :attr:`RecordFacts.kind` may be).
JUDGED_KINDS: tuple[str, ...] = ("sighting", "incident")
#: Fields the bus reads as labels to apply sharing rules and handling; never redactable, nor is a
#: record holding one (``place``).
LABEL_PATHS: tuple[str, ...] = (
    "record_id",
    "grading",
    "place.force_area",
    "observed_at",
    "occurred_at",
)


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
    # "correction" and "retraction" are accepted beside a judged kind, with no effect (see above).
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
    # Optional: how long stored payloads are kept (policy.retention). Absent, the defaults apply
    # and the policy hash is what it was before retention existed.
    retention: RetentionSpec | None = None

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
    # How long stored payloads are kept (the defaults when the file has no [retention] section).
    retention: RetentionPolicy = DEFAULT_RETENTION_POLICY

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> SharingPolicy:
        """Compile a validated spec.

        Raises:
            ConfigError: a rule cannot be applied (see :func:`policy_problems`).
        """
        _refuse(policy_problems(spec), f"of {spec.agency}")
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
        dumped = spec.model_dump(mode="json", by_alias=True)
        if spec.retention is None:
            # A policy without [retention] hashes exactly as before the section existed.
            del dumped["retention"]
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        retention = RetentionPolicy.from_spec(spec.retention, own)
        return cls(spec.agency, rules, frozenset(spec.accepted_conditions), digest, retention)

    @classmethod
    def load(cls, path: Path) -> SharingPolicy:
        """Read, validate and compile a policy file.

        Raises:
            ConfigError: unreadable, not TOML, or invalid.
        """
        raw = read_toml(path, "sharing policy")
        try:
            spec = PolicySpec.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"invalid sharing policy {path}: {e}") from e
        _refuse(policy_problems(spec), str(path))
        return cls.from_spec(spec)


def field_paths(model: type[BaseModel]) -> frozenset[str]:
    """Every dotted path naming a field of ``model``, at any depth.

    Walks nested records, lists (tuples) of records and each branch of a union: ``place``,
    ``place.force_area``, ``vehicles``, ``vehicles.registration``. A path through a list names
    that field of every element, as :func:`intelbus.policy.redact.redact` applies it.
    """
    found: set[str] = set()
    pending: list[tuple[str, type[BaseModel], tuple[type[BaseModel], ...]]] = [
        ("", model, (model,))
    ]
    while pending:
        prefix, current, outer = pending.pop()
        for name, info in current.model_fields.items():
            path = prefix + name
            found.add(path)
            for inner in _models_in(info.annotation):
                if inner not in outer:  # a record that holds itself is walked once
                    pending.append((path + ".", inner, (*outer, inner)))
    return frozenset(found)


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The record models an annotation holds: itself, or inside Annotated, unions, tuples."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


#: The valid redaction paths of each judged kind, from its record model.
KIND_FIELD_PATHS: dict[str, frozenset[str]] = {k: field_paths(KIND_TYPES[k]) for k in JUDGED_KINDS}


def policy_problems(spec: PolicySpec) -> tuple[str, ...]:
    """Why each rule of a (structurally valid) spec could not be applied, one line each.

    A list matcher given empty matches nothing; so does ``kinds`` listing only amendment kinds;
    a redact path must name a field of a kind the rule can match, and not a label the bus needs.
    """
    return tuple(problem for rule in spec.rules for problem in _rule_problems(rule))


def _rule_problems(rule: RuleSpec) -> list[str]:
    problems: list[str] = []
    for name in ("kinds", "tlp", "source_evaluation", "assessment", "force_area"):
        if getattr(rule, name) == ():
            problems.append(
                f"rule {rule.id}: {name} is empty, so the rule would match nothing "
                f"(leave {name} out to match any)"
            )
    kinds = JUDGED_KINDS
    if rule.kinds:
        kinds = tuple(k for k in JUDGED_KINDS if k in rule.kinds)
        if not kinds:
            problems.append(
                f"rule {rule.id}: kinds {json.dumps(list(rule.kinds))} lists only amendment "
                "kinds, so the rule would match nothing: a correction is judged as the new "
                "version of the sighting or incident it corrects, and a retraction always "
                'applies (list "sighting" and/or "incident")'
            )
            return problems
    problems.extend(
        f"rule {rule.id}: {problem}"
        for path in rule.redact
        if (problem := _redact_path_problem(path, kinds)) is not None
    )
    return problems


def _redact_path_problem(path: str, kinds: tuple[str, ...]) -> str | None:
    valid = frozenset().union(*(KIND_FIELD_PATHS[k] for k in kinds))
    of = " or ".join(kinds)
    inner = path.removeprefix("replacement.")
    if path != inner and _redact_path_problem(inner, kinds) is None:
        # The old way to reach into a correction: its new version is now redacted as a record.
        return (
            f"redact path {path!r} is not a field of {of}: a correction is judged and redacted "
            f"as the new version of the record it corrects: redact {inner!r}, which covers it"
        )
    if path not in valid:
        return f"redact path {path!r} is not a field of {of} ({_near(path, valid)})"
    for label in LABEL_PATHS:
        if path == label:
            relation = "it is a label"
        elif path.startswith(label + "."):
            relation = f"it is part of {label}, a label"
        elif label.startswith(path + "."):
            relation = f"it holds {label}, a label"
        else:
            continue
        return (
            f"redact path {path!r} cannot be redacted: {relation} the bus needs to apply "
            "sharing rules and handling (the stored labels and later policy decisions depend "
            "on it)"
        )
    return None


def _near(path: str, valid: frozenset[str]) -> str:
    """The fields beside an unknown path: those under its longest valid prefix."""
    parts = path.split(".")
    prefix = ""
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in valid:
            prefix = ".".join(parts[:i])
            break
    beside = sorted(p for p in valid if p.rpartition(".")[0] == prefix)
    if not beside:
        return f"{prefix} has no fields under it"
    return f"fields{' of ' + prefix if prefix else ''}: {', '.join(beside)}"


def _refuse(problems: tuple[str, ...], where: str) -> None:
    if problems:
        raise ConfigError(f"invalid sharing policy {where}: {'; '.join(problems)}")


def _matchers(rule: RuleSpec, own: frozenset[str], accepted: frozenset[str]) -> list[Matcher]:
    found: list[Matcher] = []
    if rule.kinds is not None:
        # Amendment kinds have no effect (module docstring): only the judged kinds are matched.
        found.append(FieldIn("kind", frozenset(k for k in rule.kinds if k in JUDGED_KINDS)))
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

"""How long a consumer keeps a stored record's payload, and when a person must review it.

The retention part of a consumer's sharing policy, an optional ``[retention]`` section of the same
TOML file, written in the style of the police's Management of Police Information (MoPI) rules:
every record gets a *review date* (a person confirms it is still needed for a policing purpose)
and a *retention limit* (past it, the payload goes and only a tombstone stays)::

    [retention]
    keep_days = 365          # when no rule matches
    review_days = 180
    from = "event"           # "event" (what the record describes) or "stored" (when this store took it)

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
    from = "stored"          # optional; the section's ``from`` otherwise

Matchers (all optional, a rule matches when every given one matches; first match wins; no match
takes the section's own period): ``kinds`` (``sighting``, ``incident``), ``tlp``,
``handling_code`` (``P`` or ``C``), ``classification_max``, and ``force_area`` (``own``,
``other``, ``any`` or a list of areas, exactly as in the sharing rules, against the policy's
``own_force_areas``). A label a record does not carry (a receipt's missing TLP, a handling code
the caller does not know) matches no rule that asks for it.

**The clock.** ``from = "event"`` (the default) counts from the time the record describes
(``occurred_at`` / ``observed_at``); ``"stored"`` from when this store took it. The start is never
later than the stored time: a record describing the future (a wrong clock, a hostile producer)
cannot extend its own retention, and a record with no event time counts from when it was stored.
``"event"`` is the default because it is the one a replay cannot reset: a force that replays a
topic from the beginning stores old records whose retention has already run out, instead of
giving each a fresh period.

**Without a section** a policy gets :data:`DEFAULT_RETENTION` (docs/data-protection.md says why):
RED 180 days (review at 90), incidents 6 years (review yearly), sightings 1 year (review at six
months), anything else 1 year (review at six months), all from the event.

Refused at load, each a :class:`~intelbus.errors.ConfigError` naming the rule and the field: zero
or negative days, more than :data:`MAX_DAYS`, a review later than the retention limit, unknown keys,
an empty matcher list, a duplicate or reserved rule id.

Everything here is pure: :func:`retention_for` turns the labels a stored record carries into a
:class:`RetentionDecision`; :func:`expired` and :func:`review_due` compare it with a time. The
store (``intelbus store prune``) decides what to do with it.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from intelbus.policy.facts import CLASSIFICATION_ORDER, Classification, Tlp

#: The rule id of a decision no ``[[retention.rules]]`` entry matched (the section's own period).
DEFAULT_RETENTION_RULE_ID = "retention-default"
#: The longest period a policy may set (100 years): beyond it is not a retention limit.
MAX_DAYS = 36_500

_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class Basis(enum.StrEnum):
    """What a retention period counts from."""

    EVENT = "event"  # the time the record describes (never later than when it was stored)
    STORED = "stored"  # when this store took it


class RetentionRuleSpec(BaseModel):
    """One ``[[retention.rules]]`` entry as written in the policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)
    id: _Name
    keep_days: StrictInt
    review_days: StrictInt
    from_: Basis | None = Field(default=None, alias="from")
    kinds: tuple[Literal["sighting", "incident"], ...] | None = None
    tlp: tuple[Tlp, ...] | None = None
    handling_code: Literal["P", "C"] | None = None
    classification_max: Classification | None = None
    force_area: Literal["own", "other", "any"] | tuple[str, ...] = "any"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic passes the raw input
        return _refuse_unknown(data, cls, f"retention rule {_rule_name(data)}")

    @model_validator(mode="after")
    def _sound(self) -> RetentionRuleSpec:
        where = f"retention rule {self.id}"
        problems = _period_problems(where, self.keep_days, self.review_days)
        for name in ("kinds", "tlp", "force_area"):
            if getattr(self, name) == ():
                problems.append(
                    f"{where}: {name} is empty, so the rule would match nothing "
                    f"(leave {name} out to match any)"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RetentionSpec(BaseModel):
    """The ``[retention]`` section as written in the policy file."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)
    keep_days: StrictInt
    review_days: StrictInt
    from_: Basis = Field(default=Basis.EVENT, alias="from")
    rules: tuple[RetentionRuleSpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic passes the raw input
        return _refuse_unknown(data, cls, "retention")

    @model_validator(mode="after")
    def _sound(self) -> RetentionSpec:
        problems = _period_problems("retention", self.keep_days, self.review_days)
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)) or DEFAULT_RETENTION_RULE_ID in ids:
            problems.append(
                f"retention: rule ids must be unique and not {DEFAULT_RETENTION_RULE_ID!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def canonical(self) -> str:
        """The section as canonical JSON (sorted keys, file spelling ``from``): what is hashed."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )


def _rule_name(data: object) -> str:
    name = data.get("id") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else "(no id)"


def _refuse_unknown(data: object, model: type[BaseModel], where: str) -> object:
    """Unknown keys refused with the rule named (pydantic's own message names only an index)."""
    if isinstance(data, dict):
        known = {f.alias or name for name, f in model.model_fields.items()}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(
                f"{where}: unknown key {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
    return data


def _period_problems(where: str, keep_days: int, review_days: int) -> list[str]:
    problems = [
        f"{where}: {name} is {days}, it must be between 1 and {MAX_DAYS}"
        for name, days in (("keep_days", keep_days), ("review_days", review_days))
        if not 1 <= days <= MAX_DAYS
    ]
    if not problems and review_days > keep_days:
        problems.append(
            f"{where}: review_days ({review_days}) is later than keep_days ({keep_days}): "
            "a record must be reviewed before its payload goes"
        )
    return problems


#: The retention of a policy with no ``[retention]`` section (justified in docs/data-protection.md).
DEFAULT_RETENTION = RetentionSpec.model_validate(
    {
        "keep_days": 365,
        "review_days": 183,
        "from": "event",
        "rules": [
            {"id": "red-short", "tlp": ["RED"], "keep_days": 180, "review_days": 90},
            {"id": "incidents", "kinds": ["incident"], "keep_days": 2190, "review_days": 365},
            {"id": "sightings", "kinds": ["sighting"], "keep_days": 365, "review_days": 183},
        ],
    }
)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """A compiled retention rule (the section's own period is one with no matchers)."""

    rule_id: str
    keep: timedelta
    review: timedelta
    basis: Basis
    kinds: frozenset[str] | None = None
    tlp: frozenset[str] | None = None
    handling_code: str | None = None
    classification_max: Classification | None = None
    # None: any area; otherwise the areas that match, or (negate) the areas that do not.
    areas: frozenset[str] | None = None
    negate_areas: bool = False

    def matches(self, labels: RetentionLabels) -> bool:
        """Every given matcher matches; a label the record does not carry matches nothing."""
        if self.kinds is not None and labels.kind not in self.kinds:
            return False
        if self.tlp is not None and (labels.tlp is None or labels.tlp not in self.tlp):
            return False
        if self.handling_code is not None and labels.handling_code != self.handling_code:
            return False
        if self.classification_max is not None and not _at_most(
            labels.classification, self.classification_max
        ):
            return False
        if self.areas is not None:
            inside = labels.force_area is not None and labels.force_area in self.areas
            # "other" is "not own", as in the sharing rules: a record with no area is "other".
            return not inside if self.negate_areas else inside
        return True


def _at_most(classification: str | None, ceiling: Classification) -> bool:
    try:
        rank = CLASSIFICATION_ORDER[Classification(str(classification))]
    except ValueError:
        return False  # unknown or missing: under no ceiling
    return rank <= CLASSIFICATION_ORDER[ceiling]


@dataclass(frozen=True, slots=True)
class RetentionLabels:
    """The labels of a stored record a retention decision depends on. No payload, no personal data."""

    kind: str
    tlp: str | None
    handling_code: str | None
    classification: str | None
    force_area: str | None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Compiled retention rules, the section's own period, and the hash of the section."""

    rules: tuple[RetentionRule, ...]
    default: RetentionRule
    retention_hash: str
    # False when the policy file had no [retention] section (these are DEFAULT_RETENTION).
    explicit: bool

    @classmethod
    def from_spec(
        cls, spec: RetentionSpec | None, own_force_areas: frozenset[str] = frozenset()
    ) -> RetentionPolicy:
        """Compile a section; ``None`` (no section) compiles :data:`DEFAULT_RETENTION`."""
        effective = DEFAULT_RETENTION if spec is None else spec
        rules = tuple(_compile(r, effective.from_, own_force_areas) for r in effective.rules)
        default = RetentionRule(
            DEFAULT_RETENTION_RULE_ID,
            timedelta(days=effective.keep_days),
            timedelta(days=effective.review_days),
            effective.from_,
        )
        digest = hashlib.sha256(effective.canonical().encode()).hexdigest()
        return cls(rules, default, digest, spec is not None)


def _compile(rule: RetentionRuleSpec, basis: Basis, own: frozenset[str]) -> RetentionRule:
    areas: frozenset[str] | None = None
    negate = False
    if rule.force_area == "own":
        areas = own
    elif rule.force_area == "other":
        areas, negate = own, True
    elif isinstance(rule.force_area, tuple):
        areas = frozenset(rule.force_area)
    return RetentionRule(
        rule.id,
        timedelta(days=rule.keep_days),
        timedelta(days=rule.review_days),
        rule.from_ or basis,
        frozenset(rule.kinds) if rule.kinds is not None else None,
        frozenset(t.value for t in rule.tlp) if rule.tlp is not None else None,
        rule.handling_code,
        rule.classification_max,
        areas,
        negate,
    )


#: What a policy without a ``[retention]`` section keeps (:data:`DEFAULT_RETENTION`, compiled).
DEFAULT_RETENTION_POLICY = RetentionPolicy.from_spec(None)


class HasRetention(Protocol):
    """Anything carrying a compiled retention policy (a :class:`SharingPolicy` does)."""

    @property
    def retention(self) -> RetentionPolicy: ...


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """When one record's payload must go, when a person must review it, and which rule said so."""

    rule_id: str
    basis: Basis
    start: datetime  # what the periods count from (UTC)
    review_at: datetime
    keep_until: datetime
    retention_hash: str  # RetentionPolicy.retention_hash: which rules decided


def retention_for(
    policy: RetentionPolicy | HasRetention,
    *,
    kind: str,
    tlp: str | None,
    handling_code: str | None,
    classification: str | None,
    force_area: str | None,
    occurred_at: datetime | None,
    stored_at: datetime,
) -> RetentionDecision:
    """The retention of one stored record: first matching rule, else the section's own period.

    Takes the labels a stored record carries (``StoredRecordView``: kind, tlp, classification,
    force_area, occurred_at, appended_at as ``stored_at``); ``handling_code`` is None when the
    caller does not know it, and then no rule asking for one matches.

    Raises:
        ValueError: a time without a timezone (a caller's mistake, never a record's).
    """
    retention = policy if isinstance(policy, RetentionPolicy) else policy.retention
    labels = RetentionLabels(kind, tlp, handling_code, classification, force_area)
    rule = next((r for r in retention.rules if r.matches(labels)), retention.default)
    stored = _utc(stored_at, "stored_at")
    event = _utc(occurred_at, "occurred_at") if occurred_at is not None else None
    start = stored if rule.basis is Basis.STORED or event is None else min(event, stored)
    return RetentionDecision(
        rule.rule_id,
        rule.basis,
        start,
        _after(start, rule.review),
        _after(start, rule.keep),
        retention.retention_hash,
    )


def expired(decision: RetentionDecision, now: datetime) -> bool:
    """Whether the payload is past its retention limit at ``now`` (the limit itself included)."""
    return _utc(now, "now") >= decision.keep_until


def review_due(decision: RetentionDecision, now: datetime) -> bool:
    """Whether a person must now confirm the record is still needed (the review date has come)."""
    return _utc(now, "now") >= decision.review_at


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} has no timezone")
    return moment.astimezone(UTC)


def _after(start: datetime, period: timedelta) -> datetime:
    try:
        return start + period
    except OverflowError:
        # Only for a start within MAX_DAYS of year 9999: the end of time is late enough.
        return datetime.max.replace(tzinfo=UTC)

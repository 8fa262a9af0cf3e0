"""The producer's sharing agreement: which agencies receive a record, decided from its grading.

The agreement is a TOML file, validated at load time (unknown keys refused)::

    producer = "cst"
    member_forces = ["met-police", "herts-police", "gmp"]   # receive CLEAR and GREEN
    amber_partners = ["jewish-care"]                         # receive AMBER besides the area's force
    auditors = ["inspectorate"]                              # receive what their entitlement lists
    auditor_tlp = ["CLEAR", "GREEN", "AMBER"]
    [force_areas]                                            # which force covers which area
    met-police = ["METROPOLITAN", "CITY_OF_LONDON"]
    herts-police = ["HERTFORDSHIRE"]
    [accepts_conditions]                                     # handling code C: who accepts what
    met-police = ["*"]
    herts-police = ["no-onward-disclosure"]

Rules (DOMAIN.md, TLP 2.0):

* CLEAR, GREEN: every member force.
* AMBER: the forces whose area includes the record's force area, plus ``amber_partners``.
* AMBER+STRICT, RED: only the recipients named for that record; none named means not published.
* Handling code C: only agencies that accept every one of the record's conditions (``"*"`` = all).
* Auditors are added for the TLP levels in ``auditor_tlp``.

Fail closed: an empty recipient set raises :class:`NoRecipients` and the record is not published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intelbus.errors import ConfigError, NoRecipients
from intelbus.policy.facts import RecordFacts, Tlp
from intelbus.tomlfile import read_toml

AgencyId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,62}$")]


class SharingAgreement(BaseModel):
    """A producer's sharing agreement (see the module docstring for the rules)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    producer: AgencyId
    member_forces: tuple[AgencyId, ...] = ()
    amber_partners: tuple[AgencyId, ...] = ()
    auditors: tuple[AgencyId, ...] = ()
    auditor_tlp: tuple[Tlp, ...] = ()
    force_areas: dict[AgencyId, tuple[str, ...]] = Field(default_factory=dict)
    accepts_conditions: dict[AgencyId, tuple[str, ...]] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SharingAgreement:
        """Read and validate an agreement file.

        Raises:
            ConfigError: unreadable, not TOML, or invalid.
        """
        raw = read_toml(path, "sharing agreement")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"invalid sharing agreement {path}: {e}") from e

    def recipients(
        self,
        facts: RecordFacts,
        *,
        named: Iterable[str] = (),
        known: Mapping[str, object] | None = None,
    ) -> tuple[str, ...]:
        """The sorted recipient agency ids for a record.

        ``named`` are the recipients the officer named for this record (required for AMBER+STRICT
        and RED, optional extras otherwise). ``known``, when given, is the set of agencies the
        directory can seal to; any recipient outside it is refused rather than silently dropped.

        Raises:
            NoRecipients: none, or a named/derived recipient is unknown.
        """
        named_set = set(named)
        chosen: set[str]
        if facts.tlp in (Tlp.CLEAR, Tlp.GREEN):
            chosen = set(self.member_forces) | named_set
        elif facts.tlp is Tlp.AMBER:
            if facts.force_area is None and not named_set:
                raise NoRecipients("AMBER record has no force area and no named recipients")
            chosen = {
                agency
                for agency, areas in self.force_areas.items()
                if facts.force_area is not None and facts.force_area in areas
            }
            chosen |= set(self.amber_partners) | named_set
        else:
            if not named_set:
                raise NoRecipients(
                    f"{facts.tlp.value} records go only to named recipients; none named"
                )
            chosen = set(named_set)
        if facts.tlp in self.auditor_tlp:
            chosen |= set(self.auditors)
        if facts.handling_code == "C":
            chosen = {a for a in chosen if self._accepts(a, facts.conditions)}
        chosen.discard(self.producer)
        if not chosen:
            raise NoRecipients(
                f"no agency may receive this {facts.kind} (TLP {facts.tlp.value}, "
                f"handling {facts.handling_code}, area {facts.force_area or '-'})"
            )
        if known is not None:
            unknown = sorted(a for a in chosen if a not in known)
            if unknown:
                raise NoRecipients(f"recipients not in the directory: {', '.join(unknown)}")
        return tuple(sorted(chosen))

    @staticmethod
    def deciding(facts: RecordFacts) -> tuple[object, ...]:
        """Every fact :meth:`recipients` reads (its messages included): records equal here get the
        same recipients, so a batch can decide once per distinct value."""
        return (facts.kind, facts.tlp, facts.handling_code, facts.conditions, facts.force_area)

    def addressable(self) -> frozenset[str]:
        """Every agency the agreement's lists can address without naming it for a record: member
        forces, AMBER partners, the forces of its force areas and its auditors."""
        return frozenset(
            {*self.member_forces, *self.amber_partners, *self.force_areas, *self.auditors}
        )

    def recipient_problem(self, agency_id: str) -> str | None:
        """Why a record of this producer may not have been addressed to ``agency_id`` (None: it
        may). Judged without the record's contents, so only membership of the agreement's lists
        is checked; a recipient named for one record (AMBER+STRICT, RED) outside them is reported.
        """
        if agency_id in self.addressable():
            return None
        return f"recipient {agency_id} is outside {self.producer}'s sharing agreement"

    def _accepts(self, agency: str, conditions: tuple[str, ...]) -> bool:
        accepted = set(self.accepts_conditions.get(agency, ()))
        return "*" in accepted or set(conditions) <= accepted

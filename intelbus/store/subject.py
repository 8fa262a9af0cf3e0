"""Subject access: which stored records are about a person or a vehicle.

A data subject (a victim, a witness, someone described as a suspect, a vehicle's keeper) may ask
what the store holds about them, and a force may have to disclose it. This module owns the list
of payload fields that can hold such data and how a request matches them. It matches *values* in
those fields, never field names, and never a redacted value (a policy withheld it: the store
holds only its placeholder).

Which fields (intelbus/records.py, schemas/records/*.avsc):

* about a person (``--name``): ``description`` (free text, may name or describe anyone),
  ``persons[].summary`` and ``persons[].clothing`` (sightings: descriptions of people seen),
  ``victim_details`` and ``offender_description`` (incidents), ``place.site_name`` and
  ``place.address_or_area`` (a private home's address identifies its residents);
* about a vehicle (``--vehicle``): ``vehicles[].registration``, compared after normalising both
  sides (case, spaces and hyphens ignored, as the record models store them), and the free text
  above, where a registration may be written as ``AB12 CDE``;
* references (``--text``): any of the fields above and ``reporter_ref`` and
  ``police_crime_reference``, the references a subject may quote.

Several criteria are alternatives (any one matches): a request gathers every record about one
person, under each spelling of their name and each of their vehicles. Matching is deliberately
generous (a substring, ignoring case): a disclosure is reviewed by a person before it is sent,
and a record missed is worse than one too many.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from intelbus.policy.redact import REDACTED, redact


class Criterion(StrEnum):
    """What a subject access request names."""

    NAME = "name"
    VEHICLE = "vehicle"
    TEXT = "text"


#: Free-text fields that may hold a person's name or description (dotted paths; lists walked).
PERSON_FIELDS: Final = (
    "description",
    "persons.summary",
    "persons.clothing",
    "victim_details",
    "offender_description",
    "place.site_name",
    "place.address_or_area",
)
#: The structured registration field (normalised: upper case, no spaces or hyphens).
REGISTRATION_FIELDS: Final = ("vehicles.registration",)
#: Vehicle details worth a text match too (make, model, colour) are not identifying on their
#: own, so a ``--vehicle`` request matches registrations only; ``--text`` reaches them.
VEHICLE_TEXT_FIELDS: Final = ("vehicles.make", "vehicles.model", "vehicles.colour")
#: References a subject may quote.
REFERENCE_FIELDS: Final = ("reporter_ref", "police_crime_reference")

_LOOSE: Final = re.compile(r"[\s\-]+")


@dataclass(frozen=True, slots=True)
class SubjectQuery:
    """One criterion of a request: what kind, and the text given."""

    criterion: Criterion
    value: str

    def __post_init__(self) -> None:
        if not self.value.strip():
            raise ValueError(f"--{self.criterion.value} needs some text")


def normalise_registration(value: str) -> str:
    """A registration as the records store it: upper case, no spaces or hyphens."""
    return _LOOSE.sub("", value).upper()


def _values(payload: Any, path: Sequence[str]) -> Iterator[str]:  # noqa: ANN401 - a JSON value
    """Every string at ``path`` under ``payload``, through lists; redacted values are skipped."""
    if isinstance(payload, list):
        for item in payload:
            yield from _values(item, path)
        return
    if not path:
        if isinstance(payload, str) and payload != REDACTED:
            yield payload
        return
    if isinstance(payload, dict):
        yield from _values(payload.get(path[0]), path[1:])


def _field_values(payload: dict[str, Any], fields: Iterable[str]) -> Iterator[str]:
    for f in fields:
        yield from _values(payload, f.split("."))


def _contains(haystack: str, needle: str) -> bool:
    folded = haystack.casefold()
    return needle.casefold() in folded


def _matches_one(payload: dict[str, Any], q: SubjectQuery) -> bool:
    needle = " ".join(q.value.split())
    if q.criterion is Criterion.VEHICLE:
        reg = normalise_registration(q.value)
        if any(
            normalise_registration(v) == reg for v in _field_values(payload, REGISTRATION_FIELDS)
        ):
            return True
        # In free text, as written (``AB12 CDE``, ``ab12-cde``): compare without spaces or hyphens.
        return any(reg in normalise_registration(v) for v in _field_values(payload, PERSON_FIELDS))
    fields: tuple[str, ...] = PERSON_FIELDS
    if q.criterion is Criterion.TEXT:
        fields = PERSON_FIELDS + REGISTRATION_FIELDS + VEHICLE_TEXT_FIELDS + REFERENCE_FIELDS
    return any(_contains(" ".join(v.split()), needle) for v in _field_values(payload, fields))


def about_subject(payload: dict[str, Any] | None, queries: Sequence[SubjectQuery]) -> bool:
    """Whether the payload holds data about the subject (any one criterion matches)."""
    if not payload:
        return False
    return any(_matches_one(payload, q) for q in queries)


def enforce_redactions(payload: dict[str, Any], redacted_fields: Iterable[str]) -> dict[str, Any]:
    """The payload with every field the policy redacted shown as ``[REDACTED]``.

    Stored payloads are already redacted (the policy ran before the store wrote them); this is a
    second lock on the door for a disclosure leaving the organisation: should a stored payload
    ever hold a value at a path it lists as redacted, the value does not go out.
    """
    paths = tuple(redacted_fields)
    if not paths:
        return payload
    return redact(payload, paths)[0]

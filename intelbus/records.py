"""Pydantic models of the domain records, mirroring ``schemas/`` (the ``.avsc`` files are the truth).

The Avro schemas are the wire contract that producers, consumers and auditors share, so they are
the source of truth; these models add the validation Avro cannot express (UTC-aware times, string
bounds, lat/lon ranges, non-empty behaviour lists, normalised vehicle registrations, handling
conditions required with code C). ``tests/unit/test_records.py`` walks both and fails on any
drift: a field, its order, its optionality, or an enum symbol present on one side only.

Models are frozen and refuse unknown fields. They validate before anything is encoded.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from intelbus.policy.facts import Classification, RecordFacts, Tlp

MAX_TEXT = 4_000
MAX_SHORT = 200


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if value.tzinfo is None or offset is None or offset.total_seconds() != 0:
        raise ValueError("times must be timezone-aware and in UTC")
    return value


def _uuid_text(value: str) -> str:
    return str(uuid.UUID(value))


def _registration(value: str) -> str:
    normalised = re.sub(r"[\s-]+", "", value).upper()
    if not re.fullmatch(r"[A-Z0-9]{1,10}", normalised):
        raise ValueError("vehicle registration must be 1-10 letters and digits")
    return normalised


UtcTime = Annotated[datetime, AfterValidator(_utc)]
RecordId = Annotated[str, AfterValidator(_uuid_text)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Short = Annotated[str, Field(min_length=1, max_length=MAX_SHORT)]
Registration = Annotated[str, AfterValidator(_registration)]

_CONFIG = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class SourceEvaluation(enum.StrEnum):
    """3x5x2: S1 reliable, S2 untested, S3 not reliable."""

    S1 = "S1"
    S2 = "S2"
    S3 = "S3"


class IntelligenceAssessment(enum.StrEnum):
    """3x5x2: A known directly ... E suspected to be false."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


class HandlingCode(enum.StrEnum):
    """3x5x2: P lawful sharing permitted; C permitted with conditions."""

    P = "P"
    C = "C"


_FORCE_AREAS = (
        "AVON_AND_SOMERSET", "BEDFORDSHIRE", "CAMBRIDGESHIRE", "CHESHIRE", "CITY_OF_LONDON",
        "CLEVELAND", "CUMBRIA", "DERBYSHIRE", "DEVON_AND_CORNWALL", "DORSET", "DURHAM",
        "DYFED_POWYS", "ESSEX", "GLOUCESTERSHIRE", "GREATER_MANCHESTER", "GWENT", "HAMPSHIRE",
        "HERTFORDSHIRE", "HUMBERSIDE", "KENT", "LANCASHIRE", "LEICESTERSHIRE", "LINCOLNSHIRE",
        "MERSEYSIDE", "METROPOLITAN", "NORFOLK", "NORTH_WALES", "NORTH_YORKSHIRE",
        "NORTHAMPTONSHIRE", "NORTHUMBRIA", "NOTTINGHAMSHIRE", "SOUTH_WALES", "SOUTH_YORKSHIRE",
        "STAFFORDSHIRE", "SUFFOLK", "SURREY", "SUSSEX", "THAMES_VALLEY", "WARWICKSHIRE",
        "WEST_MERCIA", "WEST_MIDLANDS", "WEST_YORKSHIRE", "WILTSHIRE", "POLICE_SCOTLAND",
        "PSNI", "BRITISH_TRANSPORT_POLICE",
)  # fmt: skip
# UK police force areas (the schema's ForceArea enum); built from the list to keep it in one place.
ForceArea = enum.StrEnum("ForceArea", [(name, name) for name in _FORCE_AREAS])  # type: ignore[misc]


class SiteKind(enum.StrEnum):
    """What kind of place."""

    SYNAGOGUE = "SYNAGOGUE"
    SCHOOL = "SCHOOL"
    CEMETERY = "CEMETERY"
    COMMUNITY_CENTRE = "COMMUNITY_CENTRE"
    SHOP = "SHOP"
    OFFICE = "OFFICE"
    PRIVATE_HOME = "PRIVATE_HOME"
    STREET = "STREET"
    PUBLIC_TRANSPORT = "PUBLIC_TRANSPORT"
    ONLINE = "ONLINE"
    OTHER = "OTHER"


class Behaviour(enum.StrEnum):
    """What was seen in a hostile-reconnaissance sighting."""

    PHOTOGRAPHING_ENTRANCES = "PHOTOGRAPHING_ENTRANCES"
    FILMING = "FILMING"
    PHOTOGRAPHING_CCTV_OR_SECURITY = "PHOTOGRAPHING_CCTV_OR_SECURITY"
    LOITERING = "LOITERING"
    QUESTIONING_STAFF = "QUESTIONING_STAFF"
    DRONE_OVERHEAD = "DRONE_OVERHEAD"
    TESTING_SECURITY = "TESTING_SECURITY"
    VEHICLE_CIRCLING = "VEHICLE_CIRCLING"
    OTHER = "OTHER"


class IncidentCategory(enum.StrEnum):
    """CST's six published incident categories."""

    EXTREME_VIOLENCE = "EXTREME_VIOLENCE"
    ASSAULT = "ASSAULT"
    DAMAGE_AND_DESECRATION = "DAMAGE_AND_DESECRATION"
    THREATS = "THREATS"
    ABUSIVE_BEHAVIOUR = "ABUSIVE_BEHAVIOUR"
    ABUSIVE_LITERATURE = "ABUSIVE_LITERATURE"


class IncidentMode(enum.StrEnum):
    """How the incident happened."""

    IN_PERSON = "IN_PERSON"
    ONLINE = "ONLINE"
    POST = "POST"
    PHONE = "PHONE"
    GRAFFITI = "GRAFFITI"
    OTHER = "OTHER"


class VictimType(enum.StrEnum):
    """Who or what was targeted."""

    INDIVIDUAL = "INDIVIDUAL"
    GROUP = "GROUP"
    SYNAGOGUE = "SYNAGOGUE"
    SCHOOL = "SCHOOL"
    CEMETERY = "CEMETERY"
    COMMUNITY_ORGANISATION = "COMMUNITY_ORGANISATION"
    BUSINESS = "BUSINESS"
    PUBLIC_FIGURE = "PUBLIC_FIGURE"
    OTHER = "OTHER"


class IncidentStatus(enum.StrEnum):
    """Where the case stands."""

    REPORTED = "REPORTED"
    REFERRED_TO_POLICE = "REFERRED_TO_POLICE"
    UNDER_INVESTIGATION = "UNDER_INVESTIGATION"
    CHARGED = "CHARGED"
    CLOSED = "CLOSED"


class Grading(BaseModel):
    """Grading and handling: required on every record, never defaulted."""

    model_config = _CONFIG
    source_evaluation: SourceEvaluation
    assessment: IntelligenceAssessment
    handling_code: HandlingCode
    handling_conditions: tuple[Short, ...]
    tlp: Tlp
    classification: Classification

    @model_validator(mode="after")
    def _conditions(self) -> Self:
        if self.handling_code is HandlingCode.C and not self.handling_conditions:
            raise ValueError("handling code C needs its conditions")
        if self.handling_code is HandlingCode.P and self.handling_conditions:
            raise ValueError("handling code P carries no conditions")
        return self


class Place(BaseModel):
    """Where: the site, its kind, the address or area, the police force area, optional position."""

    model_config = _CONFIG
    site_name: Short | None
    site_kind: SiteKind
    address_or_area: Short
    force_area: ForceArea
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class PersonDescription(BaseModel):
    """A description of someone seen; never a name."""

    model_config = _CONFIG
    summary: Short
    approx_age: Annotated[str, Field(max_length=50)] | None = None
    clothing: Short | None = None


class VehicleDescription(BaseModel):
    """A vehicle seen; the registration is normalised (upper case, no spaces)."""

    model_config = _CONFIG
    registration: Registration | None = None
    make: Annotated[str, Field(max_length=50)] | None = None
    model: Annotated[str, Field(max_length=50)] | None = None
    colour: Annotated[str, Field(max_length=50)] | None = None


class _Record(BaseModel):
    model_config = _CONFIG
    SCHEMA: ClassVar[str]
    KIND: ClassVar[str]

    record_id: RecordId
    grading: Grading

    def to_avro(self) -> dict[str, Any]:
        """The value to hand to the Avro writer (enums as symbols, times as aware datetimes)."""
        return _to_avro(self)

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> Self:
        """A model from a decoded Avro value (validated again).

        Raises:
            pydantic.ValidationError: the value breaks a model rule.
        """
        return cls.model_validate(value)

    def facts(self) -> RecordFacts:
        """What sharing decisions may look at."""
        g = self.grading
        return RecordFacts(
            kind=self.KIND,
            tlp=g.tlp,
            classification=g.classification,
            handling_code=g.handling_code.value,
            conditions=tuple(g.handling_conditions),
            source_evaluation=g.source_evaluation.value[1:],
            assessment=g.assessment.value,
            force_area=self._force_area(),
            occurred_at=self._when(),
        )

    def _force_area(self) -> str | None:
        return None

    def _when(self) -> datetime | None:
        return None


class Sighting(_Record):
    """A hostile-reconnaissance sighting."""

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Sighting"
    KIND: ClassVar[str] = "sighting"
    observed_at: UtcTime
    place: Place
    behaviours: tuple[Behaviour, ...] = Field(min_length=1, max_length=20)
    description: Text
    persons: tuple[PersonDescription, ...] = Field(default=(), max_length=50)
    vehicles: tuple[VehicleDescription, ...] = Field(default=(), max_length=50)
    reporter_ref: Short
    police_crime_reference: Short | None = None

    def _force_area(self) -> str | None:
        return str(self.place.force_area)

    def _when(self) -> datetime | None:
        return self.observed_at


class Incident(_Record):
    """An antisemitic incident report."""

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Incident"
    KIND: ClassVar[str] = "incident"
    occurred_at: UtcTime
    place: Place
    category: IncidentCategory
    mode: IncidentMode
    victim_type: VictimType
    victim_details: Text | None = None
    offender_description: Text | None = None
    description: Text
    police_crime_reference: Short | None = None
    status: IncidentStatus
    reporter_ref: Short

    def _force_area(self) -> str | None:
        return str(self.place.force_area)

    def _when(self) -> datetime | None:
        return self.occurred_at


class Correction(_Record):
    """Replaces an earlier record of the same producer (same kind) with a corrected version."""

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Correction"
    KIND: ClassVar[str] = "correction"
    corrects_record_id: RecordId
    corrected_at: UtcTime
    reason: Text
    replacement: Sighting | Incident

    @model_validator(mode="after")
    def _same_id(self) -> Self:
        if self.replacement.record_id != self.corrects_record_id:
            raise ValueError("the replacement must carry the corrected record's id")
        return self

    def _force_area(self) -> str | None:
        return self.replacement._force_area()

    def _when(self) -> datetime | None:
        return self.replacement._when()


class Retraction(_Record):
    """Withdraws an earlier record of the same producer."""

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Retraction"
    KIND: ClassVar[str] = "retraction"
    retracts_record_id: RecordId
    retracted_at: UtcTime
    reason: Text


class StreamHead(BaseModel):
    """A heartbeat's entry for one stream."""

    model_config = _CONFIG
    stream: Short
    last_sequence: Annotated[int, Field(ge=-1)]


class Heartbeat(BaseModel):
    """A producer's periodic statement of where each of its streams stands."""

    model_config = _CONFIG
    SCHEMA: ClassVar[str] = "org.intelbus.control.v1.Heartbeat"
    KIND: ClassVar[str] = "heartbeat"
    producer_id: Short
    sent_at: UtcTime
    interval_ms: Annotated[int, Field(gt=0)]
    streams: tuple[StreamHead, ...]

    def to_avro(self) -> dict[str, Any]:
        return _to_avro(self)


DomainRecord = Sighting | Incident | Correction | Retraction
RECORD_TYPES: dict[str, type[Sighting | Incident | Correction | Retraction]] = {
    cls.SCHEMA: cls for cls in (Sighting, Incident, Correction, Retraction)
}
KIND_TYPES: dict[str, type[Sighting | Incident | Correction | Retraction]] = {
    cls.KIND: cls for cls in (Sighting, Incident, Correction, Retraction)
}
Kind = Literal["sighting", "incident", "correction", "retraction"]


def _to_avro(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        out[name] = _value(getattr(model, name))
    return out


def _value(v: Any) -> Any:  # noqa: ANN401 - any model field value
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, BaseModel):
        if isinstance(v, (Sighting, Incident)):
            # A union branch of named records: fastavro picks the branch from the tuple's name.
            return (v.SCHEMA, _to_avro(v))
        return _to_avro(v)
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    return v

"""Pydantic models of the domain records, mirroring ``schemas/`` (the ``.avsc`` files are the truth).

The Avro schemas are the wire contract that producers, consumers and auditors share, so they are
the source of truth; these models add the validation Avro cannot express (UTC-aware times, string
bounds, lat/lon ranges, non-empty behaviour lists, normalised vehicle registrations, handling
conditions required with code C). ``tests/unit/test_records.py`` walks both and fails on any
drift: a field, its type, its optionality, or an enum symbol present on one side only.

Models are frozen, refuse unknown fields and are strict (``strict=True``: no ``"12"`` for an int,
no number for a string). Three kinds of field are deliberately lax, each marked ``Lax[...]``, so
that a human-written JSON file, a ``model_dump(mode="json")`` and a decoded Avro value all
validate: enum fields take their symbol as a string, times take an ISO 8601 string (still
required to be UTC-aware), and sequences take a list (stored as a tuple).

Conversions: :meth:`to_avro_dict` gives the value for the Avro writer, :meth:`from_avro_dict`
validates a decoded value again. :data:`SCHEMA_NAMES` maps each model class to its schema's full
name and :data:`RECORD_TYPES` the other way.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from intelbus.policy.facts import Classification, RecordFacts, Tlp

MAX_TEXT = 4_000
MAX_SHORT = 200
MAX_LABEL = 50
MAX_CONDITIONS = 20
MAX_BEHAVIOURS = 20
MAX_PEOPLE_OR_VEHICLES = 50
MAX_STREAMS = 10_000
#: Bounds on what a signed record may say (issue 20: a validly signed record is still hostile
#: input). Each keeps every later use of the value (a timedelta, a SQL integer, a datetime
#: subtraction, a JSON column) inside what that use can represent, so a value a producer can sign
#: is refused here, as a schema violation, rather than raising somewhere downstream.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
MIN_INTERVAL_MS = 1_000  # a heartbeat a second is already more than any feed needs
MAX_INTERVAL_MS = 7 * 24 * 3600 * 1000  # a week: silence longer than that is not a promise
MAX_SEQUENCE = 2**53  # far beyond any stream, and exact in every JSON and SQL integer
MAX_PARTITION = 100_000

_T = TypeVar("_T")
# The one place strictness is relaxed: enums from their symbol, times from ISO text, tuples from
# lists. Everything else (str, int, float, nested models) stays strict.
Lax = Annotated[_T, Strict(strict=False)]


def _time_input(value: object) -> object:
    # Lax datetime parsing would also take a bare number as Unix time; only text or a datetime.
    if not isinstance(value, (datetime, str)):
        raise ValueError("a time must be an ISO 8601 string or a datetime")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if value.tzinfo is None or offset is None or offset.total_seconds() != 0:
        raise ValueError("times must be timezone-aware and in UTC")
    if not MIN_TIME <= value < MAX_TIME:
        raise ValueError(f"times must lie in [{MIN_TIME.year}, {MAX_TIME.year})")
    return value


# C0 controls other than tab, newline and carriage return, DEL, and the UTF-16 surrogates: none
# belongs in a report, U+0000 cannot be stored by PostgreSQL, and the rest can forge lines in a
# terminal or a CSV export.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _printable(value: str) -> str:
    # isprintable() (C, ~2x faster than the search) is true only for text with none of _CONTROL's
    # characters (checked over every code point in tests/unit/test_records.py); text it refuses,
    # such as any with a newline, gets the exact check.
    if value.isprintable():
        return value
    if _CONTROL.search(value):
        raise ValueError("text must not contain control characters")
    return value


# Exactly the texts str(uuid.UUID(...)) returns: ids almost always arrive so (producers write
# str(uuid4())), and parsing and printing them again cost ~4 us per id against ~1 for the match.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_text(value: str) -> str:
    # Canonical lower-case form, so the same record id always compares equal.
    if _CANONICAL_UUID.fullmatch(value):
        return value
    return str(uuid.UUID(value))


_REGISTRATION_SEPARATORS = re.compile(r"[\s-]+")
_REGISTRATION = re.compile(r"[A-Z0-9]{1,10}")


def _registration(value: str) -> str:
    normalised = _REGISTRATION_SEPARATORS.sub("", value).upper()
    if not _REGISTRATION.fullmatch(normalised):
        raise ValueError("vehicle registration must be 1-10 letters and digits")
    return normalised


UtcTime = Annotated[
    datetime, Strict(strict=False), BeforeValidator(_time_input), AfterValidator(_utc)
]
RecordId = Annotated[str, Field(max_length=64), AfterValidator(_uuid_text)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_printable)]
Short = Annotated[str, Field(min_length=1, max_length=MAX_SHORT), AfterValidator(_printable)]
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL), AfterValidator(_printable)]
Registration = Annotated[str, Field(max_length=20), AfterValidator(_registration)]

_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, use_enum_values=False)


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


class ForceArea(enum.StrEnum):
    """UK police force areas: the 43 territorial forces of England and Wales, Police Scotland, PSNI
    and the British Transport Police (the schema's ``ForceArea``)."""

    AVON_AND_SOMERSET = "AVON_AND_SOMERSET"
    BEDFORDSHIRE = "BEDFORDSHIRE"
    CAMBRIDGESHIRE = "CAMBRIDGESHIRE"
    CHESHIRE = "CHESHIRE"
    CITY_OF_LONDON = "CITY_OF_LONDON"
    CLEVELAND = "CLEVELAND"
    CUMBRIA = "CUMBRIA"
    DERBYSHIRE = "DERBYSHIRE"
    DEVON_AND_CORNWALL = "DEVON_AND_CORNWALL"
    DORSET = "DORSET"
    DURHAM = "DURHAM"
    DYFED_POWYS = "DYFED_POWYS"
    ESSEX = "ESSEX"
    GLOUCESTERSHIRE = "GLOUCESTERSHIRE"
    GREATER_MANCHESTER = "GREATER_MANCHESTER"
    GWENT = "GWENT"
    HAMPSHIRE = "HAMPSHIRE"
    HERTFORDSHIRE = "HERTFORDSHIRE"
    HUMBERSIDE = "HUMBERSIDE"
    KENT = "KENT"
    LANCASHIRE = "LANCASHIRE"
    LEICESTERSHIRE = "LEICESTERSHIRE"
    LINCOLNSHIRE = "LINCOLNSHIRE"
    MERSEYSIDE = "MERSEYSIDE"
    METROPOLITAN = "METROPOLITAN"
    NORFOLK = "NORFOLK"
    NORTH_WALES = "NORTH_WALES"
    NORTH_YORKSHIRE = "NORTH_YORKSHIRE"
    NORTHAMPTONSHIRE = "NORTHAMPTONSHIRE"
    NORTHUMBRIA = "NORTHUMBRIA"
    NOTTINGHAMSHIRE = "NOTTINGHAMSHIRE"
    SOUTH_WALES = "SOUTH_WALES"
    SOUTH_YORKSHIRE = "SOUTH_YORKSHIRE"
    STAFFORDSHIRE = "STAFFORDSHIRE"
    SUFFOLK = "SUFFOLK"
    SURREY = "SURREY"
    SUSSEX = "SUSSEX"
    THAMES_VALLEY = "THAMES_VALLEY"
    WARWICKSHIRE = "WARWICKSHIRE"
    WEST_MERCIA = "WEST_MERCIA"
    WEST_MIDLANDS = "WEST_MIDLANDS"
    WEST_YORKSHIRE = "WEST_YORKSHIRE"
    WILTSHIRE = "WILTSHIRE"
    POLICE_SCOTLAND = "POLICE_SCOTLAND"
    PSNI = "PSNI"
    BRITISH_TRANSPORT_POLICE = "BRITISH_TRANSPORT_POLICE"


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
    """Grading and handling: required on every record, never defaulted (no field has a default)."""

    model_config = _CONFIG
    source_evaluation: Lax[SourceEvaluation]
    assessment: Lax[IntelligenceAssessment]
    handling_code: Lax[HandlingCode]
    handling_conditions: Lax[tuple[Short, ...]] = Field(max_length=MAX_CONDITIONS)
    tlp: Lax[Tlp]
    classification: Lax[Classification]

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
    site_kind: Lax[SiteKind]
    address_or_area: Short
    force_area: Lax[ForceArea]
    latitude: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class PersonDescription(BaseModel):
    """A description of someone seen; never a name."""

    model_config = _CONFIG
    summary: Short
    approx_age: Label | None = None
    clothing: Short | None = None


class VehicleDescription(BaseModel):
    """A vehicle seen; the registration is normalised (upper case, no spaces)."""

    model_config = _CONFIG
    registration: Registration | None = None
    make: Label | None = None
    model: Label | None = None
    colour: Label | None = None


class _Record(BaseModel):
    model_config = _CONFIG
    SCHEMA: ClassVar[str]
    KIND: ClassVar[str]

    record_id: RecordId
    grading: Grading

    def to_avro_dict(self) -> dict[str, Any]:
        """The value to hand to the Avro writer (enums as symbols, times as aware datetimes)."""
        return _to_avro(self)

    @classmethod
    def from_avro_dict(cls, value: dict[str, Any]) -> Self:
        """A model from a decoded Avro value (validated again: Avro cannot express our rules).

        Raises:
            pydantic.ValidationError: the value breaks a model rule.
        """
        return cls.model_validate(value)

    def to_avro(self) -> dict[str, Any]:
        """Same as :meth:`to_avro_dict` (the first name, kept for its callers)."""
        return _to_avro(self)

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> Self:
        """Same as :meth:`from_avro_dict` (the first name, kept for its callers)."""
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
    behaviours: Lax[tuple[Lax[Behaviour], ...]] = Field(min_length=1, max_length=MAX_BEHAVIOURS)
    description: Text
    persons: Lax[tuple[PersonDescription, ...]] = Field(
        default=(), max_length=MAX_PEOPLE_OR_VEHICLES
    )
    vehicles: Lax[tuple[VehicleDescription, ...]] = Field(
        default=(), max_length=MAX_PEOPLE_OR_VEHICLES
    )
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
    category: Lax[IncidentCategory]
    mode: Lax[IncidentMode]
    victim_type: Lax[VictimType]
    victim_details: Text | None = None
    offender_description: Text | None = None
    description: Text
    police_crime_reference: Short | None = None
    status: Lax[IncidentStatus]
    reporter_ref: Short

    def _force_area(self) -> str | None:
        return str(self.place.force_area)

    def _when(self) -> datetime | None:
        return self.occurred_at


class Correction(_Record):
    """Replaces an earlier record of the same producer (same kind) with a corrected version.

    The replacement is the whole corrected record, carried as an Avro union ``Sighting | Incident``
    (not one optional field per kind): exactly one branch is always present, and a new record kind
    is a new union branch in a new schema version.
    """

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
    """Withdraws an earlier record of the same producer. Carries its own grading block."""

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Retraction"
    KIND: ClassVar[str] = "retraction"
    retracts_record_id: RecordId
    retracted_at: UtcTime
    reason: Text


class Erasure(_Record):
    """Erases an earlier record of the same producer wherever it is held (issue 16).

    Every agency holding the target removes its payload and history and keeps a tombstone. The
    target is also named in the signed envelope header, so an agency the erasure is not addressed
    to still applies it. ``legal_basis`` and ``reason`` are for the data protection officer: they
    are stored with the tombstone and never logged.
    """

    SCHEMA: ClassVar[str] = "org.intelbus.records.v1.Erasure"
    KIND: ClassVar[str] = "erasure"
    erases_record_id: RecordId
    erased_at: UtcTime
    legal_basis: Short
    reason: Text


class StreamHead(BaseModel):
    """A heartbeat's entry for one stream: the topic, and since schema version 2 the partition and
    key epoch that name the stream exactly as the chain does, and the last sequence number sent.

    A version 1 heartbeat decodes with ``partition`` -1 and ``epoch`` "": it says where a stream
    stood but not which chain, so no reader can hold it to completeness.
    """

    model_config = _CONFIG
    stream: Short
    last_sequence: Annotated[int, Field(ge=-1, le=MAX_SEQUENCE)]
    partition: Annotated[int, Field(ge=-1, le=MAX_PARTITION)] = -1
    epoch: Annotated[str, Field(pattern=r"^([0-9a-f]{32})?$")] = ""

    @property
    def bound(self) -> bool:
        """Whether this entry names one chain (schema version 2, a stream bound to a partition)."""
        return self.partition >= 0 and self.epoch != ""


class Heartbeat(BaseModel):
    """A producer's periodic statement of where each of its streams stands."""

    model_config = _CONFIG
    SCHEMA: ClassVar[str] = "org.intelbus.control.v1.Heartbeat"
    KIND: ClassVar[str] = "heartbeat"
    producer_id: Short
    sent_at: UtcTime
    interval_ms: Annotated[int, Field(ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS)]
    streams: Lax[tuple[StreamHead, ...]] = Field(max_length=MAX_STREAMS)

    def to_avro_dict(self) -> dict[str, Any]:
        """The value to hand to the Avro writer."""
        return _to_avro(self)

    @classmethod
    def from_avro_dict(cls, value: dict[str, Any]) -> Self:
        """A heartbeat from a decoded Avro value (validated again).

        Raises:
            pydantic.ValidationError: the value breaks a model rule.
        """
        return cls.model_validate(value)

    def to_avro(self) -> dict[str, Any]:
        """Same as :meth:`to_avro_dict`."""
        return _to_avro(self)

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> Self:
        """Same as :meth:`from_avro_dict`."""
        return cls.model_validate(value)


DomainRecord = Sighting | Incident | Correction | Retraction | Erasure
Kind = Literal["sighting", "incident", "correction", "retraction", "erasure"]
_DOMAIN = (Sighting, Incident, Correction, Retraction, Erasure)
RECORD_TYPES: dict[str, type[DomainRecord]] = {cls.SCHEMA: cls for cls in _DOMAIN}
KIND_TYPES: dict[str, type[DomainRecord]] = {cls.KIND: cls for cls in _DOMAIN}
# Model class -> the full name of the Avro schema it mirrors (domain records and the heartbeat).
SCHEMA_NAMES: dict[type[BaseModel], str] = {cls: cls.SCHEMA for cls in (*_DOMAIN, Heartbeat)}


def _to_avro(model: BaseModel) -> dict[str, Any]:
    # pydantic's own (compiled) dump, about 5x faster than walking the fields in Python. Enums stay
    # members of str enums and sequences stay tuples: fastavro writes both exactly as it writes
    # their symbols and lists (tests/unit/test_records.py checks the bytes are the same).
    out = model.model_dump()
    if isinstance(model, Correction):
        # A union branch of named records: fastavro picks the branch from the tuple's name.
        out["replacement"] = (model.replacement.SCHEMA, out["replacement"])
    return out

"""Deterministic, realistic synthetic records for the demo, tests and benchmarks.

Drawn from the kinds of event in DOMAIN.md and the source articles: reconnaissance at synagogues
and schools in Hertsmere, Barnet and north Manchester; hate mail, eggs thrown on the Sabbath,
swastikas daubed on graves or carved into cars, street assaults, desecration. Every name, place
detail, registration and reference is invented. The same seed always gives the same records.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from intelbus.policy.facts import Classification, Tlp
from intelbus.records import (
    Behaviour,
    Correction,
    Erasure,
    ForceArea,
    Grading,
    HandlingCode,
    Incident,
    IncidentCategory,
    IncidentMode,
    IncidentStatus,
    IntelligenceAssessment,
    PersonDescription,
    Place,
    Retraction,
    Sighting,
    SiteKind,
    SourceEvaluation,
    VehicleDescription,
    VictimType,
)

EPOCH = datetime(2026, 9, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Site:
    name: str
    kind: SiteKind
    area: str
    force: ForceArea
    lat: float
    lon: float


SITES = (
    _Site(
        "Borehamwood synagogue",
        SiteKind.SYNAGOGUE,
        "Borehamwood, Hertsmere",
        ForceArea.HERTFORDSHIRE,
        51.657,
        -0.272,
    ),
    _Site(
        "Radlett primary school",
        SiteKind.SCHOOL,
        "Radlett, Hertsmere",
        ForceArea.HERTFORDSHIRE,
        51.685,
        -0.318,
    ),
    _Site(
        "Bushey cemetery",
        SiteKind.CEMETERY,
        "Bushey, Hertsmere",
        ForceArea.HERTFORDSHIRE,
        51.641,
        -0.345,
    ),
    _Site(
        "Edgware community centre",
        SiteKind.COMMUNITY_CENTRE,
        "Edgware, Barnet",
        ForceArea.METROPOLITAN,
        51.613,
        -0.275,
    ),
    _Site(
        "Golders Green synagogue",
        SiteKind.SYNAGOGUE,
        "Golders Green, Barnet",
        ForceArea.METROPOLITAN,
        51.572,
        -0.194,
    ),
    _Site(
        "Stamford Hill kosher bakery",
        SiteKind.SHOP,
        "Stamford Hill, Hackney",
        ForceArea.METROPOLITAN,
        51.570,
        -0.073,
    ),
    _Site(
        "Prestwich synagogue",
        SiteKind.SYNAGOGUE,
        "Prestwich, Bury",
        ForceArea.GREATER_MANCHESTER,
        53.533,
        -2.285,
    ),
    _Site(
        "Broughton Park school",
        SiteKind.SCHOOL,
        "Broughton Park, Salford",
        ForceArea.GREATER_MANCHESTER,
        53.510,
        -2.262,
    ),
    _Site(
        "Leeds community centre",
        SiteKind.COMMUNITY_CENTRE,
        "Alwoodley, Leeds",
        ForceArea.WEST_YORKSHIRE,
        53.853,
        -1.545,
    ),
)

_SIGHTING_TEXT = {
    Behaviour.PHOTOGRAPHING_ENTRANCES: "Person photographed the main entrance and the side gate for several minutes.",
    Behaviour.FILMING: "Person filmed the building on a phone while walking slowly past twice.",
    Behaviour.PHOTOGRAPHING_CCTV_OR_SECURITY: "Person photographed the CCTV cameras and the security hut.",
    Behaviour.LOITERING: "Person loitered opposite the entrance during the morning service.",
    Behaviour.QUESTIONING_STAFF: "Person asked a volunteer when the building is busiest and where guards stand.",
    Behaviour.DRONE_OVERHEAD: "A small drone hovered over the car park for about ten minutes.",
    Behaviour.TESTING_SECURITY: "Person tried the locked side door and left when challenged.",
    Behaviour.VEHICLE_CIRCLING: "A car circled the block four times and slowed at the entrance.",
}

_INCIDENTS = (
    (
        IncidentCategory.ABUSIVE_LITERATURE,
        IncidentMode.POST,
        VictimType.SYNAGOGUE,
        "Hate mail with antisemitic slogans posted to the office.",
    ),
    (
        IncidentCategory.ABUSIVE_LITERATURE,
        IncidentMode.ONLINE,
        VictimType.COMMUNITY_ORGANISATION,
        "Threatening antisemitic e-mails sent to the general inbox.",
    ),
    (
        IncidentCategory.ABUSIVE_BEHAVIOUR,
        IncidentMode.IN_PERSON,
        VictimType.GROUP,
        "Eggs thrown from a passing car at Orthodox Jews walking to synagogue on the Sabbath.",
    ),
    (
        IncidentCategory.DAMAGE_AND_DESECRATION,
        IncidentMode.GRAFFITI,
        VictimType.CEMETERY,
        "Swastikas daubed on several graves overnight.",
    ),
    (
        IncidentCategory.DAMAGE_AND_DESECRATION,
        IncidentMode.IN_PERSON,
        VictimType.INDIVIDUAL,
        "Swastika carved into the bonnet of a parked car.",
    ),
    (
        IncidentCategory.ASSAULT,
        IncidentMode.IN_PERSON,
        VictimType.INDIVIDUAL,
        "Man punched in the street after antisemitic abuse.",
    ),
    (
        IncidentCategory.THREATS,
        IncidentMode.PHONE,
        VictimType.SCHOOL,
        "Caller threatened to attack the school.",
    ),
    (
        IncidentCategory.EXTREME_VIOLENCE,
        IncidentMode.IN_PERSON,
        VictimType.INDIVIDUAL,
        "Serious assault with a weapon; victim taken to hospital.",
    ),
)

_VEHICLES = (
    ("FORD", "FOCUS", "SILVER"),
    ("VAUXHALL", "CORSA", "BLACK"),
    ("BMW", "3 SERIES", "WHITE"),
    ("TOYOTA", "PRIUS", "GREY"),
)


def _grading(rng: random.Random) -> Grading:
    # The draws (and so every seed's records) are fixed: change the lists only at the end.
    tlp = rng.choices(list(Tlp), weights=[1, 4, 6, 1, 1])[0]
    code = rng.choices([HandlingCode.P, HandlingCode.C], weights=[5, 1])[0]
    s1, s2, s3 = SourceEvaluation
    a, b, c, d, _e = IntelligenceAssessment
    return Grading(
        source_evaluation=rng.choice([s1, s1, s2, s3]),
        assessment=rng.choice([a, b, b, c, d]),
        handling_code=code,
        handling_conditions=("no-onward-disclosure",) if code is HandlingCode.C else (),
        tlp=tlp,
        classification=rng.choices(
            [Classification.OFFICIAL, Classification.OFFICIAL_SENSITIVE], weights=[3, 1]
        )[0],
    )


def _registration(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNOPRSTUVWXYZ"
    return (
        "".join(rng.choice(letters) for _ in range(2))
        + f"{rng.randint(10, 75):02d}"
        + "".join(rng.choice(letters) for _ in range(3))
    )


def _place(site: _Site) -> Place:
    return Place(
        site_name=site.name,
        site_kind=site.kind,
        address_or_area=site.area,
        force_area=site.force,
        latitude=site.lat,
        longitude=site.lon,
    )


def sighting(rng: random.Random, n: int) -> Sighting:
    """One sighting; ``n`` spaces the observation times."""
    site = rng.choice(SITES)
    behaviours = rng.sample(list(_SIGHTING_TEXT), k=rng.randint(1, 2))
    vehicles: tuple[VehicleDescription, ...] = ()
    if Behaviour.VEHICLE_CIRCLING in behaviours or rng.random() < 0.3:
        make, model, colour = rng.choice(_VEHICLES)
        vehicles = (
            VehicleDescription(
                registration=_registration(rng), make=make, model=model, colour=colour
            ),
        )
    return Sighting(
        record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        observed_at=EPOCH + timedelta(hours=6 * n, minutes=rng.randint(0, 300)),
        place=_place(site),
        behaviours=tuple(behaviours),
        description=" ".join(_SIGHTING_TEXT[b] for b in behaviours),
        persons=(
            PersonDescription(
                summary=rng.choice(
                    ["Male, slim build", "Female, medium build", "Male, heavy build"]
                ),
                approx_age=rng.choice(["20-30", "30-40", "40-50"]),
                clothing=rng.choice(["dark hooded top", "grey jacket and cap", "hi-vis vest"]),
            ),
        ),
        vehicles=vehicles,
        reporter_ref=f"CST-R-{rng.randint(1000, 9999)}",
        police_crime_reference=None,
        grading=_grading(rng),
    )


def incident(rng: random.Random, n: int) -> Incident:
    """One incident report."""
    site = rng.choice(SITES)
    category, mode, victim_type, text = rng.choice(_INCIDENTS)
    return Incident(
        record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        occurred_at=EPOCH + timedelta(hours=5 * n, minutes=rng.randint(0, 300)),
        place=_place(site),
        category=category,
        mode=mode,
        victim_type=victim_type,
        victim_details=(
            f"Victim V-{rng.randint(100, 999)}, contact via CST"
            if victim_type is VictimType.INDIVIDUAL
            else None
        ),
        offender_description=rng.choice([None, "Two men in their twenties", "Unknown sender"]),
        description=text,
        police_crime_reference=(
            f"CAD{rng.randint(1000, 9999)}/{rng.randint(1, 28):02d}SEP26"
            if rng.random() < 0.5
            else None
        ),
        status=rng.choice(list(IncidentStatus)),
        reporter_ref=f"CST-R-{rng.randint(1000, 9999)}",
        grading=_grading(rng),
    )


def feed(seed: int = 7, *, sightings: int = 12, incidents: int = 12) -> list[Sighting | Incident]:
    """A deterministic mixed feed, ordered by the time each record describes."""
    rng = random.Random(seed)
    records: list[Sighting | Incident] = [sighting(rng, i) for i in range(sightings)]
    records += [incident(rng, i) for i in range(incidents)]
    return sorted(
        records, key=lambda r: r.observed_at if isinstance(r, Sighting) else r.occurred_at
    )


def one_incident_per_category(seed: int = 7) -> list[Incident]:
    """One incident of each of CST's six categories, in the order of :class:`IncidentCategory`."""
    rng = random.Random(seed)
    out: list[Incident] = []
    for n, category in enumerate(IncidentCategory):
        while (record := incident(rng, n)).category is not category:
            pass  # every category is in the table, so this ends after a few draws
        out.append(record)
    return out


def correction_of(
    record: Sighting | Incident, *, description: str, reason: str, at: datetime, seed: int = 7
) -> Correction:
    """A correction of ``record`` replacing its description (the id and grading are kept)."""
    rng = random.Random(seed)
    replacement = record.model_copy(update={"description": description})
    # model_copy does not validate: validate the replacement as a new record would be.
    replacement = type(record).model_validate(replacement.model_dump())
    return Correction(
        record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        corrects_record_id=record.record_id,
        corrected_at=at,
        reason=reason,
        replacement=replacement,
        grading=record.grading,
    )


def retraction_of(
    record: Sighting | Incident, *, reason: str, at: datetime, seed: int = 7
) -> Retraction:
    """A retraction of ``record``, graded as the record was."""
    rng = random.Random(seed)
    return Retraction(
        record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        retracts_record_id=record.record_id,
        retracted_at=at,
        reason=reason,
        grading=record.grading,
    )


def erasure_of(
    record: Sighting | Incident,
    *,
    at: datetime,
    legal_basis: str = "UK GDPR Art. 17(1)(d): processed unlawfully",
    reason: str = "shared in error",
    seed: int = 11,
) -> Erasure:
    """An erasure of ``record``, graded as the record was (so it reaches the same recipients)."""
    rng = random.Random(seed)
    return Erasure(
        record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        erases_record_id=record.record_id,
        erased_at=at,
        legal_basis=legal_basis,
        reason=reason,
        grading=record.grading,
    )

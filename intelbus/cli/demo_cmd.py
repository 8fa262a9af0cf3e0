"""``intelbus demo``: the README's main job, on embedded defaults, against a real Kafka.

1. Start a local broker (or use ``KAFKA_BOOTSTRAP_SERVERS``) and create this run's topics.
2. Make keys for two founding admins, CST, three police forces and an inspectorate; build the
   threshold-signed directory (2 of 2 admins) and publish it on the directory topic.
3. Write CST's sharing agreement and each force's sharing policy (all TOML, in the workspace).
4. CST publishes a deterministic synthetic feed of sightings and incidents, a correction, a
   retraction, an erasure of a record shared in error, and a heartbeat. Records nobody may
   receive are refused, not published.
5. A hostile party appends a tampered copy, a replay, a copy on another partition, a forgery and
   garbage to the topics.
6. Each force's consumer verifies, decrypts, applies its own policy and stores into SQLite.
7. A summary table per agency: received, stored, redacted, withheld, amended, erased,
   quarantined and why.
8. The inspectorate replays every record topic with its key: the hostile party's records are
   its findings, with the consumers' reason codes.

Logs go to ``WORKSPACE/demo.log``; the broker's data stays in ``WORKSPACE/kafka``, so
``intelbus kafka up --state-dir WORKSPACE`` brings the topics back to replay them.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from consumers.agency import AgencyConsumer, Stats
from consumers.audit.replay import AuditConfig
from consumers.audit.run import AuditResult, audit
from consumers.audit.source import KafkaSource
from consumers.config import ConsumerConfig
from deploy.kafka.provider import provide_kafka
from intelbus.directory import store as dstore
from intelbus.envelope import parse, seal
from intelbus.errors import KafkaUnavailableError, NoRecipients
from intelbus.federation import ENVIRONMENT, FORCES, make_directory, make_keys
from intelbus.identity import AgencyIdentity
from intelbus.kinds import Family, RecordKind
from intelbus.records import Correction, Erasure, Retraction, Sighting
from intelbus.samples import feed
from intelbus.serde.registry import SchemaRegistry
from intelbus.transport import kafka as transport
from intelbus.transport.topics import bus_topics, topic_name
from producers.config import ProducerConfig
from producers.publisher import Publisher

# Wide enough for the summary table when the output is a pipe or a CI log (rich assumes 80).
console = Console(width=None if sys.stdout.isatty() else 140)
AREA_FORCE = {area: force for force, (_, areas) in FORCES.items() for area in areas}

AGREEMENT = """producer = "cst"
member_forces = ["met-police", "herts-police", "gmp"]
auditors = ["inspectorate"]
auditor_tlp = ["CLEAR", "GREEN", "AMBER"]
[force_areas]
met-police = ["METROPOLITAN", "CITY_OF_LONDON"]
herts-police = ["HERTFORDSHIRE"]
gmp = ["GREATER_MANCHESTER"]
[accepts_conditions]
met-police = ["*"]
herts-police = ["no-onward-disclosure"]
"""

# The Met and Herts set their own retention; GMP's policy has no [retention] section, so it keeps
# payloads for the defaults (intelbus.policy.retention.DEFAULT_RETENTION).
POLICIES = {
    "met-police": """agency = "met-police"
own_force_areas = ["METROPOLITAN", "CITY_OF_LONDON"]
accepted_conditions = ["no-onward-disclosure"]
[retention]
keep_days = 365
review_days = 183
from = "event"
[[retention.rules]]
id = "red-short"
tlp = ["RED"]
keep_days = 180
review_days = 90
[[retention.rules]]
id = "own-area-incidents"
kinds = ["incident"]
force_area = "own"
keep_days = 2190
review_days = 365
[[retention.rules]]
id = "incidents-elsewhere"
kinds = ["incident"]
keep_days = 730
review_days = 365
[[rules]]
id = "own-area"
force_area = "own"
action = "store"
[[rules]]
id = "incidents-elsewhere-redacted"
kinds = ["incident", "correction", "retraction"]
action = "redact"
redact = ["victim_details", "reporter_ref"]
""",
    "herts-police": """agency = "herts-police"
own_force_areas = ["HERTFORDSHIRE"]
accepted_conditions = ["no-onward-disclosure"]
[retention]
keep_days = 365
review_days = 183
[[retention.rules]]
id = "conditional-short"
handling_code = "C"
keep_days = 365
review_days = 90
[[retention.rules]]
id = "incidents"
kinds = ["incident"]
keep_days = 2190
review_days = 365
[[rules]]
id = "suspected-false"
assessment = ["E"]
action = "quarantine"
[[rules]]
id = "own-sightings"
kinds = ["sighting", "correction", "retraction"]
force_area = "own"
action = "store"
[[rules]]
id = "incidents-redacted"
kinds = ["incident"]
action = "redact"
redact = ["victim_details", "reporter_ref"]
[[rules]]
id = "elsewhere"
force_area = "other"
action = "withhold"
""",
    "gmp": """agency = "gmp"
own_force_areas = ["GREATER_MANCHESTER"]
[[rules]]
id = "own-area-official"
force_area = "own"
classification_max = "OFFICIAL_SENSITIVE"
action = "store"
""",
}


def _named(record: Sighting | object) -> list[str]:
    tlp = getattr(getattr(record, "grading", None), "tlp", None)
    area = str(getattr(getattr(record, "place", None), "force_area", ""))
    if tlp is not None and tlp.value in ("RED", "AMBER_STRICT") and area in AREA_FORCE:
        return [AREA_FORCE[area]]
    return []


def append_hostile(
    bootstrap: str, prefix: str, sample: bytes, ids: dict[str, AgencyIdentity]
) -> int:
    """Append a tampered copy, a replay, a copy on another partition, a forgery and garbage to the
    sightings topic; the ones that claim to be CST's go to CST's partition, as an attacker would."""
    topic = topic_name(Family.SIGHTINGS, prefix=prefix)
    header = parse(sample).header
    home = header.partition if header.partition is not None else 0
    tampered = bytearray(sample)
    tampered[-80] ^= 0x01
    impostor = AgencyIdentity.generate("cst")
    forged = seal(
        impostor,
        environment=ENVIRONMENT,
        topic=topic,
        kind=RecordKind.SIGHTING,
        sequence=10_000,
        prev_digest=bytes(32),
        schema_fingerprint=bytes(32),
        payload=b"forged",
        recipients=[ids["met-police"].public],
        partition=home,
    ).data
    producer = transport.make_producer(bootstrap)
    try:
        elsewhere = (home + 1) % transport.partition_count(producer, topic)
        for value, partition in (
            (bytes(tampered), home),
            (sample, home),
            (sample, elsewhere),
            (forged, home),
            (b"\x00not an envelope", home),
        ):
            transport.send_and_wait(producer, topic, value, key=b"cst", partition=partition)
    finally:
        producer.close()
    return 5


def demo(
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic feed."),
    records: int = typer.Option(24, "--records", min=2, max=2000, help="Sightings + incidents."),
    workspace: Path = typer.Option(
        Path(".intelbus/demo"), "--workspace", help="Keys, configs, stores."
    ),
) -> None:
    """Run the whole bus locally: CST publishes, three forces consume under their own policies."""
    started = time.monotonic()
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    prefix = f"demo-{uuid.uuid4().hex[:6]}"
    log_file = workspace / "demo.log"
    # The story goes to the terminal; every component's structured log goes to a file beside it.
    with log_file.open("a", encoding="utf-8") as logs, contextlib.redirect_stderr(logs):
        results, audits, provider = _run(workspace, prefix, seed, records)
    _summary(results, time.monotonic() - started, workspace)
    _audit_lines(audits)
    console.print(f"logs: {log_file}")
    if provider == "jars":
        console.print(
            "replay it later: `intelbus kafka up --state-dir "
            f"{workspace}` then `intelbus audit replay --prefix {prefix} --directory "
            f"{workspace}/directory --key-file {workspace}/keys/inspectorate.key`",
            highlight=False,
        )


def _run(
    workspace: Path, prefix: str, seed: int, records: int
) -> tuple[dict[str, Stats], dict[str, AuditResult], str]:
    """The demo's steps (module docstring), on a broker whose data stays in the workspace."""
    try:
        with provide_kafka(state_dir=workspace / "kafka") as kafka:
            bootstrap = kafka.bootstrap_servers
            console.print(
                f"Kafka ({kafka.provider}) at {bootstrap}; topics {prefix}.*; workspace {workspace}"
            )
            transport.create_topics(bootstrap, bus_topics(prefix=prefix))
            ids = make_keys(workspace)
            history = make_directory(workspace, ids, prefix)
            dstore.publish_to_topic(
                bootstrap, topic_name(Family.DIRECTORY, prefix=prefix), list(history.versions)
            )
            console.print(
                f"directory v{history.latest.version}: {len(history.latest.agencies)} agencies, 2-of-2 admins"
            )
            (workspace / "agreement.toml").write_text(AGREEMENT)
            (workspace / "producer.toml").write_text(
                f'agency = "cst"\nkey_file = "keys/cst.key"\ndirectory = "directory"\n'
                f'agreement = "agreement.toml"\nstate_file = "state/cst.sqlite"\n'
                f'environment = "{ENVIRONMENT}"\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
                + web_section("cst", partners=FORCES)
            )
            published, refused = _publish_feed(workspace, seed, records)
            console.print(
                f"CST published {len(published)} records + 1 correction + 1 retraction + 1 erasure + "
                "1 heartbeat; "
                f"refused {sum(refused.values())} it could not address: {dict(refused)}"
            )
            first = _first_value(bootstrap, topic_name(Family.SIGHTINGS, prefix=prefix))
            hostile = append_hostile(bootstrap, prefix, first, ids) if first else 0
            console.print(
                f"a hostile party appended {hostile} bad records (tampered, replayed, copied to another "
                "partition, forged, garbage)"
            )
            results = _consume_all(workspace, bootstrap, prefix)
            console.print("the inspectorate replays the topics with its key")
            audits = _audit_all(workspace, bootstrap, prefix)
            return results, audits, kafka.provider
    except KafkaUnavailableError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(3) from None


def _audit_all(workspace: Path, bootstrap: str, prefix: str) -> dict[str, AuditResult]:
    """The inspectorate's replay of each record topic (its key opens what is addressed to it)."""
    history = dstore.load_folder(workspace / "directory")
    identity = AgencyIdentity.load(workspace / "keys" / "inspectorate.key")
    out: dict[str, AuditResult] = {}
    # The reports the forces' consoles show the inspectorate (their [web] audit_reports).
    reports = workspace / "reports" / "audit"
    reports.mkdir(parents=True, exist_ok=True)
    for family in (Family.SIGHTINGS, Family.INCIDENTS, Family.HEARTBEATS):
        source = KafkaSource(bootstrap, topic_name(family, prefix=prefix))
        try:
            out[family.value] = audit(
                source=source,
                history=history,
                config=AuditConfig(environment=ENVIRONMENT),
                identity=identity,
                registry=SchemaRegistry.load(),
                report=reports / f"{family.value}.json",
            )
        finally:
            source.close()
    return out


def _audit_lines(audits: dict[str, AuditResult]) -> None:
    for family, result in audits.items():
        found = result.summary["findings"]["by_reason"]
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(found.items())) or "nothing"
        console.print(
            f"audit of {family}: {result.summary['records']} records, "
            f"{result.summary['verdict']}; found {what}",
            highlight=False,
        )


def _publish_feed(workspace: Path, seed: int, records: int) -> tuple[list[str], Counter[str]]:
    """CST publishes the synthetic feed, one correction, one retraction, one erasure and a
    heartbeat."""
    publisher = Publisher.from_config(ProducerConfig.load(workspace / "producer.toml"))
    published: list[str] = []
    refused: Counter[str] = Counter()
    items = feed(seed, sightings=records // 2, incidents=records - records // 2)
    try:
        for record in items:
            try:
                published.append(publisher.publish(record, named=_named(record)).record_id)
            except NoRecipients as e:
                refused[str(e).split(" (")[0][:60]] += 1
        target = next(r for r in items if isinstance(r, Sighting) and r.record_id in published)
        fixed = Sighting.model_validate(
            {**target.model_dump(mode="json"), "description": "Corrected: two people, not one."}
        )
        correction = Correction(
            record_id=str(uuid.uuid4()),
            corrects_record_id=target.record_id,
            corrected_at=datetime.now(UTC),
            reason="second person seen on CCTV review",
            replacement=fixed,
            grading=target.grading,
        )
        publisher.publish(correction, named=_named(target))
        withdrawn = next(r for r in items if r.record_id in published and r is not target)
        retraction = Retraction(
            record_id=str(uuid.uuid4()),
            retracts_record_id=withdrawn.record_id,
            retracted_at=datetime.now(UTC),
            reason="duplicate of an earlier report",
            grading=withdrawn.grading,
        )
        family = Family.SIGHTINGS if isinstance(withdrawn, Sighting) else Family.INCIDENTS
        publisher.publish(retraction, named=_named(withdrawn), family=family)
        # A record shared in error: CST erases it from every store that holds it (issue 16).
        erased = next(r for r in items if r.record_id in published and r not in (target, withdrawn))
        erasure = Erasure(
            record_id=str(uuid.uuid4()),
            erases_record_id=erased.record_id,
            erased_at=datetime.now(UTC),
            legal_basis="UK GDPR Art. 17(1)(d): shared in error",
            reason="reported twice by mistake; the reporter asked for it to be removed",
            grading=erased.grading,
        )
        publisher.publish(erasure, named=_named(erased))
        publisher.heartbeat(30)
    finally:
        publisher.close()
    return published, refused


#: Each agency's console (``intelbus web --config WORKSPACE/<agency>.toml``) on its own port.
WEB_PORTS = {"cst": 8801, "met-police": 8802, "herts-police": 8803, "gmp": 8804}


def web_section(agency: str, partners: Iterable[str] = ()) -> str:
    """The ``[web]`` section of an agency's demo config: loopback, its own port and users file
    (empty until ``intelbus web add-user``); CST's names the forces' policies for its preview."""
    text = (
        f'\n[web]\nport = {WEB_PORTS[agency]}\nusers_file = "web-users/{agency}.json"\n'
        'audit_reports = "reports/audit"\n'
    )
    if partners:
        text += "[web.partner_policies]\n" + "".join(
            f'{force} = "{force}.policy.toml"\n' for force in partners
        )
    return text


def _consume_all(workspace: Path, bootstrap: str, prefix: str) -> dict[str, Stats]:
    """Each force's consumer, until idle, each with its own policy and SQLite store."""
    results: dict[str, Stats] = {}
    (workspace / "stores").mkdir(exist_ok=True)
    for force in FORCES:
        (workspace / f"{force}.policy.toml").write_text(POLICIES[force])
        (workspace / f"{force}.toml").write_text(
            f'agency = "{force}"\nkey_file = "keys/{force}.key"\ndirectory = "directory"\n'
            f'policy = "{force}.policy.toml"\nstore = "stores/{force}.sqlite"\n'
            f'environment = "{ENVIRONMENT}"\nbootstrap_servers = "{bootstrap}"\n'
            f'topic_prefix = "{prefix}"\ngroup_id = "{prefix}.{force}"\n' + web_section(force)
        )
        consumer = AgencyConsumer.from_config(ConsumerConfig.load(workspace / f"{force}.toml"))
        try:
            results[force] = consumer.run(until_idle=True, idle_polls=4)
        finally:
            consumer.store.close()
    return results


def _first_value(bootstrap: str, topic: str) -> bytes | None:
    consumer = transport.make_consumer(bootstrap, group_id=None, consumer_timeout_ms=5_000)
    try:
        for message in transport.read_all(consumer, topic):
            return bytes(message.value)
    finally:
        consumer.close()
    return None


def _summary(results: dict[str, Stats], seconds: float, workspace: Path) -> None:
    table = Table(title=f"intelbus demo: what each force received and kept ({seconds:.0f}s)")
    for col in (
        "agency",
        "received",
        "stored",
        "redacted",
        "withheld",
        "not addressed",
        "amended",
        "erased",
        "quarantined",
        "why quarantined",
    ):
        table.add_column(col, justify="left" if col in ("agency", "why quarantined") else "right")
    for agency, s in results.items():
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(s.quarantined.items()))
        table.add_row(
            agency,
            str(s.received),
            str(s.stored),
            str(s.redacted),
            str(s.withheld),
            str(s.not_addressed),
            str(s.amendments),
            str(s.erased),
            str(sum(s.quarantined.values())),
            why or "-",
        )
    console.print(table)
    console.print(f"stores, keys, directory and configs are in {workspace}")
    console.print(
        "web consoles: add yourself with `intelbus web add-user NAME --users "
        f"{workspace}/web-users/met-police.json`, then `intelbus web --config "
        f"{workspace}/met-police.toml` and open http://127.0.0.1:{WEB_PORTS['met-police']}/ "
        f"(herts-police {WEB_PORTS['herts-police']}, gmp {WEB_PORTS['gmp']}; CST's report form "
        f"{WEB_PORTS['cst']} with --config {workspace}/producer.toml, which needs the broker)",
        highlight=False,
    )

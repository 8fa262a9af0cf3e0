"""``intelbus envelope seal|inspect|verify|open``: sealed record files, for tests, interop and examples.

``inspect`` reads a header without verifying it and says so; ``verify`` checks it with public keys
only (what an auditor can do); ``open`` verifies, decrypts with an agency's private key and decodes
the Avro payload with the schema registry.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from intelbus.directory import store as dstore
from intelbus.envelope import open_record, parse, seal, verify
from intelbus.envelope.verify import VerifiedRecord
from intelbus.errors import IntelbusError, Shredded
from intelbus.identity import AgencyIdentity, KeyResolver, PublicIdentity, StaticKeyRing
from intelbus.keyring import load_epochs
from intelbus.kinds import RecordKind
from intelbus.records import KIND_TYPES, RECORD_TYPES, Correction, Retraction
from intelbus.serde.registry import SchemaRegistry

app = typer.Typer(help="Seal, inspect, verify and open sealed record files.", no_args_is_help=True)
console = Console()
err = Console(stderr=True, soft_wrap=True)

KIND_CODES = {
    "sighting": RecordKind.SIGHTING,
    "incident": RecordKind.INCIDENT,
    "correction": RecordKind.CORRECTION,
    "retraction": RecordKind.RETRACTION,
}
JsonOut = typer.Option(False, "--json", help="Machine-readable output.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise _fail(f"environment variable {env_name} is empty or unset", 2)
    return value.encode()


def _header_dict(h: Any) -> dict[str, Any]:  # noqa: ANN401 - an EnvelopeHeader
    return {
        "record_id": str(h.record_id),
        "kind": h.kind.name.lower(),
        "environment": h.environment,
        "topic": h.topic,
        "producer_id": h.producer_id,
        "key_id": h.key_id.hex(),
        "sequence": h.sequence,
        "prev_digest": h.prev_digest.hex(),
        "schema_fingerprint": h.schema_fingerprint.hex(),
        "created_at": h.created_at.isoformat(),
        "format_version": h.format_version,
        "partition": h.partition,
        "target_record_id": None if h.target_record_id is None else str(h.target_record_id),
        "recipients": [{"agency_id": r.agency_id, "key_id": r.key_id.hex()} for r in h.recipients],
    }


def _print(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(f"[bold]{title}[/]")
    for k, v in data.items():
        console.print(f"  {k}: {v}", highlight=False)


def _resolver(keys: list[Path], directory: Path | None) -> KeyResolver:
    if directory is not None:
        return dstore.load_folder(directory)
    if not keys:
        raise _fail("give --key public key file(s) or --directory", 2)
    return StaticKeyRing([PublicIdentity.from_json(p.read_text()) for p in keys])


def _verified(
    file: Path, keys: list[Path], directory: Path | None, environment: str | None, topic: str | None
) -> VerifiedRecord:
    data = file.read_bytes()
    header = parse(data).header
    try:
        # Offline: no broker witnessed this file, so the key is judged at the signed creation
        # time (a consumer judges it at the broker's append time).
        return verify(
            data,
            _resolver(keys, directory),
            expected_environment=environment or header.environment,
            expected_topic=topic or header.topic,
            witnessed_at=None,
        )
    except IntelbusError as e:
        raise _fail(f"{file}: {e}") from None


def _target(model: object) -> uuid.UUID | None:
    if isinstance(model, Correction):
        return uuid.UUID(model.corrects_record_id)
    if isinstance(model, Retraction):
        return uuid.UUID(model.retracts_record_id)
    return None


@app.command("seal")
def seal_cmd(
    record: Path = typer.Option(..., "--record", help="The record as JSON."),
    kind: str = typer.Option(..., "--kind", help="sighting, incident, correction or retraction."),
    key: Path = typer.Option(..., "--key", help="The producer's private key file."),
    recipient: list[Path] = typer.Option(
        ..., "--recipient", help="A recipient's public key file (repeat)."
    ),
    environment: str = typer.Option("local", "--environment"),
    topic: str = typer.Option(..., "--topic"),
    sequence: int = typer.Option(0, "--sequence", min=0),
    partition: int = typer.Option(
        0, "--partition", min=0, help="The Kafka partition the record is bound to."
    ),
    prev_digest: str = typer.Option(
        "00" * 32, "--prev-digest", help="Hex digest of the previous record."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the sealed record."),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env"),
    as_json: bool = JsonOut,
) -> None:
    """Validate a JSON record, encode it with its Avro schema, and seal it to the recipients."""
    if kind not in KIND_TYPES:
        raise _fail(f"unknown kind {kind!r}", 2)
    try:
        identity = AgencyIdentity.load(key, passphrase=_passphrase(passphrase_env))
        model = KIND_TYPES[kind].model_validate_json(record.read_bytes())
        registry = SchemaRegistry.load()
        fingerprint, payload = registry.encode(model.SCHEMA, model.to_avro())
        sealed = seal(
            identity,
            environment=environment,
            topic=topic,
            kind=KIND_CODES[kind],
            sequence=sequence,
            prev_digest=bytes.fromhex(prev_digest),
            schema_fingerprint=fingerprint,
            payload=payload,
            recipients=[PublicIdentity.from_json(p.read_text()) for p in recipient],
            partition=partition,
            target_record_id=_target(model),
            record_id=uuid.UUID(model.record_id),
        )
    except ValidationError as e:
        raise _fail(f"{record}: invalid {kind}: {e.error_count()} error(s)\n{e}", 2) from None
    except (IntelbusError, ValueError, OSError) as e:
        raise _fail(str(e), 2) from None
    out.write_bytes(sealed.data)
    _print(
        {
            "file": str(out),
            "bytes": len(sealed.data),
            "digest": sealed.digest.hex(),
            **_header_dict(sealed.header),
        },
        as_json,
        "sealed",
    )


@app.command("inspect")
def inspect(file: Path = typer.Argument(...), as_json: bool = JsonOut) -> None:
    """Print a sealed record's header WITHOUT verifying it (use `verify` before trusting it)."""
    try:
        header = parse(file.read_bytes()).header
    except IntelbusError as e:
        raise _fail(f"{file}: {e}") from None
    _print({"verified": False, **_header_dict(header)}, as_json, "header (UNVERIFIED)")


@app.command("verify")
def verify_cmd(
    file: Path = typer.Argument(...),
    key: list[Path] = typer.Option(
        [], "--key", help="A trusted producer public key file (repeat)."
    ),
    directory: Path | None = typer.Option(
        None, "--directory", help="A directory folder to verify against."
    ),
    environment: str | None = typer.Option(None, "--environment", help="Expected environment."),
    topic: str | None = typer.Option(
        None, "--topic", help="Expected topic (the one it was read from)."
    ),
    as_json: bool = JsonOut,
) -> None:
    """Verify signature and bindings with public keys only (exit 1 with the reason if not)."""
    record = _verified(file, key, directory, environment, topic)
    _print(
        {"verified": True, "digest": record.digest.hex(), **_header_dict(record.header)},
        as_json,
        "verified",
    )


@app.command("open")
def open_cmd(
    file: Path = typer.Argument(...),
    key: Path = typer.Option(..., "--key", help="The recipient agency's private key file."),
    signer: list[Path] = typer.Option(
        [], "--signer", help="Trusted producer public key file (repeat)."
    ),
    directory: Path | None = typer.Option(None, "--directory"),
    environment: str | None = typer.Option(None, "--environment"),
    topic: str | None = typer.Option(None, "--topic"),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env"),
    as_json: bool = JsonOut,
) -> None:
    """Verify, decrypt as a recipient (with its encryption-epoch keyring beside the key file, if
    any), and decode the record. A record sealed to an epoch whose key was destroyed is reported
    as crypto-shredded (exit 1)."""
    record = _verified(file, signer, directory, environment, topic)
    try:
        identity = AgencyIdentity.load(key, passphrase=_passphrase(passphrase_env))
        epochs = load_epochs(key, identity.agency_id)
        payload = open_record(record, identity, epochs=epochs)
        name, value = SchemaRegistry.load().decode(record.header.schema_fingerprint, payload)
        model = RECORD_TYPES[name].from_avro(value)
    except Shredded as e:
        # Not a defect: the contents were destroyed on purpose; the record still verifies.
        raise _fail(f"{file}: {str(e).split('] ', 1)[-1]}") from None
    except (IntelbusError, ValidationError) as e:
        raise _fail(f"{file}: {e}") from None
    data = json.loads(model.model_dump_json())
    if as_json:
        typer.echo(json.dumps({"header": _header_dict(record.header), "record": data}, indent=2))
    else:
        console.print_json(data=data)

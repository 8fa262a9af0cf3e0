"""The in-project schema registry: every writer schema, kept by fingerprint.

Files under ``schemas/`` (see :func:`schemas.schema_dir`):

* ``common/*.avsc``: a JSON list of named types shared by records (grading, place, ...).
* ``records/<name>.v<N>.avsc`` and ``control/<name>.v<N>.avsc``: one top-level record each,
  version N. Every version ever released stays in the tree, unchanged: old records on the bus were
  written with it, and an auditor may replay them years later. All versions of one file stem
  (``records/sighting``) must keep the same full name, so that each new version is checked against
  the old ones (a new namespace would silently make it a new, unchecked schema).

At load time each writer schema is made self-contained (named types inlined), linted, checked
backward compatible with every earlier version of the same name, and fingerprinted.

**The fingerprint** is the SHA-256 of the schema's Parsing Canonical Form (Avro spec), all 32
bytes; it travels in the envelope header and is covered by the signature. The canonical form drops
docs, defaults, aliases and logical types, so two schemas differing only there share a fingerprint:
the registry refuses to hold both (a decoder must never have to guess which one a payload used).

**References across files.** A record may name another record type defined in another file (a
correction carries a sighting or an incident). Such a reference resolves to the *oldest* version
of that type, so adding ``sighting.v2`` never changes the expansion, and so the fingerprint, of the
already released ``correction.v1``. (``tests/unit/test_schemas.py`` pins every released
fingerprint to catch any such drift.) Carrying a newer version of another record needs a new
version of the carrying record and an explicit pin, which no schema needs yet.

The reader schema for a name is its newest version: an old record is decoded with its writer
schema and resolved into the current shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from intelbus.errors import SchemaDefinitionError, SchemaViolation, UnknownSchema
from intelbus.records import RECORD_TYPES, SCHEMA_NAMES, DomainRecord, Heartbeat
from intelbus.serde import avro
from intelbus.serde.compat import Defs, check_backward, expand, lint, normalise

_VERSIONED = re.compile(r"^(?P<stem>[a-z_]+)\.v(?P<version>\d+)\.avsc$")
FINGERPRINT_BYTES = 32
MAX_SCHEMA_FILE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """One registered schema version."""

    full_name: str
    version: int
    fingerprint: bytes
    schema: dict[str, Any] = field(repr=False, compare=False)
    parsed: Any = field(repr=False, compare=False)


def fingerprint(schema: Any) -> bytes:  # noqa: ANN401 - a JSON schema value
    """SHA-256 of the Parsing Canonical Form (32 bytes)."""
    return hashlib.sha256(avro.canonical_form(schema).encode()).digest()


class SchemaRegistry:
    """Writer schemas by fingerprint; the newest version of each name is its reader schema."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, WriterSchema] = {}
        self._versions: dict[str, list[WriterSchema]] = {}

    @classmethod
    def load(cls, root: Path | None = None) -> SchemaRegistry:
        """Load, lint, check and fingerprint every schema under ``root`` (default: the package's).

        Raises:
            SchemaDefinitionError: a file is invalid, unsafe, incompatible, or collides.
        """
        if root is None:
            from schemas import schema_dir  # noqa: PLC0415 - the data package, imported only here

            root = schema_dir()
        defs, top = _read_tree(root)
        # References to another file's top-level record resolve to that record's oldest version:
        # a new version of one record must never change an already released schema (module doc).
        oldest: dict[str, tuple[int, Defs]] = {}
        for name, version, _schema, local, _path in top:
            if name not in oldest or version < oldest[name][0]:
                oldest[name] = (version, local)
        shared: Defs = dict(defs)
        for _version, local in oldest.values():
            for name, definition in local.items():
                shared.setdefault(name, definition)
        registry = cls()
        for name, version, schema, local, path in sorted(top, key=lambda t: (t[0], t[1])):
            try:
                registry.register(name, version, expand(schema, {**shared, **local}))
            except SchemaDefinitionError as e:
                raise SchemaDefinitionError(f"{path.name}: {e}") from e
        return registry

    def register(self, full_name: str, version: int, schema: dict[str, Any]) -> WriterSchema:
        """Add one self-contained schema version (lint, compatibility, collision checks).

        Raises:
            SchemaDefinitionError: it fails any check.
        """
        lint(schema)
        earlier = self._versions.get(full_name, [])
        if earlier and version <= earlier[-1].version:
            raise SchemaDefinitionError(
                f"{full_name} v{version} is not newer than v{earlier[-1].version}"
            )
        for old in earlier:
            check_backward(schema, old.schema)
        fp = fingerprint(schema)
        clash = self._by_fingerprint.get(fp)
        if clash is not None:
            raise SchemaDefinitionError(
                f"{full_name} v{version} has the fingerprint of {clash.full_name} v{clash.version}"
            )
        entry = WriterSchema(full_name, version, fp, schema, avro.parse_schema(schema))
        self._by_fingerprint[fp] = entry
        self._versions.setdefault(full_name, []).append(entry)
        return entry

    def by_fingerprint(self, fp: bytes) -> WriterSchema:
        """The writer schema with this fingerprint.

        Raises:
            UnknownSchema: none is registered (fail closed: the record cannot be read).
        """
        entry = self._by_fingerprint.get(bytes(fp))
        if entry is None:
            raise UnknownSchema(f"no schema with fingerprint {bytes(fp).hex()[:16]}...")
        return entry

    def current(self, full_name: str) -> WriterSchema:
        """The newest version of a schema (the reader schema, and what producers write with).

        Raises:
            UnknownSchema: no such schema name.
        """
        versions = self._versions.get(full_name)
        if not versions:
            raise UnknownSchema(f"no schema named {full_name}")
        return versions[-1]

    def names(self) -> list[str]:
        """Every registered schema name."""
        return sorted(self._versions)

    def versions(self, full_name: str) -> list[WriterSchema]:
        """Every version of a name, oldest first."""
        return list(self._versions.get(full_name, []))

    def encode(self, full_name: str, value: dict[str, Any]) -> tuple[bytes, bytes]:
        """Encode with the current writer schema; returns (fingerprint, payload)."""
        writer = self.current(full_name)
        return writer.fingerprint, avro.encode(writer.parsed, value)

    def encode_model(self, model: DomainRecord | Heartbeat) -> tuple[bytes, bytes]:
        """Encode a validated model with its schema's current version; returns (fingerprint, payload).

        Raises:
            UnknownSchema: the model's class mirrors no registered schema.
            SchemaViolation: the value does not fit the schema, or exceeds the payload cap.
        """
        name = SCHEMA_NAMES.get(type(model))
        if name is None:
            raise UnknownSchema(f"no schema for model {type(model).__name__}")
        return self.encode(name, model.to_avro_dict())

    def decode_model(self, fp: bytes, payload: bytes) -> DomainRecord | Heartbeat:
        """Decode *authenticated* bytes into a validated model (the Avro value is validated again).

        Raises:
            UnknownSchema: unknown fingerprint, or a schema no model mirrors.
            SchemaViolation: the bytes do not decode, or the value breaks a model rule.
        """
        name, value = self.decode(fp, payload)
        model = RECORD_TYPES.get(name)
        if model is None and name != Heartbeat.SCHEMA:
            raise UnknownSchema(f"no model mirrors schema {name}")
        try:
            return Heartbeat.from_avro_dict(value) if model is None else model.from_avro_dict(value)
        except ValidationError as e:
            # Counts only: a validation message would quote the offending (personal) data.
            raise SchemaViolation(
                f"payload of {len(payload)} bytes breaks {e.error_count()} rule(s) of {name}"
            ) from None

    def decode(self, fp: bytes, payload: bytes) -> tuple[str, dict[str, Any]]:
        """Decode *authenticated* bytes: writer by fingerprint, resolved into the current reader.

        Raises:
            UnknownSchema, SchemaViolation.
        """
        writer = self.by_fingerprint(fp)
        reader = self.current(writer.full_name)
        return writer.full_name, avro.decode(payload, writer.parsed, reader.parsed)


def _read_tree(root: Path) -> tuple[Defs, list[tuple[str, int, dict[str, Any], Defs, Path]]]:
    """The shared named types, and each versioned top-level schema normalised with its own defs."""
    defs: Defs = {}
    for path in sorted((root / "common").glob("*.avsc")):
        raw = _read(path)
        for item in raw if isinstance(raw, list) else [raw]:
            normalise(item, None, defs)
    top: list[tuple[str, int, dict[str, Any], Defs, Path]] = []
    name_of_stem: dict[str, str] = {}
    stem_of_name: dict[str, str] = {}
    for sub in ("records", "control"):
        for path in sorted((root / sub).glob("*.avsc")):
            m = _VERSIONED.match(path.name)
            if m is None:
                raise SchemaDefinitionError(f"{path.name}: expected <name>.v<N>.avsc")
            # Each version is normalised into its own copy of the shared definitions, so v2 of a
            # record can redefine its own nested types without clashing with v1's.
            local = dict(defs)
            schema = normalise(_read(path), None, local)
            if not isinstance(schema, dict) or schema.get("type") != "record":
                raise SchemaDefinitionError(f"{path.name}: the top level must be a record")
            stem, name = f"{sub}/{m.group('stem')}", schema["name"]
            if name_of_stem.setdefault(stem, name) != name:
                raise SchemaDefinitionError(
                    f"{path.name}: full name {name} differs from earlier versions' "
                    f"{name_of_stem[stem]} (versions of one file must keep one name)"
                )
            if stem_of_name.setdefault(name, stem) != stem:
                raise SchemaDefinitionError(f"{path.name}: {name} is also defined by {stem}")
            top.append((name, int(m.group("version")), schema, local, path))
    return defs, top


def _read(path: Path) -> Any:  # noqa: ANN401 - JSON
    try:
        if path.stat().st_size > MAX_SCHEMA_FILE_BYTES:
            raise SchemaDefinitionError(f"{path.name} exceeds {MAX_SCHEMA_FILE_BYTES} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SchemaDefinitionError(f"cannot read {path.name}: {e}") from e

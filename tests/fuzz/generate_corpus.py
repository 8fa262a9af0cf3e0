"""Regenerate the seed corpus under tests/fuzz/corpus/ (run: ``.venv/bin/python -m tests.fuzz.generate_corpus``).

The corpus is replayed by tests/fuzz/test_corpus.py on every CI run. Each file's name starts with
the outcome it must keep (``<outcome>--<name>``), computed here when the file is written:

* ``envelope/*.bin``: what :func:`intelbus.envelope.wire.parse` (structure only, no keys) gives:
  a reason code, or ``parses``. Every entry must also be quarantined by a consumer pipeline.
  Seeded from the committed vectors (tests/vectors/envelope_v1.json) and the attack suite's
  structural cases (flips at each field, truncations at each boundary, splices).
* ``avro/*.bin``: ``<outcome>--<schema>--<name>``: what decoding with that schema's current
  fingerprint gives (``ok`` or ``schema_violation``). Seeded from the attack suite's Avro bombs.
* ``policy/*.toml``: ``ok`` or ``config_error`` from :meth:`SharingPolicy.load`.
* ``schema_lint/*.json``: ``ok`` or ``reject`` from normalise + lint.

Inputs found by a long fuzz run (profile ``long``) or an atheris run are added by hand, named
after what they found (``<outcome>--regression-<what>``); this script never deletes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from intelbus.cli import demo_cmd
from intelbus.envelope.wire import FIXED_BYTES, parse
from intelbus.errors import RecordError, SchemaDefinitionError, SchemaViolation
from intelbus.samples import feed
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry

CORPUS = Path(__file__).parent / "corpus"
VECTORS = Path(__file__).parents[1] / "vectors" / "envelope_v1.json"


def envelope_outcome(data: bytes) -> str:
    try:
        parse(data)
    except RecordError as e:
        return e.reason.value
    return "parses"


def avro_outcome(registry: SchemaRegistry, schema: str, data: bytes) -> str:
    try:
        registry.decode_model(registry.current(schema).fingerprint, data)
    except SchemaViolation as e:
        return e.reason.value
    return "ok"


def lint_outcome(schema: object) -> str:
    try:
        lint(normalise(schema, None, {}))
    except SchemaDefinitionError:
        return "reject"
    return "ok"


def _write(folder: str, outcome: str, name: str, data: bytes, suffix: str) -> None:
    path = CORPUS / folder / f"{outcome}--{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _envelopes() -> dict[str, bytes]:
    doc = json.loads(VECTORS.read_text())
    out = {f"vector-{v['name']}": bytes.fromhex(v["expected_record"]) for v in doc["positive"]}
    out |= {f"vector-{v['name']}": bytes.fromhex(v["record"]) for v in doc["negative"]}
    r1 = out["vector-r1"]
    r2 = out["vector-r2"]
    sealed = parse(r1)
    header_end = len(sealed.header_bytes)
    h = sealed.header
    count_at = FIXED_BYTES + sum(
        1 + len(x) for x in (h.environment, h.topic, h.producer_id, h.schema_fingerprint)
    )
    for name, at in {
        "magic": 0,
        "version": 4,
        "suite": 5,
        "kind": 6,
        "flags": 7,
        "created": 8,
        "sequence-top-bit": 16,
        "key-id": 40,
        "env-length": FIXED_BYTES,
        "recipient-count": count_at,
        "ct-length": header_end + 24,
        "signature": len(r1) - 1,
    }.items():
        flipped = bytearray(r1)
        flipped[at] ^= 0x80
        out[f"flip-{name}"] = bytes(flipped)
    for name, n in {
        "empty": 0,
        "magic-only": 4,
        "fixed-header": FIXED_BYTES,
        "header": header_end,
        "before-signature": len(r1) - 64,
    }.items():
        out[f"truncated-{name}"] = r1[:n]
    p2 = parse(r2)
    out["splice-header-r1-body-r2"] = (
        sealed.header_bytes + p2.signed_bytes[len(p2.header_bytes) :] + sealed.signature
    )
    out["ct-length-max"] = sealed.header_bytes + sealed.nonce + b"\xff\xff\xff\xff" + b"\x00" * 80
    out["truncated-in-recipients"] = r1[: header_end - 1]
    return out


def _avro(registry: SchemaRegistry) -> dict[tuple[str, str], bytes]:
    record = feed(seed=70, sightings=1, incidents=0)[0]
    _, good = registry.encode(record.SCHEMA, record.to_avro())

    def zigzag(n: int) -> bytes:
        z, out = (n << 1) ^ (n >> 63), bytearray()
        while z > 0x7F:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
        return bytes(out)

    name = record.SCHEMA
    return {
        (name, "genuine-sighting"): good,
        (name, "bomb-huge-string"): zigzag(2**62) + good[:16],
        (name, "bomb-huge-counts"): good[:37] + zigzag(10**12) * 8,
        (name, "bomb-deep-nesting"): good[:37] + b"\x02" * 4096,
        (name, "trailing-byte"): good + b"\x00",
        (name, "bad-utf8"): good[:1] + b"\xff" * 8 + good[9:],
        (name, "empty"): b"",
    }


def _policies() -> dict[str, bytes]:
    out = {f"demo-{agency}": text.encode() for agency, text in demo_cmd.POLICIES.items()}
    herts = demo_cmd.POLICIES["herts-police"]
    out["unknown-key"] = (herts + 'colour = "blue"\n').encode()
    out["duplicate-rule-id"] = (herts + '[[rules]]\nid = "elsewhere"\naction = "store"\n').encode()
    out["redact-without-fields"] = b'agency = "x1"\n[[rules]]\nid = "r"\naction = "redact"\n'
    out["regression-non-utf8-crashed-load"] = b"\x80" + herts.encode()[1:]
    out["empty"] = b""
    return out


def _schemas(registry: SchemaRegistry) -> dict[str, object]:
    out: dict[str, object] = {
        f"registered-{n}": registry.current(n).schema for n in registry.names()
    }
    out["recursive-union"] = {
        "type": "record",
        "name": "g.Node",
        "fields": [{"name": "next", "type": ["null", "g.Node"]}],
    }
    out["array-of-null-bomb"] = {
        "type": "record",
        "name": "g.Bomb",
        "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}],
    }
    out["malformed-name"] = {"type": "record", "name": 7, "fields": None}
    out["not-a-schema"] = [1, {"x": None}]
    return out


def main() -> None:
    registry = SchemaRegistry.load()
    for name, data in _envelopes().items():
        _write("envelope", envelope_outcome(data), name, data, ".bin")
    for (schema, name), data in _avro(registry).items():
        short = schema.rsplit(".", 1)[-1]
        _write("avro", avro_outcome(registry, schema, data), f"{short}--{name}", data, ".bin")
    from intelbus.errors import ConfigError  # noqa: PLC0415
    from intelbus.policy.rules import SharingPolicy  # noqa: PLC0415

    probe = CORPUS / "policy" / ".probe.toml"
    probe.parent.mkdir(parents=True, exist_ok=True)
    for name, data in _policies().items():
        probe.write_bytes(data)
        try:
            SharingPolicy.load(probe)
            outcome = "ok"
        except ConfigError:
            outcome = "config_error"
        _write("policy", outcome, name, data, ".toml")
    probe.unlink()
    for name, schema in _schemas(registry).items():
        text = json.dumps(schema, indent=1, sort_keys=True).encode()
        _write("schema_lint", lint_outcome(schema), name, text, ".json")


if __name__ == "__main__":
    main()

"""Regenerate the seed corpus under tests/fuzz/corpus/ (run: ``.venv/bin/python -m tests.fuzz.generate_corpus``).

The corpus is replayed by tests/fuzz/test_corpus.py on every CI run. Each file's name starts with
the outcome it must keep (``<outcome>--<name>``), computed here when the file is written:

* ``envelope/*.bin``: what :func:`intelbus.envelope.wire.parse` (structure only, no keys) gives:
  a reason code, or ``parses``. Every entry must also be quarantined by a consumer pipeline.
  Seeded from the committed format v3 vectors (tests/vectors/envelope_v3.json) and structural
  cases built on its r1 (flips at each field, the partition, target and proof trailer included,
  truncations at each boundary, splices), every format v2 case as ``v2-`` entries (from
  envelope_v2.json) and a few ``v1-`` entries from envelope_v1.json: every format is read. Only this part can be regenerated alone: ``.venv/bin/python -c "from
  tests.fuzz.generate_corpus import write_envelopes; write_envelopes()"``.
* ``avro/*.bin``: ``<outcome>--<schema>--<name>``: what decoding with that schema's current
  fingerprint gives (``ok`` or ``schema_violation``). Seeded from the attack suite's Avro bombs.
* ``policy/*.toml``: ``ok`` or ``config_error`` from :meth:`SharingPolicy.load`. Seeded from the
  demo policies and policies each refused for one reason (unknown key, duplicate id, an
  unappliable redact path or kinds matcher), plus one redacting through lists. Only this part can
  be regenerated alone: ``.venv/bin/python -c "from tests.fuzz.generate_corpus import
  write_policies; write_policies()"``.
* ``schema_lint/*.json``: ``ok`` or ``reject`` from normalise + lint.

Inputs found by a long fuzz run (profile ``long``) or an atheris run are added by hand, named
after what they found (``<outcome>--regression-<what>``); this script never deletes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from intelbus.cli import demo_cmd
from intelbus.envelope.wire import (
    FIXED_BYTES,
    FIXED_BYTES_V2,
    FORMAT_V1,
    FORMAT_V2,
    FORMAT_V3,
    parse,
)
from intelbus.errors import RecordError, SchemaDefinitionError, SchemaViolation
from intelbus.samples import feed
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry

CORPUS = Path(__file__).parent / "corpus"
VECTORS = {
    FORMAT_V1: Path(__file__).parents[1] / "vectors" / "envelope_v1.json",
    FORMAT_V2: Path(__file__).parents[1] / "vectors" / "envelope_v2.json",
    FORMAT_V3: Path(__file__).parents[1] / "vectors" / "envelope_v3.json",
}
#: The v1 entries kept beside the v2 ones (``v1-<name>``): genuine records, a splice, a forward,
#: and structural cases at v1's own offsets.
V1_KEPT = (
    "vector-r1",
    "vector-r2",
    "vector-splice_header_ciphertext",
    "vector-forward_added_wrap",
    "flip-env-length",
    "flip-recipient-count",
    "truncated-header",
    "truncated-before-signature",
)


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
    """Every envelope seed, by name: format v3's cases, v2's named ``v2-...``, and a few of v1's
    named ``v1-...``."""
    out = _envelope_cases(FORMAT_V3)
    out |= {f"v2-{name}": data for name, data in _envelope_cases(FORMAT_V2).items()}
    v1 = _envelope_cases(FORMAT_V1)
    out |= {f"v1-{name}": v1[name] for name in V1_KEPT}
    return out


def _envelope_cases(version: int) -> dict[str, bytes]:
    doc = json.loads(VECTORS[version].read_text())
    out = {f"vector-{v['name']}": bytes.fromhex(v["expected_record"]) for v in doc["positive"]}
    out |= {f"vector-{v['name']}": bytes.fromhex(v["record"]) for v in doc["negative"]}
    r1 = out["vector-r1"]
    r2 = out["vector-r2"]
    sealed = parse(r1)
    assert sealed.header.format_version == version
    header_end = len(sealed.header_bytes)
    h = sealed.header
    fixed_end = FIXED_BYTES if version == FORMAT_V1 else FIXED_BYTES_V2
    count_at = fixed_end + sum(
        1 + len(x) for x in (h.environment, h.topic, h.producer_id, h.schema_fingerprint)
    )
    fields = {
        "magic": 0,
        "version": 4,
        "suite": 5,
        "kind": 6,
        "flags": 7,
        "created": 8,
        "sequence-top-bit": 16,
        "key-id": 40,
        "env-length": fixed_end,
        "recipient-count": count_at,
        "ct-length": header_end + 24,
        "signature": len(r1) - 1,
    }
    leaf_end = len(sealed.signed_bytes)
    if version != FORMAT_V1:
        fields["partition-top-bit"] = FIXED_BYTES  # beyond Kafka's signed 32-bit partitions
        fields["partition-low-bit"] = FIXED_BYTES + 3
        fields["target"] = FIXED_BYTES + 4
    if version == FORMAT_V3:  # the proof trailer: tree size, leaf index, path count, path
        fields["tree-size"] = leaf_end
        fields["tree-size-low-byte"] = leaf_end + 1
        fields["leaf-index"] = leaf_end + 2
        fields["path-count"] = leaf_end + 4
        fields["path"] = leaf_end + 5
    for name, at in fields.items():
        flipped = bytearray(r1)
        flipped[at] ^= 0x80
        out[f"flip-{name}"] = bytes(flipped)
    if version == FORMAT_V2:
        # The version byte alone turned into the other supported version.
        out["version-2-as-1"] = r1[:4] + bytes([FORMAT_V1]) + r1[5:]
    if version == FORMAT_V3:
        out["version-3-as-2"] = r1[:4] + bytes([FORMAT_V2]) + r1[5:]
    truncations = {
        "empty": 0,
        "magic-only": 4,
        "fixed-header": fixed_end,
        "header": header_end,
        "before-signature": len(r1) - 64,
    }
    if version != FORMAT_V1:
        truncations["fixed-header-v1-part"] = FIXED_BYTES
    if version == FORMAT_V3:
        truncations["before-trailer"] = leaf_end
        truncations["in-path"] = leaf_end + 5 + 16
    for name, n in truncations.items():
        out[f"truncated-{name}"] = r1[:n]
    p2 = parse(r2)
    out["splice-header-r1-body-r2"] = (
        sealed.header_bytes + p2.signed_bytes[len(p2.header_bytes) :] + r1[leaf_end:]
    )
    out["ct-length-max"] = sealed.header_bytes + sealed.nonce + b"\xff\xff\xff\xff" + b"\x00" * 80
    out["truncated-in-recipients"] = r1[: header_end - 1]
    return out


def write_envelopes() -> None:
    """Write the envelope seeds, each named after its outcome now, and remove generated seeds
    that are no longer made (a hand-added ``regression-`` file is never removed)."""
    folder = CORPUS / "envelope"
    wanted: set[str] = set()
    for name, data in _envelopes().items():
        outcome = envelope_outcome(data)
        wanted.add(f"{outcome}--{name}.bin")
        _write("envelope", outcome, name, data, ".bin")
    for stale in folder.glob("*--*.bin"):
        if stale.name not in wanted and "regression-" not in stale.name:
            stale.unlink()


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
    rule = 'agency = "x1"\n[[rules]]\nid = "r"\n'
    out["redact-through-lists"] = (
        rule + 'kinds = ["sighting"]\naction = "redact"\n'
        'redact = ["vehicles.registration", "persons", "place.site_name"]\n'
    ).encode()
    out["redact-unknown-path"] = (
        rule + 'kinds = ["incident"]\naction = "redact"\nredact = ["victim_detail"]\n'
    ).encode()
    out["redact-path-of-another-kind"] = (
        rule + 'kinds = ["sighting"]\naction = "redact"\nredact = ["victim_details"]\n'
    ).encode()
    out["redact-label-path"] = (
        rule + 'action = "redact"\nredact = ["reporter_ref", "place.force_area"]\n'
    ).encode()
    out["redact-label-holder"] = (rule + 'action = "redact"\nredact = ["place"]\n').encode()
    # The demo Met policy's redact rule from before corrections were judged as new versions.
    out["redact-into-correction-replacement"] = (
        rule + 'kinds = ["incident", "correction", "retraction"]\naction = "redact"\n'
        'redact = ["victim_details", "replacement.victim_details"]\n'
    ).encode()
    out["amendment-only-kinds"] = (
        rule + 'kinds = ["retraction"]\naction = "quarantine"\n'
    ).encode()
    out["amendment-kinds-beside-sighting"] = (
        rule + 'kinds = ["sighting", "correction", "retraction"]\naction = "store"\n'
    ).encode()
    out["empty-kinds"] = (rule + 'kinds = []\naction = "withhold"\n').encode()
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


def write_policies() -> None:
    """Write the policy seeds, each named after its outcome now.

    A seed whose outcome changed is written under its new name and the old file removed (a
    hand-added ``regression-`` file is never removed: its outcome must be kept, not recomputed).
    """
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
        for stale in (CORPUS / "policy").glob(f"*--{name}.toml"):
            was = stale.name.split("--", 1)
            if was[1] == f"{name}.toml" and was[0] != outcome and "regression-" not in name:
                stale.unlink()
        _write("policy", outcome, name, data, ".toml")
    probe.unlink()


def main() -> None:
    registry = SchemaRegistry.load()
    write_envelopes()
    for (schema, name), data in _avro(registry).items():
        short = schema.rsplit(".", 1)[-1]
        _write("avro", avro_outcome(registry, schema, data), f"{short}--{name}", data, ".bin")
    write_policies()
    for name, schema in _schemas(registry).items():
        text = json.dumps(schema, indent=1, sort_keys=True).encode()
        _write("schema_lint", lint_outcome(schema), name, text, ".json")


if __name__ == "__main__":
    main()

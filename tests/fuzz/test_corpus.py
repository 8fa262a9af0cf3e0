"""Replay the committed fuzz corpus (tests/fuzz/corpus/<target>/) on every CI run.

Each file's name starts with the outcome it must keep (see generate_corpus.py): a structural
reason code for envelopes, ``ok``/``schema_violation`` for Avro payloads, ``ok``/``config_error``
for policy files, ``ok``/``reject`` for schemas. Every envelope entry must also be quarantined by
a consumer (the real pipeline and store, as tests/simulator.py runs them), and nothing may raise
outside the typed hierarchy.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.pipeline import RawRecord
from intelbus.errors import ConfigError, SchemaDefinitionError, SchemaViolation
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry
from tests.attacks.report import FuzzTally
from tests.fuzz.generate_corpus import envelope_outcome
from tests.simulator import SIGHTINGS, BusSimulator, SimulatedConsumer

CORPUS = Path(__file__).parent / "corpus"
TARGETS = ("envelope", "avro", "policy", "schema_lint")
FILES = sorted(p for t in TARGETS for p in (CORPUS / t).glob("*--*") if p.is_file())
REGISTRY = SchemaRegistry.load()
TALLIES = {t: FuzzTally(f"corpus.{t}") for t in TARGETS}
OFFSETS = itertools.count()  # each entry at the next offset, as a broker would append them


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    for tally in TALLIES.values():
        if tally.examples:
            tally.write()


@pytest.fixture(scope="module")
def consumer() -> Iterator[SimulatedConsumer]:
    with tempfile.TemporaryDirectory() as tmp:
        c = SimulatedConsumer(BusSimulator(Path(tmp)))
        yield c
        c.close()


def test_the_corpus_covers_every_target() -> None:
    """No target's folder is empty (a corpus silently lost would replay nothing)."""
    assert {p.parent.name for p in FILES} == set(TARGETS)
    assert len(FILES) >= 60


def test_the_envelope_corpus_holds_every_format() -> None:
    """Records of format v3 and of formats v2 and v1 (still read) are all among the parsable
    entries."""
    parsable = [p for p in FILES if p.parent.name == "envelope" and p.name.startswith("parses--")]
    versions = {p.read_bytes()[4] for p in parsable}
    assert versions >= {1, 2, 3}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_entry_keeps_its_outcome(path: Path, consumer: SimulatedConsumer) -> None:
    """The recorded outcome, still; and never an exception outside the typed hierarchy."""
    target, outcome = path.parent.name, path.name.split("--", 1)[0]
    data = path.read_bytes()
    tally = TALLIES[target]
    if target == "envelope":
        r = tally.run(lambda: envelope_outcome(data), ())
        assert r.crash is None, f"untyped exception: {r.crash}"
        if r.value != "parses":
            tally.typed_errors += 1  # envelope_outcome catches the typed error itself
        assert r.value == outcome
        before = consumer.trusted_state()
        (verdict,) = consumer.deliver(
            [RawRecord(SIGHTINGS, 0, next(OFFSETS), data, datetime.now(UTC))]
        )
        assert not verdict.accepted, f"the consumer accepted {path.name}"
        # Signed (if at all) by keys the simulated federation does not list: never authentic.
        assert not verdict.authentic
        if outcome != "parses":  # the consumer refuses it for the reason the parser gives
            assert verdict.reason is not None
            assert verdict.reason.value == outcome
        after = consumer.trusted_state()
        assert after.quarantined == before.quarantined + 1
        assert after.without_offsets() == before.without_offsets()
    elif target == "avro":
        schema = next(n for n in REGISTRY.names() if n.endswith("." + path.name.split("--")[1]))
        fp = REGISTRY.current(schema).fingerprint
        r = tally.run(lambda: REGISTRY.decode_model(fp, data), (SchemaViolation,))
        assert r.crash is None, f"untyped exception: {r.crash}"
        assert ("ok" if r.returned else "schema_violation") == outcome
    elif target == "policy":
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "policy.toml"
            copy.write_bytes(data)
            r = tally.run(lambda: SharingPolicy.load(copy), (ConfigError,))
        assert r.crash is None, f"untyped exception: {r.crash}"
        assert ("ok" if r.returned else "config_error") == outcome
    else:
        schema = json.loads(data)
        r = tally.run(lambda: lint(normalise(schema, None, {})), (SchemaDefinitionError,))
        assert r.crash is None, f"untyped exception: {r.crash}"
        assert ("ok" if r.returned else "reject") == outcome

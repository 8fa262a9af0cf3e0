"""Replay the committed fuzz corpus (tests/fuzz/corpus/<target>/) on every CI run.

Each file's name starts with the outcome it must keep (see generate_corpus.py): a structural
reason code for envelopes, ``ok``/``schema_violation`` for Avro payloads, ``ok``/``config_error``
for policy files, ``ok``/``reject`` for schemas. Every envelope entry must also be quarantined by
a consumer pipeline, and nothing may raise outside the typed hierarchy.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.pipeline import RawRecord, Rejected
from intelbus.errors import ConfigError, SchemaDefinitionError, SchemaViolation
from intelbus.policy.rules import SharingPolicy
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry
from tests.attacks.report import FuzzTally
from tests.fuzz.generate_corpus import envelope_outcome
from tests.simulator import SIGHTINGS, BusSimulator

CORPUS = Path(__file__).parent / "corpus"
TARGETS = ("envelope", "avro", "policy", "schema_lint")
FILES = sorted(p for t in TARGETS for p in (CORPUS / t).glob("*--*") if p.is_file())
REGISTRY = SchemaRegistry.load()
TALLIES = {t: FuzzTally(f"corpus.{t}") for t in TARGETS}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    for tally in TALLIES.values():
        if tally.examples:
            tally.write()


@pytest.fixture(scope="module")
def sim() -> Iterator[BusSimulator]:
    with tempfile.TemporaryDirectory() as tmp:
        yield BusSimulator(Path(tmp))


def test_the_corpus_covers_every_target() -> None:
    """No target's folder is empty (a corpus silently lost would replay nothing)."""
    assert {p.parent.name for p in FILES} == set(TARGETS)
    assert len(FILES) >= 60


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_entry_keeps_its_outcome(path: Path, sim: BusSimulator) -> None:
    """The recorded outcome, still; and never an exception outside the typed hierarchy."""
    target, outcome = path.parent.name, path.name.split("--", 1)[0]
    data = path.read_bytes()
    tally = TALLIES[target]
    if target == "envelope":
        tally.run(lambda: envelope_outcome(data), ())
        if outcome != "parses":
            tally.typed_errors += 1
        assert envelope_outcome(data) == outcome
        result = sim.pipeline().process(RawRecord(SIGHTINGS, 0, 0, data, datetime.now(UTC)))
        assert isinstance(result.result, Rejected)
    elif target == "avro":
        schema = next(n for n in REGISTRY.names() if n.endswith("." + path.name.split("--")[1]))
        fp = REGISTRY.current(schema).fingerprint
        ok = tally.run(lambda: REGISTRY.decode_model(fp, data), (SchemaViolation,))
        assert ("ok" if ok else "schema_violation") == outcome
    elif target == "policy":
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "policy.toml"
            copy.write_bytes(data)
            ok = tally.run(lambda: SharingPolicy.load(copy), (ConfigError,))
        assert ("ok" if ok else "config_error") == outcome
    else:
        schema = json.loads(data)
        ok = tally.run(lambda: lint(normalise(schema, None, {})), (SchemaDefinitionError,))
        assert ("ok" if ok else "reject") == outcome
    assert tally.crashes == 0

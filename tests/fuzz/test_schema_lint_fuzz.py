"""Fuzzing the schema lint (Hypothesis; settings in profile.py).

* ``schema_lint.random_json``: any JSON value given as a schema is normalised and linted, or
  refused with :class:`~intelbus.errors.SchemaDefinitionError`: never another exception.
* ``schema_lint.mutated_registered``: the registered schemas with one node replaced (by a
  zero-byte array, a reference back to the top record, garbage, or a safe type as a control):
  refused typed, or, if the lint passes, fastavro accepts the schema and the replacement was not
  one of the unsafe ones.

tests/property/test_schema_props.py checks the lint against fastavro's encoder on generated
well-formed schemas; these targets feed it malformed ones.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from intelbus.errors import SchemaDefinitionError
from intelbus.serde import avro
from intelbus.serde.compat import lint, normalise
from intelbus.serde.registry import SchemaRegistry
from tests.attacks.report import FuzzTally
from tests.fuzz.profile import FUZZ

REGISTRY = SchemaRegistry.load()
SCHEMAS = [REGISTRY.current(n).schema for n in REGISTRY.names()]
_words = st.sampled_from(
    [
        "record",
        "array",
        "map",
        "enum",
        "fixed",
        "null",
        "string",
        "int",
        "type",
        "name",
        "fields",
        "items",
        "values",
        "symbols",
        "size",
        "a.B",
        "g.Top",
        "",
    ]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | _words,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_words, inner, max_size=5),
    max_leaves=30,
)


def _lint(schema: Any) -> None:
    lint(normalise(schema, None, {}))


def test_random_json_schemas_fail_typed() -> None:
    """normalise + lint on arbitrary JSON: a SchemaDefinitionError or a pass, nothing else."""
    tally = FuzzTally("schema_lint.random_json")

    @FUZZ
    @given(value=_json, wrap=st.booleans())
    def run(value: Any, *, wrap: bool) -> None:
        schema = {"type": "record", "name": "g.Top", "fields": [{"name": "x", "type": value}]}
        r = tally.run(lambda: _lint(schema if wrap else value), (SchemaDefinitionError,))
        assert r.crash is None, f"untyped exception: {r.crash}"

    try:
        run()
    finally:
        tally.write()
    # Both outcomes were exercised: a strategy that only made refusals (or passes) proves less.
    assert 0 < tally.typed_errors < tally.examples, tally


def _nodes(s: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(s, list):
        for i, b in enumerate(s):
            out += _nodes(b, (*path, i))
    elif isinstance(s, dict):
        if isinstance(s.get("fields"), list):
            for i, f in enumerate(s["fields"]):
                out += _nodes(f["type"], (*path, "fields", i, "type"))
        for key in ("items", "values"):
            if key in s:
                out += _nodes(s[key], (*path, key))
    return out


def _replace(s: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(s)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return out


_UNSAFE = [
    {"type": "array", "items": "null"},  # an allocation bomb
    {"type": "map", "values": {"type": "record", "name": "g.Empty", "fields": []}},
    {"type": "array", "items": {"type": "fixed", "name": "g.Zero", "size": 0}},
    ["null", "SELF"],  # recursion through a union (SELF: the top record's name)
    {"type": "array", "items": "SELF"},
    {"type": "record", "name": "g.R", "fields": [{"name": "me", "type": "g.R"}]},
]
_INVALID = [
    {"type": "nonsense"},
    {"type": "record", "name": 7, "fields": None},
    "no.such.Type",
]
# Safe, valid replacements: the lint may pass these, and then fastavro must take the schema. They
# keep the "lint passed" branch below live (without them every example is a refusal).
_SAFE = [
    "string",
    {"type": "array", "items": "long"},
    {"type": "map", "values": ["null", "string"]},
]
_REPLACEMENTS = [*_UNSAFE, *_INVALID, *_SAFE]


def test_mutated_registered_schemas_fail_typed_or_stay_safe() -> None:
    """One node of a real schema replaced: refused typed, or still safe to decode with."""
    tally = FuzzTally("schema_lint.mutated_registered")
    targets = [(i, p) for i, s in enumerate(SCHEMAS) for p in _nodes(s)[1:]]
    passed: list[int] = []

    @FUZZ
    @given(target=st.sampled_from(targets), which=st.integers(0, len(_REPLACEMENTS) - 1))
    def run(target: tuple[int, tuple[Any, ...]], which: int) -> None:
        index, path = target
        top = SCHEMAS[index]
        new = copy.deepcopy(_REPLACEMENTS[which])
        if new == ["null", "SELF"]:
            new = ["null", top["name"]]
        elif new == {"type": "array", "items": "SELF"}:
            new = {"type": "array", "items": top["name"]}
        mutated = _replace(top, path, new)
        r = tally.run(lambda: _lint(mutated), (SchemaDefinitionError,))
        assert r.crash is None, f"untyped exception: {r.crash}"
        if r.returned:
            # It passed the lint: no bomb or recursion got through, and fastavro takes it.
            assert which >= len(_UNSAFE), f"lint passed replacement #{which} at {path}"
            avro.parse_schema(mutated)  # a SchemaDefinitionError here fails the test
            passed.append(which)

    try:
        run()
    finally:
        tally.write()
    assert passed, "no mutated schema passed the lint: the branch that checks fastavro never ran"

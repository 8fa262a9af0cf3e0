"""Schema rules: name resolution, the lint, and the backward-compatibility check.

Schemas here are JSON values (dicts, lists, strings) as read from ``.avsc`` files.

* :func:`normalise` rewrites a schema so every named type and every reference uses its full name.
* :func:`expand` makes a self-contained schema: each named type is defined inline at its first use.
* :func:`lint` refuses what makes decoding hostile bytes dangerous (SECURITY.md): recursive named
  types (a deep payload crashed fastavro's C reader) and arrays or maps whose items can encode in
  zero bytes (six bytes then declare 10^12 items and exhaust memory).
* :func:`check_backward` refuses a new reader schema that cannot read data written with an older
  writer schema, following Avro's schema-resolution rules.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

from intelbus.errors import SchemaDefinitionError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}

Schema = Any  # a JSON schema value: str | list | dict
Defs = dict[str, dict[str, Any]]


def _full(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def normalise(schema: Schema, namespace: str | None, defs: Defs) -> Schema:
    """Full names everywhere; every named type definition is also recorded in ``defs``.

    Raises:
        SchemaDefinitionError: a named type is defined twice differently, or the schema is malformed.
    """
    with _malformed():
        return _normalise(schema, namespace, defs)


@contextlib.contextmanager
def _malformed() -> Iterator[None]:
    # A malformed schema file (a missing "name", a number where a type belongs) must surface as a
    # SchemaDefinitionError naming the problem, never as a bare KeyError from deep in a walk.
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise SchemaDefinitionError(f"malformed schema: {type(e).__name__} {e}") from e


def _normalise(schema: Schema, namespace: str | None, defs: Defs) -> Schema:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        return _full(schema, namespace)
    if isinstance(schema, list):
        return [_normalise(s, namespace, defs) for s in schema]
    if not isinstance(schema, dict) or "type" not in schema:
        raise SchemaDefinitionError(f"not a schema: {str(schema)[:80]}")
    kind = schema["type"]
    out = dict(schema)
    if isinstance(kind, str) and kind in NAMED:
        full = _full(schema["name"], schema.get("namespace", namespace))
        out["name"] = full
        out.pop("namespace", None)
        inner_ns = full.rsplit(".", 1)[0] if "." in full else None
        if kind in ("record", "error"):
            out["fields"] = [
                {**f, "type": _normalise(f["type"], inner_ns, defs)} for f in schema["fields"]
            ]
        if full in defs and defs[full] != out:
            raise SchemaDefinitionError(f"named type {full} is defined twice, differently")
        defs[full] = out
        return out
    if kind == "array":
        out["items"] = _normalise(schema["items"], namespace, defs)
    elif kind == "map":
        out["values"] = _normalise(schema["values"], namespace, defs)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVES):
        # {"type": "SomeName"} or {"type": {...}}: a wrapped reference or definition.
        out["type"] = _normalise(kind, namespace, defs)
    return out


def expand(
    schema: Schema,
    defs: Mapping[str, Schema],
    *,
    _seen: set[str] | None = None,
    _stack: tuple[str, ...] = (),
) -> Schema:
    """A self-contained copy of ``schema``: each named type defined inline at its first use.

    Raises:
        SchemaDefinitionError: an unknown type name, or a recursive named type.
    """
    seen = set() if _seen is None else _seen
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        if schema in _stack:
            raise SchemaDefinitionError(
                f"recursive named type {schema} (via {' -> '.join(_stack)})"
            )
        if schema in seen:
            return schema
        if schema not in defs:
            raise SchemaDefinitionError(f"unknown type {schema}")
        return expand(copy.deepcopy(defs[schema]), defs, _seen=seen, _stack=_stack)
    if isinstance(schema, list):
        return [expand(s, defs, _seen=seen, _stack=_stack) for s in schema]
    out = dict(schema)
    kind = out["type"]
    if isinstance(kind, str) and kind in NAMED:
        name = out["name"]
        if name in _stack:
            raise SchemaDefinitionError(f"recursive named type {name}")
        seen.add(name)
        if kind in ("record", "error"):
            out["fields"] = [
                {**f, "type": expand(f["type"], defs, _seen=seen, _stack=(*_stack, name))}
                for f in out["fields"]
            ]
        return out
    if kind == "array":
        out["items"] = expand(out["items"], defs, _seen=seen, _stack=_stack)
    elif kind == "map":
        out["values"] = expand(out["values"], defs, _seen=seen, _stack=_stack)
    elif isinstance(kind, (dict, list)) or kind not in PRIMITIVES:
        return expand(kind, defs, _seen=seen, _stack=_stack)
    return out


def _definitions(schema: Schema, defs: Defs) -> Defs:
    """Every named type defined inside an expanded schema."""
    if isinstance(schema, list):
        for s in schema:
            _definitions(s, defs)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if isinstance(kind, str) and kind in NAMED:
            defs[schema["name"]] = schema
            for f in schema.get("fields", []):
                _definitions(f["type"], defs)
        elif kind == "array":
            _definitions(schema["items"], defs)
        elif kind == "map":
            _definitions(schema["values"], defs)
        elif isinstance(kind, (dict, list)):
            _definitions(kind, defs)
    return defs


def _type_of(schema: Schema) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return kind if isinstance(kind, str) else _type_of(kind)


def min_encoded_size(
    schema: Schema, defs: Mapping[str, Schema], _stack: tuple[str, ...] = ()
) -> int:
    """The fewest bytes a value of ``schema`` can encode to (0 means "can be empty")."""
    if isinstance(schema, list):
        return 1  # the branch index is always written, even before a null branch
    if isinstance(schema, str):
        sizes = {
            "null": 0,
            "boolean": 1,
            "int": 1,
            "long": 1,
            "float": 4,
            "double": 8,
            "bytes": 1,
            "string": 1,
        }
        if schema in sizes:
            return sizes[schema]
        if schema in _stack:
            return 1  # recursive; refused by the lint anyway
        return min_encoded_size(defs[schema], defs, (*_stack, schema))
    kind = schema["type"]
    if not isinstance(kind, str):
        return min_encoded_size(kind, defs, _stack)
    if kind in ("record", "error"):
        return sum(
            min_encoded_size(f["type"], defs, (*_stack, schema["name"])) for f in schema["fields"]
        )
    if kind == "enum":
        # The symbol index is an Avro int: even index 0 of a one-symbol enum is one byte (0x00).
        return 1
    if kind == "fixed":
        return int(schema["size"])
    if kind in ("array", "map"):
        return 1  # the block count
    return min_encoded_size(kind, defs, _stack)


def lint(schema: Schema) -> None:
    """Refuse recursive named types and collections whose items can encode in zero bytes.

    ``schema`` must be normalised (full names). Recursion is found by expanding it.

    Raises:
        SchemaDefinitionError: the schema is unsafe to decode hostile input with.
    """
    with _malformed():
        problems = _lint_problems(schema)
    if problems:
        raise SchemaDefinitionError("; ".join(problems))


def _lint_problems(schema: Schema) -> list[str]:
    local = _definitions(schema, {})
    expanded = expand(schema, local)  # raises on recursion
    defs = _definitions(expanded, {})
    problems: list[str] = []

    def walk(s: Schema, path: str) -> None:
        if isinstance(s, list):
            for i, branch in enumerate(s):
                walk(branch, f"{path}|{i}")
            return
        if isinstance(s, str):
            return
        kind = s["type"]
        if not isinstance(kind, str):
            walk(kind, path)
        elif kind in ("record", "error"):
            for f in s["fields"]:
                walk(f["type"], f"{path}.{f['name']}")
        elif kind in ("array", "map"):
            # An array of zero-byte items lets a few bytes declare 10^12 items that the decoder
            # then builds one by one (SECURITY.md measured 1.8 GB from 6 bytes). A map entry always
            # carries a key of at least one byte, so it is bounded by the input; a map of zero-byte
            # values is refused anyway, as it can carry nothing but its keys.
            inner = s["items"] if kind == "array" else s["values"]
            if min_encoded_size(inner, defs) == 0:
                problems.append(f"{path}: {kind} items can encode in zero bytes (allocation bomb)")
            walk(inner, f"{path}[]")

    walk(expanded, _name_of(expanded))
    return problems


def _name_of(schema: Schema) -> str:
    return schema["name"] if isinstance(schema, dict) and "name" in schema else _type_of(schema)


def check_backward(reader: Schema, writer: Schema) -> None:
    """Refuse ``reader`` unless it can read every value written with ``writer`` (Avro resolution).

    Both schemas must be expanded (self-contained).

    Raises:
        SchemaDefinitionError: listing every incompatibility found.
    """
    problems: list[str] = []
    with _malformed():
        _can_read(
            reader, writer, _definitions(reader, {}), _definitions(writer, {}), "", problems, set()
        )
    if problems:
        raise SchemaDefinitionError("incompatible schema change: " + "; ".join(problems))


def _resolve(s: Schema, defs: Defs) -> Schema:
    if isinstance(s, str) and s not in PRIMITIVES:
        return defs[s]
    if isinstance(s, dict) and not isinstance(s["type"], str):
        return _resolve(s["type"], defs)
    if isinstance(s, dict) and s["type"] in PRIMITIVES:
        return s[
            "type"
        ]  # {"type": "long", "logicalType": ...}: logical types do not affect resolution
    return s


def _can_read(
    reader: Schema,
    writer: Schema,
    rdefs: Defs,
    wdefs: Defs,
    path: str,
    problems: list[str],
    seen: set[tuple[str, str]],
) -> None:
    r = _resolve(reader, rdefs)
    w = _resolve(writer, wdefs)
    rt, wt = _type_of(r), _type_of(w)
    here = path or "<root>"
    rlogical, wlogical = _logical(reader, rdefs), _logical(writer, wdefs)
    if rlogical != wlogical and wt not in ("union",) and rt not in ("union",):
        # The bytes still resolve, but their meaning changes (millis read as micros, say).
        problems.append(f"{here}: logical type {wlogical} -> {rlogical}")
        return
    if wt == "union":
        for i, branch in enumerate(w):
            _can_read(r, branch, rdefs, wdefs, f"{path}|{i}", problems, seen)
        return
    if rt == "union":
        for branch in r:
            trial: list[str] = []
            _can_read(branch, w, rdefs, wdefs, path, trial, seen)
            if not trial:
                return
        problems.append(f"{here}: no branch of the reader union reads writer type {wt}")
        return
    if wt in PRIMITIVES:
        if rt not in _PROMOTIONS.get(wt, {wt}):
            problems.append(f"{here}: reader {rt} cannot read writer {wt}")
        return
    if rt != wt:
        problems.append(f"{here}: reader {rt} cannot read writer {wt}")
        return
    if wt in ("record", "error", "enum", "fixed"):
        rname, wname = r["name"].rsplit(".", 1)[-1], w["name"].rsplit(".", 1)[-1]
        aliases = {a.rsplit(".", 1)[-1] for a in r.get("aliases", [])}
        if rname != wname and wname not in aliases:
            problems.append(f"{here}: reader {r['name']} does not match writer {w['name']}")
            return
        key = (r["name"], w["name"])
        if key in seen:
            return
        seen.add(key)
    if wt in ("record", "error"):
        _can_read_record(r, w, rdefs, wdefs, path, problems, seen)
    elif wt == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if "default" in r and r["default"] not in r["symbols"]:
            problems.append(f"{here}: enum default is not one of its symbols")
        elif missing and "default" not in r:
            problems.append(f"{here}: enum symbols removed without a default: {', '.join(missing)}")
    elif wt == "fixed":
        if r["size"] != w["size"]:
            problems.append(f"{here}: fixed size {w['size']} -> {r['size']}")
    elif wt == "array":
        _can_read(r["items"], w["items"], rdefs, wdefs, f"{path}[]", problems, seen)
    elif wt == "map":
        _can_read(r["values"], w["values"], rdefs, wdefs, f"{path}{{}}", problems, seen)


def _logical(s: Schema, defs: Defs) -> str | None:
    while isinstance(s, str) and s in defs:
        s = defs[s]
    if isinstance(s, dict):
        if "logicalType" in s:
            return str(s["logicalType"])
        if isinstance(s["type"], dict):
            return _logical(s["type"], defs)
    return None


_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "bytes": (str,),
    "string": (str,),
}


def _default_fits(schema: Schema, value: Any, defs: Defs) -> bool:  # noqa: ANN401 - a JSON value
    """Whether ``value`` is a valid JSON default for ``schema`` (a union's default fits its first branch)."""
    s = _resolve(schema, defs)
    kind = _type_of(s)
    if kind == "union":
        return bool(s) and _default_fits(s[0], value, defs)
    if kind in _JSON_KINDS:
        if kind in ("int", "long", "float", "double") and isinstance(value, bool):
            return False
        return isinstance(value, _JSON_KINDS[kind])
    if kind == "enum":
        return isinstance(value, str) and value in s["symbols"]
    if kind == "fixed":
        return isinstance(value, str) and len(value) == int(s["size"])
    if kind == "array":
        return isinstance(value, list) and all(_default_fits(s["items"], v, defs) for v in value)
    if kind == "map":
        return isinstance(value, dict) and all(
            _default_fits(s["values"], v, defs) for v in value.values()
        )
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return False
        return all(
            (f["name"] in value and _default_fits(f["type"], value[f["name"]], defs))
            or (f["name"] not in value and "default" in f)
            for f in s["fields"]
        ) and set(value) <= {f["name"] for f in s["fields"]}
    return False


def _can_read_record(
    r: dict[str, Any],
    w: dict[str, Any],
    rdefs: Defs,
    wdefs: Defs,
    path: str,
    problems: list[str],
    seen: set[tuple[str, str]],
) -> None:
    """Reader fields are matched by name (or alias); a field only the reader has needs a default.

    A field only the writer has is skipped by the decoder, so removing a field is compatible.
    """
    wfields = {f["name"]: f for f in w["fields"]}
    for rf in r["fields"]:
        wf = wfields.get(rf["name"])
        if wf is None:
            for alias in rf.get("aliases", []):
                wf = wfields.get(alias)
                if wf is not None:
                    break
        if wf is None:
            if "default" not in rf:
                problems.append(f"{path}.{rf['name']}: new field without a default")
            elif not _default_fits(rf["type"], rf["default"], rdefs):
                problems.append(f"{path}.{rf['name']}: default does not fit the field's type")
            continue
        _can_read(rf["type"], wf["type"], rdefs, wdefs, f"{path}.{rf['name']}", problems, seen)

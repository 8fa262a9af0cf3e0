"""The console's report forms, built from the Avro schemas, and what a posted form means.

The schemas (``schemas/``) are the wire contract, so the form is derived from them rather than
written by hand: a field added to a schema appears on the form (and ``tests/unit/test_web_forms.py``
fails if a model field has no form field). Validation is not redone here: a posted form becomes
the same nested dict a JSON file would hold, and :func:`producers.inputs.check_record` judges it
exactly as ``intelbus publish`` does; each of its problems is then put beside the field it is about.

Conventions the pages rely on:

* Field names are dotted paths into the record (``place.force_area``, ``grading.tlp``); records
  in arrays are numbered groups (``persons.0.summary`` is "Person 1"); a group left blank is
  dropped.
* ``record_id`` is not a field: :func:`producers.inputs.normalise` derives it from the contents.
* Times (``datetime`` widget): HTML's ``datetime-local`` posts ``YYYY-MM-DDTHH:MM`` without an
  offset; such a time is taken as UTC (the help says so). A time with an offset or ``Z`` is
  converted to UTC, as in a file.
* ``select`` options hold the schema's symbols only; a template adds its own blank choice.
* Errors are keyed by field name; "" holds the form-level ones. A problem about a whole nested
  record goes to the field it is most about (:data:`_GROUP_ERRORS`: grading's conditions rule to
  ``grading.handling_conditions``, place's both-or-neither rule to ``place.latitude``), else to the
  group's first field.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from intelbus.records import KIND_TYPES, DomainRecord
from intelbus.serde.registry import SchemaRegistry
from producers.inputs import InputInvalid, Problem, check_record

Widget = Literal["text", "textarea", "select", "checkboxes", "datetime", "number", "lines"]

#: The record kinds a report form exists for (corrections reuse them; retractions are a reason).
FORM_KINDS = ("sighting", "incident")
#: Blank groups offered for each array of records (blank ones are dropped when parsing).
REPEATS = 3
#: Free text that may run long (the models allow 4,000 characters): a textarea, not a line.
_LONG_TEXT = frozenset({"description", "victim_details", "offender_description", "reason"})
_LABELS = {
    "tlp": "TLP",
    "approx_age": "Approximate age",
    "address_or_area": "Address or area",
    "reporter_ref": "Reporter reference",
}
_SINGULAR = {"persons": "Person", "vehicles": "Vehicle"}
#: Where a problem about a whole nested record is shown (the rule it breaks is about this field).
_GROUP_ERRORS = {"grading": "grading.handling_conditions", "place": "place.latitude"}
_TIME_HELP = (
    "In UTC: a time without an offset (as the browser's date picker gives) is taken as UTC; "
    "one with an offset such as +01:00 is converted."
)
_UNKNOWN = "unknown form field(s), refused: "


@dataclass(frozen=True, slots=True)
class Field:
    """One input of a form: its dotted name, what to show, and how to read it back."""

    name: str
    label: str
    help: str
    widget: Widget
    required: bool
    options: tuple[tuple[str, str], ...] = ()
    group: str = "Report"


@dataclass(frozen=True, slots=True)
class FormSpec:
    """The fields of one form, in schema order, for the record kind it makes."""

    kind: str
    fields: tuple[Field, ...]

    def names(self) -> frozenset[str]:
        """Every field name (posted names outside it are refused)."""
        return frozenset(f.name for f in self.fields)

    def groups(self) -> tuple[tuple[str, tuple[Field, ...]], ...]:
        """The fields by group, groups in order of first appearance (a fieldset each)."""
        order: dict[str, list[Field]] = {}
        for f in self.fields:
            order.setdefault(f.group, []).append(f)
        return tuple((g, tuple(fs)) for g, fs in order.items())


@dataclass(frozen=True, slots=True)
class FormResult:
    """What a posted form gave: the record (None when refused), errors by field name ("" for
    the form), and the posted values to fill the form again with."""

    record: DomainRecord | None
    errors: Mapping[str, tuple[str, ...]]
    values: Mapping[str, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        """Whether the form made a valid record."""
        return self.record is not None and not self.errors


@functools.cache
def _registry() -> SchemaRegistry:
    # The schemas are read (and checked) once per process; they never change while it runs.
    return SchemaRegistry.load()


def _schema(kind: str) -> dict[str, Any]:
    model = KIND_TYPES[kind]
    return _registry().current(model.SCHEMA).schema


def form_spec(kind: str) -> FormSpec:
    """The report form of a sighting or an incident, from its current Avro schema.

    Raises:
        ValueError: ``kind`` has no report form.
    """
    if kind not in FORM_KINDS:
        raise ValueError(f"no report form for {kind!r}: use one of {', '.join(FORM_KINDS)}")
    return FormSpec(kind, tuple(_fields(_schema(kind), prefix="", group="Report")))


def correction_spec(kind: str) -> FormSpec:
    """A correction's form: the corrected kind's fields (filled from the record) and a reason."""
    spec = form_spec(kind)
    return FormSpec("correction", (*spec.fields, _reason_field("correction")))


def retraction_spec() -> FormSpec:
    """A retraction's form: only the reason (the target and grading come from the record)."""
    return FormSpec("retraction", (_reason_field("retraction"),))


def _reason_field(kind: str) -> Field:
    doc = next(f for f in _schema(kind)["fields"] if f["name"] == "reason")
    return Field(
        "reason",
        "Reason",
        doc.get("doc", f"Why this {kind} is made; every recipient sees it."),
        "textarea",
        required=True,
    )


def _fields(record: dict[str, Any], prefix: str, group: str) -> list[Field]:
    out: list[Field] = []
    for f in record["fields"]:
        name = f["name"]
        if not prefix and name == "record_id":
            continue  # generated from the contents (producers.inputs.normalise)
        out.extend(_field(f, prefix + name, group))
    return out


def _field(  # noqa: PLR0911 - a return per Avro type
    avro_field: dict[str, Any], name: str, group: str
) -> list[Field]:
    leaf = name.rsplit(".", 1)[-1]
    label = _LABELS.get(leaf, leaf.replace("_", " ").capitalize())
    typ = avro_field["type"]
    optional = isinstance(typ, list) and "null" in typ
    if isinstance(typ, list):
        typ = next(t for t in typ if t != "null")
    doc = avro_field.get("doc") or (typ.get("doc", "") if isinstance(typ, dict) else "")
    if isinstance(typ, dict) and typ.get("type") == "record":
        return _fields(typ, f"{name}.", label)
    if isinstance(typ, dict) and typ.get("type") == "array":
        items = typ["items"]
        if isinstance(items, dict) and items.get("type") == "record":
            each = _SINGULAR.get(leaf, label)
            return [
                _optional(g)
                for i in range(REPEATS)
                for g in _fields(items, f"{name}.{i}.", f"{each} {i + 1}")
            ]
        if isinstance(items, dict) and items.get("type") == "enum":
            help_ = doc or items.get("doc", "") or "Tick every one that applies."
            return [Field(name, label, help_, "checkboxes", True, _options(items), group)]
        return [Field(name, label, doc or "One per line.", "lines", False, (), group)]
    if isinstance(typ, dict) and typ.get("type") == "enum":
        return [Field(name, label, doc, "select", not optional, _options(typ), group)]
    if isinstance(typ, dict) and typ.get("logicalType", "").startswith("timestamp"):
        help_ = f"{doc} {_TIME_HELP}".strip()
        return [Field(name, label, help_, "datetime", not optional, (), group)]
    if typ in ("double", "float", "int", "long"):
        return [Field(name, label, doc, "number", not optional, (), group)]
    widget: Widget = "textarea" if leaf in _LONG_TEXT else "text"
    return [Field(name, label, doc, widget, not optional, (), group)]


def _optional(f: Field) -> Field:
    """``f`` as optional: a repeated group may be left blank, so none of its fields is required
    by the browser (the model still requires e.g. a person's summary once the group is used)."""
    return Field(f.name, f.label, f.help, f.widget, False, f.options, f.group)


def _options(enum_schema: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((s, s.replace("_", " ").capitalize()) for s in enum_schema["symbols"])


@dataclass(frozen=True, slots=True)
class _Parsed:
    data: dict[str, Any]
    # For each array of records: position in the parsed list -> index of the form's group.
    positions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def parse_form(spec: FormSpec, fields: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The nested dict :func:`producers.inputs.check_record` takes, from posted values.

    An empty optional value is left out; ``lines`` become a list (empty when blank); ``number``
    values become floats when they parse, else stay the text typed, for the model to refuse beside
    the field; a blank repeated group is dropped. Names outside ``spec`` are ignored here
    (:func:`validate_form` refuses them).
    """
    return _parse(spec, fields).data


def _parse(spec: FormSpec, fields: Mapping[str, Sequence[str]]) -> _Parsed:
    data: dict[str, Any] = {}
    arrays: dict[str, dict[int, dict[str, Any]]] = {}
    errors: dict[str, tuple[str, ...]] = {}
    for f in spec.fields:
        posted = [v for v in fields.get(f.name, ()) if v.strip()]
        if f.widget not in ("checkboxes", "lines") and len(posted) > 1:
            errors[f.name] = ("give one value",)
            continue
        value = _value(f, posted)
        parts = f.name.split(".")
        if len(parts) == 3 and parts[1].isdigit():  # persons.0.summary: a repeated group
            group = arrays.setdefault(parts[0], {}).setdefault(int(parts[1]), {})
            if value is not None:
                group[parts[2]] = value
            continue
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # place, grading: always present, so each
            # missing field is reported beside itself rather than the group as one
        if value is not None:
            node[parts[-1]] = value
    positions: dict[str, tuple[int, ...]] = {}
    for name, groups in arrays.items():
        used = [i for i in sorted(groups) if groups[i]]
        data[name] = [groups[i] for i in used]
        positions[name] = tuple(used)
    return _Parsed(data, positions, errors)


def _value(f: Field, posted: list[str]) -> Any:  # noqa: ANN401, PLR0911 - a JSON value, per widget
    if f.widget == "checkboxes":
        return posted or None
    if f.widget == "lines":
        return [line.strip() for v in posted for line in v.splitlines() if line.strip()]
    if not posted:
        return None
    raw = posted[0].strip()
    if f.widget == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if f.widget == "datetime":
        return _time(raw)
    return raw


def _time(raw: str) -> str:
    # datetime-local gives no offset: the form says such a time is UTC. Anything unreadable is
    # left as typed so the model reports it beside the field.
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC).isoformat()
    return raw


def validate_form(
    kind: str,
    fields: Mapping[str, Sequence[str]],
    now: datetime,
    *,
    correction_of: str | None = None,
    ignore: Collection[str] = (),
) -> FormResult:
    """A posted report form judged as ``intelbus publish`` judges a file, errors by field.

    With ``correction_of`` (a record id of this producer's ``kind``) the form is a correction:
    the kind's fields are the corrected record (keeping that id), plus ``reason``; the correction
    is graded as its replacement. Posted names outside the form are refused (a form-level error),
    except those in ``ignore`` (the page's own, such as a CSRF token).
    """
    spec = correction_spec(kind) if correction_of is not None else form_spec(kind)
    values, unknown = _values(spec, fields, ignore)
    parsed = _parse(spec, fields)
    errors: dict[str, list[str]] = {k: list(v) for k, v in parsed.errors.items()}
    if unknown:
        errors.setdefault("", []).append(_UNKNOWN + ", ".join(sorted(unknown)))
    data = dict(parsed.data)
    if correction_of is not None:
        reason = data.pop("reason", None)
        data["record_id"] = correction_of
        if isinstance(data.get("place"), dict):
            # normalise gives a top-level place its optional site name, not a replacement's
            data["place"] = {"site_name": None, **data["place"]}
        data = {
            "corrects_record_id": correction_of,
            "corrected_at": now.astimezone(UTC).isoformat(),
            "reason": reason,
            "replacement": data,
            "grading": data.get("grading"),
        }
        if reason is None:
            del data["reason"]
    record: DomainRecord | None = None
    try:
        checked = check_record("correction" if correction_of is not None else kind, data, now)
        record = checked.record
    except InputInvalid as e:
        model = KIND_TYPES[kind].__name__
        for problem in e.problems:
            where = _field_for(spec, parsed.positions, problem, model, correction_of is not None)
            message = _prefixed(problem, where) if where is not None else ""
            if where is not None and message not in errors.get(where, []):
                errors.setdefault(where, []).append(message)
    except RecursionError:  # a form cannot nest that deep; kept so nothing ever raises
        errors.setdefault("", []).append("nested too deeply to be a record")
    if record is not None and correction_of is not None:
        replacement = getattr(record, "replacement", None)
        if not isinstance(replacement, KIND_TYPES[kind]):
            errors.setdefault("", []).append(f"the correction must carry a {kind}")
    return FormResult(
        None if errors else record,
        MappingProxyType({k: tuple(v) for k, v in errors.items()}),
        MappingProxyType(values),
    )


def validate_retraction(
    fields: Mapping[str, Sequence[str]],
    now: datetime,
    *,
    retracts_record_id: str,
    grading: Mapping[str, Any],
    ignore: Collection[str] = (),
) -> FormResult:
    """A posted retraction form (its reason) as a retraction of ``retracts_record_id``.

    A retraction carries a grading of its own; the page passes the retracted record's (as JSON,
    ``record.grading.model_dump(mode="json")``), since withdrawing a report shares what it did.
    """
    spec = retraction_spec()
    values, unknown = _values(spec, fields, ignore)
    parsed = _parse(spec, fields)
    errors: dict[str, list[str]] = {k: list(v) for k, v in parsed.errors.items()}
    if unknown:
        errors.setdefault("", []).append(_UNKNOWN + ", ".join(sorted(unknown)))
    data = {
        **parsed.data,
        "retracts_record_id": retracts_record_id,
        "retracted_at": now.astimezone(UTC).isoformat(),
        "grading": dict(grading),
    }
    record: DomainRecord | None = None
    try:
        record = check_record("retraction", data, now).record
    except InputInvalid as e:
        for problem in e.problems:
            where = "reason" if problem.path == "reason" else ""
            errors.setdefault(where, []).append(_prefixed(problem, where))
    return FormResult(
        None if errors else record,
        MappingProxyType({k: tuple(v) for k, v in errors.items()}),
        MappingProxyType(values),
    )


def _values(
    spec: FormSpec, fields: Mapping[str, Sequence[str]], ignore: Collection[str]
) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    names = spec.names()
    values = {k: tuple(v) for k, v in fields.items() if k in names}
    unknown = {k for k in fields if k not in names and k not in ignore}
    return values, unknown


def _prefixed(problem: Problem, where: str) -> str:
    # A problem shown at form level names what it is about; beside a field it need not.
    return problem.message if where or not problem.path else f"{problem.path}: {problem.message}"


def _field_for(  # noqa: PLR0911 - each way a path is placed returns
    spec: FormSpec,
    positions: Mapping[str, tuple[int, ...]],
    problem: Problem,
    model: str,
    correction: bool,
) -> str | None:
    """The field name a problem of check_record is shown beside ("" for the form), or None
    when it is not about this form (the other branch of a correction's union)."""
    parts = problem.path.split(".") if problem.path else []
    if correction and parts[:1] == ["replacement"]:
        parts = parts[1:]
        if parts and parts[0] in ("Sighting", "Incident"):  # pydantic names the union branch
            if parts[0] != model:
                return None
            parts = parts[1:]
        if parts[:1] == ["record_id"]:
            return ""
    elif correction and parts and parts[0] not in ("reason", "grading"):
        return ""  # the correction's own fields (its target, its time) are not on the form
    if len(parts) >= 2 and parts[0] in positions and parts[1].isdigit():
        used = positions[parts[0]]
        at = int(parts[1])
        if at < len(used):
            parts[1] = str(used[at])
    names = [f.name for f in spec.fields]
    while parts:
        dotted = ".".join(parts)
        if dotted in names:
            return dotted
        if dotted in _GROUP_ERRORS:
            return _GROUP_ERRORS[dotted]
        first = next((n for n in names if n.startswith(dotted + ".")), None)
        if first is not None:
            return first
        parts.pop()
    return ""

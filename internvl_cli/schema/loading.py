"""Schema loading: a JSON Schema for extract, engine-neutral, loaded and checked, with its grammar's copy and validator.

A schema is given as a file, a shipped name, inline JSON or a concise field list (`'vendor, total float'`).
It is checked against its draft's meta-schema (draft-06, draft-07, 2019-09 or 2020-12, from `$schema`;
2020-12 by default), every reference must resolve inside the document (nothing is fetched), and its
grammar's copy (schema/lowering.py) must compile, all before any model loads. Answers are validated
against the full original schema with that draft's validator: every format checked, `multipleOf` in
exact decimal arithmetic on the number as printed, duplicate keys and non-finite numbers refused.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from ..decoding.constraints import Constraint, check_constraint
from ..errors import SchemaError
from ..resources import data_dir
from .formats import format_checker, missing_checkers
from .lowering import Options, Unresolvable, Unsatisfiable, grammar_copy, shortest_answer

# $schema -> our draft name; draft-04 and older use another number model and are refused.
_DRAFTS = {
    "json-schema.org/draft-06/schema": ("draft6", jsonschema.Draft6Validator),
    "json-schema.org/draft-07/schema": ("draft7", jsonschema.Draft7Validator),
    "json-schema.org/draft/2019-09/schema": ("draft2019-09", jsonschema.Draft201909Validator),
    "json-schema.org/draft/2020-12/schema": ("draft2020-12", jsonschema.Draft202012Validator),
}
_OLD_DRAFTS = ("json-schema.org/draft-04/schema", "json-schema.org/draft-03/schema")
DEFAULT_DRAFT = "draft2020-12"

# Subschema-valued keywords: (keyword, how its value holds subschemas). Walking by keyword means a property
# named "enum" or "default" is a property like any other, and data under `enum`/`const` is never a schema.
_ONE, _LIST, _MAP = "one", "list", "map"
_SUBSCHEMAS = {
    "additionalProperties": _ONE, "additionalItems": _ONE, "unevaluatedItems": _ONE, "unevaluatedProperties": _ONE,
    "contains": _ONE, "propertyNames": _ONE, "not": _ONE, "if": _ONE, "then": _ONE, "else": _ONE,
    "contentSchema": _ONE, "items": _ONE, "allOf": _LIST, "anyOf": _LIST, "oneOf": _LIST, "prefixItems": _LIST,
    "properties": _MAP, "patternProperties": _MAP, "$defs": _MAP, "definitions": _MAP, "dependentSchemas": _MAP,
    "dependencies": _MAP,
}


# --------------------------------------------------------------------------------------------------
# A loaded schema
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSchema:
    """A JSON Schema that passed every load-time check, with its grammar's copy and its validator."""

    name: str
    path: Path | None
    schema: Any  # the original (an object, or true)
    draft: str = DEFAULT_DRAFT
    grammar: dict[str, Any] = field(default_factory=dict)  # what the grammar is built from
    unenforced_at: tuple[tuple[str, str], ...] = ()  # (keyword, JSON path): validated, not enforced
    warnings: tuple[str, ...] = ()
    shortest: int | None = None  # characters of the shortest valid answer (an estimate)
    _validator: Any = field(default=None, compare=False, repr=False)
    _resolver: Any = field(default=None, compare=False, repr=False)

    @property
    def unenforced(self) -> list[str]:
        """The keywords the grammar does not enforce (each validated after decoding), sorted."""
        return sorted({keyword for keyword, _ in self.unenforced_at})

    @property
    def constraint(self) -> Constraint:
        return Constraint("json_schema", json.dumps(self.grammar, ensure_ascii=False, separators=(",", ":")))

    def check(self, data: Any) -> list[str]:
        """Every violation of `data` under the full schema, as "JSON path: message", sorted."""
        errors = sorted(self._validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
        return [f"{e.json_path}: {e.message}" for e in errors]

    def follow(self, node: Any, resolver: Any = None) -> tuple[Any, Any]:
        """(target, its resolver) of a `$ref` node, for reading field documentation; other nodes as they are."""
        resolver = resolver or self._resolver
        for _ in range(16):
            if not isinstance(node, dict) or not isinstance(node.get("$ref"), str) or resolver is None:
                break
            try:
                resolved = resolver.lookup(node["$ref"])
            except Exception:
                break
            node, resolver = resolved.contents, resolved.resolver
        return node, resolver


def load_schema(spec: str) -> LoadedSchema:
    """A schema from a file, a shipped name, inline JSON or a concise field list, fully checked."""
    name, path, schema = read_schema_spec(spec)
    return check_schema(schema, path or name, name=name, path=path)


def check_schema(schema: Any, source: str | Path = "<schema>", *, name: str = "schema",
                 path: Path | None = None) -> LoadedSchema:
    """Every load-time check on a schema object (raises SchemaError); returns it ready for use."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError("a JSON Schema must be a JSON object (or true)", path=source)
    draft, validator_class = _draft_of(schema, source)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise SchemaError(f"not a valid JSON Schema ({_draft_label(draft)}): {exc.message} at {exc.json_path}",
                          path=source) from None
    registry, resolver = _registry(schema, draft)
    _check_references(schema, resolver, draft, source)
    accepts = _local_acceptor(validator_class, draft)
    options = Options()
    for _ in range(len(_FALLBACKS) + 1):
        try:
            copy = grammar_copy(schema, draft, resolver, options, pattern_ok=_pattern_compiles, accepts=accepts)
        except Unresolvable as exc:
            raise SchemaError(f"{exc} (remote references are never fetched)", path=source) from None
        except Unsatisfiable as exc:
            raise SchemaError(str(exc), path=source, hint="no answer could ever be valid") from None
        constraint = Constraint("json_schema", json.dumps(copy.schema))
        try:
            compiled = check_constraint(constraint, str(source))
            break
        except SchemaError as exc:
            fallback = next((flag for words, flag in _FALLBACKS if words in exc.message
                             and not getattr(options, flag)), None)
            if fallback is not None:
                setattr(options, fallback, True)  # relax that part further, and say so in `unenforced`
                continue
            if "nsatisfiable" in exc.message:
                raise SchemaError(f"the schema accepts no value ({_after_colon(exc.message)})", path=source,
                                  hint="no answer could ever be valid") from None
            raise
    else:  # pragma: no cover - each fallback is tried once
        raise SchemaError("schema not supported for constrained decoding", path=source)
    validator = _validator_class(validator_class)(schema, registry=registry,
                                                   format_checker=format_checker(validator_class, draft))
    warnings = list(compiled) + copy.notes
    if missing_checkers(validator_class, draft):
        warnings.append("format checkers missing from this install (checked by pattern instead): "
                        + ", ".join(missing_checkers(validator_class, draft)))
    return LoadedSchema(
        name=name, path=path, schema=schema, draft=draft, grammar=copy.schema,
        unenforced_at=tuple(copy.unenforced), warnings=tuple(warnings), shortest=shortest_answer(copy.schema),
        _validator=validator, _resolver=resolver,
    )


# The grammar engine's (llguidance's) limits, by the words of its error, and the relaxation that avoids each.
_FALLBACKS = (
    ("min/maxProperties", "drop_property_counts"),
    ("multipleOf", "drop_fractional_multiples"),
    ("patternProperty regexes", "single_pattern_properties"),
    ("circular references with sibling keys", "ref_alone"),
    ("circular references with sibling keys", "anything"),
    ("intersection", "anything"),
)


def _after_colon(message: str) -> str:
    return message.split(": ", 1)[-1]


def _dialect_key(uri: str) -> str:
    return re.sub(r"^https?://", "", uri.strip()).rstrip("#")


def _draft_of(schema: Any, source: str | Path) -> tuple[str, type]:
    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    if dialect is None:
        return DEFAULT_DRAFT, jsonschema.Draft202012Validator
    if not isinstance(dialect, str):
        raise SchemaError("$schema must be a string", path=source)
    key = _dialect_key(dialect)
    if key in _DRAFTS:
        return _DRAFTS[key]
    if key in _OLD_DRAFTS:
        raise SchemaError(f"$schema {dialect!r}: drafts 3 and 4 are not supported", path=source,
                          hint="declare draft-07 or 2020-12 (https://json-schema.org/draft/2020-12/schema)")
    raise SchemaError(f"$schema {dialect!r} is not a JSON Schema draft this tool knows (draft-06, draft-07, "
                      "2019-09, 2020-12); a meta-schema is never fetched", path=source)


def _draft_label(draft: str) -> str:
    return draft.replace("draft", "draft ").replace("draft 6", "draft-06").replace("draft 7", "draft-07")


def _registry(schema: Any, draft: str) -> tuple[Any, Any]:
    """The document as a `referencing` registry beside the bundled meta-schemas (never a remote lookup)."""
    from jsonschema_specifications import REGISTRY as META_SCHEMAS
    from referencing import Resource
    from referencing.jsonschema import specification_with

    from .lowering import _DIALECTS

    resource = Resource.from_contents(schema, default_specification=specification_with(_DIALECTS[draft]))
    base = resource.id() or ""
    registry = META_SCHEMAS.with_resource(base, resource)
    return registry, registry.resolver(base_uri=base)


def _check_references(schema: Any, resolver: Any, draft: str, source: str | Path) -> None:
    """Every reference anywhere in the schema resolves inside the document (or the bundled meta-schemas)."""
    from referencing.exceptions import Unresolvable as Missing

    for where, node, scope in _subschemas(schema, resolver, draft):
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str):
                try:
                    scope.lookup(ref)
                except Missing:
                    raise SchemaError(f"{keyword} {ref!r} at {where} does not point inside the document "
                                      "(remote references are never fetched)", path=source) from None


def _subschemas(node: Any, resolver: Any, draft: str, where: str = "$") -> Iterator[tuple[str, dict, Any]]:
    """Every subschema object with its JSON path and resolver scope, walked keyword by keyword."""
    if not isinstance(node, dict):
        return
    if "$id" in node and not (draft in ("draft6", "draft7") and "$ref" in node):
        from referencing import Resource
        from referencing.jsonschema import specification_with

        from .lowering import _DIALECTS

        resource = Resource.from_contents(node, default_specification=specification_with(_DIALECTS[draft]))
        resolver = resolver.in_subresource(resource)
    yield where, node, resolver
    for key, value in node.items():
        kind = _SUBSCHEMAS.get(key)
        if kind == _ONE or (kind is not None and key == "items" and isinstance(value, dict)):
            yield from _subschemas(value, resolver, draft, f"{where}.{key}")
        elif kind == _LIST or (key == "items" and isinstance(value, list)):
            for index, item in enumerate(value if isinstance(value, list) else []):
                yield from _subschemas(item, resolver, draft, f"{where}.{key}[{index}]")
        elif kind == _MAP and isinstance(value, dict):
            for name, item in value.items():
                yield from _subschemas(item, resolver, draft, f"{where}.{key}[{name!r}]")


def _pattern_compiles(pattern: str) -> bool:
    """Whether the grammar engine compiles this regular expression (asked once per pattern)."""
    return _PATTERN_CACHE.setdefault(pattern, _compiles(pattern))


def _compiles(pattern: str) -> bool:
    try:
        check_constraint(Constraint("json_schema", json.dumps({"type": "string", "pattern": pattern})))
    except SchemaError:
        return False
    return True


_PATTERN_CACHE: dict[str, bool] = {}


def _local_acceptor(validator_class: type, draft: str):
    checker = format_checker(validator_class, draft)
    extended = _validator_class(validator_class)

    from referencing import Registry

    empty = Registry()  # a reference here fails to resolve (the caller keeps the value) instead of fetching

    def accepts(schema: dict, value: Any) -> bool:
        return extended(schema, registry=empty, format_checker=checker).is_valid(value)

    return accepts


# --------------------------------------------------------------------------------------------------
# Where schemas come from: files, shipped names, inline JSON, concise field lists
# --------------------------------------------------------------------------------------------------


def _shipped_schema_files() -> dict[str, Path]:
    """Shipped schema name -> file, from the packaged data or the source checkout (resources.data_dir)."""
    try:
        directory = data_dir("schemas")
    except FileNotFoundError:
        return {}  # a broken install: name lookups then fail with "shipped: none"
    return {file.stem: file for file in sorted(directory.glob("*.json"))}


def read_schema_spec(spec: str) -> tuple[str, Path | None, Any]:
    """(name, file or None, schema object) for a --schema value, parsed but not yet checked.

    In order: an existing file; a shipped schema's name (with or without `.json`); inline JSON (starting
    with `{`, or `true`); a concise field list (`'vendor, total float, date date?'`, see CONCISE_HELP).
    """
    path = Path(spec).expanduser()
    if spec and path.is_file():
        return path.stem, path, _read_json_file(path)
    shipped = _shipped_schema_files()
    name = spec[:-5] if spec.endswith(".json") else spec
    if name in shipped:
        return name, shipped[name], _read_json_file(shipped[name])
    text = spec.strip()
    if text.startswith("{") or text in ("true", "false"):
        return "inline", None, _parse_json(text, "--schema")
    if spec.endswith(".json") or "/" in spec or not text or not re.search(r"[,\s:]", text):
        names = ", ".join(sorted(shipped)) or "none"
        raise SchemaError(f"no such schema file or shipped schema (shipped: {names})", path=spec,
                          hint="a one-field concise schema needs its type too, e.g. 'total float'")
    return "concise", None, parse_concise(text)


def _read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError("schema file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise SchemaError(f"cannot read schema file: {exc.strerror or exc}", path=path) from None
    return _parse_json(text, path)


def _parse_json(text: str, source: str | Path) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                          path=source) from None
    except ValueError as exc:
        raise SchemaError(f"not valid JSON: {exc}", path=source) from None


CONCISE_HELP = (
    "A concise schema lists fields separated by commas (or by newlines, when descriptions hold commas), each "
    "`NAME [TYPE][?] [: description]`. "
    "TYPE: str (default), int, float, bool, date, datetime, time, email, uri; add [] for a list of them "
    "(`tags str[]`). Every field is required unless marked optional with ? (`due date?`). Example: "
    "'vendor, total float: grand total incl. tax, date date, items str[]'."
)
_CONCISE_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"}, "string": {"type": "string"}, "text": {"type": "string"},
    "int": {"type": "integer"}, "integer": {"type": "integer"},
    "float": {"type": "number"}, "number": {"type": "number"}, "num": {"type": "number"},
    "bool": {"type": "boolean"}, "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"}, "datetime": {"type": "string", "format": "date-time"},
    "date-time": {"type": "string", "format": "date-time"}, "time": {"type": "string", "format": "time"},
    "email": {"type": "string", "format": "email"}, "uri": {"type": "string", "format": "uri"},
    "url": {"type": "string", "format": "uri"},
}
_CONCISE_FIELD = re.compile(r"^(?P<name>[^\s:?\[\]]+)(?:\s+(?P<type>[A-Za-z-]+)(?P<list>(?:\[\])?))?"
                            r"\s*(?P<optional>\??)\s*(?::\s*(?P<description>.*))?$", re.DOTALL)


def parse_concise(text: str) -> dict[str, Any]:
    """A concise field list as a JSON Schema (2020-12): one object, additionalProperties false."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for raw in text.splitlines() if "\n" in text else text.split(","):  # newlines let descriptions hold commas
        item = raw.strip()
        if not item:
            continue
        match = _CONCISE_FIELD.match(item)
        kind = (match.group("type") or "str").lower() if match else None
        if match is None or kind not in _CONCISE_TYPES:
            problem = f"unknown type {kind!r}" if match else "cannot read it"
            raise SchemaError(f"concise schema: field {item!r}: {problem}", path="--schema",
                              hint="write NAME [TYPE][?] [: description], TYPE one of str, int, float, bool, "
                                   "date, datetime, time, email, uri (add [] for a list)")
        name = match.group("name")
        if name in properties:
            raise SchemaError(f"concise schema: field {name!r} is listed twice", path="--schema")
        node = dict(_CONCISE_TYPES[kind])
        if match.group("list"):
            node = {"type": "array", "items": node}
        if match.group("description"):
            node["description"] = match.group("description").strip()
        properties[name] = node
        if not match.group("optional"):
            required.append(name)
    if not properties:
        raise SchemaError("concise schema: no fields", path="--schema")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}


def list_schemas() -> list[tuple[str, str]]:
    """(name, "title: description") of each shipped schema, for `internvl schemas`."""
    rows = []
    for name, path in sorted(_shipped_schema_files().items()):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            rows.append((name, f"(unreadable: {exc})"))
            continue
        title, description = schema.get("title", ""), schema.get("description", "")
        rows.append((name, f"{title}: {description}" if title and description else title or description))
    return rows


def show_schema(spec: str) -> str:
    """The JSON text of a schema spec: a shipped or file schema as written, inline/concise ones as JSON."""
    name, path, schema = read_schema_spec(spec)
    if path is not None:
        return path.read_text(encoding="utf-8").rstrip() + "\n"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _as_fraction(value: int | float) -> Fraction:
    """The exact value of a number as JSON prints it (a float's shortest repr, not its binary expansion)."""
    return Fraction(value) if isinstance(value, int) else Fraction(Decimal(repr(value)))


def _exact_multiple_of(validator, divisor, instance, schema):
    """multipleOf as the specification defines it, in exact decimal arithmetic: -4.01 is a multiple of 0.01
    (jsonschema divides floats, where it is not)."""
    if not validator.is_type(instance, "number") or not validator.is_type(divisor, "number"):
        return
    try:
        quotient = _as_fraction(instance) / _as_fraction(divisor)
    except (ValueError, OverflowError, ZeroDivisionError):
        return  # an infinite divisor: every finite number divides to 0
    if quotient.denominator != 1:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


_EXTENDED: dict[type, type] = {}


def _validator_class(base: type) -> type:
    if base not in _EXTENDED:
        _EXTENDED[base] = jsonschema.validators.extend(base, {"multipleOf": _exact_multiple_of})
    return _EXTENDED[base]

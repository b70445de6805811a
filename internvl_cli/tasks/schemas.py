"""Step 4f, JSON Schemas for extract, engine-neutral: load and check, the grammar's copy, validation, voting."""
from __future__ import annotations

import copy
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from ..engine import Constraint, check_constraint
from ..errors import SchemaError
from ..resources import data_dir

# Keys whose values are data, not subschemas: never walked for `$ref`/`format`.
_DATA_KEYS = frozenset({"enum", "const", "default", "examples"})


# --------------------------------------------------------------------------------------------------
# Loading and checking schemas
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSchema:
    """A JSON Schema that passed every load-time check (metaschema, local refs, llguidance compile)."""

    name: str
    path: Path | None
    schema: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


def _shipped_schema_files() -> dict[str, Path]:
    """Shipped schema name -> file, from the packaged data or the source checkout (resources.data_dir)."""
    try:
        directory = data_dir("schemas")
    except FileNotFoundError:
        return {}  # a broken install: name lookups then fail with "shipped: none"
    return {file.stem: file for file in sorted(directory.glob("*.json"))}


def _resolve_spec(spec: str) -> tuple[str, Path]:
    """A spec is a path to a file, or the name of a shipped schema (with or without `.json`)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stem, path
    shipped = _shipped_schema_files()
    name = spec[:-5] if spec.endswith(".json") else spec
    if name in shipped:
        return name, shipped[name]
    names = ", ".join(sorted(shipped)) or "none"
    raise SchemaError(f"no such schema file or shipped schema (shipped: {names})", path=spec)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError("schema file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise SchemaError(f"cannot read schema file: {exc.strerror or exc}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path=path) from None


def _walk(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema object with its JSON path, skipping data-valued keywords like `enum`."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in _DATA_KEYS:
                yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{where}[{index}]")


def _check_refs(schema: dict[str, Any], source: str | Path) -> None:
    """Only document-local references: a remote `$ref` would mean fetching URLs, which we never do."""
    for where, node in _walk(schema):
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise SchemaError(
                    f"{key} {ref!r} at {where} is not local; only '#...' references are supported"
                    " (nothing was fetched)",
                    path=source,
                )


def _check_metaschema(schema: dict[str, Any], source: str | Path) -> None:
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise SchemaError(f"not a valid JSON Schema: {exc.message} at {exc.json_path}", path=source) from None


def check_schema(schema: Any, source: str | Path = "<schema>") -> tuple[str, ...]:
    """Every load-time check on a schema object; raises SchemaError, returns llguidance's warnings."""
    if not isinstance(schema, dict):
        raise SchemaError("a JSON Schema for extraction must be a JSON object", path=source)
    _check_metaschema(schema, source)
    _check_refs(schema, source)
    return check_constraint(Constraint("json_schema", json.dumps(grammar_schema(schema))), source)


def load_schema(spec: str) -> LoadedSchema:
    """Load a schema file or shipped schema by name and check it fully, before any model is loaded."""
    name, path = _resolve_spec(spec)
    schema = _read_json(path)
    warnings = check_schema(schema, path)
    return LoadedSchema(name=name, path=path, schema=schema, warnings=warnings)


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


# --------------------------------------------------------------------------------------------------
# What the grammar enforces
# --------------------------------------------------------------------------------------------------

# A strict calendar date (what jsonschema's `date` format checker accepts). llguidance's own `date`
# format allows 29 February in every year, which jsonschema then rejects, so we swap in this pattern.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
DATE_PATTERN = (
    rf"^(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)$"
)


# Unbounded JSON numbers may be written with any exponent ("1e400"), which Python reads as inf and no
# JSON writer can emit again. Bounding a number makes llguidance drop exponents altogether; no
# amount on a document comes near 10^15.
NUMBER_LIMIT = 1e15


def _is_number_schema(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "number" or (isinstance(kind, list) and "number" in kind)


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The copy of a schema the grammar is built from; validation always uses the original.

    Two tightenings keep every constrained output valid under jsonschema: `format: date` becomes
    DATE_PATTERN (llguidance's own date format allows 29 February in any year), and numbers get
    +-NUMBER_LIMIT where they have no bound of their own (so no exponent can overflow a float).
    """
    schema = copy.deepcopy(schema)
    for _, node in _walk(schema):
        if node.get("format") == "date" and "pattern" not in node:
            del node["format"]
            node["pattern"] = DATE_PATTERN
        if _is_number_schema(node):
            if "minimum" not in node and "exclusiveMinimum" not in node:
                node["minimum"] = -NUMBER_LIMIT
            if "maximum" not in node and "exclusiveMaximum" not in node:
                node["maximum"] = NUMBER_LIMIT
    return schema



# --------------------------------------------------------------------------------------------------
# Validation and voting
# --------------------------------------------------------------------------------------------------


def validate(data: Any, schema: dict[str, Any]) -> list[str]:
    """Every schema violation of `data` as "JSON path: message", formats (e.g. `date`) asserted."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{e.json_path}: {e.message}" for e in errors]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def parse_json_output(text: str, schema: dict[str, Any]) -> tuple[Any, list[str]]:
    """(data, []) for a decoded output that is JSON valid under the schema, else (None or data, errors).

    A decode cut off by max_new_tokens is not JSON, so it lands here as an error, never as valid data.
    """
    try:
        data = json.loads(text, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        # an error at the very end, or a string never closed, is what a max_new_tokens cut looks like
        cut_off = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (output cut off: raise max_new_tokens?)" if cut_off else ""
        return None, [f"$: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}{cut}"]
    except ValueError as exc:
        return None, [f"$: {exc}"]
    return data, validate(data, schema)


def _vote_key(value: Any) -> str:
    """Canonical form for comparing values: key order ignored, 2 == 2.0."""
    def canon(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: canon(x) for k, x in v.items()}
        if isinstance(v, list):
            return [canon(x) for x in v]
        return v
    return json.dumps(canon(value), sort_keys=True, ensure_ascii=False)


def _most_common(values: list[Any]) -> Any:
    """The most frequent value; among equally frequent ones, the one seen first."""
    counts = Counter(_vote_key(v) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[_vote_key(v)] == best)


def _vote(values: list[Any]) -> Any:
    if values and all(isinstance(v, dict) for v in values):
        return _vote_objects(values)
    return _most_common(values)


def _vote_objects(records: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for record in records for k in record))
    for key in keys:
        present = [r[key] for r in records if key in r]
        # absence is a vote too; a tie keeps whatever the first record did
        if len(present) * 2 < len(records) or (len(present) * 2 == len(records) and key not in records[0]):
            continue
        result[key] = _vote(present)
    return result


def majority_vote(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise majority over N extractions of one document (`--votes N`).

    Rule: for each key (in first-seen order) the records vote on presence (absence counts as a vote);
    if present, nested objects are voted key by key recursively, and any other value (arrays
    included) is voted as a whole, comparing values canonically (key order ignored, 2 == 2.0).
    Every tie goes to the first record's choice (first occurrence). The result may combine fields
    from different records, so validate it again against the schema before emitting it.
    """
    if not records:
        raise ValueError("majority_vote needs at least one record")
    return _vote(list(records))

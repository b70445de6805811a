"""Schema lowering, the grammar's copy of a JSON Schema: what a grammar engine can enforce, and what it leaves to validation.

`grammar_copy()` turns any schema of drafts 6, 7, 2019-09 or 2020-12 into one plain 2020-12 schema that
a JSON-Schema grammar engine (llguidance; vLLM's structured outputs) compiles, and lists what the copy
does not enforce. Two kinds of change, and only these:

- **Tightenings** keep every answer the grammar allows valid: numbers are bounded (+-1e15, so no
  exponent can overflow a float) with exclusive and big-integer bounds rounded inward to exact floats;
  positions that accept "anything" accept any JSON with bounded numbers; `format` becomes the format's
  pattern (schema/formats.py); references all point into one `$defs` table; keywords that are exactly
  expressible another way are rewritten (`oneOf` of disjoint types, `not` of a type, `unevaluated*`
  without applicators, integers written as 2.0).
- **Relaxations** drop what no grammar can hold: `uniqueItems`, `contains`, `not`, `if`/`then`/`else`,
  `dependentRequired`/`dependentSchemas`/`dependencies`, `propertyNames`, `unevaluated*` beside
  applicators, `oneOf` exclusivity, `$dynamicRef` resolved statically, regular expressions with features
  the engine reads differently from Python's `re` (look-around, backreferences, `\\b`, ...). Each is
  reported in `unenforced`; the answer is always validated against the full original schema.

Nothing here imports a decoding library: the caller compiles the copy (decoding/constraints.py).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from .formats import DRAFT_FORMATS, PATTERNS, grammar_pattern

NUMBER_LIMIT = 1e15  # no amount on a document comes near it; every integer below it is an exact float
INTEGER_LIMIT = 10**18  # integers are exact in Python: IDs and 16-digit numbers fit
ANY = "any"  # the $defs entry for "any JSON value, numbers bounded, nested at most ANY_DEPTH deep"
ANY_DEPTH = 4  # not recursive, so grammar engines can intersect it with other schemas
_ENUM_LIMIT = 1000  # a range of big integers with no exact float inside is listed value by value

# Keywords that only annotate (never change what validates): left out of the copy.
_ASSERTIONS = frozenset({
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "format", "items", "prefixItems", "additionalItems", "unevaluatedItems",
    "contains", "maxContains", "minContains", "maxItems", "minItems", "uniqueItems", "properties",
    "patternProperties", "additionalProperties", "unevaluatedProperties", "propertyNames", "maxProperties",
    "minProperties", "required", "dependentRequired", "dependentSchemas", "dependencies", "allOf", "anyOf",
    "oneOf", "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef",
})
_APPLICATORS = ("allOf", "anyOf", "oneOf", "not", "if", "$ref", "$dynamicRef", "$recursiveRef", "dependentSchemas",
                "dependencies")
_ALL_TYPES = ("null", "boolean", "object", "array", "number", "string")



def _any_defs() -> dict[str, Any]:
    """ANY and its levels: every JSON value, numbers bounded, arrays and objects holding the level below."""
    levels: dict[str, Any] = {f"{ANY}0": {"type": list(_ALL_TYPES), "minimum": -NUMBER_LIMIT,
                                          "maximum": NUMBER_LIMIT, "items": False, "additionalProperties": False}}
    for depth in range(1, ANY_DEPTH + 1):
        below = {"$ref": f"#/$defs/{ANY}{depth - 1}"}
        name = ANY if depth == ANY_DEPTH else f"{ANY}{depth}"
        levels[name] = {"type": list(_ALL_TYPES), "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT,
                        "items": below, "additionalProperties": below}
    return levels


class Unresolvable(Exception):
    """A reference that points outside the document (nothing is ever fetched)."""


class Unsatisfiable(Exception):
    """The schema accepts no value at all."""


@dataclass
class GrammarCopy:
    """The schema a grammar is built from, and the original's keywords it does not enforce (with where)."""

    schema: dict[str, Any]
    unenforced: list[tuple[str, str]] = field(default_factory=list)  # (keyword, JSON path)
    notes: list[str] = field(default_factory=list)

    @property
    def keywords(self) -> list[str]:
        return sorted({keyword for keyword, _ in self.unenforced})


@dataclass
class Options:
    """Fallbacks the caller turns on when the grammar engine still refuses a copy."""

    drop_property_counts: bool = False  # llguidance: min/maxProperties only when every listed property is required
    drop_fractional_multiples: bool = False  # llguidance: a multipleOf with many digits
    single_pattern_properties: bool = False  # llguidance: patternProperties must be disjoint
    ref_alone: bool = False  # llguidance: a recursive $ref intersected with sibling keywords
    anything: bool = False  # the last resort: the grammar allows any JSON value, validation does the rest
    bad_patterns: set[str] = field(default_factory=set)  # patterns the engine refused to compile


def grammar_copy(schema: Any, draft: str, resolver: Any, options: Options | None = None,
                 pattern_ok: Callable[[str], bool] | None = None,
                 accepts: Callable[[dict, Any], bool] | None = None) -> GrammarCopy:
    """The grammar's copy of `schema` (its `$schema` draft given as `draft`), with what it leaves unenforced.

    `resolver` is a `referencing` resolver for the document (local references only); `pattern_ok`, when
    given, asks the grammar engine whether it compiles a regular expression; `accepts(schema, value)`,
    when given, validates a value against a reference-free subschema (so `enum`/`const` keep only the
    values the other keywords allow). Raises Unresolvable or Unsatisfiable.
    """
    return _Relaxer(schema, draft, resolver, options or Options(), pattern_ok, accepts).run()


# --------------------------------------------------------------------------------------------------
# regular expressions: which ones a grammar engine reads as Python's `re` (the validator) does
# --------------------------------------------------------------------------------------------------

_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")


def unsupported_regex(pattern: str) -> str | None:
    """Why `pattern` cannot go into the grammar (None when it can).

    The grammar engine's regex dialect (Rust-like) and Python's `re` (which validates) agree on classes,
    groups, alternation and repeats; they differ or fail on look-around, backreferences, word boundaries,
    possessive and atomic forms, POSIX or nested classes and class set operations, negated shorthands
    (`\\D`, `\\W`, `\\S` are ASCII-only in the engine, Unicode in Python) and unusual escapes.
    """
    i, n, in_class = 0, len(pattern), False
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                return "a trailing backslash"
            nxt = pattern[i + 1]
            if nxt.isdigit():
                return "a backreference or octal escape"
            if nxt in "bBkAZzGcNpPDWS":
                return {"b": "a word boundary", "B": "a word boundary", "k": "a named backreference"}.get(
                    nxt, f"the escape \\{nxt}")
            if nxt == "x":
                if not re.match(r"[0-9A-Fa-f]{2}", pattern[i + 2:i + 4]):
                    return "a malformed \\x escape"
                i += 4
                continue
            if nxt == "u":
                if not re.match(r"[0-9A-Fa-f]{4}", pattern[i + 2:i + 6]):
                    return "a malformed \\u escape"
                i += 6
                continue
            if nxt.isalpha() and nxt not in "dwsntrfv":
                return f"the escape \\{nxt}"
            i += 2
            continue
        if in_class:
            if char == "[":
                return "a nested or POSIX character class"
            if pattern.startswith(("&&", "--", "~~"), i):
                return "a character class set operation"
            if char == "]":
                in_class = False
            i += 1
            continue
        if char == "[":
            in_class = True
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1  # a leading ']' is a literal in Python
            continue
        if char == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:]
            if rest.startswith(":") or rest.startswith("P<"):
                i += 3
                continue
            flags = re.match(r"([a-zA-Z]*)(-[a-zA-Z]*)?([:)])", rest)
            if flags and set(flags.group(1) + (flags.group(2) or "")[1:]) <= set("ims"):
                i += 2 + flags.end()
                continue
            return "look-around, an atomic group or an inline flag"
        if char == "{":
            if not _QUANTIFIER.match(pattern, i) or i == 0 or pattern[i - 1] in "(|":
                return "a literal '{' (write \\{)"
            end = pattern.index("}", i)
            i = end + 1
            if i < n and pattern[i] == "+":
                return "a possessive quantifier"
            continue
        if char in "*+?" and i + 1 < n and pattern[i + 1] == "+":
            return "a possessive quantifier"
        i += 1
    if in_class:
        return "an unclosed character class"
    return None


def _normalise_regex(pattern: str) -> str:
    r"""Escapes Python reads as literals but the engine reads as word anchors (\< \>) become plain characters."""
    return re.sub(r"\\([<>])", r"\1", pattern)


# --------------------------------------------------------------------------------------------------
# numbers: inward-rounded exact bounds
# --------------------------------------------------------------------------------------------------


def _float_at_least(value: int | float) -> float:
    """The smallest float >= value (values come from JSON: ints are exact, floats are what jsonschema compares)."""
    try:
        result = float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    if result < value:
        result = math.nextafter(result, math.inf)
    return result


def _float_at_most(value: int | float) -> float:
    return -_float_at_least(-value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integral(value: Any) -> Any:
    """2.0 -> 2 (JSON Schema counts 2.0 as an integer; grammar engines may not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _types(node: dict[str, Any]) -> set[str] | None:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return set(kind)
    return None


def _allows(types: set[str] | None, *kinds: str) -> bool:
    return types is None or any(kind in types for kind in kinds)


def is_trivially_true(node: Any) -> bool:
    """True for `true` and schemas that only annotate ({} or only title/description/...)."""
    return node is True or (isinstance(node, dict) and not (set(node) & _ASSERTIONS))


def is_trivially_false(node: Any) -> bool:
    return node is False or (isinstance(node, dict) and "not" in node and is_trivially_true(node["not"]))


# --------------------------------------------------------------------------------------------------
# the transformation
# --------------------------------------------------------------------------------------------------


class _Relaxer:
    def __init__(self, schema: Any, draft: str, resolver: Any, options: Options,
                 pattern_ok: Callable[[str], bool] | None, accepts: Callable[[dict, Any], bool] | None):
        self.root = schema
        self.accepts = accepts
        self.draft = draft
        self.legacy = draft in ("draft6", "draft7")  # $ref replaces its siblings; items may be an array
        self.resolver = resolver
        self.options = options
        self.pattern_ok = pattern_ok
        self.formats = DRAFT_FORMATS.get(draft, frozenset())
        self.defs: dict[str, Any] = {}
        self.names: dict[tuple[int, str], str] = {}
        self.keep_alive: list[Any] = []
        self.refs = Counter()
        self.copy = GrammarCopy(schema={})
        self.dynamic_anchors = Counter(_dynamic_anchors(schema))
        self.any_used = False

    def run(self) -> GrammarCopy:
        if is_trivially_false(self.root):
            raise Unsatisfiable("the schema is false: it accepts no value")
        if self.options.anything:
            for keyword in sorted(_used_keywords(self.root) & _ASSERTIONS) or ["$ref"]:
                self.unenforced(keyword, "$")
            self.copy.schema = {"$defs": _any_defs(), "$ref": f"#/$defs/{ANY}"}
            return self.copy
        root = self.target(self.root, self.resolver, "$")
        if root is False:
            raise Unsatisfiable("the schema accepts no value")
        body = self.defs.pop(root) if self.refs[root] == 0 else {"$ref": f"#/$defs/{root}"}
        if body is True:
            body = self.any()
        if not isinstance(body, dict):
            raise Unsatisfiable("the schema accepts no value")
        if self.any_used:
            self.defs.update(_any_defs())
        copy = dict(body)
        if self.defs:
            copy = {"$defs": self.defs, **({"allOf": [body]} if "$defs" in body else body)}
        self.copy.schema = copy
        return self.copy

    # ---------------------------------------------------------------- references

    def any(self) -> dict[str, Any]:
        self.any_used = True
        return {"$ref": f"#/$defs/{ANY}"}

    def target(self, contents: Any, resolver: Any, path: str) -> str:
        """The $defs name of a referenced (or the root) schema, relaxed once however often it is used."""
        key = (id(contents), str(getattr(resolver, "_base_uri", "")))
        if key not in self.names:
            name = f"d{len(self.names)}"
            self.names[key] = name
            self.keep_alive.append(contents)
            self.defs[name] = True  # placeholder: recursion refers to the name before the body exists
            self.defs[name] = self.node(contents, resolver, path)
        return self.names[key]

    def ref(self, ref: str, resolver: Any, path: str, keyword: str = "$ref") -> dict[str, Any] | bool:
        from referencing.exceptions import Unresolvable as _Missing

        try:
            resolved = resolver.lookup(ref)
        except _Missing:
            raise Unresolvable(f"{keyword} {ref!r} at {path} does not point inside the document") from None
        name = self.target(resolved.contents, resolved.resolver, f"{path}.{keyword}")
        if self.defs.get(name) is False:
            return False
        self.refs[name] += 1
        return {"$ref": f"#/$defs/{name}"}

    def unenforced(self, keyword: str, path: str) -> None:
        self.copy.unenforced.append((keyword, path))

    # ---------------------------------------------------------------- one subschema

    def node(self, node: Any, resolver: Any, path: str) -> Any:
        if node is True:
            return self.any()
        if node is False or not isinstance(node, dict):
            return False
        resolver = self._enter(node, resolver)
        if self.legacy and "$ref" in node:
            return self.ref(node["$ref"], resolver, path)  # drafts 6/7 ignore $ref's siblings
        node = {key: value for key, value in node.items() if self.known(key)}
        if is_trivially_false(node):
            return False
        parts: list[Any] = []
        out: dict[str, Any] = {}
        self._applicators(node, parts, resolver, path)
        if "$ref" in node:
            parts.insert(0, self.ref(node["$ref"], resolver, path))
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                parts.insert(0, self._dynamic(node, keyword, resolver, path))
        parts = [part for part in map(ANY_REF_OR, parts) if part != _ANY_REF]
        # A node combined with other schemas leaves the "anything goes" defaults to them (they carry their own);
        # engines also refuse a recursive reference intersected with sibling keywords.
        defaults = not parts
        if "enum" in node or "const" in node:
            values = [node["const"]] if "const" in node else list(node["enum"])
            if "const" in node and "enum" in node:
                values = [v for v in values if any(_same(v, e) for e in node["enum"])]
            local = {k: v for k, v in node.items() if k in _ASSERTIONS and k not in _APPLICATORS + ("enum", "const")}
            values = [value for value in values if self.value_ok(local, value)]
            if not values:
                return False
            out["enum"] = values  # the other keywords were applied to the values here
        else:
            types = self._not(node, _types(node), path)
            if types is not None:
                if "number" in types:
                    types.discard("integer")
                if not types:
                    return False
                out["type"] = sorted(types) if len(types) > 1 else next(iter(types))
            if _allows(types, "number", "integer") and not self._numbers(node, types, out, path, defaults):
                types = (types or set(_ALL_TYPES)) - {"number", "integer"}
                if not types:
                    return False
                out["type"] = sorted(types) if len(types) > 1 else next(iter(types))
            if _allows(types, "string"):
                self._strings(node, out, parts, path)
            if _allows(types, "array"):
                self._arrays(node, out, resolver, path, defaults)
            if _allows(types, "object"):
                self._objects(node, out, resolver, path, defaults)
        if "not" in node and ("enum" in node or "const" in node):
            self.unenforced("not", path)
        if self.options.ref_alone and out and any(isinstance(p, dict) and "$ref" in p for p in parts):
            for keyword in sorted(set(node) & _ASSERTIONS - set(_APPLICATORS)):
                self.unenforced(keyword, path)  # kept only the reference: its siblings are validated
            out = {}
        combined = _combine(parts, out)
        return self.any() if combined == {} else combined  # {} would let an engine write unbounded numbers

    def known(self, keyword: str) -> bool:
        """Whether the schema's draft defines the keyword (others are ignored by its validator, so by us too)."""
        return keyword not in _NOT_IN_DRAFT.get(self.draft, ())

    def value_ok(self, local: dict[str, Any], value: Any) -> bool:
        if not local or self.accepts is None:
            return True
        try:
            return self.accepts(local, value)
        except Exception:  # a keyword that needs the document (e.g. a nested $ref): let validation decide
            return True

    def _enter(self, node: dict[str, Any], resolver: Any) -> Any:
        """A subschema with its own `$id` is a new base for the references inside it."""
        if "$id" not in node or (self.legacy and "$ref" in node):
            return resolver
        from referencing import Resource
        from referencing.jsonschema import specification_with

        spec = specification_with(_DIALECTS.get(self.draft, ""), default=None)
        resource = Resource.from_contents(node, default_specification=spec) if spec else None
        return resolver.in_subresource(resource) if resource is not None else resolver

    def _dynamic(self, node: dict[str, Any], keyword: str, resolver: Any, path: str) -> Any:
        ref = node[keyword] if keyword == "$dynamicRef" else "#"
        anchor = ref.split("#", 1)[1] if "#" in ref else ""
        # A dynamic reference differs from a static one only when its anchor is defined more than once.
        if keyword == "$recursiveRef" or self.dynamic_anchors[anchor] > 1:
            self.unenforced(keyword, path)
        return self.ref(ref, resolver, path, keyword)

    # ---------------------------------------------------------------- by type

    def _not(self, node: dict[str, Any], types: set[str] | None, path: str) -> set[str] | None:
        """`not` of a bare type is exact (those types are removed); any other `not` is left to validation."""
        if "not" not in node or is_trivially_false(node["not"]):
            return types
        negated = node["not"]
        if isinstance(negated, dict) and set(negated) & _ASSERTIONS == {"type"}:
            excluded = _types(negated) or set()
            if "number" in excluded:
                excluded.add("integer")
            current = set(_ALL_TYPES) | {"integer"} if types is None else set(types)
            if "number" in current:
                current.add("integer")
            if not ("integer" in excluded and "number" not in excluded and "number" in current):
                return current - excluded
        self.unenforced("not", path)
        return types

    def _numbers(self, node: dict[str, Any], types: set[str] | None, out: dict[str, Any], path: str,
                 defaults: bool = True) -> bool:
        """Bounds every number the node allows; False when no number can satisfy them."""
        integer_only = types is not None and "integer" in types and "number" not in types
        lows = [(node.get("minimum"), False), (node.get("exclusiveMinimum"), True)]
        highs = [(node.get("maximum"), False), (node.get("exclusiveMaximum"), True)]
        divisor = node.get("multipleOf")
        if _is_number(divisor):
            if self.options.drop_fractional_multiples and not float(divisor).is_integer():
                self.unenforced("multipleOf", path)
                divisor = None
            else:
                out["multipleOf"] = _integral(divisor)
        if not defaults and not any(_is_number(v) for v, _ in lows + highs):
            return True  # the schemas it is combined with bound the numbers
        if integer_only:
            return self._integer_bounds(lows, highs, out)
        low = max([_float_at_least(v) if not strict else _above(v) for v, strict in lows if _is_number(v)],
                  default=None)
        high = min([_float_at_most(v) if not strict else _below(v) for v, strict in highs if _is_number(v)],
                   default=None)
        if low is not None and high is not None and low > high:
            return False
        limit = NUMBER_LIMIT
        if _is_number(divisor) and divisor < 1:
            limit = min(limit, divisor * 2**50)  # so a float's rounding never moves a value off the multiple
        lo = max(low, -limit) if low is not None else -limit
        hi = min(high, limit) if high is not None else limit
        if lo > hi:  # a range beyond the limit: engines build no float range that wide, so integers there
            lo = low if low is not None else high - abs(high)
            hi = high if high is not None else low + abs(low)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                return False
            if types is None or "number" in (types or ()):
                kinds = (set(types) if types else set(_ALL_TYPES)) - {"number"} | {"integer"}
                out["type"] = sorted(kinds) if len(kinds) > 1 else "integer"
            return self._integer_bounds([(lo, False)], [(hi, False)], out)
        out["minimum"], out["maximum"] = _integral(_short(lo, up=True, limit=hi)), _integral(_short(hi, up=False,
                                                                                              limit=lo))
        return True

    def _integer_bounds(self, lows: list, highs: list, out: dict[str, Any]) -> bool:
        low = max([math.floor(Fraction(v)) + 1 if strict else math.ceil(Fraction(v))
                   for v, strict in lows if _is_number(v)], default=-INTEGER_LIMIT)
        high = min([math.ceil(Fraction(v)) - 1 if strict else math.floor(Fraction(v))
                    for v, strict in highs if _is_number(v)], default=INTEGER_LIMIT)
        no_low = not any(_is_number(v) for v, _ in lows)
        no_high = not any(_is_number(v) for v, _ in highs)
        if no_high and low > high:
            high = low + abs(low)  # only a lower bound, above the default limit
        if no_low and low > high:
            low = high - abs(high)
        if low > high:
            return False
        lo, hi = _float_at_least(low), _float_at_most(high)  # engines read bounds as doubles
        if lo > hi:
            if high - low >= _ENUM_LIMIT:
                return False
            out["enum"] = list(range(low, high + 1))
            return True
        out["minimum"], out["maximum"] = int(lo), int(hi)
        return True

    def _strings(self, node: dict[str, Any], out: dict[str, Any], parts: list[Any], path: str) -> None:
        for keyword in ("minLength", "maxLength"):
            if _is_number(node.get(keyword)):
                out[keyword] = int(node[keyword])
        patterns = []
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            if self._pattern_supported(pattern):
                patterns.append(_normalise_regex(pattern))
            else:
                self.unenforced("pattern", path)
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in self.formats:
            patterns.append(grammar_pattern(fmt))
        elif isinstance(fmt, str) and fmt not in PATTERNS:
            self.copy.notes.append(f"format '{fmt}' at {path} is unknown: neither enforced nor checked")
        if patterns:
            out["pattern"] = patterns[0]
            parts.extend({"pattern": extra} for extra in patterns[1:])

    def _pattern_supported(self, pattern: str) -> bool:
        if unsupported_regex(pattern) is not None or pattern in self.options.bad_patterns:
            return False
        return self.pattern_ok is None or self.pattern_ok(_normalise_regex(pattern))

    def _arrays(self, node: dict[str, Any], out: dict[str, Any], resolver: Any, path: str,
                defaults: bool = True) -> None:
        items = node.get("items")
        if self.draft != "draft2020-12" and isinstance(items, list):
            prefix, rest, rest_key = items, node.get("additionalItems", True), "additionalItems"
        elif self.draft == "draft2020-12":
            prefix, rest, rest_key = node.get("prefixItems") or [], node.get("items", True), "items"
        else:
            prefix, rest, rest_key = [], node.get("items", True), "items"
        evaluated_all = rest_key in node and not (rest_key == "additionalItems" and not prefix)
        unevaluated = node.get("unevaluatedItems")
        if unevaluated is not None and not is_trivially_true(unevaluated):
            if evaluated_all:
                pass  # every item is already evaluated: unevaluatedItems has nothing left to say
            elif not any(k in node for k in _APPLICATORS + ("contains",)):
                rest = unevaluated  # no applicator evaluates items: it is exactly `items`
            else:
                self.unenforced("unevaluatedItems", path)
        if prefix:
            out["prefixItems"] = [self.node(item, resolver, f"{path}.prefixItems[{i}]")
                                  for i, item in enumerate(prefix)]
        if defaults or not is_trivially_true(rest):
            out["items"] = self.node(rest, resolver, f"{path}.{rest_key}")
        for keyword in ("minItems", "maxItems"):
            if _is_number(node.get(keyword)):
                out[keyword] = int(node[keyword])
        if node.get("uniqueItems") is True:
            self.unenforced("uniqueItems", path)
        if "contains" in node:
            at_least = node.get("minContains", 1)
            if _is_number(at_least) and at_least > 0:
                self.unenforced("contains", path)
                if out.get("maxItems", math.inf) >= at_least:  # necessary, not sufficient
                    out["minItems"] = max(out.get("minItems", 0), int(at_least))
            elif _is_number(node.get("maxContains")):
                self.unenforced("maxContains", path)

    def _objects(self, node: dict[str, Any], out: dict[str, Any], resolver: Any, path: str,
                 defaults: bool = True) -> None:
        properties = node.get("properties") or {}
        if properties:
            out["properties"] = {name: self.node(sub, resolver, f"{path}.properties[{name!r}]")
                                 for name, sub in properties.items()}
        pattern_properties = {}
        for regex, sub in (node.get("patternProperties") or {}).items():
            if self._pattern_supported(regex):
                pattern_properties[_normalise_regex(regex)] = self.node(sub, resolver, f"{path}.patternProperties")
            else:
                self.unenforced("patternProperties", path)
        if len(pattern_properties) > 1 and self.options.single_pattern_properties:
            self.unenforced("patternProperties", path)
            pattern_properties = {}
        if pattern_properties:
            out["patternProperties"] = pattern_properties
        additional = node.get("additionalProperties", True)
        unevaluated = node.get("unevaluatedProperties")
        if unevaluated is not None and not is_trivially_true(unevaluated):
            if "additionalProperties" in node:
                pass  # every property is already evaluated
            elif not any(k in node for k in _APPLICATORS):
                additional = unevaluated  # no applicator evaluates properties: it is additionalProperties
            else:
                self.unenforced("unevaluatedProperties", path)
        if defaults or not is_trivially_true(additional) or properties or pattern_properties:
            out["additionalProperties"] = self.node(additional, resolver, f"{path}.additionalProperties")
        required = [name for name in dict.fromkeys(node.get("required") or []) if isinstance(name, str)]
        if required:
            out["required"] = required
        counts = {k: int(node[k]) for k in ("minProperties", "maxProperties") if _is_number(node.get(k))}
        if counts.get("minProperties") == 0:
            counts.pop("minProperties")
        if counts:
            listed_optional = set(properties) - set(required)
            if self.options.drop_property_counts or listed_optional:
                for keyword in counts:
                    self.unenforced(keyword, path)
            else:
                out.update(counts)
        names = node.get("propertyNames")
        if names is not None and not is_trivially_true(names):
            if is_trivially_false(names):
                out["maxProperties"] = 0
            else:
                self.unenforced("propertyNames", path)
        for keyword in ("dependentRequired", "dependentSchemas", "dependencies"):
            if node.get(keyword):
                self.unenforced(keyword, path)

    def _applicators(self, node: dict[str, Any], parts: list[Any], resolver: Any, path: str) -> None:
        for keyword in ("allOf", "anyOf", "oneOf"):
            branches = node.get(keyword)
            if not isinstance(branches, list) or not branches:
                continue
            relaxed = [self.node(sub, resolver, f"{path}.{keyword}[{i}]") for i, sub in enumerate(branches)]
            if keyword == "allOf":
                parts.extend(relaxed)
                continue
            if keyword == "oneOf" and len(branches) > 1 and not _disjoint(branches):
                self.unenforced("oneOf", path)
            options = [branch for branch in relaxed if branch is not False]
            parts.append({"anyOf": options} if options else False)
        if "if" in node:
            condition = node["if"]
            if is_trivially_true(condition) and "then" in node:
                parts.append(self.node(node["then"], resolver, f"{path}.then"))
            elif is_trivially_false(condition) and "else" in node:
                parts.append(self.node(node["else"], resolver, f"{path}.else"))
            elif ("then" in node and not is_trivially_true(node["then"])) or (
                    "else" in node and not is_trivially_true(node["else"])):
                self.unenforced("if", path)


# Keywords a draft does not define: its validator ignores them, and so does the grammar's copy.
_NOT_IN_DRAFT = {
    "draft6": frozenset({"if", "then", "else", "prefixItems", "dependentRequired", "dependentSchemas",
                         "unevaluatedItems", "unevaluatedProperties", "minContains", "maxContains", "$dynamicRef",
                         "$recursiveRef"}),
    "draft7": frozenset({"prefixItems", "dependentRequired", "dependentSchemas", "unevaluatedItems",
                         "unevaluatedProperties", "minContains", "maxContains", "$dynamicRef", "$recursiveRef"}),
    "draft2019-09": frozenset({"prefixItems", "dependencies", "$dynamicRef"}),
    "draft2020-12": frozenset({"additionalItems", "dependencies", "$recursiveRef"}),
}

_DIALECTS = {
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}


def _short(bound: float, up: bool, limit: float) -> float:
    """A bound with at most 9 decimals, moved inward (engines spell bounds out digit by digit: 5e-324 is 324)."""
    exact = Decimal(bound)
    if exact == exact.quantize(_NANO, rounding=ROUND_FLOOR):
        return bound
    rounded = exact.quantize(_NANO, rounding=ROUND_CEILING if up else ROUND_FLOOR)
    result = _float_at_least(Fraction(rounded)) if up else _float_at_most(Fraction(rounded))
    return result if (result <= limit if up else result >= limit) else bound


_NANO = Decimal("1e-9")


def _above(value: int | float) -> float:
    result = _float_at_least(value)
    return math.nextafter(result, math.inf) if result == value else result


def _below(value: int | float) -> float:
    return -_above(-value)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0 but True != 1."""
    return _json_type(a) == _json_type(b) and a == b if not isinstance(a, (dict, list)) else _dump(a) == _dump(b)


_ANY_REF = {"$ref": f"#/$defs/{ANY}"}
ANY_SCHEMA = _any_defs()[ANY]


def ANY_REF_OR(part: Any) -> Any:  # noqa: N802 - reads as a constant
    """An `anyOf` with an "any value" branch is "any value" itself."""
    if isinstance(part, dict) and set(part) == {"anyOf"} and _ANY_REF in part["anyOf"]:
        return _ANY_REF
    return part


def _combine(parts: list[Any], out: dict[str, Any]) -> Any:
    if any(part is False for part in parts):
        return False
    if not parts:
        return out
    if not out:
        return parts[0] if len(parts) == 1 else {"allOf": parts}
    return {"allOf": parts + [out]}


def _type_set(branch: Any) -> set[str] | None:
    if not isinstance(branch, dict):
        return None
    types = _types(branch)
    if types is None and "const" in branch:
        types = {_json_type(branch["const"])}
    if types is None and isinstance(branch.get("enum"), list):
        types = {_json_type(v) for v in branch["enum"]}
    if types and "number" in types:
        types = types | {"integer"}
    return types


def _disjoint(branches: list[Any]) -> bool:
    """oneOf branches that no value can match twice (pairwise different types): oneOf is then anyOf."""
    sets = [_type_set(branch) for branch in branches]
    if any(s is None for s in sets):
        return False
    seen: set[str] = set()
    for kinds in sets:
        if seen & kinds:
            return False
        seen |= kinds
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _used_keywords(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        found.update(node)
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                found |= _used_keywords(value)
    elif isinstance(node, list):
        for item in node:
            found |= _used_keywords(item)
    return found


def _dynamic_anchors(node: Any) -> list[str]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("$dynamicAnchor"), str):
            found.append(node["$dynamicAnchor"])
        if node.get("$recursiveAnchor") is True:
            found.append("")
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                found.extend(_dynamic_anchors(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dynamic_anchors(item))
    return found


# --------------------------------------------------------------------------------------------------
# the shortest answer, for sizing the token budget
# --------------------------------------------------------------------------------------------------

_FORMAT_LENGTHS = {"date": 10, "time": 9, "date-time": 20, "duration": 3, "email": 5, "idn-email": 5,
                   "hostname": 1, "idn-hostname": 1, "ipv4": 7, "ipv6": 2, "uuid": 36, "uri": 8, "iri": 8,
                   "uri-reference": 1, "iri-reference": 1}


def shortest_answer(copy: dict[str, Any]) -> int | None:
    """Characters of the shortest JSON the grammar copy allows, estimated (None: no finite answer found)."""
    defs = copy.get("$defs", {})
    busy: set[str] = set()
    memo: dict[str, int | None] = {}

    def length(node: Any, depth: int = 0) -> int | None:
        if node is True:
            return 1
        if node is False or not isinstance(node, dict) or depth > 64:
            return None
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in memo:
                return memo[name]
            if name in busy:
                return None
            busy.add(name)
            memo[name] = result = length(defs.get(name, True), depth + 1)
            busy.discard(name)
            return result
        if "allOf" in node:
            lengths = [length(part, depth + 1) for part in node["allOf"]]
            return None if None in lengths else max(lengths)
        if "anyOf" in node:
            return _least(length(part, depth + 1) for part in node["anyOf"])
        if "const" in node:
            return len(_dump(node["const"]))
        if isinstance(node.get("enum"), list):
            return _least(len(_dump(value)) for value in node["enum"])
        types = _types(node) or set(_ALL_TYPES)
        return _least(typed(node, kind, depth) for kind in types)

    def typed(node: dict[str, Any], kind: str, depth: int) -> int | None:
        if kind in ("null", "boolean"):
            return 4
        if kind in ("number", "integer"):
            low = node.get("minimum", 0)
            return max(1, len(str(_integral(low)))) if isinstance(low, (int, float)) and low > 0 else 1
        if kind == "string":
            fmt = next((f for f, p in PATTERNS.items() if node.get("pattern") == grammar_pattern(f)), None)
            return 2 + max(node.get("minLength", 0), _FORMAT_LENGTHS.get(fmt, 0))
        if kind == "array":
            total, count = 2, node.get("minItems", 0)
            prefix = node.get("prefixItems") or []
            for i in range(count):
                item = length(prefix[i] if i < len(prefix) else node.get("items", True), depth + 1)
                if item is None:
                    return None
                total += item + 1
            return total
        if kind == "object":
            properties = node.get("properties") or {}
            total = 2
            required = node.get("required") or []
            for name in required:
                value = length(properties.get(name, node.get("additionalProperties", True)), depth + 1)
                if value is None:
                    return None
                total += len(_dump(name)) + 2 + value
            extra = node.get("minProperties", 0) - len(required)
            if extra > 0:
                value = length(node.get("additionalProperties", True), depth + 1)
                if value is None:
                    return None
                total += extra * (5 + value)
            return total
        return None

    return length(copy)


def _least(values) -> int | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _dump(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

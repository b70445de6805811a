"""Decoding control, constraints: what an answer must match (a JSON Schema or a Lark grammar), compiled and checked
by llguidance without a tokenizer (imported only when something is compiled)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import SchemaError


@dataclass(frozen=True)
class Constraint:
    """A decoding constraint, engine-neutral: a JSON Schema (as canonical JSON text) or a grammar's text."""

    kind: Literal["json_schema", "grammar"]
    spec: str


# llguidance compile options: compact JSON (no free whitespace) saves tokens and leaves the model no room to ramble.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def json_grammar(schema: dict[str, Any], *, source: str | Path = "<schema>") -> str:
    """The llguidance grammar (compact JSON) for a schema as given; SchemaError if llguidance rejects it."""
    from llguidance import LLMatcher

    try:
        return LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    except ValueError as exc:
        raise SchemaError(f"cannot build a grammar: {exc}", path=source) from None


def _compile_check(grammar: str, source: str | Path) -> tuple[str, ...]:
    """Compile the grammar without a tokenizer so unsupported keywords fail at load time, not mid-run."""
    from llguidance import LLMatcher

    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        cause = " ".join(" ".join(messages).split())
        unsupported = any(word in cause for word in ("Unimplemented", "Unknown format", "not supported"))
        raise SchemaError(
            f"schema not supported for constrained decoding: {cause}", path=source,
            hint="remove or rewrite the unsupported keyword" if unsupported else None,
        )
    return tuple(" ".join(m.split()) for m in messages)



def constraint_grammar(constraint: Constraint, source: str | Path = "<schema>") -> str:
    """The llguidance grammar of a constraint: its JSON Schema compiled, or its Lark text as is."""
    import json

    from llguidance import LLMatcher

    if constraint.kind == "json_schema":
        return json_grammar(json.loads(constraint.spec), source=source)
    return LLMatcher.grammar_from_lark(constraint.spec)


def check_constraint(constraint: Constraint, source: str | Path = "<schema>") -> tuple[str, ...]:
    """Compiles a constraint without a tokenizer, so unsupported keywords fail at load time, not mid-run;
    returns llguidance's warnings."""
    return _compile_check(constraint_grammar(constraint, source), source)

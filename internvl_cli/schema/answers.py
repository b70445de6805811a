"""Schema answers: a decoded answer parsed and validated against its loaded schema (duplicate keys and non-finite
numbers refused), and the choice among several tries of one question (votes, retries)."""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from .loading import LoadedSchema


@dataclass
class Answer:
    """A decoded answer: its data (None is JSON null), whether it parsed, and its violations."""

    data: Any
    errors: list[str]
    parsed: bool = True

    @property
    def valid(self) -> bool:
        return self.parsed and not self.errors


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = Counter(key for key, _ in pairs)
    for key, count in keys.items():
        if count > 1:
            raise ValueError(f"duplicate key {key!r} in an object")
    return dict(pairs)


def parse_answer(text: str, schema: LoadedSchema, clean: Callable[[Any], Any] | None = None) -> Answer:
    """A decoded output, parsed strictly (`clean` applied, e.g. control characters dropped) and validated
    against the full schema: what is validated is exactly what will be printed.

    A decode cut off by max_new_tokens is not JSON, so it lands here as an error, never as valid data.
    """
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant,
                          object_pairs_hook=_unique_keys)
        if clean is not None:
            data = clean(data)
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be printed
    except json.JSONDecodeError as exc:
        # an error at the very end, or a string never closed, is what a max_new_tokens cut looks like
        cut_off = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (output cut off: raise --max-new-tokens?)" if cut_off else ""
        return Answer(None, [f"$: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}{cut}"], False)
    except UnicodeEncodeError:
        return Answer(None, ["$: a string holds a lone surrogate"], False)
    except ValueError as exc:
        return Answer(None, [f"$: {exc}"], False)
    return Answer(data, schema.check(data))


# --------------------------------------------------------------------------------------------------
# Voting
# --------------------------------------------------------------------------------------------------


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


def most_common(values: list[Any]) -> Any:
    """The most frequent value; among equally frequent ones, the one seen first."""
    counts = Counter(_vote_key(v) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[_vote_key(v)] == best)


def _vote(values: list[Any]) -> Any:
    if values and all(isinstance(v, dict) for v in values):
        return _vote_objects(values)
    return most_common(values)


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


def majority_vote(records: list[Any]) -> Any:
    """Field-wise majority over N answers of one document (`--votes N`).

    Rule: for each key (in first-seen order) the records vote on presence (absence counts as a vote);
    if present, nested objects are voted key by key recursively, and any other value (arrays
    included) is voted as a whole, comparing values canonically (key order ignored, 2 == 2.0).
    Every tie goes to the first record's choice. The result may combine fields from different records:
    it is a candidate only (see `choose_answer`), never printed without validation.
    """
    if not records:
        raise ValueError("majority_vote needs at least one record")
    return _vote(list(records))


def choose_answer(answers: list[Answer], schema: LoadedSchema) -> tuple[Answer, str]:
    """One answer out of several tries of the same question (votes, retries), and how it was chosen.

    Only valid answers take part: their field-wise majority if that validates, else the most common valid
    answer as a whole. Without any valid answer, the first one that parsed (or the first) is returned with
    its errors. Ways: "only", "vote", "most-common", "none-valid".
    """
    if not answers:
        raise ValueError("choose_answer needs at least one answer")
    valid = [a for a in answers if a.valid]
    if not valid:
        return next((a for a in answers if a.parsed), answers[0]), "none-valid"
    if len(valid) == 1:
        return valid[0], "only"
    voted = majority_vote([a.data for a in valid])
    errors = schema.check(voted)
    if not errors:
        return Answer(voted, []), "vote"
    return Answer(most_common([a.data for a in valid]), []), "most-common"
